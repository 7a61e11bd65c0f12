"""Per-split loss and accuracy of a classifier (retain, forget, validation, test).

Accuracy is argmax of the logits in eval mode, as the competition measured RA/TA; loss is the mean
(unweighted) cross-entropy.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["predict", "loss_accuracy", "per_example_losses", "evaluate_splits"]


def predict(model: nn.Module, batches: Iterable, device=None, *, split: str | None = None) -> tuple[Tensor, Tensor]:
    """Logits ``[N, C]`` (float32, CPU) and labels ``[N]`` (int64, CPU) of ``model`` over ``batches``.

    ``batches`` yields ``(x, y)`` tuples (or the competition's dicts with ``image``/``age_group``). Runs
    in eval mode under ``torch.no_grad()`` and restores the model's training flag afterwards. ``device``
    defaults to the device of the model's parameters. ``split`` only names the data in error messages.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if batches is None:
        raise ValueError(f"{_name(split)} is None: nothing to predict")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    logits_parts, label_parts = [], []
    model.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(batches):
                x, y = _as_xy(batch, index, split)
                out = model(x.to(device, non_blocking=True))
                if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
                    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(f"model output for batch {index} of {_name(split)} has shape {shape}; "
                                     f"expected logits [{x.shape[0]}, num_classes]")
                logits_parts.append(out.detach().float().cpu())
                label_parts.append(y.detach().cpu().to(torch.int64).reshape(-1))
    finally:
        model.train(was_training)
    if not logits_parts:
        raise ValueError(f"{_name(split)} is empty: no batches")
    logits = torch.cat(logits_parts)
    labels = torch.cat(label_parts)
    if logits.shape[0] == 0:
        raise ValueError(f"{_name(split)} is empty: 0 examples")
    _check_logits(logits, labels, split)
    return logits, labels


def per_example_losses(logits, labels) -> Tensor:
    """Cross-entropy per example (float32 ``[N]``), as the starting kit's ``reduction="none"`` loss."""
    logits, labels = _as_logits_labels(logits, labels)
    _check_logits(logits, labels, None)
    return F.cross_entropy(logits.float(), labels, reduction="none")


def loss_accuracy(logits, labels) -> dict[str, float]:
    """``{"loss": mean cross-entropy, "accuracy": fraction argmax == label in [0, 1]}``."""
    losses = per_example_losses(logits, labels)
    logits, labels = _as_logits_labels(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
    return {"loss": losses.double().mean().item(), "accuracy": accuracy}


def evaluate_splits(model: nn.Module, splits: Mapping[str, Iterable | None], device=None) -> dict[str, dict[str, float]]:
    """Loss and accuracy per named split (``{"retain": batches, "test": batches, ...}``); None skipped."""
    if not isinstance(splits, Mapping):
        raise TypeError(f"splits must be a mapping name -> batches, got {type(splits).__name__}")
    results = {}
    for name, batches in splits.items():
        if batches is None:
            continue
        logits, labels = predict(model, batches, device, split=name)
        results[name] = loss_accuracy(logits, labels)
    return results


# ---------------------------------------------------------------------------------------------------
def _name(split: str | None) -> str:
    return f"split '{split}'" if split else "the data"


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _as_xy(batch, index: int, split: str | None) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        if "image" in batch and "age_group" in batch:
            x, y = batch["image"], batch["age_group"]
        else:
            raise ValueError(f"batch {index} of {_name(split)} is a dict without 'image'/'age_group' keys "
                             f"(keys: {sorted(batch)})")
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        raise TypeError(f"batch {index} of {_name(split)} must be an (x, y) tuple, got {type(batch).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"batch {index} of {_name(split)}: x and y must be tensors, got "
                        f"{type(x).__name__} and {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"batch {index} of {_name(split)}: labels must be integers, got {y.dtype}")
    if y.numel() != x.shape[0]:
        raise ValueError(f"batch {index} of {_name(split)}: {x.shape[0]} inputs but {y.numel()} labels")
    return x, y


def _as_logits_labels(logits, labels) -> tuple[Tensor, Tensor]:
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [N, C], got {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    return logits, labels.to(torch.int64)


def _check_logits(logits: Tensor, labels: Tensor, split: str | None) -> None:
    if logits.shape[0] == 0:
        raise ValueError(f"{_name(split)} is empty: 0 examples")
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite.all(dim=1))[0])
        kind = "NaN" if bool(torch.isnan(logits[row]).any()) else "inf"
        raise ValueError(f"model produced {kind} logits on {_name(split)} (example {row})")
    num_classes = logits.shape[1]
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise ValueError(f"label {int(labels[row])} at example {row} of {_name(split)} is out of range for "
                         f"{num_classes} classes")
