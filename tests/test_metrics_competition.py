"""The competition score (docs/metric.md §2, §9.6): closed-form cases, parity with the official
procedure (unlearnx.metrics._official, a straightforward port with the assert fixed), and bad input."""
import math

import numpy as np
import pytest
import torch

from unlearnx.metrics import competition as comp
from unlearnx.metrics._official import official_example_epsilon, official_forget_score
from unlearnx.metrics.competition import (
    DELTA,
    competition_score,
    epsilon_table,
    forget_score,
    logit_scaled_confidence,
    max_epsilon,
    points,
)


# --------------------------------------------------------------------------------------------------
# logit-scaled confidence
# --------------------------------------------------------------------------------------------------
def test_confidence_is_log_odds_of_true_class():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 3.0, 0.5]])
    conf = logit_scaled_confidence(logits, np.array([0, 2]))
    expected = [2.0 - math.log(1.0 + math.exp(-1.0)), 0.5 - math.log(math.exp(0.5) + math.exp(3.0))]
    np.testing.assert_allclose(conf, expected, rtol=0, atol=1e-12)
    assert conf.dtype == np.float64


def test_confidence_keeps_precision_as_p_y_goes_to_one():
    # p_wrong = 2e^-40 / (1 + 2e^-40); 1 - p_y would round to 0 in float64 and give inf
    conf = logit_scaled_confidence(np.array([[40.0, 0.0, 0.0]]), np.array([0]))
    assert conf[0] == pytest.approx(40.0 - math.log(2.0), abs=1e-9)
    # beyond ~103 the +1e-45 floor dominates: -ln(1e-45) for float64 and float32 logits alike
    for dtype in (np.float64, np.float32):
        sat = logit_scaled_confidence(np.array([[200.0, 0.0]], dtype=dtype), np.array([0]))
        assert sat[0] == pytest.approx(-math.log(1e-45), rel=1e-12)
    # and the wrong class of a saturated model sits at the symmetric floor
    assert logit_scaled_confidence(np.array([[200.0, 0.0]]), np.array([1]))[0] == pytest.approx(
        math.log(1e-45), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_confidence_matches_official_recipe_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(50, 10)) * 8).astype(dtype)
    targets = rng.integers(0, 10, 50)
    before = logits.copy()
    conf = logit_scaled_confidence(logits, targets)
    # the official order: shift and exp in the logits' dtype, normalise and log in float64
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.array(np.exp(z), dtype=np.float64)
    p /= p.sum(axis=1, keepdims=True)
    p_y = p[np.arange(50), targets].copy()
    p[np.arange(50), targets] = 0
    np.testing.assert_array_equal(conf, np.log(p_y + 1e-45) - np.log(p.sum(axis=1) + 1e-45))
    np.testing.assert_array_equal(logits, before)  # the caller's array is not modified
    np.testing.assert_array_equal(logit_scaled_confidence(torch.from_numpy(logits), torch.from_numpy(targets)),
                                  conf)


@pytest.mark.parametrize("logits, targets, match", [
    (np.array([[np.nan, 0.0]]), np.array([0]), "NaN or inf"),
    (np.array([[np.inf, 0.0]]), np.array([0]), "NaN or inf"),
    (np.zeros(3), np.array([0]), r"shape \[N, C\]"),
    (np.zeros((2, 3)), np.array([0]), "targets must have shape"),
    (np.zeros((2, 3)), np.array([0, 3]), r"targets\[1\] = 3 is out of range for 3 classes"),
    (np.zeros((2, 3)), np.array([0, -1]), "out of range"),
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "empty"),
])
def test_confidence_bad_input(logits, targets, match):
    with pytest.raises(ValueError, match=match):
        logit_scaled_confidence(logits, targets)


def test_confidence_rejects_fractional_targets():
    with pytest.raises(TypeError, match="integer class indices"):
        logit_scaled_confidence(np.zeros((2, 3)), np.array([0.5, 1.0]))


# --------------------------------------------------------------------------------------------------
# closed-form forget scores
# --------------------------------------------------------------------------------------------------
def test_identical_values_score_one():
    rng = np.random.default_rng(1)
    confs = rng.normal(size=(16, 5))
    score, eps = forget_score(confs, confs.copy())
    assert score == 1.0 and np.all(eps == 0)
    # same multiset per example in a different model order: still every rule has TPR = FPR
    score, eps = forget_score(confs[rng.permutation(16)], confs)
    assert score == 1.0 and np.all(eps == 0)


def test_disjoint_samples_are_perfectly_separated():
    rng = np.random.default_rng(2)
    unlearned = rng.normal(10.0, 1.0, size=(32, 4))
    retrained = rng.normal(0.0, 1.0, size=(32, 4))
    score, eps = forget_score(unlearned, retrained)
    assert score == 0.0 and np.all(eps == 50.0)


def test_peaky_guard_gives_cap_even_when_distributions_overlap():
    rng = np.random.default_rng(3)
    retrained = rng.normal(0.0, 1.0, size=(64, 3))
    unlearned = np.median(retrained, axis=0) + rng.normal(0.0, 0.001, size=(64, 3))  # range << 1% of R's
    score, eps = forget_score(unlearned, retrained)
    assert score == 0.0 and np.all(eps == 50.0)
    # just above the 1% ratio the attack runs and the score is finite
    wider = np.median(retrained, axis=0) + 0.05 * (retrained - np.median(retrained, axis=0))
    assert np.all(forget_score(wider, retrained)[1] < 50.0)


def test_two_models_never_score():
    confs = np.random.default_rng(4).normal(size=(2, 6))
    score, eps = forget_score(confs, confs)
    assert np.all(eps == 0) and score == 0.0  # max_eps = ceil(ln 1) = 0: no bucket earns points
    assert max_epsilon(2) == 0.0


def test_max_finite_epsilon_one_error_each_way():
    # one low positive and one high negative: the best rule errs once each way, no rule separates
    n = 8
    pos = np.array([10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 0.5])
    neg = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 10.55])
    eps = forget_score(pos[:, None], neg[:, None])[1][0]
    assert eps == pytest.approx(math.log(n * (1 - DELTA) - 1), rel=1e-6)
    assert eps == float(epsilon_table(n)[1, 1])  # the float32 value of the official arithmetic
    # at N = 512 the largest finite epsilon is 6.2364 < 6.5, as metric.md §2H says
    assert float(epsilon_table(512)[1, 1]) == pytest.approx(6.2364, abs=1e-4)


def test_both_sides_constant_policy():
    equal = np.full((8, 1), 3.0)
    assert forget_score(equal, equal.copy())[1][0] == 0.0  # indistinguishable
    # two different constants are separated (the cap), however close
    for gap in (5.0, 1e-4):
        assert forget_score(equal + gap, equal)[1][0] == 50.0
        assert forget_score(equal, equal + gap)[1][0] == 50.0


def test_all_rules_discarded_is_zero_where_official_asserts():
    unlearned = np.array([0.0004, 0.0025, 0.0015])
    retrained = np.array([0.0, 0.001, 0.0017])
    with pytest.raises(AssertionError, match="all thresholds gave nan"):
        official_example_epsilon(unlearned, retrained)  # unlearned has the larger median: positive
    assert forget_score(unlearned[:, None], retrained[:, None])[1][0] == 0.0


def test_orientation_tie_puts_unlearned_positive():
    # equal medians: the official code makes U the positive class; the score must match the oracle,
    # and swapping the roles (now R positive via the tie rule) changes which sample is "positive"
    unlearned = np.array([-3.0, -1.0, 0.0, 0.1, 0.2])[:, None]
    retrained = np.array([-0.2, -0.1, 0.0, 1.0, 3.0])[:, None]
    eps = forget_score(unlearned, retrained)[1]
    np.testing.assert_array_equal(eps, official_forget_score(unlearned, retrained)[1])
    direct = official_example_epsilon(unlearned[:, 0], retrained[:, 0])
    assert eps[0] == direct


def test_identical_gaussians_score_about_0_18_at_512_models():
    # metric.md §5: a perfect unlearner gets F ~ 0.18 at N = 512, typical epsilon ln 5
    rng = np.random.default_rng(5)
    unlearned = rng.normal(size=(512, 120))
    retrained = rng.normal(size=(512, 120))
    score, eps = forget_score(unlearned, retrained)
    assert score == pytest.approx(0.18, abs=0.03)
    assert 1.2 < np.median(eps) < 2.1
    assert np.all((eps > 0) & (eps < 7))


def test_mean_shift_lowers_the_score():
    rng = np.random.default_rng(6)
    retrained = rng.normal(size=(128, 40))
    same = forget_score(rng.normal(size=(128, 40)), retrained)[0]
    shifted = forget_score(rng.normal(1.0, 1.0, size=(128, 40)), retrained)[0]
    assert shifted < same / 2


# --------------------------------------------------------------------------------------------------
# parity with the official procedure
# --------------------------------------------------------------------------------------------------
def _random_case(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.choice([3, 8, 13, 32]))
    scale = float(rng.choice([0.01, 0.2, 1.0, 4.0]))
    unlearned = rng.normal(rng.choice([0.0, 0.3, 1.0, 3.0]) * scale, scale * rng.choice([1.0, 0.3, 1.5]), (n, 3))
    retrained = rng.normal(0.0, scale, (n, 3))
    kind = seed % 5
    if kind == 1:  # dyadic values: ties everywhere, thresholds and interval edges land exactly on data
        unlearned, retrained = np.round(unlearned * 8) / 8, np.round(retrained * 8) / 8
    elif kind == 2:  # same multiset, and the same shifted by one grid-friendly step
        retrained = unlearned[rng.permutation(n)] + rng.choice([0.0, 0.125], size=(1, 3))
    elif kind == 3:  # equal medians and duplicated values
        unlearned[:, 0] = retrained[:, 0]
        unlearned[: n // 2, 1] = np.median(retrained[:, 1])
        retrained[:, 2] = retrained[0, 2]
    elif kind == 4:  # heavy tails: long single-threshold grids
        unlearned = unlearned + rng.standard_cauchy((n, 3)) * scale
    return unlearned, retrained


@pytest.mark.parametrize("seed, compat", [(seed, True) for seed in range(12)] + [(seed, False) for seed in range(6)])
def test_vectorised_equals_official_port(seed, compat):
    unlearned, retrained = _random_case(seed)
    score, eps = forget_score(unlearned, retrained, compat=compat)
    # the batched torch backend (the CUDA path) must agree too
    np.testing.assert_array_equal(eps, forget_score(unlearned, retrained, compat=compat, backend="torch",
                                                    chunk_size=3)[1])
    pos_is_r = np.median(retrained, 0) > np.median(unlearned, 0)
    oracle_asserted = False
    for i in range(eps.size):
        p, q = (retrained[:, i], unlearned[:, i]) if pos_is_r[i] else (unlearned[:, i], retrained[:, i])
        try:
            expected = min(official_example_epsilon(p, q, compat=compat), 50.0)
        except AssertionError:  # every rule discarded: the official code has no answer, ours is 0
            oracle_asserted, expected = True, 0.0
        assert eps[i] == expected, (i, eps[i], expected)
    if not oracle_asserted:
        assert (score, list(eps)) == (lambda r: (r[0], list(r[1])))(
            official_forget_score(unlearned, retrained, compat=compat))


def test_torch_and_float32_inputs_are_accepted():
    unlearned, retrained = _random_case(1)
    expected = forget_score(unlearned, retrained)
    got = forget_score(torch.from_numpy(unlearned), torch.from_numpy(retrained))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    # float32 confidences are widened exactly, so they score like their float64 copies
    u32, r32 = unlearned.astype(np.float32), retrained.astype(np.float32)
    np.testing.assert_array_equal(forget_score(u32, r32)[1], forget_score(u32.astype(float), r32.astype(float))[1])


def test_threads_do_not_change_results():
    unlearned, retrained = _random_case(7)
    one = forget_score(unlearned, retrained, num_threads=1)[1]
    np.testing.assert_array_equal(one, forget_score(unlearned, retrained, num_threads=3)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_cuda_tensors_match_cpu():
    unlearned, retrained = _random_case(2)
    cpu = forget_score(unlearned, retrained)[1]
    gpu = forget_score(torch.from_numpy(unlearned).cuda(), torch.from_numpy(retrained).cuda())[1]
    np.testing.assert_array_equal(cpu, gpu)


# --------------------------------------------------------------------------------------------------
# rule table, points, final score
# --------------------------------------------------------------------------------------------------
def test_epsilon_table_rules():
    n = 16
    table = epsilon_table(n)
    assert table.dtype == np.float32 and epsilon_table(n, compat=False).dtype == np.float64
    assert table[0, 0] == np.inf  # perfect separation
    assert np.isnan(table[0, 1:]).all() and np.isnan(table[1:, 0]).all()  # exactly one rate is zero
    assert np.isnan(table[n, n])  # FPR = FNR = 1: both log terms NaN, rule dropped
    finite = table[1:, 1:]
    np.testing.assert_array_equal(finite, finite.T)
    assert all(table[i, n - i] == 0 for i in range(1, n))  # TPR = FPR: no information
    assert table[1, 1] > table[1, 2] > table[2, 2]


def test_points_bucket_edges_match_official_loop():
    eps = np.array([0.0, 0.4999, 0.5, 0.9999, 1.0, 3.0, 6.4999, 6.5, 6.9999, 7.0, 50.0])
    expected = [1, 1, 0.5, 0.5, 0.25, 2 ** -6, 2 ** -12, 2 ** -13, 2 ** -13, 0, 0]
    np.testing.assert_array_equal(points(eps, 512), expected)
    # the same through the official loop (oracle) on constructed per-example epsilons
    for n in (3, 64, 128, 256, 512, 1024):
        grid = np.arange(0, 8.5, 0.25)
        for e in grid:
            top, start, value, official = max_epsilon(n), 0.0, 1.0, 0.0
            while start + 0.5 <= top:
                if e < start + 0.5:
                    official = value
                    break
                value /= 2
                start += 0.5
            assert points(e, n) == official, (n, e)


@pytest.mark.parametrize("n, top", [(2, 0), (3, 1), (64, 5), (128, 5), (256, 6), (512, 7), (1024, 7)])
def test_max_epsilon(n, top):
    assert max_epsilon(n) == top


def test_points_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        points([np.nan], 512)
    with pytest.raises(ValueError, match=">= 0"):
        points([-0.1], 512)
    with pytest.raises(ValueError, match="n_models must be >= 2"):
        points([0.1], 1)
    with pytest.raises(TypeError, match="n_models must be an int"):
        points([0.1], 512.0)


def test_competition_score_arithmetic_and_unclipped_ratios():
    assert competition_score(0.5, 90.0, 100.0, 80.0, 100.0) == pytest.approx(0.5 * 0.9 * 0.8)
    assert competition_score(0.2, 0.99, 0.98, 0.96, 0.95) == pytest.approx(0.2 * (0.99 / 0.98) * (0.96 / 0.95))
    assert competition_score(0.2, 0.99, 0.98, 0.96, 0.95) > 0.2  # ratios above 1 raise the score
    assert competition_score(0.0, 50, 99, 50, 99) == 0.0


@pytest.mark.parametrize("args, exc, match", [
    ((0.5, 90, 0, 80, 100), ValueError, "ra_r"),
    ((0.5, 90, 100, 80, 0), ValueError, "ta_r"),
    ((1.5, 90, 100, 80, 100), ValueError, r"forget_score must be in \[0, 1\]"),
    ((0.5, float("nan"), 100, 80, 100), ValueError, "ra_u must be finite"),
    ((0.5, -1, 100, 80, 100), ValueError, "ra_u must be >= 0"),
    ((0.5, "x", 100, 80, 100), TypeError, "ra_u must be a number"),
])
def test_competition_score_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        competition_score(*args)


@pytest.mark.parametrize("unlearned, retrained, exc, match", [
    (np.zeros((4, 3)), np.zeros((4, 2)), ValueError, "same shape"),
    (np.zeros((4, 3)), np.zeros((5, 3)), ValueError, "same shape"),
    (np.zeros(4), np.zeros(4), ValueError, r"\[num_models, num_examples\]"),
    (np.zeros((1, 3)), np.zeros((1, 3)), ValueError, "at least 2 models"),
    (np.zeros((4, 0)), np.zeros((4, 0)), ValueError, "no examples"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((2, 2)), ValueError,
     r"unlearned_confs contains NaN or inf \(model 0, example 1\)"),
    (np.zeros((2, 2)), np.array([[0.0, 1.0], [np.inf, 2.0]]), ValueError, "retrained_confs contains NaN or inf"),
    (np.array([["a", "b"], ["c", "d"]]), np.zeros((2, 2)), TypeError, "numeric"),
])
def test_forget_score_bad_input(unlearned, retrained, exc, match):
    with pytest.raises(exc, match=match):
        forget_score(unlearned, retrained)


def test_forget_score_bad_options():
    confs = np.zeros((4, 2))
    with pytest.raises(ValueError, match="delta"):
        forget_score(confs, confs, delta=1.5)
    with pytest.raises(ValueError, match="backend"):
        forget_score(confs, confs, backend="cuda")
    with pytest.raises(ValueError, match="num_threads"):
        forget_score(confs, confs, num_threads=0)
    assert comp.forget_epsilons(confs, confs).shape == (2,)
