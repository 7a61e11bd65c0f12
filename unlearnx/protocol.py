"""The competition's multi-run protocol: N unlearned runs from ONE original model, N models retrained
from scratch on the retain set, then the ε-based forget score over the forget set's logit-scaled
confidences and the utility ratios (metric.md §2).

Each run is reduced to what the metric needs — forget-set confidences, retain/test accuracy, seconds —
and stored as one small ``.npz`` per run. Retrained references are keyed by the data split, model and
training recipe, so every method (and later invocations) reuse them; unlearned runs are keyed by the
original model, method and recipe. Both are resumable: a run already on disk is not redone.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import Splits
from .models import spec_fingerprint
from .pipeline import cache_root, evaluation_batches, train_from_scratch
from .training import NullProgress, Progress, TrainRecipe

# With N = 2 runs a side the metric's largest scorable epsilon is ceil(ln(N - 1)) = 0, so F is 0 whatever
# the method: a score needs at least 3 runs a side (the competition used 512).
MIN_SCORE_RUNS = 3


@dataclass
class RunSet:
    """Per-run results: ``confs`` [runs, forget examples]; accuracies (fractions) and seconds per run."""

    confs: np.ndarray
    retain_accuracy: np.ndarray
    test_accuracy: np.ndarray
    forget_accuracy: np.ndarray
    seconds: np.ndarray
    mia: np.ndarray

    @property
    def n(self) -> int:
        return int(self.confs.shape[0])

    @classmethod
    def from_results(cls, results) -> "RunSet":
        """Stack per-run dicts (or loaded ``.npz`` files) as :func:`run_summary` + ``seconds`` produce them."""
        results = list(results)
        return cls(confs=np.stack([r["confs"] for r in results]),
                   **{f.name: np.array([float(r[f.name]) for r in results])
                      for f in dataclasses.fields(cls) if f.name != "confs"})


def run_summary(model: nn.Module, splits: Splits, device) -> dict:
    """Forget-set confidences (organisers' order: unshuffled) and accuracies of one model."""
    from .metrics import logit_scaled_confidence, loss_accuracy, per_example_losses, predict, simple_mia

    batches = evaluation_batches(splits, device)
    out = {}
    logits, labels = predict(model, batches["forget"], device)
    out["confs"] = np.asarray(logit_scaled_confidence(logits, labels), dtype=np.float64)
    out["forget_accuracy"] = loss_accuracy(logits, labels)["accuracy"]
    out["retain_accuracy"] = loss_accuracy(*predict(model, batches["retain"], device))["accuracy"]
    held_out = batches["test"] if batches["test"] is not None else batches["validation"]
    out["test_accuracy"] = out["mia"] = float("nan")
    if held_out is not None:
        held_logits, held_labels = predict(model, held_out, device)
        out["test_accuracy"] = loss_accuracy(held_logits, held_labels)["accuracy"]
        out["mia"] = float(simple_mia(per_example_losses(logits, labels).numpy(),
                                      per_example_losses(held_logits, held_labels).numpy()))
    return out


class RunStore:
    """A folder of ``run-<i>.npz`` files, written atomically, so a long protocol can resume."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            meta_path.write_text(json.dumps(meta, indent=2, default=str))

    def path(self, i: int) -> Path:
        return self.folder / f"run-{i:04d}.npz"

    def has(self, i: int) -> bool:
        return self.path(i).exists()

    def save(self, i: int, result: dict) -> None:
        tmp = self.folder / f".run-{i:04d}.tmp.npz"
        np.savez(tmp, **{k: np.asarray(v) for k, v in result.items()})
        tmp.replace(self.path(i))

    def load(self, n: int) -> RunSet:
        return RunSet.from_results(np.load(self.path(i)) for i in range(n))


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def retrained_references(splits: Splits, arch: str, recipe: TrainRecipe, n: int, *, device="cpu",
                         cache_dir: Path | None = None, progress: Progress | None = None) -> RunSet:
    """``n`` models trained from scratch on the retain set (seeds 0..n-1), cached and resumable."""
    progress = progress or NullProgress()
    meta = {"kind": "retrained", "split": splits.split_hash(), "arch": arch, "recipe": dataclasses.asdict(recipe)}
    if fingerprint := spec_fingerprint(arch):  # a user factory's source, torchvision's version; none for built-ins
        meta["model_code"] = fingerprint
    store = RunStore(Path(cache_dir or cache_root()) / "references" / _key(meta), meta)
    for i in range(n):
        if store.has(i):
            continue
        start = time.perf_counter()
        model = train_from_scratch(splits, arch, recipe, on="retain", seed=1000 + i, device=device, progress=progress)
        seconds = time.perf_counter() - start
        store.save(i, {**run_summary(model, splits, device), "seconds": seconds})
    return store.load(n)


def unlearned_runs(original: nn.Module, splits: Splits, method: str, recipe, n: int, *, fused: bool = True,
                   device="cpu", base_seed: int = 0, cache_dir: Path | None = None,
                   progress: Progress | None = None, batch_size: int = 64, channels_last: bool = False,
                   amp_dtype=None, use_cache: bool = True, make_context=None) -> RunSet:
    """``n`` runs of ``method`` from the same ``original`` with seeds ``base_seed + i``.

    ``make_context(model, generator)`` replaces the default tensor-resident context (bench uses it to run
    the notebook-style DataLoader baseline); such runs are never cached.
    """
    from .api import seed_everything, splits_context
    from .methods import run_method

    progress = progress or NullProgress()
    meta = {"kind": "unlearned", "split": splits.split_hash(), "original": _state_hash(original), "method": method,
            "recipe": dataclasses.asdict(recipe), "fused": fused, "base_seed": base_seed, "batch_size": batch_size,
            "channels_last": channels_last, "amp": str(amp_dtype)}
    folder = Path(cache_dir or cache_root()) / "runs" / f"{method}-{_key(meta)}"
    store = RunStore(folder, meta) if use_cache and make_context is None else None
    results = []
    for i in range(n):
        if store is not None and store.has(i):
            continue
        model = copy.deepcopy(original).to(device)
        generator = seed_everything(base_seed + i)
        if make_context is not None:
            ctx = make_context(model, generator)
        else:
            ctx = splits_context(model, splits, batch_size=batch_size, fused=fused, generator=generator,
                                 progress=progress, channels_last=channels_last, amp_dtype=amp_dtype)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_method(model, ctx, method, recipe)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        result = {**run_summary(model, splits, device), "seconds": seconds}
        if store is not None:
            store.save(i, result)
        else:
            results.append(result)
    if store is not None:
        return store.load(n)
    return RunSet.from_results(results)


def score(unlearned: RunSet, retrained: RunSet) -> dict:
    """The competition score and its parts (accuracy means over runs, as the organisers compute them)."""
    from .metrics import competition_score, forget_score

    if unlearned.n != retrained.n:
        raise ValueError(f"the metric compares equal numbers of runs: {unlearned.n} unlearned vs {retrained.n} retrained")
    if unlearned.n < 2:
        raise ValueError("the competition score needs at least 2 runs on each side (--runs 2 or more)")
    f, eps = forget_score(unlearned.confs, retrained.confs)
    ra_u, ra_r = float(unlearned.retain_accuracy.mean()), float(retrained.retain_accuracy.mean())
    ta_u, ta_r = float(unlearned.test_accuracy.mean()), float(retrained.test_accuracy.mean())
    return {"runs": unlearned.n, "forget_quality": float(f),
            "score": float(competition_score(f, ra_u, ra_r, ta_u, ta_r)),
            "median_epsilon": float(np.median(eps)),
            "retain_accuracy_ratio": ra_u / ra_r, "test_accuracy_ratio": ta_u / ta_r}


def mean_std(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}
