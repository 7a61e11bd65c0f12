"""Gradient ascent with alternating rounds (unlearnx's own method, docs/methods.md §9.2).

Each of ``rounds`` rounds: a short forget round (gradient *ascent* on the forget CE, realised as descent
on −CE with plain SGD, no momentum, no weight decay) followed by a retain round (descent on the retain
CE). The two directions get separate optimisers so momentum never carries from one into the other.

Unbounded CE ascent diverges fast (NegGrad scored 0.0001 in the competition), so two guards:
``loss_cap`` stops the ascent on a forget batch whose mean CE already exceeds the cap (default: the
model's CE on the validation set before unlearning, the level a retrained model shows on unseen data;
log C without a validation set), and ``max_grad_norm`` clips the ascent gradient, bounding each step
to ``forget_lr * max_grad_norm``. Either can be turned off with 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..training import cross_entropy, run_epoch, sgd
from .base import Recipe, Rule, at_least, in_range, register


@dataclass
class GradAscentRecipe(Recipe):
    uncertain = ("the sources give only the update rule (alternate ascent on the forget CE and descent on the "
                 "retain CE); every number here was chosen by this project on the digits default")
    limits = {
        "rounds": at_least(1),
        "forget_lr": at_least(0),      # 0 skips the ascent: the control run of the tests
        "retain_lr": at_least(0),
        "retain_momentum": in_range(0, 1, closed=(True, False)),
        "max_grad_norm": at_least(0),
        "forget_steps": at_least(0, "0 = a full pass"),
        "retain_steps": at_least(0, "0 = a full pass"),
        "loss_cap": Rule("> 0, 0 (off) or -1 (the validation CE)", lambda v: v >= 0 or v == -1, (-0.5, -2)),
    }

    rounds: int = 4
    forget_lr: float = 0.3             # ascent, plain SGD (each step at most forget_lr * max_grad_norm)
    forget_steps: int = 0              # forget batches per round (0: one full pass over the forget set)
    forget_batch_size: int = 64        # 0 keeps the batches as given
    loss_cap: float = -1.0             # forget-batch CE above which ascent stops (-1: validation CE; 0: off)
    max_grad_norm: float = 0.5         # clip the ascent gradient's global norm (0: off)
    retain_lr: float = 0.01            # descent
    retain_momentum: float = 0.9
    retain_weight_decay: float = 5e-4
    retain_steps: int = 0              # retain batches per round (0: one full pass over the retain set)
    retain_batch_size: int = 64        # 0 keeps the batches as given


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
    if r.loss_cap > 0:
        return r.loss_cap
    if r.loss_cap == 0:
        return None
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
    ascent_opt = sgd(params, r.forget_lr, momentum=0.0)
    descent_opt = sgd(params, r.retain_lr, r.retain_momentum, r.retain_weight_decay)
    clip = (lambda: torch.nn.utils.clip_grad_norm_(params, r.max_grad_norm)) if r.max_grad_norm > 0 else None
    ascend, descend = ascent_loss(cap), cross_entropy()
    for i in range(r.rounds):
        run_epoch(model, forget, ascent_opt, ascend, progress=ctx.progress, before_step=clip,
                  description=f"grad-ascent round {i + 1}/{r.rounds}: forget", amp_dtype=ctx.amp_dtype,
                  max_steps=r.forget_steps or None)
        run_epoch(model, retain, descent_opt, descend, progress=ctx.progress,
                  description=f"grad-ascent round {i + 1}/{r.rounds}: retain", amp_dtype=ctx.amp_dtype,
                  max_steps=r.retain_steps or None)


register("grad-ascent", origin="this project's seed method",
         summary="alternating rounds: ascent on forget CE (capped at the validation CE, log C without one; "
                 "clipped), descent on retain",
         recipe=GradAscentRecipe)(_grad_ascent)
