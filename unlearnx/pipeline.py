"""The steps commands share: get the original model (checkpoint, or trained once and cached), get a
retrained reference, and measure a model on every split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from pathlib import Path

import torch
from torch import nn

from .data import Splits, TensorBatches
from .models import build_model, check_model_runs, load_checkpoint, parse_model_spec, save_state_dict, spec_fingerprint
from .training import NullProgress, Progress, TrainRecipe, train_model


def cache_root() -> Path:
    """``$UNLEARNX_CACHE`` or ``~/.cache/unlearnx``."""
    return Path(os.environ.get("UNLEARNX_CACHE") or Path.home() / ".cache" / "unlearnx")


def train_recipe_choice(splits: Splits, checkpoint=None) -> tuple[str, str]:
    """``(preset, why)``: the :class:`TrainRecipe` preset that trains originals and references on ``splits``.

    The competition's recipe (Adam 1e-4, class-weighted CE) fits the competition's own model but underfits
    from scratch elsewhere, so it is kept only where that model is reproduced: a competition folder whose
    original is a checkpoint (``checkpoint``, or the folder's ``original_model.pth``).
    """
    if splits.kind == "digits":
        return "digits", "The embedded digits' short SGD recipe."
    if splits.kind == "competition" and (checkpoint is not None or splits.checkpoint is not None):
        return "competition", ("The organisers' recipe: the original is the competition's model, and this is how "
                               "its original and retrained models were trained.")
    return "scratch", ("A from-scratch recipe: the competition's (Adam 1e-4, class-weighted CE) fits only the "
                       "competition's own model and underfits elsewhere.")


def default_train_recipe(splits: Splits, *, checkpoint=None, augment: bool = True,
                         preset: str | None = None) -> TrainRecipe:
    """The recipe that trains originals and references on ``splits`` (:func:`train_recipe_choice`; ``preset``
    names another). The ``scratch`` recipe gets the source's light augmentation unless ``augment=False``."""
    name = preset or train_recipe_choice(splits, checkpoint)[0]
    recipe = TrainRecipe.preset(name)
    if name == "scratch" and augment:
        recipe = dataclasses.replace(recipe, augment=splits.augmentation)
    return recipe


def describe_train_recipe(recipe: TrainRecipe) -> str:
    """One line with the values that matter: optimiser, schedule, loss, checkpoint choice, augmentation."""
    optimizer = (f"SGD lr {recipe.lr:g} momentum {recipe.momentum:g}" if recipe.optimizer == "sgd"
                 else f"{recipe.optimizer.capitalize()} lr {recipe.lr:g}")
    parts = [f"{optimizer} wd {recipe.weight_decay:g}", f"cosine over {recipe.epochs} epochs",
             f"batch {recipe.batch_size}", "class-weighted CE" if recipe.class_weighted else "CE",
             "best-validation checkpoint" if recipe.keep_best_validation else "last epoch kept",
             f"augmentation {recipe.augment}"]
    return ", ".join(parts)


# An original whose training accuracy closes less than this share of the gap between always predicting the
# majority class and 100% has barely learnt: unlearning results on it measure little.
UNDERTRAINED_SHARE = 0.25


def original_fit(splits: Splits, section: dict) -> dict:
    """How well a model fits: training (retain + forget) accuracy, the majority-class rate, the held-out split's
    accuracy, and ``under_trained``. ``section`` is :func:`measure`'s result for the model."""
    n_retain, n_forget = len(splits.retain), len(splits.forget)
    train_accuracy = ((section["retain"]["accuracy"] * n_retain + section["forget"]["accuracy"] * n_forget)
                      / (n_retain + n_forget))
    labels = torch.cat([splits.retain.labels, splits.forget.labels])
    majority = float(torch.bincount(labels, minlength=splits.num_classes).max()) / len(labels)
    held_out = splits.held_out
    return {"train_accuracy": train_accuracy, "majority_class_rate": majority, "held_out": held_out,
            "held_out_accuracy": section[held_out]["accuracy"] if held_out in section else None,
            "under_trained": train_accuracy < majority + UNDERTRAINED_SHARE * (1.0 - majority)}


def describe_fit(fit: dict) -> list[str]:
    """The fit as a line, plus a warning line when the model looks under-trained."""
    line = f"train accuracy {fit['train_accuracy']:.1%}"
    if fit["held_out"] is not None and fit["held_out_accuracy"] is not None:
        line += f", {fit['held_out']} (held-out) accuracy {fit['held_out_accuracy']:.1%}"
    line += f"; always predicting the majority class scores {fit['majority_class_rate']:.1%}"
    lines = [line]
    if fit["under_trained"]:
        lines.append("warning: the original looks under-trained (training accuracy barely above the majority "
                     "class); unlearning results on it are not meaningful. Train longer (unlearnx train --set "
                     "epochs=N) or with another recipe, and pass the result as --checkpoint")
    return lines


def _batches(splits: Splits, split, batch_size: int, device, shuffle: bool, generator=None, channels_last=False):
    return TensorBatches(split, batch_size, shuffle=shuffle, generator=generator, device=device,
                         normalization=splits.normalization, channels_last=channels_last)


def train_from_scratch(splits: Splits, arch: str, recipe: TrainRecipe, *, on: str = "train", seed: int = 0,
                       device="cpu", progress: Progress | None = None, resume_path=None) -> nn.Module:
    """Train ``arch`` on the training set (``on="train"``: retain + forget) or on retain only (a retrained
    reference), seeded by ``seed``; ``resume_path`` makes it resumable (see :func:`train_model`)."""
    if not parse_model_spec(arch).trains_from_scratch:
        raise ValueError(f"--model {arch}: training from scratch (an original without --checkpoint's weights, or "
                         "a retrained reference) needs a freshly initialised model, and a model file only holds "
                         "trained weights; give the model's factory instead (or --no-reference)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if on == "train":
        split = splits.train_split()
    elif on == "retain":
        split = splits.retain
    else:
        raise ValueError(f"train on 'train' or 'retain', not {on!r}")
    model = build_model(arch, splits.num_classes, splits.input_shape[0]).to(device)
    if parse_model_spec(arch).kind != "builtin":  # a clear line, not an error from inside the first step
        check_model_runs(model, splits.input_shape, splits.num_classes, arch)
    # The competition weights its CE by the training set's class counts (age_class_weights.json when given).
    counts = splits.class_counts if on == "train" else torch.bincount(split.labels, minlength=splits.num_classes).tolist()
    val = _batches(splits, splits.validation, 256, device, False) if splits.validation is not None else None
    # (recipe.augment is applied by train_model to these tensor-resident batches)
    train_model(model, _batches(splits, split, recipe.batch_size, device, True, generator), recipe,
                validation_batches=val, class_counts=counts, progress=progress, resume_path=resume_path,
                resume_key=training_key(splits, arch, recipe, on, seed))
    return model.eval()


def training_key(splits: Splits, arch: str, recipe: TrainRecipe, on: str, seed: int) -> str:
    """What a resumable training state belongs to: data split, architecture, recipe, training set, seed."""
    fields = {"split": splits.split_hash(), "arch": arch, "recipe": dataclasses.asdict(recipe), "on": on, "seed": seed}
    fingerprint = spec_fingerprint(arch)  # a user factory's code, torchvision's version; none for built-ins
    if fingerprint:
        fields["model_code"] = fingerprint
    payload = json.dumps(fields, sort_keys=True)
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
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", arch)[-40:]  # a spec may hold ':', '/', '='
    path = folder / f"{source}-{label}-{name}-seed{seed}-{key}.pt"
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


__all__ = ["cache_root", "default_train_recipe", "train_recipe_choice", "describe_train_recipe", "original_fit",
           "describe_fit", "train_from_scratch", "cached_model", "measure", "evaluation_batches", "Stopwatch",
           "NullProgress"]


def original_model(splits: Splits, *, checkpoint=None, arch: str | None = None, device="cpu",
                   progress: Progress | None = None, recipe: TrainRecipe | None = None) -> tuple[nn.Module, str, str]:
    """The model to unlearn from: ``checkpoint``, else a competition folder's ``original_model.pth``, else a
    model trained once for this data with ``recipe`` (default :func:`default_train_recipe`) and cached.
    Returns ``(model, arch, where_it_came_from)``."""
    from .models import default_arch, infer_arch

    checkpoint = checkpoint or splits.checkpoint  # a competition folder's original_model.pth
    spec = parse_model_spec(arch) if arch else None
    if spec is not None and spec.kind != "builtin":  # refuse a model that cannot take the data before any work
        check_model_runs(build_model(arch, splits.num_classes, splits.input_shape[0]), splits.input_shape,
                         splits.num_classes, arch)
    if checkpoint is not None:
        # Without an explicit arch the checkpoint's keys tell it.
        model = load_checkpoint(checkpoint, arch, splits.num_classes, splits.input_shape[0]).to(device).eval()
        return model, arch or infer_arch(model.state_dict()), str(checkpoint)
    if spec is not None and spec.kind == "file":  # the file holds the original's weights
        return build_model(arch, splits.num_classes, splits.input_shape[0]).to(device).eval(), arch, spec.target
    arch = arch or default_arch(splits.kind)
    model, path, cached = cached_model(splits, arch, recipe or default_train_recipe(splits), on="train",
                                       device=device, progress=progress)
    return model, arch, f"{path} ({'cached' if cached else 'trained now, cached'})"
