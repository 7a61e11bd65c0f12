"""NegGrad / gradient ascent (GA), as in the SalUn and Sparse code bases (``unlearn/GA.py``).

Loop over the forget set only, minimising −CE(f(x_f), y_f), i.e. gradient ascent on the forget loss.
Deterministic apart from data order (faithful: the source adds no noise). Very sensitive to the LR:
unbounded ascent diverges quickly, which is why the published LR is tiny.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..training import run_epoch, sgd
from .base import Recipe, register


@dataclass
class NegGradRecipe(Recipe):
    source = ("OPTML-Group/Unlearn-Saliency and Unlearn-Sparse, Classification/unlearn/GA.py (CIFAR-10: "
              "5 epochs, lr 1e-4, SGD momentum 0.9, wd 5e-4, batch 256)")
    deviations = ()
    uncertain = "the SalUn/Sparse LR (1e-4) is tuned per setting; the sources call GA very LR-sensitive"

    # SalUn/Sparse CIFAR-10: 5 epochs, lr 1e-4, SGD momentum 0.9, wd 5e-4, batch 256.
    epochs: int = 5
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    forget_batch_size: int = 256       # 0 keeps the batches as given


@register("neggrad", origin="baseline: gradient ascent (SalUn/Sparse code bases)",
          summary="gradient ascent on the forget set: loss -CE(forget), 5 epochs, lr 1e-4",
          recipe=NegGradRecipe)
def _neggrad(model, ctx, r: NegGradRecipe) -> None:
    forget = ctx.forget.rebatch(r.forget_batch_size, shuffle=True) if r.forget_batch_size else ctx.forget
    optimizer = sgd(model.parameters(), r.lr, r.momentum, r.weight_decay)

    def negative_ce(m, x, y):
        return -F.cross_entropy(m(x), y)

    for epoch in range(r.epochs):
        run_epoch(model, forget, optimizer, negative_ce, progress=ctx.progress,
                  description=f"neggrad {epoch + 1}/{r.epochs}", amp_dtype=ctx.amp_dtype)
