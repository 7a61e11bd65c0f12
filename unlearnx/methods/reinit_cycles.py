"""8th place ("Forget", Ahn et al.): cycles of stochastic layer re-initialisation + knowledge-preserving MSE.

Uses the retain set only. Each cycle:

- forget phase: draw ``layers_per_cycle`` layers *with replacement* from the pool and call their
  ``reset_parameters()`` (torch's global RNG). The pool is every ``Conv2d`` (optionally also every
  ``BatchNorm2d``) outside ``fc`` and the projection shortcuts (``downsample``), which the authors'
  ablation found best to exclude;
- remember phase: train on retain batches with MSE between the model's logits and the frozen
  original's logits on the same noisy input ``x + N(0, input_noise_std²)``.

``schedule="alg1"``: 3 cycles of [1, 2, 2] epochs, cosine LR from 1e-3 with T_max=2 epochs, restarted
each cycle. ``schedule="alg2"``: 4 cycles of [2, 1, 1, 1] epochs with per-epoch LRs
[5e-4, 1e-3, 1e-3, 1e-3, 1e-3]. Source: write-up (Kaggle discussion 458715) and the team page; no code
is public.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import model_roles, needs_roles
from ..training import run_epoch, sgd
from .base import Recipe, at_least, each, one_of, register


@dataclass
class ReinitCyclesRecipe(Recipe):
    source = ("8th-place write-up (Kaggle discussion 458715) and the team page "
              "junhyunb.github.io/en/projects/neurips2023-unlearning (Algorithms 1 and 2); no code is public")
    deviations = ()
    uncertain = ("no code is public: SGD momentum 0.9 / weight decay 5e-4 (the organisers' fine-tune template they "
                 "started from) is assumed; re-init = reset_parameters(); BN layers kept out of the pool by "
                 "default; MSE on logits, not softmax; cosine restarted per cycle and stepped per epoch; a new "
                 "optimiser per cycle; input noise is in model-input units (Kaggle's inputs were raw 0-255 pixels)")
    limits = {
        "schedule": one_of("alg1", "alg2"),
        "layers_per_cycle": at_least(0),
        "input_noise_std": at_least(0),
        "alg1_cycle_epochs": each(at_least(0), non_empty=True),
        "alg1_lr": at_least(0),        # 0: only the re-initialisations change weights (a test's control)
        "alg1_t_max": at_least(1),
        "alg2_cycle_epochs": each(at_least(0), non_empty=True),
        "alg2_epoch_lrs": each(at_least(0)),
    }

    # Digits preset: 4x the cycle epochs (and T_max) and 3x the LR: each cycle re-initialises layers that need more
    # steps than a digits epoch has.
    digits_demo = {"alg1_cycle_epochs": (4, 8, 8), "alg1_t_max": 8, "alg1_lr": 0.003}

    schedule: str = "alg1"             # "alg1" or "alg2" (both final submissions)
    layers_per_cycle: int = 6          # drawn with replacement
    include_bn: bool = False           # also put BatchNorm2d layers in the pool
    input_noise_std: float = 0.01      # both final submissions (0.1 was best in the ablation)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    retain_batch_size: int = 64        # 0 keeps the batches as given
    alg1_cycle_epochs: tuple[int, ...] = (1, 2, 2)
    alg1_lr: float = 1e-3
    alg1_t_max: int = 2                # cosine period in epochs
    alg1_cosine_restart: bool = True   # restart the cosine at every cycle
    alg2_cycle_epochs: tuple[int, ...] = (2, 1, 1, 1)
    alg2_epoch_lrs: tuple[float, ...] = (5e-4, 1e-3, 1e-3, 1e-3, 1e-3)

    def check(self):
        epochs = sum(self.alg2_cycle_epochs)
        if self.schedule == "alg2" and len(self.alg2_epoch_lrs) < epochs:
            raise ValueError(f"{self.method_name}: alg2_epoch_lrs has {len(self.alg2_epoch_lrs)} values for "
                             f"{epochs} epochs; give one learning rate per epoch")


def layer_pool(model: nn.Module, include_bn: bool = False, example=None) -> list[tuple[str, nn.Module]]:
    """Re-initialisable layers: conv and linear layers (and norms if asked) outside the classifier head and
    the projection shortcuts (a ResNet's convs, without ``fc`` and ``downsample``)."""
    pool = model_roles(model, example).reinit_pool(model, include_bn)
    if not pool:
        raise ValueError("reinit-cycles needs Conv/Linear layers outside the head and the projection shortcuts, "
                         "which this model lacks")
    return pool


def reinit_random_layers(model: nn.Module, k: int, generator: torch.Generator, include_bn: bool = False,
                         example=None) -> list[str]:
    """Reset ``k`` layers drawn with replacement; returns the distinct names reset (in model order)."""
    pool = layer_pool(model, include_bn, example)
    drawn = set(torch.randint(len(pool), (k,), generator=generator).tolist())
    reset = []
    for i, (name, module) in enumerate(pool):
        if i in drawn:  # a layer drawn twice is reset once: the result has the same distribution
            module.reset_parameters()
            reset.append(name)
    return reset


@needs_roles("reinit_pool")
def _reinit_cycles(model: nn.Module, ctx, r: ReinitCyclesRecipe) -> None:
    # The frozen original f_0, in eval mode: its logits are the targets the student must reproduce.
    original = copy.deepcopy(model).eval().requires_grad_(False)
    size = r.retain_batch_size  # 0: keep the batches as given
    retain = ctx.retain if size in (0, ctx.retain.batch_size) else ctx.retain.rebatch(size, shuffle=True)

    def knowledge_preserving(m, x, _y):
        # Same noisy input for both models: the noise diversifies runs; the target stays f_0's view of it.
        noisy = x + ctx.randn_like(x, r.input_noise_std) if r.input_noise_std > 0 else x
        with torch.no_grad():
            target = original(noisy)
        output = m(noisy)
        dtype = torch.promote_types(output.dtype, torch.float32)  # upcast autocast's half logits, keep float64
        return F.mse_loss(output.to(dtype), target.to(dtype))

    schedule = cycle_lrs(r)
    for cycle, lrs in enumerate(schedule):
        reinit_random_layers(model, r.layers_per_cycle, ctx.generator, r.include_bn, ctx.retain)
        # A new optimiser per cycle: the re-initialised layers should not inherit the old momentum.
        optimizer = sgd(model.parameters(), lrs[0] if lrs else 0.0, r.momentum, r.weight_decay)
        for e, lr in enumerate(lrs):
            for group in optimizer.param_groups:
                group["lr"] = lr
            run_epoch(model, retain, optimizer, knowledge_preserving, progress=ctx.progress,
                      description=f"reinit-cycles cycle {cycle + 1}/{len(schedule)} epoch {e + 1}/{len(lrs)}",
                      amp_dtype=ctx.amp_dtype)


def cycle_lrs(r: ReinitCyclesRecipe) -> list[list[float]]:
    """The learning rate of every epoch, grouped by cycle.

    alg1: CosineAnnealingLR(T_max=alg1_t_max) stepped once per epoch (as the organisers' template steps
    it), i.e. ``lr * (1 + cos(pi * t / T_max)) / 2`` with t the epoch within the cycle (or overall, without
    restarts). alg2: the published per-epoch list.
    """
    if r.schedule == "alg2":
        lrs = iter(r.alg2_epoch_lrs)
        return [[next(lrs) for _ in range(n)] for n in r.alg2_cycle_epochs]
    out, t = [], 0
    for n in r.alg1_cycle_epochs:
        if r.alg1_cosine_restart:
            t = 0
        out.append([r.alg1_lr * (1 + math.cos(math.pi * (t + i) / r.alg1_t_max)) / 2 for i in range(n)])
        t += n
    return out


register("reinit-cycles", origin="8th place, \"Forget\" (Ahn, Lee, Bae, Yim, Jung; NeurIPS 2023)",
         summary="cycles of random conv re-init (6 layers, no fc/shortcut) + MSE to the original's logits "
                 "on noisy retain inputs",
         recipe=ReinitCyclesRecipe)(_reinit_cycles)
