"""Fused losses (bikl_loss, scl_loss) against the pure-PyTorch references: values, gradients,
registration (opcheck), torch.compile / export / jit.script, edge cases and input validation."""
import re
import warnings

import pytest
import torch

from unlearnx import ops
from unlearnx.ops import reference

needs_ext = pytest.mark.skipif(not ops.fused_available(), reason="unlearnx._C not built: fused ops unavailable")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="requires a CUDA device")
needs_cuda_kernels = pytest.mark.skipif(not (torch.cuda.is_available() and ops.backends()["cuda"]),
                                        reason="requires a CUDA device and unlearnx built with CUDA kernels")

BIKL_SHAPES = [(1, 2), (1, 10), (3, 7), (64, 10), (129, 10), (17, 100), (5, 1000)]
SCL_SHAPES = [(1, 1, 2), (3, 5, 7), (64, 256, 10), (7, 33, 1000)]  # (B_f, B_r, C)


def _probs(b, c, dtype=torch.float64, generator=None):
    return torch.softmax(torch.randn(b, c, dtype=dtype, generator=generator), dim=1)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _bikl_log_space(logits, target, w):
    """methods.md §9.1 form, log_softmax + log_target=True: finite where the notebook form is not."""
    ls = torch.log_softmax(logits.double(), 1)
    fwd = torch.nn.functional.kl_div(ls, target.double(), reduction="batchmean")
    rev = torch.nn.functional.kl_div(target.double().log(), ls, log_target=True, reduction="batchmean")
    return fwd + w * rev


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", BIKL_SHAPES)
@pytest.mark.parametrize("reverse_weight", [0.0, 0.85, 1.0])
def test_bikl_matches_reference(shape, dtype, reverse_weight):
    torch.manual_seed(sum(shape))
    logits = (3 * torch.randn(*shape, dtype=dtype)).requires_grad_()
    target = _probs(*shape).to(dtype)
    fused = ops.bikl_loss(logits, target, reverse_weight)
    (g_fused,) = torch.autograd.grad(fused, logits)
    ref = reference.bikl_loss(logits, target, reverse_weight)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert fused.shape == () and fused.dtype == dtype
    torch.testing.assert_close(fused, ref, **_tol(dtype))
    torch.testing.assert_close(g_fused, g_ref, **_tol(dtype))


@needs_ext
def test_bikl_uniform_target_is_kl_to_uniform():
    # reverse_weight=0 with a uniform target is the 1st place's stage-1 loss: -log C - mean_j log p_j.
    logits = torch.randn(64, 10, dtype=torch.float64)
    uniform = torch.full((64, 10), 0.1, dtype=torch.float64)
    expected = (-torch.log(torch.tensor(10.0, dtype=torch.float64)) - torch.log_softmax(logits, 1).mean(1)).mean()
    torch.testing.assert_close(ops.bikl_loss(logits, uniform, 0.0), expected)
    # and the improved SCL loss vanishes with its gradient at p = u
    flat = torch.zeros(4, 10, dtype=torch.float64, requires_grad=True)
    loss = ops.bikl_loss(flat, uniform[:4], 0.85)
    (grad,) = torch.autograd.grad(loss, flat)
    assert abs(loss.item()) < 1e-12 and grad.abs().max().item() < 1e-12


@needs_ext
def test_bikl_target_with_zeros():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(6, 5, dtype=torch.float64)
    target[:, 0] = 1.0  # one-hot: t log t = 0 convention, finite forward KL
    fused = ops.bikl_loss(logits, target, 0.0)
    torch.testing.assert_close(fused, reference.bikl_loss(logits, target, 0.0))
    (grad,) = torch.autograd.grad(fused, logits)
    torch.testing.assert_close(grad, (torch.softmax(logits, 1) - target).detach() / 6)
    # KL(p || t) is infinite when t has zeros: both implementations say so
    assert torch.isinf(ops.bikl_loss(logits.detach(), target, 0.85))
    assert torch.isinf(reference.bikl_loss(logits.detach(), target, 0.85))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bikl_extreme_logits_finite(dtype):
    logits = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, 1e4], [3.0, 2.0, 1.0, 0.0]], dtype=dtype)
    logits.requires_grad_()
    target = torch.full((3, 4), 0.25, dtype=dtype)
    loss = ops.bikl_loss(logits, target, 0.85)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    stable = _bikl_log_space(logits.detach(), target, 0.85)
    torch.testing.assert_close(loss.double(), stable, rtol=1e-5, atol=1e-3)
    # the notebook form's gradient is NaN here: xlogy(p, p) at p == 0 (documented in reference.py)
    ref_logits = logits.detach().clone().requires_grad_()
    (ref_grad,) = torch.autograd.grad(reference.bikl_loss(ref_logits, target, 0.85), ref_logits)
    assert torch.isnan(ref_grad).any()


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SCL_SHAPES)
def test_scl_matches_reference(shape, dtype):
    bf, br, c = shape
    torch.manual_seed(bf + br + c)
    f = torch.randn(bf, c, dtype=dtype, requires_grad=True)
    r = torch.randn(br, c, dtype=dtype, requires_grad=True)
    fused = ops.scl_loss(f, r, 1.15)
    g_fused = torch.autograd.grad(fused, (f, r))
    ref = reference.scl_loss(f, r, 1.15)
    g_ref = torch.autograd.grad(ref, (f, r))
    assert fused.shape == () and fused.dtype == dtype
    tol = dict(rtol=2e-5, atol=1e-5) if dtype == torch.float32 else _tol(dtype)
    torch.testing.assert_close(fused, ref, **tol)
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b, **tol)


@needs_ext
def test_scl_detached_retain_gets_no_grad():
    f = torch.randn(8, 10, requires_grad=True)
    r = torch.randn(32, 10, requires_grad=True)
    ops.scl_loss(f, r.detach(), 0.5).backward()
    assert f.grad is not None and r.grad is None
    f.grad = None
    ops.scl_loss(f.detach(), r, 0.5).backward()
    assert f.grad is None and r.grad is not None


@needs_ext
def test_scl_extreme_logits_finite():
    f = torch.tensor([[1e4, -1e4], [0.0, 1.0]], requires_grad=True)
    r = torch.tensor([[1e4, 0.0], [-1e4, 3.0], [1.0, 1.0]])
    loss = ops.scl_loss(f, r, 1.15)
    (grad,) = torch.autograd.grad(loss, f)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), reference.scl_loss(f.double(), r.double(), 1.15), rtol=1e-5, atol=1e-2)


@needs_ext
def test_gradcheck_float64():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    target = _probs(5, 7)
    for w in (0.0, 0.85):
        assert torch.autograd.gradcheck(lambda z: ops.bikl_loss(z, target, w), (logits,))
    f = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    r = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ops.scl_loss(a, b, 0.7), (f, r))


@needs_ext
def test_double_backward_raises_clearly():
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ops.bikl_loss(logits, _probs(4, 3), 1.0), logits, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        grad.sum().backward()


@needs_ext
def test_non_contiguous_inputs():
    logits = torch.randn(10, 64, dtype=torch.float64).t()  # [64, 10], transposed strides
    target = _probs(10, 64).t()
    assert not logits.is_contiguous()
    torch.testing.assert_close(ops.bikl_loss(logits, target, 0.85), reference.bikl_loss(logits, target, 0.85))
    f, r = torch.randn(10, 8, dtype=torch.float64).t(), torch.randn(10, 30, dtype=torch.float64).t()
    torch.testing.assert_close(ops.scl_loss(f, r), reference.scl_loss(f, r))


@needs_ext
def test_no_grad_path_matches():
    logits, target = torch.randn(32, 10), _probs(32, 10).float()
    with torch.no_grad():
        torch.testing.assert_close(ops.bikl_loss(logits, target, 0.85), reference.bikl_loss(logits, target, 0.85))
        torch.testing.assert_close(ops.scl_loss(logits, target), reference.scl_loss(logits, target))


def _bikl_samples(requires_grad):
    out = []
    for b, c in [(1, 2), (6, 10), (33, 17)]:
        z = torch.randn(b, c, dtype=torch.float64, requires_grad=requires_grad)
        out.append((z, _probs(b, c), 0.85))
    return out


def _scl_samples(requires_grad):
    return [(torch.randn(bf, c, dtype=torch.float64, requires_grad=requires_grad),
             torch.randn(br, c, dtype=torch.float64, requires_grad=requires_grad), 1.15)
            for bf, br, c in [(1, 1, 2), (5, 9, 10)]]


@needs_ext
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_losses(requires_grad):
    for args in _bikl_samples(requires_grad):
        torch.library.opcheck(torch.ops.unlearnx.bikl_loss.default, args)
    for args in _scl_samples(requires_grad):
        torch.library.opcheck(torch.ops.unlearnx.scl_loss.default, args)
    if requires_grad:  # only one input differentiable
        f, r, t = _scl_samples(True)[1]
        torch.library.opcheck(torch.ops.unlearnx.scl_loss.default, (f, r.detach(), t))


@needs_ext
def test_opcheck_internal_ops():
    z, t, w = _bikl_samples(False)[1]
    torch.library.opcheck(torch.ops.unlearnx._bikl_loss_fwd.default, (z, t, w))
    grad = torch.randn(6, 10, dtype=torch.float64)
    torch.library.opcheck(torch.ops.unlearnx._bikl_loss_backward.default, (torch.tensor(2.0, dtype=torch.float64), grad))
    f, r, temp = _scl_samples(False)[1]
    for flags in [(True, True), (True, False), (False, False)]:
        torch.library.opcheck(torch.ops.unlearnx._scl_loss_fwd.default, (f, r, temp, *flags))
    torch.library.opcheck(torch.ops.unlearnx._scl_loss_backward.default,
                          (torch.tensor(0.5, dtype=torch.float64), f.clone(), torch.empty(0, dtype=torch.float64)))


def _losses(z, target, f, r):
    return ops.bikl_loss(z, target, 0.85) + ops.scl_loss(f, r, 1.15)


@needs_ext
def test_torch_compile_fullgraph_with_backward():
    torch._dynamo.reset()
    compiled = torch.compile(_losses, fullgraph=True, backend="aot_eager")
    z = torch.randn(16, 10, requires_grad=True)
    target = _probs(16, 10).float()
    f = torch.randn(8, 10, requires_grad=True)
    r = torch.randn(32, 10)
    eager = _losses(z, target, f, r)
    g_eager = torch.autograd.grad(eager, (z, f))
    out = compiled(z, target, f, r)
    g_out = torch.autograd.grad(out, (z, f))
    torch.testing.assert_close(out, eager)
    for a, b in zip(g_out, g_eager):
        torch.testing.assert_close(a, b)


@needs_ext
def test_torch_compile_inductor():
    torch._dynamo.reset()
    compiled = torch.compile(_losses, fullgraph=True)
    z = torch.randn(16, 10, requires_grad=True)
    target = _probs(16, 10).float()
    f, r = torch.randn(8, 10, requires_grad=True), torch.randn(32, 10)
    out = compiled(z, target, f, r)
    out.backward()
    torch.testing.assert_close(out, _losses(z, target, f, r))
    assert z.grad is not None and f.grad is not None


class _LossModule(torch.nn.Module):
    def forward(self, z, target, f, r):
        return (torch.ops.unlearnx.bikl_loss(z, target, 0.85)
                + torch.ops.unlearnx.scl_loss(f, r, 1.15))


@needs_ext
def test_jit_script_module():
    with warnings.catch_warnings():
        # TorchScript is deprecated (DeprecationWarning or FutureWarning by version); the ops still script
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(_LossModule())
    z, target = torch.randn(8, 10), _probs(8, 10).float()
    f, r = torch.randn(4, 10), torch.randn(12, 10)
    torch.testing.assert_close(scripted(z, target, f, r), _LossModule()(z, target, f, r))


class _WrapperModule(torch.nn.Module):
    def forward(self, z, target, f, r):
        return _losses(z, target, f, r)


@needs_ext
def test_torch_export_round_trip():
    z, target = torch.randn(8, 10), _probs(8, 10).float()
    f, r = torch.randn(4, 10), torch.randn(12, 10)
    exported = torch.export.export(_WrapperModule(), (z, target, f, r))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("unlearnx" in t for t in targets), targets
    z2, target2 = torch.randn(8, 10), _probs(8, 10).float()
    torch.testing.assert_close(exported.module()(z2, target2, f, r), _losses(z2, target2, f, r))


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    torch.manual_seed(0)
    for (b, c), (bf, br, c2) in zip(BIKL_SHAPES, SCL_SHAPES * 2):
        z, target = torch.randn(b, c, dtype=dtype, requires_grad=True), _probs(b, c).to(dtype)
        zc = z.detach().cuda().requires_grad_()
        loss_cpu, loss_gpu = ops.bikl_loss(z, target, 0.85), ops.bikl_loss(zc, target.cuda(), 0.85)
        (g_cpu,), (g_gpu,) = torch.autograd.grad(loss_cpu, z), torch.autograd.grad(loss_gpu, zc)
        torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, **_tol(dtype))
        torch.testing.assert_close(g_gpu.cpu(), g_cpu, **_tol(dtype))
        f, r = torch.randn(bf, c2, dtype=dtype, requires_grad=True), torch.randn(br, c2, dtype=dtype, requires_grad=True)
        fc, rc = f.detach().cuda().requires_grad_(), r.detach().cuda().requires_grad_()
        l_cpu, l_gpu = ops.scl_loss(f, r), ops.scl_loss(fc, rc)
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else _tol(dtype)
        torch.testing.assert_close(l_gpu.cpu(), l_cpu, **tol)
        for a, b_ in zip(torch.autograd.grad(l_gpu, (fc, rc)), torch.autograd.grad(l_cpu, (f, r))):
            torch.testing.assert_close(a.cpu(), b_, **tol)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_bound(dtype):
    # flash-attention's oracle: error vs a float64 reference at most 2x that of eager PyTorch in `dtype`.
    torch.manual_seed(0)
    z = torch.randn(256, 10, device="cuda", dtype=dtype, requires_grad=True)
    target = torch.full((256, 10), 0.1, device="cuda", dtype=dtype)
    z64 = z.detach().double().requires_grad_()
    exact = reference.bikl_loss(z64, target.double(), 0.85)
    (g_exact,) = torch.autograd.grad(exact, z64)
    fused = ops.bikl_loss(z, target, 0.85)
    (g_fused,) = torch.autograd.grad(fused, z)
    eager = reference.bikl_loss(z, target, 0.85)
    (g_eager,) = torch.autograd.grad(eager, z)
    assert (fused.double() - exact).abs() <= 2 * (eager.double() - exact).abs() + 1e-3
    assert (g_fused.double() - g_exact).abs().max() <= 2 * (g_eager.double() - g_exact).abs().max() + 1e-4
    f = torch.randn(64, 10, device="cuda", dtype=dtype, requires_grad=True)
    r = torch.randn(256, 10, device="cuda", dtype=dtype)
    exact = reference.scl_loss(f.detach().double(), r.double())
    assert (ops.scl_loss(f, r).double() - exact).abs() <= 2 * (reference.scl_loss(f, r).double() - exact).abs() + 1e-3


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_matches_autocast_and_scales_before_rounding(dtype):
    # float32 losses, as eager autocast returns them; gradients rounded once, after grad_output scales them
    z = torch.randn(256, 10, device="cuda", dtype=dtype, requires_grad=True)
    target = torch.softmax(z.detach().float() + 1e-3 * torch.randn(256, 10, device="cuda"), 1).to(dtype)
    loss = ops.bikl_loss(z, target, 0.0)
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss * 65536.0, z)
    assert grad.dtype == dtype
    z64 = z.detach().double().requires_grad_()
    (exact,) = torch.autograd.grad(reference.bikl_loss(z64, target.double(), 0.0) * 65536.0, z64)
    torch.testing.assert_close(grad.double(), exact.to(dtype).double(), rtol=2 * torch.finfo(dtype).eps,
                               atol=exact.abs().max().item() * 1e-3)
    f = torch.randn(8, 10, device="cuda", dtype=dtype, requires_grad=True)
    assert ops.scl_loss(f, torch.randn(16, 10, device="cuda", dtype=dtype)).dtype == torch.float32
    for args in ((z, target, 0.85), (z.detach(), target, 0.0)):
        torch.library.opcheck(torch.ops.unlearnx.bikl_loss.default, args)
    torch.library.opcheck(torch.ops.unlearnx._bikl_loss_fwd.default, (z.detach(), target, 0.85))


def _bad_inputs():
    z, t = torch.randn(4, 3), torch.full((4, 3), 1 / 3)
    return [
        (lambda: ops.bikl_loss(torch.randn(3), t), ValueError, r"logits must be 2-D \[batch, classes\], got shape \(3,\)"),
        (lambda: ops.bikl_loss(z, t[:2]), ValueError, r"target must have the shape of logits \(4, 3\), got \(2, 3\)"),
        (lambda: ops.bikl_loss(z, t.double()), TypeError, r"target has dtype torch.float64 but logits has torch.float32"),
        (lambda: ops.bikl_loss(z.long(), t), TypeError, r"logits must have dtype float32, float64 on cpu"),
        (lambda: ops.bikl_loss(z.half(), t.half()), TypeError, r"logits must have dtype float32, float64 on cpu, got torch.float16"),
        (lambda: ops.bikl_loss([[1.0]], t), TypeError, r"logits must be a torch.Tensor, got list"),
        (lambda: ops.bikl_loss(torch.empty(0, 3), torch.empty(0, 3)), ValueError, r"logits must be non-empty"),
        (lambda: ops.bikl_loss(z, t.requires_grad_()), ValueError, r"target must not require grad"),
        (lambda: ops.bikl_loss(z, t, "0.85"), TypeError, r"reverse_weight must be a number, got str"),
        (lambda: ops.scl_loss(z, torch.randn(5, 4)), ValueError, r"retain_logits has 4 classes but forget_logits has 3"),
        (lambda: ops.scl_loss(z, torch.randn(5)), ValueError, r"retain_logits must be 2-D"),
        (lambda: ops.scl_loss(z, z, 0.0), ValueError, r"temperature must be > 0, got 0.0"),
        (lambda: ops.scl_loss(z, z.double()), TypeError, r"retain_logits has dtype torch.float64"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_raise_clear_errors(case):
    fn, exc, pattern = _bad_inputs()[case]
    with pytest.raises(exc, match=pattern):
        fn()


@needs_ext
def test_direct_op_calls_are_checked_in_cpp():
    with pytest.raises(ValueError, match="bikl_loss: target must have the shape of logits"):
        torch.ops.unlearnx.bikl_loss(torch.randn(4, 3), torch.randn(4, 2), 1.0)
    with pytest.raises(ValueError, match="scl_loss: temperature must be > 0"):
        torch.ops.unlearnx.scl_loss(torch.randn(4, 3), torch.randn(4, 3), -1.0)
    with pytest.raises(ValueError, match="CPU supports float32 and float64"):
        torch.ops.unlearnx.bikl_loss(torch.randn(4, 3).half(), torch.randn(4, 3).half(), 1.0)


def test_select_and_backends():
    fused = ops.select(True)
    plain = ops.select(False)
    assert plain.bikl_loss is reference.bikl_loss and plain.masked_reinit_ is reference.masked_reinit_
    assert fused.scl_loss is ops.scl_loss and fused.fused == ops.fused_available()
    assert set(ops.backends()) == {"cpu", "cuda"}
    assert ops.backends()["cpu"] == ops.fused_available()
    z, t = torch.randn(8, 10), torch.full((8, 10), 0.1)
    torch.testing.assert_close(fused.bikl_loss(z, t, 0.85), plain.bikl_loss(z, t, 0.85))
    assert re.search("float32", str(z.dtype))
