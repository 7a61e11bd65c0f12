"""The competition's multi-run protocol: N unlearned runs from ONE original model, N models retrained
from scratch on the retain set, then the ε-based forget score over the forget set's logit-scaled
confidences and the utility ratios (metric.md §2).

Each run is reduced to what the metric needs — forget-set confidences, retain/test accuracy, seconds —
and stored as one small ``.npz`` per run. Retrained references are keyed by the data split, model and
training recipe, so every method (and later invocations) reuse them; unlearned runs are keyed by the
original model, method and recipe. Both are resumable: a run already on disk is not redone.

A run is described by a :class:`RunTask` (what it needs, not tensors) and done by :func:`perform_run`;
:mod:`unlearnx.executor` decides where (this process, local worker processes, a Ray cluster). Results come
back to this process, which alone writes the run store, so the cache is the same wherever runs ran.
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

from .atomic import save_npz, write_json
from .data import Splits
from .models import spec_fingerprint
from .pipeline import cache_root, evaluation_batches, train_from_scratch
from .training import NullProgress, Progress, TrainRecipe

# With N = 2 runs a side the metric's largest scorable epsilon is ceil(ln(N - 1)) = 0, so F is 0 whatever
# the method: a score needs at least 3 runs a side (the competition used 512).
MIN_SCORE_RUNS = 3

# What a compiled run records about compiling, with its type (see unlearnx.compiled.CompileStats.as_dict).
COMPILE_FIELDS = {"compile_seconds": float, "graphs_compiled": int, "graph_breaks": int}


@dataclass
class RunSet:
    """Per-run results: ``confs`` [runs, forget examples]; accuracies (fractions) and seconds per run.

    ``reused`` marks runs read back from the cache (their ``seconds`` were measured by an earlier
    process); ``timed_on`` says where each run's seconds were measured (see :func:`timing_host`).
    """

    confs: np.ndarray
    retain_accuracy: np.ndarray
    test_accuracy: np.ndarray
    forget_accuracy: np.ndarray
    seconds: np.ndarray
    mia: np.ndarray
    reused: np.ndarray = None  # type: ignore[assignment]
    timed_on: tuple = ()
    native: np.ndarray = None  # type: ignore[assignment]  # per run: a kernel of unlearnx._C ran
    # Per run (--compile): seconds spent compiling the model, kept out of ``seconds``; graphs compiled; graph
    # breaks. Zero for runs that were not compiled (and for runs stored before these were recorded).
    compile_seconds: np.ndarray = None  # type: ignore[assignment]
    graphs_compiled: np.ndarray = None  # type: ignore[assignment]
    graph_breaks: np.ndarray = None  # type: ignore[assignment]
    # Per run: where it ran ({"node", "worker"}) and how many runs ran at once ("concurrent").
    placement: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.reused is None:
            self.reused = np.zeros(self.n, dtype=bool)
        if self.native is None:
            self.native = np.zeros(self.n, dtype=bool)
        for name, kind in COMPILE_FIELDS.items():
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n, dtype=kind))

    @property
    def n(self) -> int:
        return int(self.confs.shape[0])

    def compile_totals(self) -> dict:
        """``{"compile_seconds", "graphs_compiled", "graph_breaks"}`` summed over the runs."""
        return {name: kind(getattr(self, name).sum()) for name, kind in COMPILE_FIELDS.items()}

    def cache_counts(self) -> dict:
        """``{"reused": R, "ran": r}`` for a report's ``cache`` section."""
        reused = int(np.count_nonzero(self.reused))
        return {"reused": reused, "ran": self.n - reused}

    @property
    def timed_alone(self) -> np.ndarray:
        """Seconds of the runs that ran alone (RTE and the time gate use these); all runs when none did."""
        alone = np.array([p["concurrent"] == 1 for p in self.placement], dtype=bool)
        return self.seconds[alone] if alone.size == self.n and alone.any() else self.seconds

    @classmethod
    def from_results(cls, results, reused=None) -> "RunSet":
        """Stack per-run dicts (or loaded ``.npz`` files) as :func:`run_summary` + ``seconds`` produce them.
        Runs stored before placement was recorded ran in one process, one at a time."""
        results = list(results)
        extra = ("confs", "reused", "timed_on", "native", "placement", *COMPILE_FIELDS)
        numeric = [f.name for f in dataclasses.fields(cls) if f.name not in extra]
        placement = [{"node": str(r["node"]) if "node" in r else "local",
                      "worker": str(r["worker"]) if "worker" in r else "driver",
                      "concurrent": int(r["concurrent"]) if "concurrent" in r else 1} for r in results]
        return cls(confs=np.stack([r["confs"] for r in results]),
                   **{name: np.array([float(r[name]) for r in results]) for name in numeric},
                   reused=np.asarray(reused if reused is not None else [False] * len(results), dtype=bool),
                   timed_on=tuple(str(r["timed_on"]) if "timed_on" in r else "" for r in results),
                   native=np.array([bool(r["native"]) if "native" in r else False for r in results]),
                   **{name: np.array([r[name] if name in r else 0 for r in results], dtype=kind)
                      for name, kind in COMPILE_FIELDS.items()},
                   placement=placement)


def comparable_timings(*runsets: RunSet, device=None) -> str | None:
    """None when every run of ``runsets`` was timed on one host (and on ``device``'s, if given), else the
    reason their seconds must not be compared (an RTE from two machines or two torch versions is noise)."""
    from .fingerprint import timing_host

    hosts = {h for runset in runsets for h in runset.timed_on}
    if device is not None:
        hosts.add(timing_host(device))
    if "" in hosts:
        return "some runs do not record where they were timed"
    if len(hosts) > 1:
        return "runs were timed on different hosts: " + " | ".join(sorted(hosts))
    return None


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
        try:
            out["mia"] = float(simple_mia(per_example_losses(logits, labels).numpy(),
                                          per_example_losses(held_logits, held_labels).numpy()))
        except ValueError:  # too few examples for the attack: NaN, the score does not use it
            pass
    return out


class RunStore:
    """A folder of ``run-<i>.npz`` files, written atomically, so a long protocol can resume."""

    def __init__(self, folder: Path, meta: dict):
        from .cache_index import entry_meta

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            write_json(meta_path, entry_meta(meta.get("kind", "runs"), self.folder.name,
                                             {k: v for k, v in meta.items() if k != "kind"}), default=str)

    def path(self, i: int) -> Path:
        return self.folder / f"run-{i:04d}.npz"

    def has(self, i: int) -> bool:
        return self.path(i).exists()

    def save(self, i: int, result: dict) -> None:
        save_npz(self.path(i), **{k: np.asarray(v) for k, v in result.items()})

    def load(self, n: int, reused=None) -> RunSet:
        return RunSet.from_results((np.load(self.path(i)) for i in range(n)), reused=reused)


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RunTask:
    """One run of the protocol, described by what it needs; the splits and the original model travel
    separately, once per worker (see :mod:`unlearnx.executor`).

    ``kind`` is ``"retrained"`` (train ``arch`` from scratch on the retain set with ``recipe``) or
    ``"unlearned"`` (``method`` with ``recipe`` from the original model).
    """

    kind: str
    index: int
    seed: int
    recipe: object
    method: str | None = None
    arch: str | None = None
    fused: bool = True
    batch_size: int = 64
    channels_last: bool = False
    amp_dtype: object = None
    device: str = "cpu"
    compile: bool = False

    def describe(self) -> str:
        return f"{self.method or 'retrained reference'} run {self.index}"


def perform_run(task: RunTask, splits: Splits, original: nn.Module | None, progress: Progress | None = None,
                device=None, make_context=None) -> dict:
    """Do one run and reduce it to what the metric needs (:func:`run_summary` plus ``seconds``).
    ``make_context(model, generator)``: see :func:`unlearned_runs`."""
    from .api import seed_everything, splits_context
    from .compiled import compiled
    from .fingerprint import timing_host
    from .methods import run_method
    from .ops import native_calls

    progress = progress or NullProgress()
    device = device if device is not None else task.device
    if task.kind == "retrained":
        start = time.perf_counter()
        model = train_from_scratch(splits, task.arch, task.recipe, on="retain", seed=task.seed, device=device,
                                   progress=progress)
        seconds = time.perf_counter() - start
        return {**run_summary(model, splits, device), "seconds": seconds, "timed_on": timing_host(device)}
    model = copy.deepcopy(original).to(device)
    generator = seed_everything(task.seed)
    if make_context is not None:
        ctx = make_context(model, generator)
    else:
        ctx = splits_context(model, splits, batch_size=task.batch_size, fused=task.fused, generator=generator,
                             progress=progress, channels_last=task.channels_last, amp_dtype=task.amp_dtype)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    calls_before = native_calls()
    with compiled(model, task.compile) as compile_stats:  # evaluation below runs the eager model
        run_method(model, ctx, task.method, task.recipe)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start - compile_stats.seconds  # a run's seconds exclude compiling
    return {**run_summary(model, splits, device), "seconds": seconds, "timed_on": timing_host(device),
            "native": native_calls() > calls_before, **compile_stats.as_dict()}


def _complete(store: RunStore, tasks: list[RunTask], splits: Splits, original, executor, progress, label: str):
    """Run the tasks whose results are not on disk yet; each result is saved as soon as it arrives."""
    from .executor import SerialExecutor

    reused = [store.has(t.index) for t in tasks]
    missing = [t for t, done in zip(tasks, reused) if not done]
    if missing:
        executor = executor or SerialExecutor()
        for task, result in executor.run(missing, splits, original, progress=progress, label=label):
            store.save(task.index, result)
    return store.load(len(tasks), reused)


def retrained_references(splits: Splits, arch: str, recipe: TrainRecipe, n: int, *, device="cpu",
                         cache_dir: Path | None = None, progress: Progress | None = None,
                         executor=None) -> RunSet:
    """``n`` models trained from scratch on the retain set (seeds 1000..1000+n-1), cached and resumable;
    ``executor`` (see :mod:`unlearnx.executor`) says where they train (default: here, one after another).
    The cache key includes the code fingerprint, torch version and device type (:func:`cache_identity`)."""
    from .fingerprint import cache_identity

    progress = progress or NullProgress()
    meta = {"kind": "references", "split": splits.split_hash(), "arch": arch, "recipe": dataclasses.asdict(recipe),
            **cache_identity(device)}
    if fingerprint := spec_fingerprint(arch):  # a user factory's source, torchvision's version; none for built-ins
        meta["model_code"] = fingerprint
    store = RunStore(Path(cache_dir or cache_root()) / "references" / _key(meta), meta)
    tasks = [RunTask("retrained", i, 1000 + i, recipe, arch=arch, device=str(device)) for i in range(n)]
    return _complete(store, tasks, splits, None, executor, progress, "retrained references")


def unlearned_runs(original: nn.Module, splits: Splits, method: str, recipe, n: int, *, fused: bool = True,
                   device="cpu", base_seed: int = 0, cache_dir: Path | None = None,
                   progress: Progress | None = None, batch_size: int = 64, channels_last: bool = False,
                   amp_dtype=None, use_cache: bool = True, make_context=None, executor=None,
                   compile: bool = False) -> RunSet:
    """``n`` runs of ``method`` from the same ``original`` with seeds ``base_seed + i``; ``compile`` runs the
    method's model calls compiled (see :mod:`unlearnx.compiled`; each run's ``seconds`` exclude compiling).

    ``make_context(model, generator)`` replaces the default tensor-resident context (bench uses it to run
    the notebook-style DataLoader baseline); such runs are never cached and always run here, serially.
    """
    from .fingerprint import cache_identity

    progress = progress or NullProgress()
    meta = {"kind": "unlearned runs", "split": splits.split_hash(), "original": _state_hash(original),
            "method": method, "recipe": dataclasses.asdict(recipe), "fused": fused, "base_seed": base_seed,
            "batch_size": batch_size, "channels_last": channels_last, "amp": str(amp_dtype), "compile": compile,
            **cache_identity(device)}
    tasks = [RunTask("unlearned", i, base_seed + i, recipe, method=method, fused=fused, batch_size=batch_size,
                     channels_last=channels_last, amp_dtype=amp_dtype, device=str(device), compile=compile)
             for i in range(n)]
    if make_context is None:
        folder = Path(cache_dir or cache_root()) / "runs" / f"{method}-{_key(meta)}"
        if use_cache:
            return _complete(RunStore(folder, meta), tasks, splits, original, executor, progress,
                             f"{method} runs")
        from .executor import SerialExecutor

        executor = executor or SerialExecutor()
        return RunSet.from_results(r for _, r in executor.run(tasks, splits, original, progress=progress,
                                                               label=f"{method} runs"))
    return RunSet.from_results(perform_run(t, splits, original, progress, make_context=make_context) for t in tasks)


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
