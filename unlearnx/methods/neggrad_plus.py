"""NegGrad+ (Kurmanji et al., SCRUB paper, arXiv 2302.09880).

Iterate ``zip(retain, cycle(forget))`` — one step per retain batch, the forget batches repeating —
minimising  α·[CE(retain) + (wd/2)·‖θ − θ_0‖²] − (1−α)·CE(forget).
The L2 pull towards the original weights θ_0 keeps the ascent term from wandering off. Deterministic
apart from data order, as in the source.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch.nn.functional as F

from ..training import run_epoch, sgd
from .base import Recipe, at_least, in_range, register


@dataclass
class NegGradPlusRecipe(Recipe):
    uncertain = ("momentum 0.9 and batch 256 follow Deep Unlearn (the SCRUB repo's small-scale setting uses plain "
                 "SGD and its own loaders); the weight of the L2-to-θ_0 term (5e-4, the usual wd) is not confirmed")
    limits = {"alpha": in_range(0, 1), "l2_weight": at_least(0)}

    # alpha 0.95, 10 epochs, lr 0.01: SCRUB repo small-scale (ng_alpha, ng_epochs, ng_lr) and Deep Unlearn agree.
    alpha: float = 0.95
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9              # Deep Unlearn; the SCRUB repo uses 0
    retain_batch_size: int = 256       # Deep Unlearn's batch 256 (0 keeps the given batches)
    forget_batch_size: int = 256
    l2_weight: float = 5e-4            # "wd" in (wd/2)·‖θ − θ_0‖²
    weight_decay: float = 0.0          # plain decay in the optimiser; off because the θ_0 pull replaces it


class _RetainWithCycledForget:
    """``((x_r, x_f), (y_r, y_f))`` for every retain batch; forget batches repeat via ``itertools.cycle``.

    ``cycle`` replays the first pass's batches (the source's behaviour), so within an epoch the forget
    batches repeat in the same order; a new epoch reshuffles.
    """

    def __init__(self, retain, forget):
        self.retain, self.forget = retain, forget

    def __len__(self):
        return len(self.retain)

    def __iter__(self):
        for (x_r, y_r), (x_f, y_f) in zip(self.retain, itertools.cycle(self.forget)):
            yield (x_r, x_f), (y_r, y_f)


@register("neggrad-plus", origin="baseline: NegGrad+ (Kurmanji et al. 2023; Deep Unlearn settings)",
          summary="per retain batch: a*(CE(retain) + wd/2 ||θ-θ0||²) - (1-a)*CE(forget), a=0.95, 10 epochs",
          recipe=NegGradPlusRecipe)
def _neggrad_plus(model, ctx, r: NegGradPlusRecipe) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    initial = [p.detach().clone() for p in params]
    retain = ctx.retain.rebatch(r.retain_batch_size, shuffle=True) if r.retain_batch_size else ctx.retain
    forget = ctx.forget.rebatch(r.forget_batch_size, shuffle=True) if r.forget_batch_size else ctx.forget
    optimizer = sgd(params, r.lr, r.momentum, r.weight_decay)

    def loss_fn(m, xs, ys):
        (x_r, x_f), (y_r, y_f) = xs, ys
        # Two forwards, as the source does: each batch normalises with its own statistics.
        retain_loss = F.cross_entropy(m(x_r), y_r)
        forget_loss = F.cross_entropy(m(x_f), y_f)
        pull = sum((p - p0).pow(2).sum() for p, p0 in zip(params, initial)) if r.l2_weight else 0.0
        return r.alpha * (retain_loss + 0.5 * r.l2_weight * pull) - (1.0 - r.alpha) * forget_loss

    for epoch in range(r.epochs):
        run_epoch(model, _RetainWithCycledForget(retain, forget), optimizer, loss_fn, progress=ctx.progress,
                  description=f"neggrad-plus {epoch + 1}/{r.epochs}", amp_dtype=ctx.amp_dtype)

