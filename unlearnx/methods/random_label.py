"""Random labels (RL), the SalUn code base's CIFAR-10 branch (``unlearn/RL.py``).

Each epoch: one pass over the forget set with labels redrawn uniformly at random for every batch (CE
step), then one pass over the retain set with the true labels (CE step), one SGD optimiser for both.
The random labels are the method's only randomness beyond data order; they come from ``ctx.generator``.
SalUn (``salun.py``) is this loop with a gradient mask, so the loop is shared from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..training import cross_entropy, run_epoch, sgd
from .base import Recipe, register


@dataclass
class RandomLabelRecipe(Recipe):
    source = ("OPTML-Group/Unlearn-Saliency (commit a6e89fd), Classification/unlearn/RL.py, the "
              "CIFAR-10 branch")
    deviations = ()
    uncertain = ("the code default lr 0.01 is tuned in 0.01-0.1 in the SalUn/Sparse papers; "
                 "the CIFAR-100/TinyImageNet branch (one merged loader) is not reproduced")

    # SalUn/Sparse CIFAR-10 defaults: 10 epochs, SGD momentum 0.9, wd 5e-4, batch 256, code default lr 0.01.
    # Their MultiStepLR milestones (91, 136) never trigger within 10 epochs, so there is no schedule.
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    retain_batch_size: int = 256       # 0 keeps the batches as given (e.g. the harness's 64)
    forget_batch_size: int = 256
    exclude_true_label: bool = False   # SalUn draws from all C classes, so a label may stay correct


def random_labels(y: Tensor, num_classes: int, generator: torch.Generator, exclude_true: bool = False) -> Tensor:
    """Labels drawn uniformly from ``generator`` (on the CPU, so a seed gives the same draw on any device).

    ``exclude_true``: uniform over the C-1 wrong classes (true label + a shift in 1..C-1, modulo C).
    """
    if exclude_true:
        if num_classes < 2:
            raise ValueError("exclude_true_label needs at least 2 classes")
        shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
        return (y + shift) % num_classes
    return torch.randint(0, num_classes, y.shape, generator=generator).to(y.device)


def rl_epochs(model, ctx, r: RandomLabelRecipe, optimizer, before_step: Callable[[], None] | None = None,
              name: str = "random-label") -> None:
    """The RL loop: per epoch a random-label forget pass, then a true-label retain pass."""
    forget = ctx.forget.rebatch(r.forget_batch_size, shuffle=True) if r.forget_batch_size else ctx.forget
    retain = ctx.retain.rebatch(r.retain_batch_size, shuffle=True) if r.retain_batch_size else ctx.retain
    ce = cross_entropy()

    def random_label_ce(m, x, y):
        return F.cross_entropy(m(x), random_labels(y, ctx.num_classes, ctx.generator, r.exclude_true_label))

    for epoch in range(r.epochs):
        run_epoch(model, forget, optimizer, random_label_ce, progress=ctx.progress, before_step=before_step,
                  description=f"{name} {epoch + 1}/{r.epochs}: forget, random labels", amp_dtype=ctx.amp_dtype)
        run_epoch(model, retain, optimizer, ce, progress=ctx.progress, before_step=before_step,
                  description=f"{name} {epoch + 1}/{r.epochs}: retain", amp_dtype=ctx.amp_dtype)


@register("random-label", origin="baseline: random labels (SalUn code base, arXiv 2310.12508)",
          summary="per epoch: CE on forget with uniformly redrawn labels, then CE on retain (10 epochs, lr 0.01)",
          recipe=RandomLabelRecipe)
def _random_label(model, ctx, r: RandomLabelRecipe) -> None:
    # One optimiser for both passes, as in the source: momentum carries from forget into retain steps.
    optimizer = sgd(model.parameters(), r.lr, r.momentum, r.weight_decay)
    rl_epochs(model, ctx, r, optimizer)
