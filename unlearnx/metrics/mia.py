"""Membership-inference attacks (MIAs) as peers report them, each named, with direction and ideal.

"MIA" means different numbers in different codebases (docs/metric.md §8): attack accuracy (the starting
kit), the fraction of forget samples flagged non-member (SVC family, Unlearn-Sparse/SalUn), the
fraction flagged member (entropy-LR, SSD). Always report the variant's name from :data:`MIA_INFO`, its
direction, and the retrained model's value beside it.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["MIA_INFO", "SVC_FEATURES", "simple_mia", "svc_mia", "svc_mia_all", "entropy_lr_mia",
           "svc_features"]

SVC_FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "m_entropy_compat", "prob")

_SVC_DIRECTION = "higher = more forgetting (compare with the retrained model, not 1.0)"
MIA_INFO: dict[str, dict[str, str]] = {
    "mia.loss_lr": {
        "function": "simple_mia",
        "direction": "closer to the retrained model's value = better",
        "ideal": "retrained model's value (about 0.5)",
        "description": "starting kit: logistic regression on per-example CE loss, forget (member) vs test "
                       "(non-member), classes balanced, mean accuracy over 10 stratified shuffle splits",
    },
    **{
        f"mia.svc.{feature}": {
            "function": f"svc_mia(..., feature='{feature}')",
            "direction": _SVC_DIRECTION,
            "ideal": "retrained model's value",
            "description": description,
        }
        for feature, description in (
            ("correctness", "SVC (C=3, rbf) on 1[argmax p = y], shadow retain vs test; fraction of forget "
                            "samples predicted non-member (MIA-efficacy)"),
            ("confidence", "SVC on p_y; fraction of forget predicted non-member (SalUn's reported 'MIA')"),
            ("entropy", "SVC on -sum p log p; fraction of forget predicted non-member"),
            ("m_entropy", "SVC on Song & Mittal's modified entropy -(1-p_y) log p_y - sum_{j!=y} p_j "
                          "log(1-p_j) (corrected); fraction of forget predicted non-member"),
            ("m_entropy_compat", "SVC on the OPTML code's modified entropy, bug-compatible (log p for the "
                                 "reversed terms, columns of every label in the set reversed); fraction of "
                                 "forget predicted non-member"),
            ("prob", "SVC on the whole probability vector; fraction of forget predicted non-member"),
        )
    },
    "mia.entropy_lr": {
        "function": "entropy_lr_mia",
        "direction": "lower = more forgetting (compare with the retrained model)",
        "ideal": "retrained model's value",
        "description": "SSD style: balanced logistic regression on softmax entropy, retain (member) vs "
                       "test (non-member), full sets; fraction of forget samples predicted member",
    },
}


# ---------------------------------------------------------------------------------------------------
def simple_mia(forget_losses, test_losses, n_splits: int = 10, seed: int = 0) -> float:
    """The starting kit's MIA: mean CV accuracy of a logistic regression telling forget from test losses.

    Features are the 1-D per-example losses; label 1 = forget (member), 0 = test. The larger set is
    shuffled with ``np.random.default_rng(seed)`` and truncated to the smaller one's size (the kit shuffles
    the forget set unseeded); ``LogisticRegression()`` defaults; ``StratifiedShuffleSplit(n_splits,
    random_state=seed)`` with its default 10% test size; returns the mean accuracy over the splits.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    forget = _as_1d(forget_losses, "forget_losses")
    test = _as_1d(test_losses, "test_losses")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
    size = min(forget.size, test.size)
    if size < 6:  # 10% test split of 2 * size samples must hold one of each class
        raise ValueError(f"simple_mia needs at least 6 losses on each side, got {forget.size} forget and "
                         f"{test.size} test")
    rng = np.random.default_rng(seed)
    if forget.size > size:
        forget = forget[rng.permutation(forget.size)[:size]]
    elif test.size > size:
        test = test[rng.permutation(test.size)[:size]]
    samples = np.concatenate([test, forget]).reshape(-1, 1)
    members = np.concatenate([np.zeros(size, dtype=np.int64), np.ones(size, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=int(n_splits), random_state=seed)
    scores = cross_val_score(LogisticRegression(), samples, members, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def svc_features(probs, labels, feature: str) -> np.ndarray:
    """Per-sample attack features ``[N, d]`` of the SVC family (see :data:`MIA_INFO`)."""
    p, y = _as_probs_labels((probs, labels), "probs")
    return _svc_feature(p, y, feature)


def svc_mia(shadow_train, shadow_test, target_forget, feature: str) -> float:
    """SVC MIA-efficacy: fraction of forget samples the attack predicts to be non-members.

    Each argument is a ``(probs [N, C], labels [N])`` pair (softmax outputs in eval mode). The attack is
    ``SVC(C=3, gamma='auto', kernel='rbf')`` fit on ``shadow_train`` (label 1, the OPTML code uses the
    first |test| retain samples) vs ``shadow_test`` (label 0, the test set), then applied to the forget
    set. Higher = more forgetting; compare with the retrained model's value.
    """
    from sklearn.svm import SVC

    if feature not in SVC_FEATURES:
        raise ValueError(f"feature must be one of {SVC_FEATURES}, got {feature!r}")
    sets = [_as_probs_labels(pair, name) for pair, name in
            ((shadow_train, "shadow_train"), (shadow_test, "shadow_test"), (target_forget, "target_forget"))]
    num_classes = {p.shape[1] for p, _ in sets}
    if len(num_classes) != 1:
        raise ValueError(f"shadow_train, shadow_test and target_forget have different class counts "
                         f"{[p.shape[1] for p, _ in sets]}")
    (p_in, y_in), (p_out, y_out), (p_target, y_target) = sets
    x_shadow = np.concatenate([_svc_feature(p_in, y_in, feature), _svc_feature(p_out, y_out, feature)])
    y_shadow = np.concatenate([np.ones(len(p_in)), np.zeros(len(p_out))])
    attack = SVC(C=3, gamma="auto", kernel="rbf")
    attack.fit(x_shadow, y_shadow)
    predicted_member = attack.predict(_svc_feature(p_target, y_target, feature))
    return float(1.0 - predicted_member.mean())


def svc_mia_all(shadow_train, shadow_test, target_forget, features=SVC_FEATURES) -> dict[str, float]:
    """:func:`svc_mia` for several features: ``{"mia.svc.<feature>": value}``."""
    return {f"mia.svc.{f}": svc_mia(shadow_train, shadow_test, target_forget, f) for f in features}


def entropy_lr_mia(retain_probs, test_probs, forget_probs) -> float:
    """SSD-style MIA: fraction of forget samples predicted *member* from their softmax entropy.

    ``LogisticRegression(class_weight="balanced", random_state=0)`` fit on retain (1) vs test (0)
    entropies, full sets. The original uses ``multi_class="multinomial"`` (removed from scikit-learn);
    for two classes that is the binary model with twice the C, hence ``C=2.0`` here (same predictions).
    Lower = more forgetting; compare with the retrained model's value. Inputs: probs ``[N, C]``.
    """
    from sklearn.linear_model import LogisticRegression

    retain = _entropy(_as_probs(retain_probs, "retain_probs"))
    test = _entropy(_as_probs(test_probs, "test_probs"))
    forget = _entropy(_as_probs(forget_probs, "forget_probs"))
    x = np.concatenate([retain, test]).reshape(-1, 1)
    y = np.concatenate([np.ones(retain.size), np.zeros(test.size)])
    attack = LogisticRegression(class_weight="balanced", solver="lbfgs", C=2.0, random_state=0)
    attack.fit(x, y)
    return float(attack.predict(forget.reshape(-1, 1)).mean())


# ---------------------------------------------------------------------------------------------------
_LOG_FLOOR = np.log(1e-30)  # the OPTML code's stand-in for log 0


def _safe_log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), _LOG_FLOOR)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def _svc_feature(p: np.ndarray, y: np.ndarray, feature: str) -> np.ndarray:
    rows = np.arange(p.shape[0])
    if feature == "correctness":
        return (p.argmax(axis=1) == y).astype(np.float64)[:, None]
    if feature == "confidence":
        return p[rows, y][:, None]
    if feature == "entropy":
        return _entropy(p)[:, None]
    if feature == "m_entropy":  # Song & Mittal (2021)
        p_y = p[rows, y]
        reversed_terms = p * _safe_log(1.0 - p)
        reversed_terms[rows, y] = 0.0
        return (-(1.0 - p_y) * _safe_log(p_y) - reversed_terms.sum(axis=1))[:, None]
    if feature == "m_entropy_compat":  # OPTML's code: p -> 1 - p on every label column seen, log p kept
        modified = p.copy()
        seen = np.unique(y)
        modified[:, seen] = 1.0 - p[:, seen]
        return -(modified * _safe_log(p)).sum(axis=1)[:, None]
    if feature == "prob":
        return p.copy()
    raise ValueError(f"feature must be one of {SVC_FEATURES}, got {feature!r}")


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.double() if x.dtype.is_floating_point else x
        return x.numpy()
    if x is None:
        raise ValueError(f"{name} is None")
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got object dtype")
    return arr


def _as_1d(x, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if not (np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one loss per example), got shape {tuple(arr.shape)}")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf (first at index {int(np.flatnonzero(~np.isfinite(arr))[0])})")
    return arr


def _as_probs(x, name: str) -> np.ndarray:
    p = _to_numpy(x, name)
    if not np.issubdtype(p.dtype, np.floating):
        raise TypeError(f"{name} must be floating-point probabilities, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"{name} must have shape [N, C] with C >= 2, got {tuple(p.shape)}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or inf (first bad row {int(np.flatnonzero(~np.isfinite(p).all(1))[0])})")
    sums = p.sum(axis=1)
    if (p < 0).any() or (p > 1).any() or np.abs(sums - 1).max() > 1e-3:
        row = int(np.argmax(np.abs(sums - 1) + (p < 0).any(1) + (p > 1).any(1)))
        raise ValueError(f"{name} must be softmax probabilities (rows in [0, 1] summing to 1); row {row} sums "
                         f"to {sums[row]:.4g} - pass softmax(logits), not logits")
    return p


def _as_probs_labels(pair, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{name} must be a (probs, labels) pair, got {type(pair).__name__}")
    p = _as_probs(pair[0], f"{name} probs")
    y = _to_numpy(pair[1], f"{name} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} labels must be integer class indices, got dtype {y.dtype}")
    y = y.reshape(-1).astype(np.int64)
    if y.size != p.shape[0]:
        raise ValueError(f"{name}: {p.shape[0]} probability rows but {y.size} labels")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"{name} labels out of range for {p.shape[1]} classes (min {y.min()}, max {y.max()})")
    return p, y
