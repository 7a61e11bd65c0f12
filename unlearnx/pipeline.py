"""The steps commands share: get the original model (checkpoint, or trained once and cached), get a
retrained reference, and measure a model on every split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from .data import Splits, TensorBatches
from .models import build_model, load_checkpoint, save_state_dict
from .training import NullProgress, Progress, TrainRecipe, train_model


def cache_root() -> Path:
    """``$UNLEARNX_CACHE`` or ``~/.cache/unlearnx``."""
    return Path(os.environ.get("UNLEARNX_CACHE") or Path.home() / ".cache" / "unlearnx")


def default_train_recipe(splits: Splits) -> TrainRecipe:
    """Digits: a short SGD recipe (seconds); everything else: the competition's recipe."""
    return TrainRecipe.preset("digits" if splits.source == "digits" else "competition")


def _batches(splits: Splits, split, batch_size: int, device, shuffle: bool, generator=None, channels_last=False):
    return TensorBatches(split, batch_size, shuffle=shuffle, generator=generator, device=device,
                         normalization=splits.normalization, channels_last=channels_last)


def train_from_scratch(splits: Splits, arch: str, recipe: TrainRecipe, *, on: str = "train", seed: int = 0,
                       device="cpu", progress: Progress | None = None, resume_path=None) -> nn.Module:
    """Train ``arch`` on the training set (``on="train"``: retain + forget) or on retain only (a retrained
    reference), seeded by ``seed``; ``resume_path`` makes it resumable (see :func:`train_model`)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if on == "train":
        split = splits.train_split()
    elif on == "retain":
        split = splits.retain
    else:
        raise ValueError(f"train on 'train' or 'retain', not {on!r}")
    model = build_model(arch, splits.num_classes, splits.input_shape[0]).to(device)
    # The competition weights its CE by the training set's class counts (age_class_weights.json when given).
    counts = splits.class_counts if on == "train" else torch.bincount(split.labels, minlength=splits.num_classes).tolist()
    val = _batches(splits, splits.validation, 256, device, False) if splits.validation is not None else None
    train_model(model, _batches(splits, split, recipe.batch_size, device, True, generator), recipe,
                validation_batches=val, class_counts=counts, progress=progress, resume_path=resume_path,
                resume_key=training_key(splits, arch, recipe, on, seed))
    return model.eval()


def training_key(splits: Splits, arch: str, recipe: TrainRecipe, on: str, seed: int) -> str:
    """What a resumable training state belongs to: data split, architecture, recipe, training set, seed."""
    payload = json.dumps({"split": splits.split_hash(), "arch": arch, "recipe": dataclasses.asdict(recipe),
                          "on": on, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _cache_key(splits: Splits, arch: str, recipe: TrainRecipe, on: str, seed: int, device) -> str:
    from .fingerprint import cache_identity

    payload = json.dumps({"run": training_key(splits, arch, recipe, on, seed), **cache_identity(device)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached_model(splits: Splits, arch: str, recipe: TrainRecipe, *, on: str, seed: int = 0, device="cpu",
                 progress: Progress | None = None, cache_dir: Path | None = None) -> tuple[nn.Module, Path, bool]:
    """A model trained once per (data split, arch, recipe, seed, code fingerprint, torch, device type) and
    kept under the cache folder. Returns ``(model, path, was_cached)``.
    """
    from .cache_index import entry_meta, write_sidecar
    from .fingerprint import cache_identity

    folder = Path(cache_dir or cache_root()) / "models"
    name = "original" if on == "train" else "retrained"
    source = Path(splits.source).name or "data"
    key = _cache_key(splits, arch, recipe, on, seed, device)
    path = folder / f"{source}-{arch}-{name}-seed{seed}-{key}.pt"
    if path.exists():
        model = load_checkpoint(path, arch, splits.num_classes, splits.input_shape[0]).to(device).eval()
        return model, path, True
    partial = path.with_suffix(".partial")
    # The metadata first, so `unlearnx cache` also knows whose the partial training state is.
    write_sidecar(path, entry_meta(f"{name} model", key, cache_identity(device), source=splits.source, arch=arch))
    model = train_from_scratch(splits, arch, recipe, on=on, seed=seed, device=device, progress=progress,
                               resume_path=partial)
    save_state_dict(model, path)
    partial.unlink(missing_ok=True)  # only once the model is safely saved
    return model, path, False


def evaluation_batches(splits: Splits, device, batch_size: int = 256) -> dict:
    return {name: (_batches(splits, split, batch_size, device, False) if split is not None else None)
            for name, split in splits.named().items()}


def measure(model: nn.Module, splits: Splits, device="cpu", all_mias: bool = False) -> dict:
    """``{split: {"loss", "accuracy"}}`` for every split plus the starting kit's ``mia`` (forget vs test,
    or forget vs validation when the source has no test split). ``all_mias`` adds ``mias``: the SVC family
    (shadow members = a seeded random sample of |held-out| retain examples, vs the held-out split; SalUn
    takes the first ones, which on class-sorted sources are one or two classes) and entropy-LR.

    A set too small for an attack gives ``mia_unavailable`` (the reason) instead of ``mia``/``mias``."""
    from .metrics import entropy_lr_mia, loss_accuracy, per_example_losses, predict, simple_mia, svc_mia_all

    section, losses, probs = {}, {}, {}
    for name, batches in evaluation_batches(splits, device).items():
        if batches is None:
            continue
        logits, labels = predict(model, batches, device)
        section[name] = loss_accuracy(logits, labels)
        losses[name] = per_example_losses(logits, labels)
        probs[name] = (logits.double().softmax(1), labels)
    held_out = "test" if "test" in losses else ("validation" if "validation" in losses else None)
    if held_out is None:
        section["mia_unavailable"] = "no test or validation split to compare the forget set with"
        return section
    try:
        section["mia"] = float(simple_mia(losses["forget"].numpy(), losses[held_out].numpy()))
        if all_mias:
            pick = shadow_members(len(probs["retain"][1]), len(probs[held_out][1]))
            shadow_train = (probs["retain"][0][pick], probs["retain"][1][pick])
            mias = svc_mia_all(shadow_train, probs[held_out], probs["forget"])
            mias["mia.entropy_lr"] = float(entropy_lr_mia(probs["retain"][0], probs[held_out][0], probs["forget"][0]))
            section["mias"] = {"mia.loss_lr": section["mia"], **{k: float(v) for k, v in mias.items()}}
    except ValueError as exc:  # too few examples for the attack: the other metrics still stand
        section.pop("mia", None)
        section["mia_unavailable"] = str(exc)
    return section


def shadow_members(n_retain: int, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded random sample of ``min(n, n_retain)`` retain examples (the SVC attacks' shadow
    members): every class in proportion, whatever order the source lists its examples in."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_retain, generator=generator)[:min(n, n_retain)].sort().values


class Stopwatch:
    """Named wall-clock phases: ``with watch("unlearn"): ...``; ``watch.timings`` is a dict of seconds."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        watch = self

        class _Phase:
            def __enter__(self):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                watch.timings[name] = watch.timings.get(name, 0.0) + time.perf_counter() - self.start

        return _Phase()


__all__ = ["cache_root", "default_train_recipe", "train_from_scratch", "cached_model", "measure",
           "evaluation_batches", "Stopwatch", "NullProgress"]


def original_model(splits: Splits, *, checkpoint=None, arch: str | None = None, device="cpu",
                   progress: Progress | None = None) -> tuple[nn.Module, str, str]:
    """The model to unlearn from: ``checkpoint``, else a competition folder's ``original_model.pth``, else a
    model trained once for this data and cached. Returns ``(model, arch, where_it_came_from)``."""
    from .models import default_arch, infer_arch

    checkpoint = checkpoint or splits.checkpoint  # a competition folder's original_model.pth
    if checkpoint is not None:
        # Without an explicit arch the checkpoint's keys tell it.
        model = load_checkpoint(checkpoint, arch, splits.num_classes, splits.input_shape[0]).to(device).eval()
        return model, arch or infer_arch(model.state_dict()), str(checkpoint)
    arch = arch or default_arch(splits.kind)
    model, path, cached = cached_model(splits, arch, default_train_recipe(splits), on="train", device=device,
                                       progress=progress)
    return model, arch, f"{path} ({'cached' if cached else 'trained now, cached'})"
