"""Fused ops vs the composite PyTorch the notebooks use: forward+backward timings (torch.utils.benchmark).

Each case asserts that the fused op matches its reference on the benchmark inputs before timing.
Rows: {"op", "shape", "device", "dtype", "fused_ms", "reference_ms", "speedup", "gbps"?}; "gbps" (large
shapes only) is the bytes the fused forward+backward must move (inputs read, gradient written, gradient
scaled) divided by its time, to compare with :func:`copy_bandwidth_gbps`.
"""
from __future__ import annotations

import logging

import torch

# torch.utils.benchmark imports cpp_extension, which logs a warning about CUDA_HOME on machines with no
# CUDA runtime; that is noise for a timing tool, so it is muted for the import alone.
_cpp_extension_log = logging.getLogger("torch.utils.cpp_extension")
_previous_level = _cpp_extension_log.level
_cpp_extension_log.setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402

_cpp_extension_log.setLevel(_previous_level)

from .. import ops
from ..ops import reference

__all__ = ["bench_ops", "copy_bandwidth_gbps", "topk_reinit_", "kthvalue_reinit_"]


_NUM_THREADS = 1


def _time_ms(stmt: str, env: dict, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt=stmt, globals=env, num_threads=_NUM_THREADS)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth_gbps(device: str = "cpu", nbytes: int = 1 << 28, min_run_time: float = 0.5) -> float:
    """Device copy bandwidth, GB/s counting read + write (``dst.copy_(src)`` of ``nbytes``)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = _time_ms("dst.copy_(src)", {"dst": dst, "src": src}, min_run_time)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _fwd_bwd(fn, differentiable, *args):
    loss = fn(*args)
    return torch.autograd.grad(loss, differentiable)


def _row(op, shape, device, dtype, fused_ms, reference_ms, nbytes=None):
    row = {"op": op, "shape": shape, "device": device, "dtype": str(dtype).replace("torch.", ""),
           "fused_ms": round(fused_ms, 4), "reference_ms": round(reference_ms, 4),
           "speedup": round(reference_ms / fused_ms, 2), "threads": _NUM_THREADS}
    if nbytes is not None:
        row["gbps"] = round(nbytes / (fused_ms * 1e-3) / 1e9, 2)
    return row


def _bench_bikl(b, c, device, dtype, min_run_time, large):
    gen = torch.Generator(device=device).manual_seed(b + c)
    logits = torch.randn(b, c, device=device, dtype=dtype, generator=gen).requires_grad_()
    target = torch.full((b, c), 1.0 / c, device=device, dtype=dtype)  # the methods' uniform target
    w = 0.85
    got = _fwd_bwd(ops.bikl_loss, logits, logits, target, w)
    want = _fwd_bwd(reference.bikl_loss, logits, logits, target, w)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    env = {"f": _fwd_bwd, "x": logits, "t": target, "w": w, "fused": ops.bikl_loss, "ref": reference.bikl_loss}
    fused = _time_ms("f(fused, x, x, t, w)", env, min_run_time)
    ref = _time_ms("f(ref, x, x, t, w)", env, min_run_time)
    nbytes = 5 * logits.numel() * logits.element_size() if large else None  # z, t read; grad write, read, write
    return _row("bikl_loss", f"B={b} C={c}", device, dtype, fused, ref, nbytes)


def _bench_scl(bf, br, c, device, dtype, min_run_time, large):
    gen = torch.Generator(device=device).manual_seed(bf + br)
    forget = torch.randn(bf, c, device=device, dtype=dtype, generator=gen).requires_grad_()
    retain = torch.randn(br, c, device=device, dtype=dtype, generator=gen)  # detached, as the 1st place
    got = _fwd_bwd(ops.scl_loss, forget, forget, retain, 1.15)
    want = _fwd_bwd(reference.scl_loss, forget, forget, retain, 1.15)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    env = {"f": _fwd_bwd, "x": forget, "r": retain, "fused": ops.scl_loss, "ref": reference.scl_loss}
    fused = _time_ms("f(fused, x, x, r, 1.15)", env, min_run_time)
    ref = _time_ms("f(ref, x, x, r, 1.15)", env, min_run_time)
    # S = F R^T is written and read back (twice: softmax, then G), F and R read twice, dF written and scaled
    nbytes = (3 * bf * br + 2 * (bf + br) * c + 3 * bf * c) * forget.element_size() if large else None
    return _row("scl_loss", f"B_f={bf} B_r={br} C={c}", device, dtype, fused, ref, nbytes)


def topk_reinit_(weight, scores, fraction, std):
    """The usual PyTorch way: topk of the flattened scores, then normal_ into the selected entries."""
    k = round(fraction * weight.numel())
    idx = scores.reshape(-1).topk(k, largest=False).indices
    weight.view(-1)[idx] = torch.empty(k, dtype=weight.dtype, device=weight.device).normal_(0.0, std)
    return idx


def kthvalue_reinit_(weight, scores, fraction, std):
    """Threshold with kthvalue, mask, normal_ (count inexact under ties)."""
    k = round(fraction * weight.numel())
    threshold = scores.reshape(-1).kthvalue(k).values
    mask = scores <= threshold
    weight[mask] = torch.empty(int(mask.sum()), dtype=weight.dtype, device=weight.device).normal_(0.0, std)
    return mask


def _resnet18_convs(device):
    import torchvision

    net = torchvision.models.resnet18(num_classes=10).to(device)
    weights = [m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(weights) == 20, len(weights)
    gen = torch.Generator(device=device).manual_seed(0)
    scores = [torch.randn(w.shape, device=device, generator=gen).abs() for w in weights]  # |gradient|-like
    return weights, scores


def _bench_reinit(device, min_run_time, fraction=0.3, std=0.05):
    weights, scores = _resnet18_convs(device)
    n = sum(w.numel() for w in weights)
    for w, s in zip(weights, scores):  # correctness: the same set as topk (random scores have no ties)
        mask = ops.masked_reinit_(w.clone(), s, fraction, std, seed=0)
        idx = topk_reinit_(w.clone(), s, fraction, std)
        expected = torch.zeros(w.numel(), dtype=torch.bool, device=device)
        expected[idx] = True
        assert torch.equal(mask.reshape(-1), expected)

    def fused_all():
        for w, s in zip(weights, scores):
            ops.masked_reinit_(w, s, fraction, std)

    def topk_all():
        for w, s in zip(weights, scores):
            topk_reinit_(w, s, fraction, std)

    def kth_all():
        for w, s in zip(weights, scores):
            kthvalue_reinit_(w, s, fraction, std)

    env = {"fused": fused_all, "topk": topk_all, "kth": kth_all}
    fused = _time_ms("fused()", env, min_run_time)
    topk = _time_ms("topk()", env, min_run_time)
    kth = _time_ms("kth()", env, min_run_time)
    nbytes = n * (4 + 4 + 1)  # scores read, selected weights written (upper bound: all), mask written
    row = _row("masked_reinit_", f"resnet18 20 convs n={n} fraction={fraction}", device, torch.float32, fused, topk,
               nbytes)
    row["reference"] = "topk + normal_"
    row["kthvalue_ms"] = round(kth, 4)
    row["speedup_vs_kthvalue"] = round(kth / fused, 2)
    largest = max(zip(weights, scores), key=lambda p: p[0].numel())
    env1 = {"op": ops.masked_reinit_, "ref": topk_reinit_, "w": largest[0], "s": largest[1], "f": fraction, "sd": std}
    one_fused = _time_ms("op(w, s, f, sd)", env1, min_run_time)
    one_ref = _time_ms("ref(w, s, f, sd)", env1, min_run_time)
    single = _row("masked_reinit_", f"largest conv {tuple(largest[0].shape)} n={largest[0].numel()}", device,
                  torch.float32, one_fused, one_ref, largest[0].numel() * 9)
    single["reference"] = "topk + normal_"
    return [row, single]


def bench_ops(device: str = "cpu", quick: bool = False, min_run_time: float | None = None,
              num_threads: int = 1) -> list[dict]:
    """Time each fused op (forward+backward for the losses) against the notebooks' composite PyTorch.

    ``quick`` keeps only the competition shapes with short runs. ``num_threads`` is the intra-op thread
    count while timing (default 1: on a shared machine, OpenMP barriers of idle-waiting threads swamp
    sub-millisecond ops; the competition shapes are single-threaded in the fused kernels anyway).
    Returns a list of row dicts (each with its "threads").
    """
    global _NUM_THREADS
    _NUM_THREADS = num_threads
    if min_run_time is None:
        min_run_time = 0.2 if quick else 1.0
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("bench_ops: device='cuda' but no CUDA device is available")
    dtype = torch.float32
    rows = []
    for b in (64, 128, 256, 512):
        rows.append(_bench_bikl(b, 10, device, dtype, min_run_time, large=False))
    if not quick:
        rows.append(_bench_bikl(8192, 1000, device, dtype, min_run_time, large=True))
    for br in (256, 512):
        rows.append(_bench_scl(64, br, 10, device, dtype, min_run_time, large=False))
    if not quick:
        rows.append(_bench_scl(2048, 4096, 100, device, dtype, min_run_time, large=True))
    rows.extend(_bench_reinit(device, min_run_time))
    _sync(device)
    return rows
