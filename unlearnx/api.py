"""The Python API: run a method on a model, from user DataLoaders or from tensor-resident splits."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from .data.batches import TensorBatches, as_batches
from .data.splits import Splits
from .methods import UnlearnContext, make_recipe, run_method
from .training import NullProgress, Progress


def seed_everything(seed: int | None) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) and return a generator for a method's own draws.

    ``seed=None`` draws a fresh seed, so unseeded runs differ (the competition metric needs that spread).
    """
    generator = torch.Generator()
    if seed is None:
        generator.seed()
        return generator
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator.manual_seed(seed)
    return generator


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters to unlearn") from None


def _dtype_of(model: nn.Module) -> torch.dtype:
    """Inputs follow the model's floating dtype (float32, or float64 for exactness checks)."""
    dtype = next(model.parameters()).dtype
    return dtype if dtype.is_floating_point and dtype != torch.float16 else torch.float32


def make_context(model: nn.Module, retain, forget, validation=None, *, num_classes: int | None = None,
                 fused: bool = True, generator: torch.Generator | None = None,
                 progress: Progress | None = None, amp_dtype: torch.dtype | None = None,
                 retain_class_counts=None) -> UnlearnContext:
    from . import ops

    device = _device_of(model)
    generator = generator or torch.Generator()
    dtype = _dtype_of(model)
    retain = as_batches(retain, device, generator, dtype)
    forget = as_batches(forget, device, generator, dtype)
    validation = as_batches(validation, device, generator, dtype)
    if num_classes is None:  # the width of the logits on the first retain batch
        from .layers import model_roles

        try:
            num_classes = model_roles(model, retain).num_classes
        except ValueError as exc:
            raise ValueError(f"cannot tell the number of classes from the model ({exc}): pass num_classes") from None
    return UnlearnContext(retain=retain, forget=forget, validation=validation, num_classes=num_classes,
                          ops=ops.select(fused), generator=generator, device=device,
                          progress=progress or NullProgress(), amp_dtype=amp_dtype,
                          retain_class_counts=retain_class_counts)


def unlearn(net: nn.Module, retain_loader, forget_loader, validation_loader=None, method: str = "scl",
            seed: int | None = None, fused: bool = True, progress: Progress | None = None,
            recipe=None, compile: bool = False, **overrides) -> nn.Module:
    """Unlearn ``forget_loader`` from ``net`` in place with ``method`` and return ``net``.

    Works as the competition's ``unlearning(net, retain, forget, validation)``: loaders may yield
    ``(x, y)`` tuples or dicts with ``image`` and ``age_group``. ``seed`` makes the run reproducible
    (None: a fresh random run). ``fused=False`` runs the pure-PyTorch losses as the notebooks wrote them.
    Keyword ``overrides`` change recipe values (``lr=0.01``); unknown names raise with the valid ones.
    ``compile=True`` runs the method's model calls through ``torch.compile`` (see :mod:`unlearnx.compiled`):
    worth it for long runs, or many runs in one process, of an architecture it speeds up.
    """
    recipe = recipe or make_recipe(method, overrides)
    generator = seed_everything(seed)
    ctx = make_context(net, retain_loader, forget_loader, validation_loader, fused=fused, generator=generator,
                       progress=progress)
    return _run(net, ctx, method, recipe, compile)


def _run(model: nn.Module, ctx, method: str, recipe, compile: bool) -> nn.Module:
    from .compiled import compiled

    with compiled(model, compile):
        return run_method(model, ctx, method, recipe)


def splits_context(model: nn.Module, splits: Splits, *, batch_size: int = 64, fused: bool = True,
                   generator: torch.Generator | None = None, progress: Progress | None = None,
                   channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> UnlearnContext:
    """A context whose batches come straight from tensor-resident splits (the fast path)."""
    device = _device_of(model)
    generator = generator or torch.Generator()

    def batches(split, shuffle=True):
        if split is None:
            return None
        return TensorBatches(split, batch_size, shuffle=shuffle, generator=generator, device=device,
                             normalization=splits.normalization, channels_last=channels_last,
                             dtype=_dtype_of(model))

    counts = torch.bincount(splits.retain.labels, minlength=splits.num_classes).tolist()
    return make_context(model, batches(splits.retain), batches(splits.forget), batches(splits.validation),
                        num_classes=splits.num_classes, fused=fused, generator=generator, progress=progress,
                        amp_dtype=amp_dtype, retain_class_counts=counts)


def unlearn_splits(model: nn.Module, splits: Splits, method: str = "scl", *, seed: int | None = None,
                   fused: bool = True, recipe=None, progress: Progress | None = None, harness_batch_size: int = 64,
                   channels_last: bool = False, amp_dtype: torch.dtype | None = None, compile: bool = False,
                   **overrides) -> nn.Module:
    """:func:`unlearn` on :class:`~unlearnx.data.Splits` without DataLoaders.

    ``harness_batch_size`` is the batch size of the three splits as a method receives them (the
    competition harness used 64); recipe values, including a recipe's own ``batch_size``, go in ``overrides``.
    ``compile``: as in :func:`unlearn`.
    """
    recipe = recipe or make_recipe(method, overrides)
    generator = seed_everything(seed)
    ctx = splits_context(model, splits, batch_size=harness_batch_size, fused=fused, generator=generator,
                         progress=progress, channels_last=channels_last, amp_dtype=amp_dtype)
    return _run(model, ctx, method, recipe, compile)


__all__ = ["unlearn", "unlearn_splits", "make_context", "splits_context", "seed_everything"]
