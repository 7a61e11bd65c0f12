"""NegGrad+ (Kurmanji et al., SCRUB paper, arXiv 2302.09880).

Iterate ``zip(retain, cycle(forget))`` — one step per retain batch, the forget batches repeating —
minimising  α·[CE(retain) + (wd/2)·‖θ − θ_0‖²] − (1−α)·CE(forget).
The L2 pull towards the original weights θ_0 keeps the ascent term from wandering off. The model
trains in eval mode (BatchNorm uses and keeps the original's running statistics), as both sources do
(``run_neggrad_epoch`` calls ``model.eval()``). Deterministic apart from data order, as in the source.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch.nn.functional as F

from ..training import run_epoch, sgd
from .base import Recipe, at_least, in_range, register


@dataclass
class NegGradPlusRecipe(Recipe):
    source = ("SCRUB repo (meghdadk/SCRUB, commit 98ffb11) small_scale_unlearning.ipynb: negative_grad / "
              "run_neggrad_epoch / l2_penalty, with ng_alpha, ng_epochs, ng_lr and the run's --weight-decay 0.1")
    uncertain = ("the SCRUB repo's values are for its small-scale setting (All-CNN on Lacuna/CIFAR subsets); the "
                 "Deep Unlearn port (munl/unlearning/neggradplus.py) keeps alpha/lr/epochs but uses momentum 0.9, "
                 "batch 256 for both loaders and an L2-to-θ_0 weight of 0 (set them with --set momentum=0.9 "
                 "l2_weight=0 retain_batch_size=256 forget_batch_size=256)")
    deviations = ()
    limits = {"alpha": in_range(0, 1), "l2_weight": at_least(0)}

    # SCRUB repo small-scale notebook (the method's authors).
    alpha: float = 0.95                # ng_alpha
    epochs: int = 10                   # ng_epochs
    lr: float = 0.01                   # ng_lr
    momentum: float = 0.0              # torch.optim.SGD(model.parameters(), lr=lr, weight_decay=0.0)
    retain_batch_size: int = 128       # the retain loader it iterates (args.batch_size); 0 keeps the given batches
    forget_batch_size: int = 64        # args.forget_bs
    l2_weight: float = 0.1             # args.weight_decay in l2_penalty: (wd/2)·‖θ − θ_0‖²
    weight_decay: float = 0.0          # plain decay in the optimiser: 0 in the source


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


@register("neggrad-plus", origin="baseline: NegGrad+ (Kurmanji et al. 2023; SCRUB repo settings)",
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
        # Two forwards, as the source does (in eval mode: BatchNorm uses the running statistics).
        retain_loss = F.cross_entropy(m(x_r), y_r)
        forget_loss = F.cross_entropy(m(x_f), y_f)
        pull = sum((p - p0).pow(2).sum() for p, p0 in zip(params, initial)) if r.l2_weight else 0.0
        return r.alpha * (retain_loss + 0.5 * r.l2_weight * pull) - (1.0 - r.alpha) * forget_loss

    for epoch in range(r.epochs):
        run_epoch(model, _RetainWithCycledForget(retain, forget), optimizer, loss_fn, progress=ctx.progress,
                  description=f"neggrad-plus {epoch + 1}/{r.epochs}", amp_dtype=ctx.amp_dtype, train_mode=False)

