"""The CUDA kernels, run on the CPU: csrc/cuda/*.cuh and their shared host code compiled for the host
under the SIMT emulation (csrc/simt/simt.h), launched with the GPU build's geometry, against
unlearnx.ops.reference. Each kernel runs with free-running threads and, where its result could depend on
the order of its threads, one thread at a time in forward and in reverse order (a missing __syncthreads
then changes the result). The toy-kernel tests show the harness reports the bugs it is meant to catch."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import simt_build
from unlearnx.ops import reference

pytestmark = pytest.mark.simt

REPO = Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOW = (torch.float16, torch.bfloat16)


def _fast_math(source: str) -> bool:
    """Whether the GPU build compiles `source` with nvcc's --use_fast_math, whose flush-to-zero the tests
    then emulate (the flag is set in setup.py for every .cu file, or for none)."""
    del source
    return '"--use_fast_math"' in (REPO / "setup.py").read_text()


# Tests run under the forward schedule (fibers: fast, deterministic) unless they say otherwise; the
# parallel one (a std::thread per CUDA thread) is slower on few cores.
DEFAULT = ("forward", False, 1)


@pytest.fixture(scope="module")
def simt():
    ops = simt_build.load()
    ops.set_options(*DEFAULT)
    yield ops
    ops.set_options(*DEFAULT)


def _with(simt, schedule, fn, *, ftz=False, sms=1):
    simt.set_options(schedule, ftz, sms)
    try:
        return fn()
    finally:
        simt.set_options(*DEFAULT)


# ---- the harness fails when it should -------------------------------------------------------------

def test_missing_syncthreads_is_reported(simt):
    x = torch.arange(512, dtype=torch.float32)
    expected = x.view(2, 256).flip(1).reshape(-1)
    for schedule in ("parallel", "forward", "reverse"):
        assert torch.equal(_with(simt, schedule, lambda: simt.toy("reverse", x, 256)), expected)
    forward = _with(simt, "forward", lambda: simt.toy("reverse_missing_sync", x, 256))
    backward = _with(simt, "reverse", lambda: simt.toy("reverse_missing_sync", x, 256))
    assert not torch.equal(forward, expected) and not torch.equal(backward, expected)
    assert not torch.equal(forward, backward)


@pytest.mark.parametrize("schedule", ["parallel", "forward", "reverse"])
def test_bad_shuffle_masks_are_reported(simt, schedule):
    x = torch.arange(64, dtype=torch.float32)
    good = _with(simt, schedule, lambda: simt.toy("warp_sum", x, 64))
    assert torch.equal(good, x.view(2, 32).sum(1).repeat_interleave(32))
    with pytest.raises(RuntimeError, match=r"__shfl_xor_sync.*(not in the mask|does not name its own lane)"):
        _with(simt, schedule, lambda: simt.toy("warp_sum_half_mask", x, 64))
    with pytest.raises(RuntimeError, match=r"exited|returned while lanes of its warp wait"):
        _with(simt, schedule, lambda: simt.toy("warp_sum_exited_lanes", x, 64))


# ---- bikl_loss ------------------------------------------------------------------------------------

def _tol(dtype):
    return {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12),
            torch.float16: dict(rtol=2e-3, atol=2e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3)}[dtype]


def _bikl_expected(z, t, w):
    z64 = z.detach().double().requires_grad_()
    loss = reference.bikl_loss(z64, t.double(), w)
    (grad,) = torch.autograd.grad(loss, z64)
    return loss.detach(), grad


def _bikl_case(b, c, dtype, seed=0):
    g = torch.Generator().manual_seed(seed + b + c)
    z = (3 * torch.randn(b, c, generator=g, dtype=torch.float64)).to(dtype)
    t = torch.softmax(torch.randn(b, c, generator=g, dtype=torch.float64), 1).to(dtype)
    return z, t


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b, c", [(1, 10), (13, 1), (9, 37), (1, 20000), (20, 10)])
def test_bikl_kernel_matches_reference(simt, dtype, b, c):
    z, t = _bikl_case(b, c, dtype)
    for w in (0.0, 0.85):
        loss, grad = simt.bikl_fwd(z, t, w, True)
        exp_loss, exp_grad = _bikl_expected(z, t, w)
        assert grad.shape == z.shape
        torch.testing.assert_close(loss.double(), exp_loss, **_tol(dtype))
        torch.testing.assert_close(grad.double(), exp_grad, **_tol(dtype))
        alone, none = simt.bikl_fwd(z, t, w, False)
        assert torch.equal(alone, loss)


def test_bikl_kernel_is_schedule_independent(simt):
    z, t = _bikl_case(9, 37, torch.float32)
    runs = [_with(simt, s, lambda: simt.bikl_fwd(z, t, 0.85, True)) for s in ("parallel", "forward", "reverse")]
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


def test_bikl_large_logits_keep_precision(simt):
    # log_softmax as (z - m) - log(sum): z - (log(sum) + m) rounds at the magnitude of z.
    z, t = _bikl_case(16, 10, torch.float32)
    z = z + 1e4
    loss, grad = simt.bikl_fwd(z, t, 0.85, True)
    exp_loss, exp_grad = _bikl_expected(z, t, 0.85)
    torch.testing.assert_close(loss.double(), exp_loss, rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(grad.double(), exp_grad, rtol=2e-5, atol=2e-6)


def test_bikl_subnormal_targets_and_underflow_match_cpu(simt):
    # Subnormal target entries (reverse KL needs log t) and probabilities that underflow: the GPU build,
    # with the flush-to-zero its flags imply, must give the CPU kernel's finite results.
    z = torch.tensor([[0.0, 1.0, -200.0, 2.0], [5.0, -150.0, 0.5, 0.0]], dtype=torch.float32)
    t = torch.tensor([[0.5, 0.3, 1e-40, 0.2], [0.25, 0.25, 0.5 - 3e-39, 3e-39]], dtype=torch.float32)
    from unlearnx import ops
    if not ops.fused_available():
        pytest.skip("the CPU kernel is the oracle here")
    cpu_z = z.clone().requires_grad_()
    cpu_loss = ops.bikl_loss(cpu_z, t, 0.85)
    (cpu_grad,) = torch.autograd.grad(cpu_loss, cpu_z)
    assert torch.isfinite(cpu_loss) and torch.isfinite(cpu_grad).all()
    loss, grad = _with(simt, "forward", lambda: simt.bikl_fwd(z, t, 0.85, True), ftz=_fast_math("losses.cu"))
    torch.testing.assert_close(loss, cpu_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, cpu_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_loss_is_float32_like_autocast(simt, dtype):
    z, t = _bikl_case(8, 10, dtype)
    assert simt.bikl_fwd(z, t, 0.85, True)[0].dtype == torch.float32
    f, r = torch.randn(4, 10).to(dtype), torch.randn(6, 10).to(dtype)
    assert simt.scl_fwd(f, r, 1.15, True, True)[0].dtype == torch.float32


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_gradient_is_scaled_before_rounding(simt, dtype):
    # Under a GradScaler grad_output is large and the per-entry gradients tiny: rounding them to half
    # before the scale loses them (half subnormals); the scaled gradient must be as good as one rounding.
    z, t = _bikl_case(256, 10, torch.float64)
    t = torch.softmax(z + 1e-3 * torch.randn(z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 1)
    z, t = z.to(dtype), t.to(dtype)
    scale = torch.tensor(65536.0)
    loss, saved = simt.bikl_fwd(z, t, 0.0, True)
    got = simt.grad_input(scale.to(loss.dtype), saved, z).double()
    _, exact = _bikl_expected(z, t, 0.0)
    exact = (exact * 65536.0).to(dtype).double()
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, exact, rtol=2 * torch.finfo(dtype).eps, atol=exact.abs().max().item() * 1e-3)


# ---- scl_loss -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bf, br, c", [(1, 1, 2), (3, 5, 7), (9, 33, 10), (2, 3000, 4)])
def test_scl_kernel_matches_reference(simt, dtype, bf, br, c):
    g = torch.Generator().manual_seed(bf * br * c)
    f = torch.randn(bf, c, generator=g, dtype=torch.float64).to(dtype)
    r = torch.randn(br, c, generator=g, dtype=torch.float64).to(dtype)
    loss, d_f, d_r = simt.scl_fwd(f, r, 1.15, True, True)
    f64, r64 = f.double().requires_grad_(), r.double().requires_grad_()
    exp = reference.scl_loss(f64, r64, 1.15)
    exp_f, exp_r = torch.autograd.grad(exp, (f64, r64))
    tol = _tol(dtype)
    torch.testing.assert_close(loss.double(), exp.detach(), **tol)
    torch.testing.assert_close(simt.grad_input(torch.ones((), dtype=loss.dtype), d_f, f).double(), exp_f, **tol)
    torch.testing.assert_close(simt.grad_input(torch.ones((), dtype=loss.dtype), d_r, r).double(), exp_r, **tol)
    only, e_f, e_r = simt.scl_fwd(f, r, 1.15, False, False)
    assert torch.equal(only, loss) and e_f.numel() == 0 and e_r.numel() == 0


# ---- masked_reinit_ -------------------------------------------------------------------------------

def _scores(n, dtype, ties):
    g = torch.Generator().manual_seed(n)
    s = torch.randn(n, generator=g)
    if ties:
        s = torch.round(s * 2) / 2
        s[:: 7] = 0.0
        s[3:: 11] = -0.0
        s[5:: 13] = float("nan")
    return s.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reinit_kernels_match_reference(simt, dtype):
    n = 2500  # more than the 8 blocks x 256 threads of one multiprocessor: the grid-stride loops wrap
    for ties, largest, fraction in [(False, False, 0.3), (True, True, 0.3), (True, False, 0.5),
                                    (False, True, 1 / n), (True, False, 1.0), (False, False, 0.0)]:
        scores = _scores(n, dtype, ties).view(50, 50)
        weight = torch.randn(50, 50, generator=torch.Generator().manual_seed(7)).to(dtype)
        expected_w = weight.clone()
        expected = reference.masked_reinit_(expected_w, scores, fraction, 0.1, largest=largest, seed=5)
        got_w = weight.clone()
        got = simt.masked_reinit_(got_w, scores, fraction, 0.1, largest, 5)
        assert torch.equal(got, expected), (ties, largest, fraction)
        assert torch.equal(got_w[~got], weight[~got])
        # k draws from the same generator state, written in index order: the reference's exact values
        assert torch.equal(got_w, expected_w), (ties, largest, fraction)


@pytest.mark.parametrize("schedule", ["parallel", "reverse"])
def test_reinit_kernels_are_schedule_independent(simt, schedule):
    scores = _scores(600, torch.float32, True)
    expected = reference.masked_reinit_(torch.zeros(600), scores, 0.4, 0.1, seed=1)
    got = _with(simt, schedule, lambda: simt.masked_reinit_(torch.zeros(600), scores, 0.4, 0.1, False, 1), sms=1)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("largest", [False, True])
def test_reinit_subnormal_scores_under_flush_to_zero(simt, largest):
    # Tiny gradients (what msg ranks) are subnormal floats: with flush-to-zero a float compare says they
    # equal 0, and the selection would take zeros and subnormals as ties in index order.
    tiny = torch.finfo(torch.float32).tiny
    scores = torch.zeros(512)
    scores[1::2] = torch.linspace(0.01, 0.9, 256) * tiny  # subnormal, all > 0
    scores[::5] = -scores[::5]  # some negative subnormals too
    weight = torch.zeros(512)
    expected = reference.masked_reinit_(weight.clone(), scores, 0.25, 0.1, largest=largest, seed=0)
    got = _with(simt, "forward", lambda: simt.masked_reinit_(weight.clone(), scores, 0.25, 0.1, largest, 0), ftz=True)
    assert torch.equal(got, expected)
