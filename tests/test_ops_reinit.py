"""masked_reinit_: exact O(n) selection, untouched entries, statistics of the fresh values, seeds."""
import pytest
import torch

from unlearnx import ops
from unlearnx.ops import reference

needs_ext = pytest.mark.skipif(not ops.fused_available(), reason="unlearnx._C not built: fused ops unavailable")
needs_cuda_kernels = pytest.mark.skipif(not (torch.cuda.is_available() and ops.backends()["cuda"]),
                                        reason="requires a CUDA device and unlearnx built with CUDA kernels")


def _pair(shape, dtype=torch.float32, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g, dtype=dtype)
    scores = torch.randint(0, 5, shape, generator=g).to(dtype) if ties else torch.randn(shape, generator=g, dtype=dtype)
    return weight, scores


@needs_ext
@pytest.mark.parametrize("shape", [(1,), (10,), (64, 3, 3, 3), (257, 13)])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_mask_is_exact(shape, fraction, largest, ties):
    weight, scores = _pair(shape, ties=ties)
    before = weight.clone()
    mask = ops.masked_reinit_(weight, scores, fraction, 0.1, largest=largest, seed=1)
    k = round(fraction * weight.numel())
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert int(mask.sum()) == k
    # exactly the k smallest (largest): every selected score is <= (>=) every unselected one ...
    if 0 < k < weight.numel():
        sel, rest = scores[mask], scores[~mask]
        assert (sel.max() <= rest.min()) if not largest else (sel.min() >= rest.max())
    # ... with ties taken in index order, as the stable-sort reference
    ref_mask = reference.masked_reinit_(before.clone(), scores, fraction, 0.1, largest=largest, seed=1)
    assert torch.equal(mask, ref_mask)
    # untouched entries are bit-identical
    assert torch.equal(weight[~mask], before[~mask])


@needs_ext
def test_rounding_is_half_even_like_python():
    for n, fraction in [(10, 0.25), (10, 0.35), (3, 0.5), (5, 0.5)]:
        weight, scores = _pair((n,))
        assert int(ops.masked_reinit_(weight, scores, fraction, 1.0, seed=0).sum()) == round(fraction * n)


@needs_ext
def test_special_values_order():
    # -0.0 ties with +0.0 (index order), NaN ranks above +inf
    scores = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -1.0, 0.0, float("-inf")])
    for largest in (False, True):
        for fraction in (2 / 7, 3 / 7, 4 / 7, 5 / 7):
            m = ops.masked_reinit_(torch.zeros(7), scores, fraction, 1.0, largest=largest, seed=0)
            r = reference.masked_reinit_(torch.zeros(7), scores, fraction, 1.0, largest=largest, seed=0)
            assert torch.equal(m, r), (largest, fraction, m, r)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeded_values_equal_reference_bitwise(dtype):
    weight, scores = _pair((300, 7), dtype=dtype)
    w_ref = weight.clone()
    ops.masked_reinit_(weight, scores, 0.3, 0.05, seed=1234)
    reference.masked_reinit_(w_ref, scores, 0.3, 0.05, seed=1234)
    assert torch.equal(weight, w_ref)


@needs_ext
def test_seed_reproducible_and_distinct():
    weight, scores = _pair((1000,))
    a, b, c = weight.clone(), weight.clone(), weight.clone()
    ops.masked_reinit_(a, scores, 0.5, 1.0, seed=7)
    ops.masked_reinit_(b, scores, 0.5, 1.0, seed=7)
    ops.masked_reinit_(c, scores, 0.5, 1.0, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@needs_ext
def test_seed_none_follows_manual_seed():
    weight, scores = _pair((1000,))
    a, b, c, r = (weight.clone() for _ in range(4))
    torch.manual_seed(42)
    ops.masked_reinit_(a, scores, 0.5, 1.0)
    ops.masked_reinit_(c, scores, 0.5, 1.0)  # the generator moved on: different values
    torch.manual_seed(42)
    ops.masked_reinit_(b, scores, 0.5, 1.0)
    torch.manual_seed(42)
    reference.masked_reinit_(r, scores, 0.5, 1.0)
    assert torch.equal(a, b) and torch.equal(a, r) and not torch.equal(a, c)


@needs_ext
def test_reinit_statistics():
    weight = torch.full((1 << 20,), 7.0)
    scores = torch.rand(1 << 20, generator=torch.Generator().manual_seed(0))
    mask = ops.masked_reinit_(weight, scores, 0.5, 0.02, seed=3)
    fresh = weight[mask].double()
    k = fresh.numel()
    assert k == 1 << 19
    assert abs(fresh.mean().item()) < 5 * 0.02 / k ** 0.5
    assert abs(fresh.std().item() / 0.02 - 1) < 0.01
    assert torch.all(weight[~mask] == 7.0)
    assert bool((scores[mask] <= 0.5 + 1e-3).all())  # the smallest half of U(0, 1)


@needs_ext
def test_non_contiguous_weight_and_parameter():
    base, scores = _pair((40, 30))
    weight = base.clone().t()  # non-contiguous view, modified in place through the view
    assert not weight.is_contiguous()
    before = weight.clone()
    mask = ops.masked_reinit_(weight, scores.t(), 0.3, 0.1, seed=0)
    assert int(mask.sum()) == round(0.3 * 1200)
    assert torch.equal(weight[~mask], before[~mask]) and not torch.equal(weight[mask], before[mask])
    param = torch.nn.Parameter(torch.randn(64, 3, 3, 3))
    grad_scores = torch.randn(64, 3, 3, 3).abs()
    mask = ops.masked_reinit_(param, grad_scores, 0.3, 0.05, largest=True, seed=0)
    assert param.requires_grad and int(mask.sum()) == round(0.3 * param.numel())


@needs_ext
def test_opcheck_masked_reinit():
    weight, scores = _pair((16, 5))
    op = torch.ops.unlearnx.masked_reinit_.default
    torch.library.opcheck(op, (weight.clone(), scores, 0.3, 0.1, False, 11))
    torch.library.opcheck(op, (weight.clone(), scores, 0.3, 0.1, True, 11))
    # seed=None draws from the global generator, so only checks that do not compare two runs
    torch.library.opcheck(op, (weight.clone(), scores, 0.3, 0.1, False, None),
                          test_utils=("test_schema", "test_faketensor"))


def _reinit_conv(weight, scores):
    return ops.masked_reinit_(weight, scores, 0.3, 0.1, seed=5)


@needs_ext
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    compiled = torch.compile(_reinit_conv, fullgraph=True, backend="aot_eager")
    weight, scores = _pair((32, 3, 3, 3))
    eager_w = weight.clone()
    mask = compiled(weight, scores)
    eager_mask = _reinit_conv(eager_w, scores)
    assert torch.equal(mask, eager_mask) and torch.equal(weight, eager_w)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("largest", [False, True])
def test_cuda_mask_matches_cpu(dtype, largest):
    for ties in (False, True):
        weight, scores = _pair((513, 31), dtype=torch.float32, ties=ties)
        scores = scores.to(dtype)
        cpu_mask = reference.masked_reinit_(weight.clone(), scores.float(), 0.3, 0.1, largest=largest, seed=0)
        w_gpu = weight.to("cuda", dtype)
        before = w_gpu.clone()
        gpu_mask = ops.masked_reinit_(w_gpu, scores.cuda(), 0.3, 0.1, largest=largest, seed=0)
        assert torch.equal(gpu_mask.cpu(), cpu_mask)
        assert torch.equal(w_gpu[~gpu_mask], before[~gpu_mask])


@needs_cuda_kernels
@pytest.mark.parametrize("largest", [False, True])
def test_cuda_subnormal_scores_rank_above_zero(largest):
    # Tiny gradients (what msg ranks) are subnormal: a flush-to-zero compare would tie them with 0.
    tiny = torch.finfo(torch.float32).tiny
    scores = torch.zeros(4096)
    scores[1::2] = torch.linspace(0.01, 0.9, 2048) * tiny
    scores[::5] = -scores[::5]
    expected = reference.masked_reinit_(torch.zeros(4096), scores, 0.25, 0.1, largest=largest, seed=0)
    got = ops.masked_reinit_(torch.zeros(4096, device="cuda"), scores.cuda(), 0.25, 0.1, largest=largest, seed=0)
    assert torch.equal(got.cpu(), expected)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_values_match_reference_for_a_seed(dtype):
    # k draws in the weight's dtype from the CUDA generator, written in index order, as the reference does.
    weight, scores = _pair((513, 31), dtype=torch.float32, ties=True)
    w_ref, w_gpu = weight.to("cuda", dtype), weight.to("cuda", dtype)
    ref_mask = reference.masked_reinit_(w_ref, scores.cuda().to(dtype), 0.3, 0.1, seed=4)
    mask = ops.masked_reinit_(w_gpu, scores.cuda().to(dtype), 0.3, 0.1, seed=4)
    assert torch.equal(mask, ref_mask) and torch.equal(w_gpu, w_ref)


@needs_cuda_kernels
def test_cuda_statistics_and_seeds():
    weight = torch.zeros(1 << 20, device="cuda")
    scores = torch.rand(1 << 20, device="cuda")
    a = weight.clone()
    mask = ops.masked_reinit_(a, scores, 0.5, 0.02, seed=3)
    fresh = a[mask].double()
    assert abs(fresh.std().item() / 0.02 - 1) < 0.01 and abs(fresh.mean().item()) < 5 * 0.02 / fresh.numel() ** 0.5
    b = weight.clone()
    ops.masked_reinit_(b, scores, 0.5, 0.02, seed=3)
    assert torch.equal(a, b)
    torch.manual_seed(1)
    c = weight.clone()
    ops.masked_reinit_(c, scores, 0.5, 0.02)
    torch.manual_seed(1)
    d = weight.clone()
    ops.masked_reinit_(d, scores, 0.5, 0.02)
    assert torch.equal(c, d)


def _bad_inputs():
    w, s = torch.randn(4, 3), torch.randn(4, 3)
    return [
        (lambda: ops.masked_reinit_(w, s[:2], 0.3, 0.1), ValueError, r"scores must have the shape of weight \(4, 3\), got \(2, 3\)"),
        (lambda: ops.masked_reinit_(w, s, 1.5, 0.1), ValueError, r"fraction must be in \[0, 1\], got 1.5"),
        (lambda: ops.masked_reinit_(w, s, 0.3, -1.0), ValueError, r"std must be >= 0, got -1.0"),
        (lambda: ops.masked_reinit_(w, s, 0.3, 0.1, seed=-1), ValueError, r"seed must be None or an int"),
        (lambda: ops.masked_reinit_(w, s, 0.3, 0.1, seed=1.5), ValueError, r"seed must be None or an int"),
        (lambda: ops.masked_reinit_(w.long(), s, 0.3, 0.1), TypeError, r"weight must be a floating-point"),
        (lambda: ops.masked_reinit_(w, s.long(), 0.3, 0.1), TypeError, r"scores must be a floating-point"),
        (lambda: ops.masked_reinit_(w.half(), s, 0.3, 0.1), TypeError, r"weight must have dtype float32, float64 on cpu"),
        (lambda: ops.masked_reinit_(w, s, "0.3", 0.1), TypeError, r"fraction must be a number, got str"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_inputs_raise_clear_errors(case):
    fn, exc, pattern = _bad_inputs()[case]
    with pytest.raises(exc, match=pattern):
        fn()
