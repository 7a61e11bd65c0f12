"""4th place (Sebastian Oleszko, "PRMQ"): Prune, Re-init, entropy-regularised fine-tune, fp16 round trip.

1. Teacher = frozen copy of the original. Class weights N_c^-0.1 from the retain counts.
2. Global L1 pruning of 99% of all Conv2d/Linear weights and biases (``torch.nn.utils.prune``, removed
   again at once, so no hooks or ``*_orig`` parameters remain).
3. Every pruned weight entry (now exactly 0) is re-drawn from U(-√k, √k), k = 1/fan_in (PyTorch's
   default init bound); pruned biases stay 0.
4. ``int(len(retain)·3.2)+1`` SGD steps of CE(weight=w_c) + MSE(H(student), H(teacher)).
5. Round every float parameter/buffer through fp16.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from ..layers import needs_roles
from ..training import class_weights, run_epoch, sgd
from .base import Recipe, UnlearnContext, at_least, in_range, register


@dataclass
class PRMQRecipe(Recipe):
    source = ("4th-place write-up (Kaggle discussion 459148) and the Deep Unlearn port munl/unlearning/kgltop4.py "
              "('copied from the notebook')")
    deviations = ()
    uncertain = ("class counts come from the retain set (the port's choice; the author 'assumed they can be "
                 "obtained directly'); whether the fp16 round trip was in the submission")
    limits = {"prune_amount": in_range(0, 1), "epochs": at_least(0), "entropy_weight": at_least(0)}

    # Digits preset: 5x the epochs and 4x the LR: 99% of the weights are pruned, and 3.2 digits epochs are ~60
    # steps.
    digits_demo = {"epochs": 16.0, "lr": 0.002}

    prune_amount: float = 0.99           # share of all conv/linear weights+biases pruned (global L1)
    epochs: float = 3.2                  # fine-tune length in retain epochs: int(len(retain)·epochs)+1 steps
    lr: float = 5e-4                     # SGD, no scheduler
    momentum: float = 0.9
    weight_decay: float = 5e-4
    class_weight_power: float = -0.1     # w_c = N_c ** power ("a very small amount of class weights")
    entropy_weight: float = 1.0          # weight of MSE(H(student), H(teacher)) next to CE
    fp16_round_trip: bool = True         # net.half().float() at the end (the "Q")


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, name) of every Conv2d/Linear weight and existing bias, as the author prunes."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append((m, "weight"))
            if m.bias is not None:
                out.append((m, "bias"))
    return out


@torch.no_grad()
def prune_and_reinit(model: nn.Module, amount: float, generator: torch.Generator) -> None:
    """Global L1 prune of ``amount``, then re-draw the zeroed weight entries uniformly (biases stay 0)."""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"prmq: prune_amount must be in [0, 1], got {amount}")
    params = prunable(model)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in params:
        prune.remove(module, name)  # bakes the mask into the original Parameter, drops the hook
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            bound = 1.0 / math.sqrt(w[0].numel())  # fan_in: c_in·k_h·k_w (conv) or in_features (linear)
            fresh = (torch.rand(w.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            zero = w == 0
            w[zero] = fresh.to(w.device, w.dtype)[zero]


def entropy(logits: Tensor) -> Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@torch.no_grad()
def fp16_round_trip(model: nn.Module) -> None:
    """Round every float parameter/buffer to fp16 precision in place (dtype and objects unchanged).

    Values outside fp16's range (e.g. a large BN running variance on raw 0-255 inputs) would become
    inf; those keep their value instead of breaking the model.
    """
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            rounded = t.to(torch.float16).to(t.dtype)
            t.copy_(torch.where(torch.isfinite(rounded) | ~torch.isfinite(t), rounded, t))


@needs_roles("weights")
def _prmq(model: nn.Module, ctx: UnlearnContext, r: PRMQRecipe) -> None:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    weight = class_weights(ctx.class_counts(), r.class_weight_power).to(ctx.device)

    prune_and_reinit(model, r.prune_amount, ctx.generator)

    def loss_fn(m, x, y):
        logits = m(x)
        with torch.no_grad():
            target_entropy = entropy(teacher(x))
        ce = F.cross_entropy(logits, y, weight=weight)
        return ce + r.entropy_weight * F.mse_loss(entropy(logits), target_entropy)

    optimizer = sgd(model.parameters(), r.lr, r.momentum, r.weight_decay)
    per_epoch = len(ctx.retain)
    remaining = int(per_epoch * r.epochs) + 1  # the port stops after max_iters + 1 batches
    epoch = 0
    while remaining > 0:
        epoch += 1
        run_epoch(model, ctx.retain, optimizer, loss_fn, progress=ctx.progress, amp_dtype=ctx.amp_dtype,
                  description=f"prmq: fine-tune {epoch}/{math.ceil(r.epochs)}", max_steps=remaining)
        remaining -= min(per_epoch, remaining)
    if r.fp16_round_trip:
        fp16_round_trip(model)


register("prmq", origin="4th place, Sebastian Oleszko (NeurIPS 2023)",
         summary="99% global L1 prune, uniform re-init, CE(N_c^-0.1 weights) + entropy-MSE fine-tune "
                 "3.2 epochs, fp16 round trip",
         recipe=PRMQRecipe)(_prmq)
