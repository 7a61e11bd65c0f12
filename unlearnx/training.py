"""The loops every method and command shares: one epoch over batches, optimisers, schedules, training.

Methods compose these; none writes its own batch loop unless its recipe really is different (e.g. the
zipped forget/retain rounds of SCL).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .atomic import torch_save

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


class Progress(Protocol):
    """Where loops report work: ``start`` a phase of ``total`` steps, ``advance`` per step."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class NullProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine(optimizer: torch.optim.Optimizer, t_max: int, eta_min: float = 0.0):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(t_max)), eta_min=eta_min)


def cross_entropy(weight: Tensor | None = None) -> LossFn:
    """Plain (optionally class-weighted) CE as a loss function of ``(model, x, y)``."""

    def loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        w = weight.to(x.device) if weight is not None else None
        return F.cross_entropy(model(x), y, weight=w)

    return loss


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast on CUDA when asked; a no-op otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def run_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *,
              scheduler=None, progress: Progress | None = None, description: str = "train",
              amp_dtype: torch.dtype | None = None, max_steps: int | None = None,
              before_step: Callable[[], None] | None = None, train_mode: bool = True) -> float:
    """One pass of ``loss_fn`` over ``batches``; ``scheduler`` (if any) steps after every batch.

    ``before_step`` runs between ``backward`` and ``optimizer.step`` (gradient masks, e.g. SalUn).
    ``train_mode=False`` trains with the model in eval mode (BatchNorm statistics frozen, as NegGrad+'s
    sources do). Returns the mean loss. Raises if the loss becomes NaN/inf, naming the phase.
    """
    model.train(train_mode)
    progress = progress or NullProgress()
    total = len(batches) if hasattr(batches, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    progress.start(description, total)
    device = next(model.parameters()).device
    total_loss, steps = 0.0, 0
    last = None
    for x, y in batches:
        if max_steps is not None and steps >= max_steps:
            break
        with autocast_for(device, amp_dtype):
            loss = loss_fn(model, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        last = loss.detach()
        total_loss += float(last) if steps % 16 == 0 else 0.0  # a sync every 16 steps keeps the GPU busy
        steps += 1
        progress.advance()
    if last is not None and not torch.isfinite(last):
        raise FloatingPointError(f"{description}: the loss became {float(last)}; lower the learning rate")
    return float(last) if last is not None else math.nan


@dataclass
class TrainRecipe:
    """How an original (or retrained) model is trained.

    ``competition``: the organisers' recipe (Adam 1e-4, wd 5e-3, cosine T_max=epochs, class-weighted CE,
    30 epochs, batch 64, best-validation checkpoint, no augmentation); it fits the competition's own model,
    but from scratch on other data it underfits. ``scratch``: the usual from-scratch recipe (SGD 0.1,
    momentum 0.9, wd 5e-4, cosine over 30 epochs, batch 128, plain CE, last epoch kept; the source's light
    ``augment`` is chosen by :func:`unlearnx.pipeline.default_train_recipe`). ``starting-kit``: SGD 0.1,
    momentum 0.9, wd 5e-4, cosine. ``digits``: a short SGD recipe for the embedded digits.
    ``augment`` (``none``, ``crop``, ``flip``, ``crop+flip``; see :mod:`unlearnx.data.augment`) needs
    tensor-resident batches.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 30
    batch_size: int = 64
    class_weighted: bool = False
    keep_best_validation: bool = False
    min_save_epoch: int = 0
    augment: str = "none"

    def __post_init__(self):
        from .data.augment import check_augmentation
        from .typed import coerce_fields

        coerce_fields(self, "training recipe")
        check_augmentation(self.augment)
        for key, ok, need in (("epochs", self.epochs >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                              ("batch_size", self.batch_size >= 1, ">= 1"), ("momentum", 0 <= self.momentum < 1,
                              "in [0, 1)"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                              ("optimizer", self.optimizer in ("sgd", "adam"), "'sgd' or 'adam'")):
            if not ok:
                raise ValueError(f"training recipe: {key} must be {need}, got {getattr(self, key)}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainRecipe":
        presets = {
            "competition": dict(optimizer="adam", lr=1e-4, momentum=0.0, weight_decay=5e-3, epochs=30, batch_size=64,
                                class_weighted=True, keep_best_validation=True),
            "scratch": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=30, batch_size=128),
            "starting-kit": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=30, batch_size=128),
            "digits": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=25, batch_size=64),
        }
        if name not in presets:
            raise ValueError(f"unknown training recipe {name!r}; choose one of {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})


def class_weights(counts, power: float = -1.0) -> Tensor:
    """``count ** power`` per class (1/count for the competition's CE); empty classes get weight 0."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    w = torch.where(counts > 0, counts.clamp(min=1).pow(power), torch.zeros_like(counts))
    return w


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable) -> float:
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)


def train_model(model: nn.Module, train_batches, recipe: TrainRecipe, *, validation_batches=None,
                class_counts=None, progress: Progress | None = None, amp_dtype=None,
                resume_path=None, resume_key: str = "") -> nn.Module:
    """Train ``model`` in place with ``recipe``; with ``keep_best_validation`` it ends on the best epoch.

    With ``resume_path``, the full training state (model, optimiser, schedule, best checkpoint, RNG states)
    is saved there after every epoch and picked up from there if it exists, so an interrupted run resumes
    where it stopped and ends exactly as an uninterrupted one. The state records ``resume_key`` (say, a hash
    of data split, architecture, recipe and seed): a state saved under another key is never resumed. The
    caller removes the file once the final model is saved (a crash in between loses nothing).
    """
    if recipe.augment != "none":
        train_batches = _augmented(train_batches, recipe.augment)
    params = model.parameters()
    if recipe.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    elif recipe.optimizer == "sgd":
        optimizer = sgd(params, recipe.lr, recipe.momentum, recipe.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use 'sgd' or 'adam'")
    scheduler = cosine(optimizer, recipe.epochs)
    weight = class_weights(class_counts) if recipe.class_weighted and class_counts is not None else None
    loss_fn = cross_entropy(weight)
    best, best_state, first_epoch = -1.0, None, 0
    generator = getattr(train_batches, "generator", None)
    state = read_resume_state(resume_path, resume_key)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        best, best_state, first_epoch = state["best"], state["best_state"], state["epoch"]
        torch.set_rng_state(state["rng"])
        if generator is not None and state["generator"] is not None:
            generator.set_state(state["generator"])
    for epoch in range(first_epoch, recipe.epochs):
        run_epoch(model, train_batches, optimizer, loss_fn, progress=progress,
                  description=f"train epoch {epoch + 1}/{recipe.epochs}", amp_dtype=amp_dtype)
        scheduler.step()
        if recipe.keep_best_validation and validation_batches is not None and epoch >= recipe.min_save_epoch:
            acc = accuracy(model, validation_batches)
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
        if resume_path is not None:
            torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "best": best, "best_state": best_state,
                          "epoch": epoch + 1, "rng": torch.get_rng_state(), "key": resume_key,
                          "generator": generator.get_state() if generator is not None else None}, resume_path)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


def read_resume_state(resume_path, resume_key: str = "") -> dict | None:
    """The training state saved at ``resume_path`` if it exists, is readable and was saved under
    ``resume_key``; else None (training starts over and overwrites it)."""
    if resume_path is None or not Path(resume_path).exists():
        return None
    try:
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged state is not worth a crash: train from the start
        return None
    if not isinstance(state, dict) or state.get("key", "") != resume_key:
        return None
    return state


def _augmented(batches, augment: str):
    """``batches`` drawing ``augment`` on every pass (tensor-resident batches only: they hold uint8 pixels)."""
    from .data.augment import check_augmentation

    check_augmentation(augment)
    if not hasattr(batches, "augmented"):
        raise ValueError(f"training with augment={augment!r} needs tensor-resident batches (unlearnx.data."
                         "TensorBatches), not a DataLoader; use augment='none' or augment inside the loader")
    return batches.augmented(augment)

