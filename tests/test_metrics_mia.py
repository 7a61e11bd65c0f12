"""Membership-inference attacks (docs/metric.md §7, §8): sanity, directions, exact definitions, bad input."""
import numpy as np
import pytest
import torch

from unlearnx.metrics.mia import (
    MIA_INFO,
    SVC_FEATURES,
    entropy_lr_mia,
    simple_mia,
    svc_features,
    svc_mia,
    svc_mia_all,
)


def _probs(rng, n, margin, num_classes=4):
    """Softmax outputs whose true class leads by ``margin`` logits on average (confident = member-like)."""
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(0.0, 1.0, (n, num_classes))
    logits[np.arange(n), labels] += margin
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), labels


# --------------------------------------------------------------------------------------------------
# simple_mia (starting kit)
# --------------------------------------------------------------------------------------------------
def test_simple_mia_separable_losses_are_found():
    rng = np.random.default_rng(0)
    assert simple_mia(rng.uniform(0.0, 0.1, 300), rng.uniform(2.0, 3.0, 200)) == pytest.approx(1.0)


def test_simple_mia_identical_distributions_are_chance():
    rng = np.random.default_rng(1)
    value = simple_mia(rng.exponential(1.0, 2000), rng.exponential(1.0, 1500))
    assert value == pytest.approx(0.5, abs=0.05)


def test_simple_mia_matches_starting_kit_recipe():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    rng = np.random.default_rng(2)
    forget, test = rng.gamma(1.0, 0.5, 120), rng.gamma(1.5, 0.5, 80)
    kept = forget[np.random.default_rng(7).permutation(120)[:80]]  # seeded shuffle + truncate the larger set
    samples = np.concatenate([test, kept]).reshape(-1, 1)
    members = [0] * 80 + [1] * 80
    expected = cross_val_score(LogisticRegression(), samples, members,
                               cv=StratifiedShuffleSplit(n_splits=10, random_state=7), scoring="accuracy").mean()
    assert simple_mia(forget, test, seed=7) == expected
    # torch tensors and [N, 1] columns are the same input
    assert simple_mia(torch.from_numpy(forget), torch.from_numpy(test[:, None]), seed=7) == expected
    assert simple_mia(forget, test, seed=7) == simple_mia(forget, test, seed=7)  # deterministic


def test_simple_mia_truncates_the_larger_side_either_way():
    rng = np.random.default_rng(3)
    small, large = rng.normal(0, 1, 30), rng.normal(3, 1, 300)
    assert simple_mia(large, small) > 0.8 and simple_mia(small, large) > 0.8


@pytest.mark.parametrize("forget, test, exc, match", [
    ([], [1.0] * 10, ValueError, "forget_losses is empty"),
    ([1.0] * 10, [], ValueError, "test_losses is empty"),
    ([1.0, np.nan] + [1.0] * 8, [1.0] * 10, ValueError, r"forget_losses contains NaN or inf \(first at index 1\)"),
    ([1.0] * 10, [np.inf] * 10, ValueError, "test_losses contains NaN or inf"),
    ([1.0] * 5, [1.0] * 10, ValueError, "at least 6 losses on each side"),
    (np.ones((10, 2)), [1.0] * 10, ValueError, "1-D"),
    (["a"] * 10, [1.0] * 10, TypeError, "numeric"),
    (None, [1.0] * 10, ValueError, "forget_losses is None"),
])
def test_simple_mia_bad_input(forget, test, exc, match):
    with pytest.raises(exc, match=match):
        simple_mia(forget, test)


def test_simple_mia_bad_n_splits():
    with pytest.raises(ValueError, match="n_splits"):
        simple_mia([1.0] * 10, [2.0] * 10, n_splits=0)


# --------------------------------------------------------------------------------------------------
# SVC family
# --------------------------------------------------------------------------------------------------
def test_svc_features_definitions():
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.5, 0.3]])
    y = np.array([0, 3])
    assert svc_features(p, y, "correctness")[:, 0].tolist() == [1.0, 0.0]
    assert svc_features(p, y, "confidence")[:, 0].tolist() == [0.7, 0.3]
    entropy = svc_features(p, y, "entropy")[:, 0]
    assert entropy[0] == pytest.approx(-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)))  # 0 log 0 = 0
    # Song & Mittal: -(1 - p_y) log p_y - sum_{j != y} p_j log(1 - p_j)
    m = svc_features(p, y, "m_entropy")[:, 0]
    assert m[0] == pytest.approx(-(0.3 * np.log(0.7)) - (0.2 * np.log(0.8) + 0.1 * np.log(0.9)))
    assert m[1] == pytest.approx(-(0.7 * np.log(0.3)) - (0.1 * np.log(0.9) * 2 + 0.5 * np.log(0.5)))
    # the OPTML code: columns of every label in the set (0 and 3) reversed, log p kept, log 0 -> log 1e-30
    compat = svc_features(p, y, "m_entropy_compat")[:, 0]
    log = lambda v: np.log(v) if v > 0 else np.log(1e-30)  # noqa: E731
    assert compat[0] == pytest.approx(-(0.3 * log(0.7) + 0.2 * log(0.2) + 0.1 * log(0.1) + 1.0 * log(0.0)))
    assert compat[1] == pytest.approx(-(0.9 * log(0.1) + 0.1 * log(0.1) + 0.5 * log(0.5) + 0.7 * log(0.3)))
    np.testing.assert_array_equal(svc_features(p, y, "prob"), p)


@pytest.mark.parametrize("feature", SVC_FEATURES)
def test_svc_mia_direction(feature):
    rng = np.random.default_rng(4)
    members, non_members = _probs(rng, 200, 6.0), _probs(rng, 200, 0.0)
    remembered = svc_mia(members, non_members, _probs(rng, 150, 6.0), feature)
    forgotten = svc_mia(members, non_members, _probs(rng, 150, 0.0), feature)
    assert remembered < 0.35 < 0.6 < forgotten, (remembered, forgotten)  # fraction predicted non-member


def test_svc_mia_all_and_tensor_input():
    rng = np.random.default_rng(5)
    members, non_members, target = _probs(rng, 80, 5.0), _probs(rng, 80, 0.5), _probs(rng, 40, 0.5)
    as_torch = lambda pair: (torch.from_numpy(pair[0]).float(), torch.from_numpy(pair[1]))  # noqa: E731
    everything = svc_mia_all(members, non_members, target)
    assert set(everything) == {f"mia.svc.{f}" for f in SVC_FEATURES} and set(everything) <= set(MIA_INFO)
    assert svc_mia(as_torch(members), as_torch(non_members), as_torch(target), "confidence") == pytest.approx(
        everything["mia.svc.confidence"], abs=0.05)


@pytest.mark.parametrize("target, match", [
    ((np.zeros((0, 4)), np.zeros(0, dtype=int)), "empty"),
    ((np.full((3, 4), 0.25), np.array([0, 1])), "3 probability rows but 2 labels"),
    ((np.full((3, 4), 0.25), np.array([0, 1, 4])), "out of range for 4 classes"),
    ((np.full((3, 4), np.nan), np.array([0, 1, 2])), "NaN or inf"),
    ((np.full((3, 4), 2.0), np.array([0, 1, 2])), "softmax probabilities"),
    ((np.full((3, 3), 1 / 3), np.array([0, 1, 2])), "different class counts"),
])
def test_svc_mia_bad_input(target, match):
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match=match):
        svc_mia(_probs(rng, 20, 3.0), _probs(rng, 20, 0.0), target, "entropy")


def test_svc_mia_bad_feature_and_pairs():
    rng = np.random.default_rng(7)
    pair = _probs(rng, 20, 3.0)
    with pytest.raises(ValueError, match="feature must be one of"):
        svc_mia(pair, pair, pair, "loss")
    with pytest.raises(TypeError, match=r"shadow_train must be a \(probs, labels\) pair"):
        svc_mia(pair[0], pair, pair, "entropy")
    with pytest.raises(TypeError, match="labels must be integer"):
        svc_mia((pair[0], pair[1].astype(float)), pair, pair, "entropy")


# --------------------------------------------------------------------------------------------------
# entropy logistic regression (SSD)
# --------------------------------------------------------------------------------------------------
def test_entropy_lr_direction():
    rng = np.random.default_rng(8)
    retain, test = _probs(rng, 300, 6.0)[0], _probs(rng, 300, 0.3)[0]
    remembered = entropy_lr_mia(retain, test, _probs(rng, 100, 6.0)[0])
    forgotten = entropy_lr_mia(retain, test, _probs(rng, 100, 0.3)[0])
    assert remembered > 0.8 and forgotten < 0.2  # fraction of forget predicted member


def test_entropy_lr_matches_multinomial_formulation():
    # the original binary "multinomial" model: softmax over two classes, both rows L2-penalised;
    # fit it directly and check the same forget predictions as C = 2 binary logistic regression
    from scipy.optimize import minimize

    rng = np.random.default_rng(9)
    retain, test, forget = _probs(rng, 200, 3.0)[0], _probs(rng, 120, 1.0)[0], _probs(rng, 200, 2.0)[0]
    h = lambda p: -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(1)  # noqa: E731
    x = np.concatenate([h(retain), h(test)])
    y = np.concatenate([np.ones(200), np.zeros(120)])
    weight = np.where(y == 1, 320 / (2 * 200), 320 / (2 * 120))  # class_weight="balanced"

    def objective(theta):  # theta = (w0, b0, w1, b1); sklearn: C * sum(loss) + 0.5 * ||W||^2, C = 1
        z = np.stack([theta[0] * x + theta[1], theta[2] * x + theta[3]], 1)
        log_softmax = z - np.logaddexp(z[:, 0], z[:, 1])[:, None]
        return -(weight * log_softmax[np.arange(y.size), y.astype(int)]).sum() + 0.5 * (theta[0] ** 2 + theta[2] ** 2)

    theta = minimize(objective, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    hf = h(forget)
    multinomial = ((theta[2] - theta[0]) * hf + theta[3] - theta[1] > 0).mean()
    assert entropy_lr_mia(retain, test, forget) == pytest.approx(multinomial, abs=0.01)


@pytest.mark.parametrize("args, exc, match", [
    ((np.zeros((0, 3)), np.full((4, 3), 1 / 3), np.full((4, 3), 1 / 3)), ValueError, "retain_probs is empty"),
    ((np.full((4, 3), 1 / 3), np.full((4, 3), 5.0), np.full((4, 3), 1 / 3)), ValueError, "test_probs must be softmax"),
    ((np.full((4, 3), 1 / 3), np.full((4, 3), 1 / 3), np.full(3, 1 / 3)), ValueError, r"forget_probs must have shape"),
    ((np.full((4, 3), 1 / 3), np.full((4, 3), 1 / 3), np.ones((4, 3), dtype=int)), TypeError, "floating-point"),
])
def test_entropy_lr_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        entropy_lr_mia(*args)


def test_mia_info_names_direction_and_ideal():
    assert {"mia.loss_lr", "mia.entropy_lr"} <= set(MIA_INFO)
    assert {f"mia.svc.{f}" for f in SVC_FEATURES} <= set(MIA_INFO)
    for name, info in MIA_INFO.items():
        assert {"direction", "ideal", "description"} <= set(info), name
    assert "higher" in MIA_INFO["mia.svc.confidence"]["direction"]
    assert "lower" in MIA_INFO["mia.entropy_lr"]["direction"]
