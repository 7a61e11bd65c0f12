"""The NeurIPS 2023 Machine Unlearning competition score, vectorised.

Reproduces the organisers' scoring code (``google-deepmind/unlearning_evaluation`` ``metric.py``,
described in ``docs/metric.md`` §2) number for number, but counts with sorted samples instead of
materialising ``[models x thresholds]`` tensors per forget example:

* per example the 2N confidences (N unlearned, N retrained) are merged and sorted once; the number of
  samples below any threshold is a ``searchsorted`` index plus a prefix count of the positives;
* every decision rule is then just a pair of integer counts (false positives, false negatives), and the
  rule's epsilon is a lookup into an ``(N+1) x (N+1)`` table computed once with the official
  arithmetic (float32 rates and float32 log terms in ``compat`` mode);
* examples are processed in chunks with batched torch ops (CPU or CUDA), so the ~160,000 interval
  rules of the double-threshold family cost a few array passes instead of a Python loop.

Policies where the official code has no answer (it crashes on its ``assert thr_eps``, metric.md §4.1
and §4.6), both documented in :func:`forget_score`:

* both samples constant and equal (every rule discarded): epsilon = 0, the two sides are
  indistinguishable; both constant but different: epsilon = 50 (the cap) without running the attacks;
* any other example where every rule is discarded (possible only for very tight samples, range below
  the 0.01 grid step): epsilon = 0, no rule found evidence of a difference.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "DELTA",
    "EPSILON_CAP",
    "NUM_THRESHOLDS_PER_UNIT",
    "logit_scaled_confidence",
    "forget_score",
    "forget_epsilons",
    "points",
    "max_epsilon",
    "competition_score",
    "epsilon_table",
]

DELTA = 1e-5
EPSILON_CAP = 50.0
NUM_THRESHOLDS_PER_UNIT = 100
INTERVAL_BUFFER = 2.0  # the double-threshold family searches +-2 around the peakier sample
PEAKY_RATIO = 0.01  # range(smaller) / range(larger) below this => epsilon = cap, no attack
BUCKET_WIDTH = 0.5
NUM_LEFT_EDGES = int(math.ceil(2 * INTERVAL_BUFFER * NUM_THRESHOLDS_PER_UNIT))  # 400

# Rough bytes of working memory per example in the interval pass (edges, indices, gathers).
_BYTES_PER_EXAMPLE = 401 * NUM_LEFT_EDGES * 8 * 10


# ---------------------------------------------------------------------------------------------------
# Confidence statistic
# ---------------------------------------------------------------------------------------------------
def logit_scaled_confidence(logits, targets) -> np.ndarray:
    """Logit-scaled confidence ``ln(p_y + 1e-45) - ln(sum_{j != y} p_j + 1e-45)`` per row (float64).

    Same arithmetic as the official ``compute_logit_scaled_confidence``: the max logit is subtracted and
    ``exp`` is taken in the logits' own float dtype (float32 logits from a model stay float32 there,
    float16/bfloat16 are first widened to float32), then the softmax is normalised and the logs are taken
    in float64. The wrong-class mass is summed directly (not ``1 - p_y``), so the value keeps its
    precision as ``p_y -> 1``. Unlike the official function the caller's array is not modified.
    """
    z = _to_numpy(logits, "logits")
    y = _to_numpy(targets, "targets")
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape [N, C] with C >= 2, got {tuple(z.shape)}")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"targets must have shape [{z.shape[0]}] to match logits, got {tuple(y.shape)}")
    if z.shape[0] == 0:
        raise ValueError("logits is empty (0 rows)")
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    elif z.dtype == np.float16:
        z = z.astype(np.float32)
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"targets must be integer class indices, got dtype {y.dtype}")
    if not np.all(np.isfinite(z)):
        bad = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
        raise ValueError(f"logits contain NaN or inf (first bad row {bad})")
    num_classes = z.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(np.flatnonzero((y < 0) | (y >= num_classes))[0])
        raise ValueError(f"targets[{bad}] = {int(y[bad])} is out of range for {num_classes} classes")

    rows = np.arange(z.shape[0])
    shifted = z - np.max(z, axis=1, keepdims=True)  # in the logits' dtype, as the official code
    probs = np.array(np.exp(shifted), dtype=np.float64)
    probs /= np.sum(probs, axis=1, keepdims=True)
    prob_correct = probs[rows, y]
    probs[rows, y] = 0.0
    prob_wrong = np.sum(probs, axis=1)
    return np.log(prob_correct + 1e-45) - np.log(prob_wrong + 1e-45)


# ---------------------------------------------------------------------------------------------------
# Points and final score
# ---------------------------------------------------------------------------------------------------
def max_epsilon(n_models: int) -> float:
    """Upper end of the scored buckets: ``ceil(ln(N - 1))`` (7 for N = 512); ε at or above it earns 0."""
    n_models = _check_n_models(n_models)
    return float(math.ceil(math.log(n_models - 1))) if n_models > 2 else 0.0


def points(eps, n_models: int) -> np.ndarray:
    """Points per example: ``2 ** -floor(eps / 0.5)`` if ``eps < ceil(ln(N - 1))`` else 0.

    Equal to the official bucket loop (buckets ``[0, 0.5), [0.5, 1), ...`` worth 1, 1/2, 1/4, ...).
    """
    e = np.asarray(eps, dtype=np.float64)
    if np.isnan(e).any():
        raise ValueError("eps contains NaN")
    if (e < 0).any():
        raise ValueError(f"eps must be >= 0, got min {float(e.min())}")
    top = max_epsilon(n_models)
    with np.errstate(over="ignore"):
        bucket = np.floor(np.minimum(e, top) / BUCKET_WIDTH)
        return np.where(e < top, np.exp2(-bucket), 0.0)


def competition_score(forget_score: float, ra_u: float, ra_r: float, ta_u: float, ta_r: float) -> float:
    """``F * (RA_U / RA_R) * (TA_U / TA_R)`` as the competition computed it: ratios are NOT clipped.

    Accuracies may be fractions or percentages, as long as each ratio uses one unit.
    """
    values = {"forget_score": forget_score, "ra_u": ra_u, "ra_r": ra_r, "ta_u": ta_u, "ta_r": ta_r}
    for name, v in values.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, got {type(v).__name__}") from None
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
        values[name] = v
    if values["forget_score"] > 1:
        raise ValueError(f"forget_score must be in [0, 1], got {values['forget_score']}")
    for name in ("ra_r", "ta_r"):
        if values[name] == 0:
            raise ValueError(f"{name} (retrained accuracy) must be > 0 to form a ratio")
    return values["forget_score"] * (values["ra_u"] / values["ra_r"]) * (values["ta_u"] / values["ta_r"])


# ---------------------------------------------------------------------------------------------------
# The forget score
# ---------------------------------------------------------------------------------------------------
def forget_score(unlearned_confs, retrained_confs, *, delta: float = DELTA, compat: bool = True,
                 backend: str | None = None, num_threads: int | None = None,
                 chunk_size: int | None = None) -> tuple[float, np.ndarray]:
    """Forgetting quality F of the competition and the per-example epsilons.

    Args:
        unlearned_confs, retrained_confs: ``[num_models, num_examples]`` logit-scaled confidences
            (numpy or torch; CUDA tensors are processed on their GPU). Same shape, ``num_models >= 2``.
        delta: the δ of (ε, δ)-unlearning (1e-5 in the competition).
        compat: True reproduces the official dtypes (float32 ``torch.linspace`` single-threshold grid,
            float32 rates and float32 ε terms, so results agree at bucket edges); False keeps all of it in
            float64 (same rules otherwise).
        backend, num_threads, chunk_size: execution only (see :func:`forget_epsilons`); never change
            the result.

    Returns:
        ``(F, eps)``: F = mean points over examples in [0, 1]; eps float64 ``[num_examples]`` in
        [0, 50] (50 = the cap: perfect separation or the 1% peaky guard).

    Not defined by the official code (it crashes there) and fixed here: an example whose N + N values
    are all equal gets ε = 0; one whose two sides are two different constants gets ε = 50; any other
    example where every decision rule is discarded gets ε = 0.
    """
    eps = forget_epsilons(unlearned_confs, retrained_confs, delta=delta, compat=compat, backend=backend,
                          num_threads=num_threads, chunk_size=chunk_size)
    n_models = _shape_of(unlearned_confs)[0]
    return float(points(eps, n_models).mean()), eps


def forget_epsilons(unlearned_confs, retrained_confs, *, delta: float = DELTA, compat: bool = True,
                    backend: str | None = None, num_threads: int | None = None,
                    chunk_size: int | None = None) -> np.ndarray:
    """Per-example ε of the competition (see :func:`forget_score`), float64 ``[num_examples]``.

    backend: "numpy" (default for CPU input: one example at a time, numpy's searchsorted is ~3x faster
    than torch's batched one on CPU; ``num_threads`` worker threads, default torch.get_num_threads())
    or "torch" (default for CUDA tensors: ``chunk_size`` examples per batched call). Same results.
    """
    unlearned, retrained = _as_conf_tensors(unlearned_confs, retrained_confs)
    _check_delta(delta)
    if backend is None:
        backend = "torch" if unlearned.device.type != "cpu" else "numpy"
    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive int, got {num_threads!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    device = unlearned.device
    n_models, n_examples = unlearned.shape

    # Orientation (ties -> unlearned positive), exactly np.median semantics for even N.
    retrain_positive = _median(retrained) > _median(unlearned)
    pos = torch.where(retrain_positive, retrained, unlearned)
    neg = torch.where(retrain_positive, unlearned, retrained)
    pos_sorted = torch.sort(pos, dim=0).values.T.contiguous()  # [examples, models]
    neg_sorted = torch.sort(neg, dim=0).values.T.contiguous()
    pos_range = (pos_sorted[:, -1] - pos_sorted[:, 0]).cpu().numpy()
    neg_range = (neg_sorted[:, -1] - neg_sorted[:, 0]).cpu().numpy()

    largest = np.where(pos_range > neg_range, pos_range, neg_range)
    smallest = np.where(pos_range > neg_range, neg_range, pos_range)
    with np.errstate(invalid="ignore", divide="ignore"):
        peaky = smallest / largest < PEAKY_RATIO  # 0/0 = NaN -> False, as in the official code
    both_constant = (pos_range == 0) & (neg_range == 0)

    eps = np.zeros(n_examples, dtype=np.float64)
    eps[peaky] = EPSILON_CAP
    if both_constant.any():
        same = (pos_sorted[:, 0] == neg_sorted[:, 0]).cpu().numpy()
        eps[both_constant] = np.where(same[both_constant], 0.0, EPSILON_CAP)

    attacked = np.flatnonzero(~peaky & ~both_constant)
    if attacked.size:
        table = epsilon_table(n_models, delta=delta, compat=compat)
        # discarded rules (NaN) become -inf so a plain max is the official nanmax
        table = np.where(np.isnan(table), -np.inf, table).astype(np.float64).ravel()
        if backend == "torch":
            eps[attacked] = _attack_torch(pos_sorted, neg_sorted, attacked, pos_range, neg_range,
                                          torch.from_numpy(table).to(device), compat, chunk_size)
        else:
            eps[attacked] = _attack_numpy(pos_sorted.cpu().numpy(), neg_sorted.cpu().numpy(), attacked,
                                          pos_range, neg_range, table, compat, num_threads)
    return np.clip(eps, 0.0, EPSILON_CAP)


def epsilon_table(n_models: int, *, delta: float = DELTA, compat: bool = True) -> np.ndarray:
    """ε of a decision rule as a function of its (false-positive, false-negative) counts.

    ``table[fp, fn]`` over ``0..N`` each, with the official rules: +inf when fp = fn = 0 (perfect
    separation), NaN (discarded) when exactly one is 0, else ``max(0, nanmax(ln(1-δ-FPR) - ln FNR,
    ln(1-δ-FNR) - ln FPR))``, NaN again when both terms are NaN (FPR = FNR = 1). In compat mode the rates
    and terms are float32 like the official code (rates = float32 count / float32 N, as torch's CPU mean).
    """
    n_models = _check_n_models(n_models)
    _check_delta(delta)
    dtype = np.float32 if compat else np.float64
    counts = np.arange(n_models + 1, dtype=dtype)
    rates = counts / dtype(n_models)
    fpr = np.repeat(rates, n_models + 1).reshape(n_models + 1, n_models + 1)
    fnr = fpr.T.copy()
    with np.errstate(divide="ignore", invalid="ignore"), _ignore_nan_warnings():
        terms = np.stack([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)])
        table = np.clip(np.nanmax(terms, axis=0), 0, None)
    both_zero = (fpr + fnr) == 0
    one_zero = ((fpr * fnr) == 0) & ~both_zero
    table = np.where(both_zero, dtype(np.inf), table)
    table = np.where(one_zero, dtype(np.nan), table)
    return table


# ---------------------------------------------------------------------------------------------------
# Vectorised attack on a chunk of examples
# ---------------------------------------------------------------------------------------------------
def _attack_numpy(pos_sorted, neg_sorted, attacked, pos_range, neg_range, table, compat, num_threads):
    """Max rule ε per attacked example, numpy, one example per call, examples spread over threads
    (searchsorted/take/ufuncs release the GIL)."""
    if num_threads is None:
        num_threads = max(1, torch.get_num_threads())
    out = np.empty(attacked.size, dtype=np.float64)

    def run(block):
        for slot in block:
            i = attacked[slot]
            out[slot] = _example_max_eps(pos_sorted[i], neg_sorted[i], pos_range[i] >= neg_range[i],
                                         min(pos_range[i], neg_range[i]), table, compat)

    slots = np.arange(attacked.size)
    if num_threads == 1 or attacked.size < 2:
        run(slots)
    else:
        from concurrent.futures import ThreadPoolExecutor

        blocks = np.array_split(slots, min(attacked.size, 8 * num_threads))
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            list(pool.map(run, blocks))
    out[np.isneginf(out)] = 0.0  # every rule discarded (official: assert) -> no evidence -> 0
    return out


def _example_max_eps(pos, neg, p_is_neg, width, table, compat) -> float:
    """The attack on one example: max table ε over both rule families (pos/neg sorted float64)."""
    n_models = pos.size
    stride = n_models + 1
    merged = np.concatenate([pos, neg])
    order = np.argsort(merged, kind="stable")
    merged = merged[order]
    pos_below = np.zeros(2 * n_models + 1, dtype=np.int64)  # # pos among the k smallest values
    np.cumsum(order < n_models, out=pos_below[1:])
    k_all = np.arange(2 * n_models + 1, dtype=np.int64)

    # Family 1: single threshold t, predict pos iff c >= t.
    lo, hi = float(merged[0]), float(merged[-1])
    count = int(np.ceil((hi - lo) * NUM_THRESHOLDS_PER_UNIT))
    thresholds = _single_grid(lo, hi, count, compat)
    below = np.searchsorted(merged, thresholds, side="left")  # # values < t
    false_neg = pos_below[below]
    false_pos = n_models - (below - false_neg)
    best = table.take(false_pos * stride + false_neg).max()

    # Family 2: intervals [l, r] around the peakier sample P (see _attack_chunk for the index algebra).
    p_sorted, p_below = (neg, k_all - pos_below) if p_is_neg else (pos, pos_below)
    start = (p_sorted[0] + width) - INTERVAL_BUFFER
    stop = p_sorted[-1] + INTERVAL_BUFFER
    right = np.linspace(start, stop, int(np.ceil((stop - start) * NUM_THRESHOLDS_PER_UNIT)))
    key = k_all * stride - p_below * (stride + 1)
    k_right = np.searchsorted(merged, right, side="right")
    right_key = key[k_right] + n_models
    # Row i's left edges are np.linspace(c - 2, c + 2, 400), c = r_i - w, i.e. j * step + start (last =
    # stop). Only edges in [min(data), min(max(data), r_i)] need a search: below min(data) every edge
    # counts 0 values (one rule per row, added below), above it the interval is empty or k_left >= k_right
    # (discarded). The band is widened by one edge each side so float error can only add searched edges.
    centre = right - width
    row_start = centre - INTERVAL_BUFFER
    row_stop = centre + INTERVAL_BUFFER
    step = (row_stop - row_start) / (NUM_LEFT_EDGES - 1)
    last = NUM_LEFT_EDGES - 1
    first = np.clip(np.floor((merged[0] - row_start) / step) - 1, 0, last).astype(np.int64)
    upper = np.minimum(merged[-1], right)
    final = np.clip(np.ceil((upper - row_start) / step) + 1, -1, last).astype(np.int64)
    lengths = np.maximum(final - first + 1, 0)
    if (first > 0).any():  # edges below every value: k_left = 0, key[0] = 0
        best = max(best, table.take(right_key[first > 0]).max())
    total = int(lengths.sum())
    if total:
        rows = np.repeat(np.arange(right.size), lengths)
        j = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + first[rows]
        edges = j * step[rows]
        edges += row_start[rows]
        at_stop = j == last
        edges[at_stop] = row_stop[rows[at_stop]]
        k_left = np.searchsorted(merged, edges, side="left")
        np.minimum(k_left, k_right[rows], out=k_left)
        flat = np.subtract(right_key[rows], key.take(k_left), out=k_left)
        best = max(best, table.take(flat).max())
    return float(best)


def _single_grid(lo: float, hi: float, count: int, compat: bool) -> np.ndarray:
    """``linspace(min, max, ceil(100 * (max - min)))``; compat: float32 ``torch.linspace`` as the
    official code (default dtype, Python-float endpoints), widened exactly to float64."""
    if count < 1:  # only when all 2N values are equal, which never reaches the attack
        raise AssertionError("single-threshold grid is empty for an attacked example")
    if compat:
        return torch.linspace(lo, hi, count, dtype=torch.float32).numpy().astype(np.float64)
    return np.linspace(lo, hi, count)


def _attack_torch(pos_sorted, neg_sorted, attacked, pos_range, neg_range, table, compat, chunk_size):
    """Batched torch variant of :func:`_attack_numpy` (the CUDA path)."""
    device = pos_sorted.device
    if chunk_size is None:
        chunk_size = max(1, (256 << 20) // (_BYTES_PER_EXAMPLE + 1))
    out = np.empty(attacked.size, dtype=np.float64)
    for start in range(0, attacked.size, chunk_size):
        idx = attacked[start:start + chunk_size]
        idx_t = torch.from_numpy(idx).to(device)
        out[start:start + idx.size] = _attack_chunk(pos_sorted[idx_t], neg_sorted[idx_t], pos_range[idx],
                                                    neg_range[idx], table, compat)
    return out


def _attack_chunk(pos: torch.Tensor, neg: torch.Tensor, pos_range: np.ndarray, neg_range: np.ndarray,
                  table: torch.Tensor, compat: bool) -> np.ndarray:
    """Max rule ε over both threshold families for B examples (pos/neg sorted, [B, N])."""
    device = pos.device
    n_batch, n_models = pos.shape
    stride = n_models + 1  # row stride of the flattened (fp, fn) table

    # Merge both samples once; prefix counts of positives give "# pos / # neg below index k".
    merged, order = torch.sort(torch.cat([pos, neg], dim=1), dim=1, stable=True)
    is_pos = (order < n_models).to(torch.int64)
    zero_col = torch.zeros(n_batch, 1, dtype=torch.int64, device=device)
    pos_below = torch.cat([zero_col, torch.cumsum(is_pos, dim=1)], dim=1)  # [B, 2N+1]: # pos among first k
    k_all = torch.arange(2 * n_models + 1, device=device, dtype=torch.int64)
    neg_below = k_all - pos_below

    # Family 1: single threshold over [min, max] of all 2N values, predict pos iff c >= t.
    single = _single_threshold_grid(merged[:, 0].cpu().numpy(), merged[:, -1].cpu().numpy(), compat)
    single = single.to(device)
    below = torch.searchsorted(merged, single, side="left")  # # values < t
    false_neg = torch.gather(pos_below, 1, below)  # pos < t
    false_pos = n_models - torch.gather(neg_below, 1, below)  # neg >= t
    best = torch.take(table, false_pos * stride + false_neg).amax(dim=1)

    # Family 2: intervals [l, r] around the peakier sample P (smaller range; P = neg on ties).
    # With k_r = #values <= r and k_l = #values < l, an interval holds tp = Pb[k_r] - Pb[k_l] of P and
    # (k_r - k_l) - tp of Q when k_l <= k_r (else it is empty), so the table index
    # fp * stride + (N - tp) splits into key[k_r] - key[k_l] + N with key[k] = k * stride - Pb[k] * (stride + 1).
    # Clamping k_l to k_r maps empty intervals to (fp = 0, fn = N): a discarded rule, as it should be.
    p_is_neg = torch.from_numpy(pos_range >= neg_range).to(device)
    p_sorted = torch.where(p_is_neg[:, None], neg, pos)
    width = torch.from_numpy(np.minimum(pos_range, neg_range)).to(device)  # = range(P)
    p_below = torch.where(p_is_neg[:, None], neg_below, pos_below)
    key = k_all * stride - p_below * (stride + 1)  # [B, 2N+1]
    right = _right_edges(p_sorted[:, 0], p_sorted[:, -1], width)  # [B, R]
    left = _left_edges(right, width)  # [B, R, 400]
    k_right = torch.searchsorted(merged, right, side="right")  # [B, R]
    k_left = torch.searchsorted(merged, left.view(n_batch, -1), side="left").view(left.shape)
    del left
    torch.minimum(k_left, k_right[:, :, None], out=k_left)
    key_left = torch.gather(key, 1, k_left.view(n_batch, -1)).view(k_left.shape)
    del k_left
    flat = torch.sub((torch.gather(key, 1, k_right) + n_models)[:, :, None], key_left, out=key_left)
    rule_eps = torch.take(table, flat.view(n_batch, -1))
    best = torch.maximum(best, rule_eps.amax(dim=1))

    best = best.cpu().numpy()
    best[np.isneginf(best)] = 0.0  # every rule discarded (official: assert) -> no evidence -> 0
    return best


def _single_threshold_grid(lows: np.ndarray, highs: np.ndarray, compat: bool) -> torch.Tensor:
    """Per-example single-threshold grids, right-padded by repeating the last threshold (a duplicate
    rule changes no maximum)."""
    counts = np.ceil((highs - lows) * NUM_THRESHOLDS_PER_UNIT).astype(np.int64)
    grid = np.empty((lows.size, max(1, int(counts.max()))), dtype=np.float64)
    for row, (lo, hi, count) in enumerate(zip(lows.tolist(), highs.tolist(), counts.tolist())):
        values = _single_grid(lo, hi, count, compat)
        grid[row, :count] = values
        grid[row, count:] = values[-1]
    return torch.from_numpy(grid)


def _right_edges(p_min: torch.Tensor, p_max: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Right edges ``np.linspace(min(P) + w - 2, max(P) + 2, ceil(100 * span))`` per example, with the
    same float64 operations as numpy (``j * step + start``, last = stop); padded by repeating stop."""
    start = (p_min + width) - INTERVAL_BUFFER
    stop = p_max + INTERVAL_BUFFER
    counts = torch.ceil((stop - start) * NUM_THRESHOLDS_PER_UNIT).to(torch.int64)
    n_max = int(counts.max())
    return _linspace_rows(start, stop, counts, n_max)


def _left_edges(right: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Left edges ``np.linspace(r - w - 2, r - w + 2, 400)`` for every right edge r: [B, R, 400]."""
    centre = right - width[:, None]
    start = centre - INTERVAL_BUFFER
    stop = centre + INTERVAL_BUFFER
    j = torch.arange(NUM_LEFT_EDGES, dtype=torch.float64, device=right.device)
    step = (stop - start) / (NUM_LEFT_EDGES - 1)
    edges = j * step[..., None]
    edges += start[..., None]
    edges[..., -1] = stop
    return edges


def _linspace_rows(start: torch.Tensor, stop: torch.Tensor, counts: torch.Tensor, n_max: int) -> torch.Tensor:
    """Row-wise numpy-identical linspace with per-row lengths, padded with each row's stop value."""
    j = torch.arange(n_max, dtype=torch.float64, device=start.device)
    div = (counts - 1).clamp(min=1).to(torch.float64)
    step = (stop - start) / div
    rows = j[None, :] * step[:, None]
    rows += start[:, None]
    last = (counts - 1)[:, None]
    pad = j[None, :] >= last.to(torch.float64)
    single = (counts == 1)[:, None]  # numpy: num = 1 gives [start]
    return torch.where(pad & ~single, stop[:, None], torch.where(pad & single, start[:, None], rows))


# ---------------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------------
class _ignore_nan_warnings:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like: {exc}") from None


def _shape_of(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _as_conf_tensors(unlearned, retrained) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for name, value in (("unlearned_confs", unlearned), ("retrained_confs", retrained)):
        if isinstance(value, torch.Tensor):
            t = value.detach()
        else:
            arr = _to_numpy(value, name)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
            t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.is_complex():
            raise TypeError(f"{name} must be real, got {t.dtype}")
        t = t.to(torch.float64)
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape [num_models, num_examples], got {tuple(t.shape)}")
        tensors.append(t)
    u, r = tensors
    if u.shape != r.shape:
        raise ValueError(f"unlearned_confs {tuple(u.shape)} and retrained_confs {tuple(r.shape)} must have the "
                         "same shape [num_models, num_examples] (same N on both sides)")
    if u.shape[0] < 2:
        raise ValueError(f"need at least 2 models per side, got {u.shape[0]}")
    if u.shape[1] < 1:
        raise ValueError("confidence arrays have no examples (0 columns)")
    if u.device != r.device:
        r = r.to(u.device)
    for name, t in (("unlearned_confs", u), ("retrained_confs", r)):
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            model, example = (int(v) for v in torch.nonzero(~finite)[0])
            raise ValueError(f"{name} contains NaN or inf (model {model}, example {example})")
    return u, r


def _median(x: torch.Tensor) -> torch.Tensor:
    """np.median along dim 0 (mean of the two middle values for even N; torch.median takes the lower)."""
    s = torch.sort(x, dim=0).values
    n = s.shape[0]
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def _check_n_models(n_models) -> int:
    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)):
        raise TypeError(f"n_models must be an int, got {type(n_models).__name__}")
    if n_models < 2:
        raise ValueError(f"n_models must be >= 2, got {n_models}")
    return int(n_models)


def _check_delta(delta) -> None:
    if not isinstance(delta, (int, float, np.floating)) or not (0 <= float(delta) < 1):
        raise ValueError(f"delta must be a number in [0, 1), got {delta!r}")
