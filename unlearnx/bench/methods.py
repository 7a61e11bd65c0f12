"""End-to-end benchmark of methods: seconds per unlearning run and the resulting scores, for the
unlearnx path and the pure-PyTorch notebook path.

Implementations compared (``impl``):
- ``pytorch``: how the Kaggle notebooks run — a ``DataLoader`` over a dataset, fp32, default memory
  format, and the composite PyTorch losses (``fused=False``).
- ``resident``: the same losses, but the data lives in one tensor (on the GPU when there is one) and
  batches are index lookups — no DataLoader.
- ``fused``: resident data + the fused C++/CUDA ops, and on CUDA also channels_last and bf16 autocast.
- ``fused+compile``: ``fused`` with the method's model calls compiled (:mod:`unlearnx.compiled`); its
  ``seconds`` exclude the one-time compile, reported as ``compile_seconds``.
Only ``pytorch`` and ``fused`` run by default; ``ingredients=True`` adds ``resident`` (and on CUDA the
steps in between) and ``fused+compile`` so each ingredient's share of the speed-up is visible.
"""
from __future__ import annotations

import copy

import torch

from ..api import make_context, splits_context
from ..data import Splits
from ..methods import get_method, make_recipe
from ..protocol import MIN_SCORE_RUNS, RunSet, comparable_timings, retrained_references, score, unlearned_runs
from ..training import NullProgress

# (name, fused ops, tensor-resident data, channels_last, bf16, compiled model) — the ladder from notebook to
# unlearnx.
IMPLS = {
    "pytorch": (False, False, False, False, False),
    "resident": (False, True, False, False, False),
    "resident+fused": (True, True, False, False, False),
    "resident+fused+channels_last": (True, True, True, False, False),
    "fused": (True, True, True, True, False),
    "fused+compile": (True, True, True, True, True),
}


def impl_ladder(device: torch.device, ingredients: bool, compile: bool | None = None) -> list[str]:
    """The impls to time: ``pytorch`` and ``fused``; with ``ingredients`` the steps between them; and
    ``fused+compile`` with ``compile`` (default: with ``ingredients``)."""
    compile = ingredients if compile is None else compile
    if not ingredients:
        ladder = ["pytorch", "fused"]
    elif device.type == "cuda":
        ladder = [name for name in IMPLS if name != "fused+compile"]
    else:  # channels_last and bf16 autocast only apply on the GPU: on CPU "fused" = resident + fused ops.
        ladder = ["pytorch", "resident", "fused"]
    return ladder + (["fused+compile"] if compile else [])


def notebook_loaders(splits: Splits, batch_size: int):
    """Per split, a function ``generator -> DataLoader`` over pre-normalised float tensors (as notebooks do)."""
    from torch.utils.data import DataLoader, TensorDataset

    datasets = {name: TensorDataset(splits.normalization(split.images), split.labels)
                for name, split in splits.named().items() if split is not None}

    def loader(name, generator):
        if name not in datasets:
            return None
        return DataLoader(datasets[name], batch_size=batch_size, shuffle=True, generator=generator)

    return loader


def bench_methods(splits: Splits, original: torch.nn.Module, arch: str, methods: list[str], *, runs: int = 1,
                  device=torch.device("cpu"), ingredients: bool = False, train_recipe=None, progress=None,
                  batch_size: int = 64, base_seed: int = 0, preset: str = "published", executor=None,
                  compile: bool | None = None) -> list[dict]:
    """One row per (method, impl): mean seconds per run, accuracies, MIA; with ``runs >= 3`` also the
    competition score against ``runs`` cached retrained references and RTE (from 3 runs; see below).
    Recipes start from ``preset`` (see :func:`unlearnx.methods.make_recipe`). ``executor`` (see
    :mod:`unlearnx.executor`) trains the references; the timed method runs always run here, one at a time.
    ``compile`` adds the ``fused+compile`` row (default: with ``ingredients``; see :func:`impl_ladder`)."""
    progress = progress or NullProgress()
    for name in methods:
        get_method(name)  # unknown names fail before any work
    ladder = impl_ladder(device, ingredients, compile)  # the same for every method
    if "fused+compile" in ladder:
        from ..compiled import check_compilable

        check_compilable(original)
    references: RunSet | None = None
    if runs >= MIN_SCORE_RUNS and train_recipe is not None:
        references = retrained_references(splits, arch, train_recipe, runs, device=device, progress=progress,
                                          executor=executor)
    loader = notebook_loaders(splits, batch_size)
    rows = []
    for name in methods:
        recipe = make_recipe(name, preset=preset)
        for impl in ladder:
            fused, resident, channels_last, bf16, compiled = IMPLS[impl]
            amp = torch.bfloat16 if bf16 and device.type == "cuda" else None
            channels_last = channels_last and device.type == "cuda"

            def make_ctx(model, generator, fused=fused, resident=resident, channels_last=channels_last, amp=amp):
                if resident:
                    return splits_context(model, splits, batch_size=batch_size, fused=fused, generator=generator,
                                          progress=progress, channels_last=channels_last, amp_dtype=amp)
                counts = torch.bincount(splits.retain.labels, minlength=splits.num_classes).tolist()
                return make_context(model, loader("retain", generator), loader("forget", generator),
                                    loader("validation", generator), num_classes=splits.num_classes, fused=fused,
                                    generator=generator, progress=progress, retain_class_counts=counts)

            model = copy.deepcopy(original).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            result = unlearned_runs(model, splits, name, recipe, runs, fused=fused, device=device,
                                    base_seed=base_seed, progress=progress, make_context=make_ctx, compile=compiled)
            used = [label for label, on in (("fused ops", bool(result.native.all())),
                                            ("tensor-resident data", resident), ("channels_last", channels_last),
                                            ("bf16", amp is not None), ("compiled model", compiled)) if on]
            if fused and not result.native.all():
                impl = f"{impl} (no native op ran)"  # _C missing, or the method uses no fused op
            row = {"method": name, "impl": impl, "ingredients": used, "runs": runs,
                   "seconds": float(result.seconds.mean()),
                   "seconds_std": float(result.seconds.std(ddof=1)) if runs > 1 else 0.0,
                   "forget_accuracy": float(result.forget_accuracy.mean()),
                   "retain_accuracy": float(result.retain_accuracy.mean()),
                   "test_accuracy": float(result.test_accuracy.mean()), "mia": float(result.mia.mean()),
                   "cache": {"unlearned": result.cache_counts()}}
            if compiled:  # the one-time compile, kept out of "seconds"
                from ..compiled import compile_mode

                row.update(compile_mode=compile_mode(), **result.compile_totals())
            if references is not None:
                row.update(score=score(result, references)["score"])
                row["cache"]["references"] = references.cache_counts()
                problem = comparable_timings(result, references, device=device)
                row["rte"] = None if problem else float(references.timed_alone.mean() / result.seconds.mean())
                if problem:
                    row["rte_unavailable"] = problem
            rows.append(row)
    return rows


def cache_summary(rows: list[dict]) -> dict:
    """The report's ``cache`` section: references reused/ran (shared by every row) and unlearned runs summed."""
    unlearned = {"reused": sum(r["cache"]["unlearned"]["reused"] for r in rows),
                 "ran": sum(r["cache"]["unlearned"]["ran"] for r in rows)}
    references = next((r["cache"]["references"] for r in rows if "references" in r["cache"]), {"reused": 0, "ran": 0})
    return {"references": references, "unlearned": unlearned}


def add_speedups(rows: list[dict]) -> list[dict]:
    """``speedup`` of each row over the same method's ``pytorch`` row."""
    base = {r["method"]: r["seconds"] for r in rows if r["impl"] == "pytorch"}
    for r in rows:
        if r["method"] in base and r["seconds"] > 0:
            r["speedup"] = base[r["method"]] / r["seconds"]
    return rows
