"""Straightforward port of the organisers' per-example ε procedure: the test oracle (not for use).

Follows ``docs/metric.md`` §2 step by step, as the official ``metric.py`` does it: per forget example,
explicit linspace threshold grids, ``[models, rules]`` comparisons, float32 rates from a float32 mean,
float32 ε terms, inf/discard rules, nanmax, clip. Differences from the official code, on purpose:
CPU instead of ``.cuda()``, comparisons broadcast instead of ``tile``d (same booleans, less memory),
and its broken ``assert thr_eps`` replaced by the intended ``size > 0`` check (metric.md §4.1), which
still raises when every rule is discarded (the vectorised code defines that case; see
``competition.forget_score``). ``compat=False`` switches grids, rates and terms to float64, matching
``competition.forget_score(..., compat=False)``.

Cost: about 160,000 interval rules x N comparisons per example, so seconds per example at N = 512.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .competition import DELTA, EPSILON_CAP, max_epsilon

_PER_UNIT = 100
_BUFFER = 2.0


def official_forget_score(unlearned_confs, retrained_confs, *, delta=DELTA, compat=True):
    """(F, eps) computed example by example the way the organisers' code does."""
    unlearned = np.asarray(unlearned_confs, dtype=np.float64)
    retrained = np.asarray(retrained_confs, dtype=np.float64)
    retrain_positive = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    pos = np.where(retrain_positive, retrained, unlearned)
    neg = np.where(retrain_positive, unlearned, retrained)
    eps = np.clip([official_example_epsilon(pos[:, i], neg[:, i], delta=delta, compat=compat)
                   for i in range(pos.shape[1])], 0, EPSILON_CAP)
    n_models = unlearned.shape[0]
    top = max_epsilon(n_models)
    # the official bucket loop, literally
    buckets, start, value = {}, 0.0, 1.0
    while start + 0.5 <= top:
        buckets[start] = value
        value /= 2
        start += 0.5
    total = 0.0
    for e in eps:
        for bucket_start, bucket_value in buckets.items():
            if e < bucket_start + 0.5:
                total += bucket_value
                break
    return total / eps.size, np.asarray(eps, dtype=np.float64)


def official_example_epsilon(pos, neg, *, delta=DELTA, compat=True) -> float:
    """ε for one example from already oriented samples (pos = the side with the larger median)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    largest = pos_diff if pos_diff > neg_diff else neg_diff
    smallest = neg_diff if pos_diff > neg_diff else pos_diff
    with np.errstate(invalid="ignore", divide="ignore"):
        if smallest / largest < 0.01:  # peaky guard; 0/0 is NaN and does not fire
            return float(EPSILON_CAP)

    pos_t, neg_t = torch.from_numpy(pos), torch.from_numpy(neg)
    rate_dtype = torch.float32 if compat else torch.float64
    tpr_d, fnr_d, fpr_d, tnr_d = _double_threshold_rates(pos_t, neg_t, rate_dtype)
    tpr_s, fnr_s, fpr_s, tnr_s = _single_threshold_rates(pos_t, neg_t, rate_dtype, compat)
    tpr = torch.cat([tpr_d, tpr_s])
    fnr = torch.cat([fnr_d, fnr_s])
    fpr = torch.cat([fpr_d, fpr_s])
    tnr = torch.cat([tnr_d, tnr_s])

    rule_eps = torch.zeros(tpr.shape[0], dtype=rate_dtype)
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    rule_eps = torch.where(perfect, torch.full_like(rule_eps, math.inf), rule_eps)
    one_zero = (rule_eps == 0) & (fpr * fnr == 0)
    rule_eps = torch.where(one_zero, torch.full_like(rule_eps, math.nan), rule_eps)
    fpr_np, fnr_np = fpr.numpy(), fnr.numpy()
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        terms = np.nanmax([np.log(1 - delta - fpr_np) - np.log(fnr_np),
                           np.log(1 - delta - fnr_np) - np.log(fpr_np)], axis=0)
        computed = torch.from_numpy(np.clip(terms, 0, None))
    rule_eps = torch.where(rule_eps == 0, computed, rule_eps).numpy()
    kept = rule_eps[~np.isnan(rule_eps)]
    assert kept.size > 0, "Something went wrong, all thresholds gave nan epsilon..."
    return float(np.nanmax(kept))


def _double_threshold_rates(pos, neg, rate_dtype):
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    smallest = neg_diff if pos_diff > neg_diff else pos_diff
    if pos_diff >= neg_diff:  # the peakier sample is "positive" here (neg on ties)
        pos, neg = neg, pos
    width = smallest
    min_ = (pos.min() + width - _BUFFER).numpy()
    max_ = (pos.max() + _BUFFER).numpy()
    right = np.linspace(min_, max_, num=int(np.ceil((max_ - min_) * _PER_UNIT)))
    width = width.numpy()
    n_left = int(np.ceil(2 * _BUFFER * _PER_UNIT))
    left = np.concatenate([np.linspace(r - width - _BUFFER, r - width + _BUFFER, num=n_left) for r in right])
    right = np.repeat(right, n_left)
    left_t = torch.from_numpy(left)[None, :]
    right_t = torch.from_numpy(right)[None, :]

    def predicted_positive(c):  # [models, rules]
        return (left_t <= c[:, None]) & (c[:, None] <= right_t)

    pp_pos = predicted_positive(pos).to(rate_dtype)
    pp_neg = predicted_positive(neg).to(rate_dtype)
    tpr = pp_pos.mean(0)
    fnr = (1 - pp_pos).mean(0)
    fpr = pp_neg.mean(0)
    tnr = (1 - pp_neg).mean(0)
    return tpr, fnr, fpr, tnr


def _single_threshold_rates(pos, neg, rate_dtype, compat):
    all_confs = torch.cat([pos, neg])
    lo, hi = all_confs.min(), all_confs.max()
    n = int(torch.ceil((hi - lo) * _PER_UNIT))
    if compat:  # official: torch.linspace without dtype = float32 default
        thresholds = torch.linspace(float(lo), float(hi), n, dtype=torch.float32)
    else:
        thresholds = torch.from_numpy(np.linspace(float(lo), float(hi), n))
    thresholds = thresholds[None, :]
    tpr = (pos[:, None] >= thresholds).to(rate_dtype).mean(0)
    fpr = (neg[:, None] >= thresholds).to(rate_dtype).mean(0)
    tnr = (neg[:, None] < thresholds).to(rate_dtype).mean(0)
    fnr = (pos[:, None] < thresholds).to(rate_dtype).mean(0)
    return tpr, fnr, fpr, tnr
