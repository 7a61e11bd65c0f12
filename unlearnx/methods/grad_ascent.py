"""Gradient ascent with alternating rounds (unlearnx's own method, docs/methods.md §9.2).

``variant="plain"`` (default), the method as specified: each round, a forget pass of plain SGD *ascent* on
the forget CE (``θ += lr·∇CE_forget``, realised as descent on −CE) then a retain pass of plain SGD
descent on the retain CE (``θ −= lr·∇CE_retain``), with one learning rate, no momentum, no weight decay.

``variant="safeguarded"``, this project's addition: unbounded CE ascent diverges fast (NegGrad scored
0.0001 in the competition), so the ascent gets its own ``forget_lr``, stops on a forget batch whose
mean CE already exceeds ``loss_cap`` (default: the model's CE on the validation set before unlearning,
the level a retrained model shows on unseen data; log C without a validation set) and is clipped to
``max_grad_norm`` (each step at most ``forget_lr * max_grad_norm``); the descent uses momentum and
weight decay; 4 rounds. The two directions get separate optimisers so momentum never carries across.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..training import cross_entropy, run_epoch, sgd
from .base import Recipe, Rule, at_least, in_range, one_of, register


@dataclass
class GradAscentRecipe(Recipe):
    source = ("unlearnx's own method (docs/methods.md §9.2, alternating-rounds gradient ascent): ascent "
              "θ += lr·∇CE(forget), descent θ −= lr·∇CE(retain), rounds alternate, one learning rate")
    uncertain = ("the specification gives only the update rule: the learning rate (0.01), the number of rounds "
                 "(1), the steps per round (a full pass) and the batch size (64, the harness's) are this project's "
                 "choices")
    deviations = ()  # the safeguarded variant is opt-in (variant=safeguarded), documented as this project's addition
    limits = {
        "variant": one_of("plain", "safeguarded"),
        "rounds": Rule(">= 1, or unset (1 for plain, 4 for safeguarded)", lambda v: v is None or v >= 1, (0,)),
        "forget_lr": at_least(0),      # 0 skips the ascent: the control run of the tests
        "retain_momentum": in_range(0, 1, closed=(True, False)),
        "max_grad_norm": at_least(0),
        "forget_steps": at_least(0, "0 = a full pass"),
        "retain_steps": at_least(0, "0 = a full pass"),
        "loss_cap": Rule("> 0, 0 (off) or -1 (the validation CE)", lambda v: v >= 0 or v == -1, (-0.5, -2)),
    }

    variant: str = "plain"             # "plain": the specified updates; "safeguarded": this project's addition
    rounds: Optional[int] = None       # None: 1 (plain) or 4 (safeguarded)
    lr: float = 0.01                   # plain: both directions; safeguarded: the retain descent
    forget_steps: int = 0              # forget batches per round (0: one full pass over the forget set)
    forget_batch_size: int = 64        # 0 keeps the batches as given
    retain_steps: int = 0              # retain batches per round (0: one full pass over the retain set)
    retain_batch_size: int = 64        # 0 keeps the batches as given
    # The safeguarded variant only:
    forget_lr: float = 0.3             # ascent, plain SGD (each step at most forget_lr * max_grad_norm)
    loss_cap: float = -1.0             # forget-batch CE above which ascent stops (-1: validation CE; 0: off)
    max_grad_norm: float = 0.5         # clip the ascent gradient's global norm (0: off)
    retain_momentum: float = 0.9
    retain_weight_decay: float = 5e-4

    def num_rounds(self) -> int:
        return self.rounds if self.rounds is not None else (1 if self.variant == "plain" else 4)


def _at_least_fp32(t):
    """Half-precision logits (autocast) are upcast for the loss; float64 runs stay float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def ascent_loss(cap: float | None):
    """−CE of the batch, clamped at ``cap``: a batch already past the cap contributes no gradient."""

    def loss(model: nn.Module, x, y):
        ce = F.cross_entropy(_at_least_fp32(model(x)), y)
        return -(ce.clamp(max=cap) if cap is not None else ce)

    return loss


@torch.no_grad()
def mean_ce(model: nn.Module, batches) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        total += float(F.cross_entropy(_at_least_fp32(model(x)), y, reduction="sum"))
        count += int(y.numel())
    model.train(was_training)
    return total / max(count, 1)


def resolve_cap(model: nn.Module, ctx, r: GradAscentRecipe) -> float | None:
    if r.variant == "plain" or r.loss_cap == 0:
        return None
    if r.loss_cap > 0:
        return r.loss_cap
    # Auto: a retrained model's forget loss is about its loss on unseen data; push no further than that.
    if ctx.validation is not None and ctx.validation.num_examples > 0:
        return mean_ce(model, ctx.validation)
    return math.log(ctx.num_classes)


def _grad_ascent(model: nn.Module, ctx, r: GradAscentRecipe) -> None:
    cap = resolve_cap(model, ctx, r)

    def batches(split, size):
        return split if size in (0, split.batch_size) else split.rebatch(size, shuffle=True)

    forget, retain = batches(ctx.forget, r.forget_batch_size), batches(ctx.retain, r.retain_batch_size)
    params = list(model.parameters())
    if r.variant == "plain":
        ascent_opt, descent_opt, clip = sgd(params, r.lr, momentum=0.0), sgd(params, r.lr, momentum=0.0), None
    else:
        ascent_opt = sgd(params, r.forget_lr, momentum=0.0)
        descent_opt = sgd(params, r.lr, r.retain_momentum, r.retain_weight_decay)
        clip = (lambda: torch.nn.utils.clip_grad_norm_(params, r.max_grad_norm)) if r.max_grad_norm > 0 else None
    ascend, descend = ascent_loss(cap), cross_entropy()
    rounds = r.num_rounds()
    for i in range(rounds):
        run_epoch(model, forget, ascent_opt, ascend, progress=ctx.progress, before_step=clip,
                  description=f"grad-ascent round {i + 1}/{rounds}: forget", amp_dtype=ctx.amp_dtype,
                  max_steps=r.forget_steps or None)
        run_epoch(model, retain, descent_opt, descend, progress=ctx.progress,
                  description=f"grad-ascent round {i + 1}/{rounds}: retain", amp_dtype=ctx.amp_dtype,
                  max_steps=r.retain_steps or None)


register("grad-ascent", origin="unlearnx's own method",
         summary="alternating rounds of plain SGD: ascent on the forget CE, descent on the retain CE, one LR "
                 "(variant=safeguarded: capped, clipped ascent, 4 rounds)",
         recipe=GradAscentRecipe)(_grad_ascent)
