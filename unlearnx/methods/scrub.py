"""SCRUB (Kurmanji et al., NeurIPS 2023, arXiv 2302.09880), re-implemented from the paper's description.

(SCRUB's own code is under a non-commercial licence, so nothing is copied from it.)

Student = the model being unlearned; teacher = a frozen copy of the original. With the distillation
loss KL_T(s, t) = KL(softmax(t/T) ‖ softmax(s/T))·T² (batch mean), each epoch e = 1..epochs runs
  - if e ≤ msteps: a "max" pass over forget batches minimising −KL_T (move away from the teacher there),
  - then a "min" pass over retain batches minimising γ·CE + α·KL_T (stay close to it elsewhere).
One SGD optimiser for both passes; the LR is multiplied by ``lr_decay_rate`` once per milestone in
``lr_decay_epochs`` that the epoch has passed. Deterministic apart from data order, as the method is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import copy_model
from ..training import run_epoch, sgd
from .base import Recipe, at_least, each, register


@dataclass
class ScrubRecipe(Recipe):
    source = ("SCRUB repo (meghdadk/SCRUB, commit 98ffb11) large_scale_unlearning.ipynb (args cell and the "
              "SCRUB loop) with thirdparty/repdistiller/helper/loops.py::train_distill and DistillKL")
    uncertain = ("batch sizes: the notebook sets sgda_batch_size=128 and del_batch_size=32, but its SCRUB loop calls "
                 "train_distill(epoch, forget_loader, ...) and train_distill(epoch, retain_loader, ...), loaders "
                 "built earlier with batch_size=512 (forget) and 256 (retain), and train_distill iterates the "
                 "loader it is given: 256/512 are the batches the source trains on, 128/32 are never read. The "
                 "values are for CIFAR-10 ResNets; Deep Unlearn's 'scrubv2' uses gamma 1, alpha 0.5, T 2, msteps "
                 "3, 5 epochs, retain bs 32, forget bs 64 (set them with --set)")
    deviations = ()
    limits = {"msteps": at_least(0), "gamma": at_least(0), "alpha": at_least(0), "lr_decay_rate": at_least(0),
              "lr_decay_epochs": each(at_least(0))}

    # SCRUB repo, large_scale_unlearning.ipynb (ResNet, CIFAR-10).
    epochs: int = 3                    # sgda_epochs
    msteps: int = 2                    # max passes happen in epochs 1..msteps
    lr: float = 5e-4                   # sgda_learning_rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0           # kd_T
    gamma: float = 0.99                # weight of CE on retain
    alpha: float = 0.001               # weight of KL_T on retain
    retain_batch_size: int = 256       # retain_loader's batch, the one the loop iterates (0 keeps the given batches)
    forget_batch_size: int = 512       # forget_loader's batch, the one the loop iterates (0 keeps the given batches)
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)
    lr_decay_rate: float = 0.1
    # The source's third term β·KD is 0 with its 'kd' setting, so it is not exposed.


def lr_at(epoch: int, r: ScrubRecipe) -> float:
    """LR for 1-based ``epoch``: decayed once for every milestone strictly below it."""
    passed = sum(1 for milestone in r.lr_decay_epochs if epoch > milestone)
    return r.lr * r.lr_decay_rate ** passed


def _at_least_fp32(z: Tensor) -> Tensor:
    # The KL is computed in fp32 for half/bf16 logits; float64 stays float64 (the parity tests use it).
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def distill_kl(ops, student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T))·T², batch mean; gradients flow to the student only."""
    s = _at_least_fp32(student_logits) / temperature
    t = _at_least_fp32(teacher_logits.detach()).to(s.dtype) / temperature
    # bikl_loss with reverse weight 0 is exactly KL(target ‖ softmax(logits)) with a batch mean.
    # T² keeps the gradient's scale independent of T (Hinton et al.), as DistillKL does.
    return ops.bikl_loss(s, F.softmax(t, dim=1), 0.0) * temperature ** 2


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode (its BN statistics never update)."""
    teacher = copy_model(model)  # deepcopy would give a TorchScript model non-leaf parameters
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def scrub_epochs(student: nn.Module, teacher: nn.Module, ctx, r: ScrubRecipe) -> None:
    """The SCRUB loop on ``student`` against a given ``teacher`` (which it only reads)."""
    forget = ctx.forget.rebatch(r.forget_batch_size, shuffle=True) if r.forget_batch_size else ctx.forget
    retain = ctx.retain.rebatch(r.retain_batch_size, shuffle=True) if r.retain_batch_size else ctx.retain
    optimizer = sgd([p for p in student.parameters() if p.requires_grad], r.lr, r.momentum, r.weight_decay)

    def teacher_logits(x):
        with torch.no_grad():
            return teacher(x)

    def max_loss(m, x, y):
        return -distill_kl(ctx.ops, m(x), teacher_logits(x), r.temperature)

    def min_loss(m, x, y):
        z = m(x)
        kl = distill_kl(ctx.ops, z, teacher_logits(x), r.temperature)
        return r.gamma * F.cross_entropy(_at_least_fp32(z), y) + r.alpha * kl

    for epoch in range(1, r.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, r)
        if epoch <= r.msteps:
            run_epoch(student, forget, optimizer, max_loss, progress=ctx.progress,
                      description=f"scrub {epoch}/{r.epochs}: max steps on forget", amp_dtype=ctx.amp_dtype)
        run_epoch(student, retain, optimizer, min_loss, progress=ctx.progress,
                  description=f"scrub {epoch}/{r.epochs}: min steps on retain", amp_dtype=ctx.amp_dtype)


@register("scrub", origin="baseline: SCRUB (Kurmanji et al., NeurIPS 2023), large-scale settings",
          summary="teacher-student: max KL to the frozen original on forget (epochs <= 2), min CE + KL on retain",
          recipe=ScrubRecipe)
def _scrub(model, ctx, r: ScrubRecipe) -> None:
    scrub_epochs(model, frozen_teacher(model), ctx, r)
