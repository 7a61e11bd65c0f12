"""5th place (toshi_k & marvelworld, "CT"): transposed-kernel retraining, mixed per run with a
pseudo-label fine-tune.

Part A (toshi_k, the default): swap the kernel H/W axes of every Conv2d (1×1 convs are unchanged), then
train on the retain set 3 epochs with CE, SGD, cosine per epoch. Like feeding transposed images: the
features survive, so it converges faster than training from scratch. The swap is done in place on the
same Parameter objects, so the state_dict keeps its keys and shapes (square kernels).

Part B (marvelworld) is only described in words. With ``pseudo_label_fraction`` > 0 each run picks B
with that probability (their submission: 266 of 512 runs, 0.52). What this module had to assume for B:
- "a simple fine-tune" = a copy of the model fine-tuned ``probe_epochs`` on the retain set with part A's
  optimiser settings;
- "moves in the wrong direction" = the true-class probability of a forget example drops from the
  original model to that fine-tuned copy;
- "a small scratch model" = the same architecture re-initialised and trained ``scratch_epochs`` on the
  retain set (SGD ``scratch_lr``, cosine); "likely to be mistaken" = it misclassifies the example;
- selected = the union of both; its pseudo-label = the scratch model's wrong prediction, or else the
  fine-tuned copy's most likely wrong class;
- the original model is then fine-tuned ``epochs`` epochs, each a retain pass followed by a pass over
  the pseudo-labelled forget examples (same optimiser and schedule as part A).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import needs_roles
from ..training import cosine, cross_entropy, run_epoch, sgd
from .base import Recipe, UnlearnContext, at_least, greater_than, in_range, register


@dataclass
class CTRecipe(Recipe):
    uncertain = ("part A values are the port's ('as provided by the authors'); every detail of part B is an "
                 "assumption (see the module docstring), as is drawing A/B at random per run")
    limits = {"pseudo_label_fraction": in_range(0, 1), "probe_epochs": at_least(0), "scratch_epochs": at_least(0),
              "scratch_lr": greater_than(0), "epochs": at_least(0)}  # 0 epochs: the kernel transpose alone

    # Digits preset: 10x the LR and twice the epochs, for ~20 instead of ~370 steps an epoch.
    digits_demo = {"epochs": 6, "lr": 0.01}

    epochs: int = 3
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pseudo_label_fraction: float = 0.0   # probability that a run uses part B (their blend: 0.52)
    probe_epochs: int = 1                # B: the "simple fine-tune" used to see which way predictions move
    scratch_epochs: int = 3              # B: training of the scratch model on D_r
    scratch_lr: float = 0.05             # B: SGD LR of the scratch model (cosine to 0)


@torch.no_grad()
def transpose_kernels(model: nn.Module) -> None:
    """Swap kernel H and W of every Conv2d weight in place (the same storage and Parameter object)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    for name, m in convs:  # all checked before any is changed
        kh, kw = m.weight.shape[2:]
        if kh != kw:
            raise ValueError(f"ct: conv {name!r} has a {kh}x{kw} kernel; transposing it would change the "
                             "weight's shape and break loading the state_dict")
    for _, m in convs:
        m.weight.copy_(m.weight.transpose(2, 3).clone())


def _train(model: nn.Module, ctx: UnlearnContext, epochs: int, lr: float, r: CTRecipe, phase: str,
           extra: list | None = None) -> None:
    optimizer = sgd(model.parameters(), lr, r.momentum, r.weight_decay)
    scheduler = cosine(optimizer, epochs)
    loss_fn = cross_entropy()
    for epoch in range(epochs):
        run_epoch(model, ctx.retain, optimizer, loss_fn, progress=ctx.progress, amp_dtype=ctx.amp_dtype,
                  description=f"ct: {phase} {epoch + 1}/{epochs}")
        if extra:
            run_epoch(model, extra, optimizer, loss_fn, progress=ctx.progress, amp_dtype=ctx.amp_dtype,
                      description=f"ct: {phase} pseudo-labels {epoch + 1}/{epochs}")
        scheduler.step()


@torch.no_grad()
def _probabilities(model: nn.Module, x: Tensor) -> Tensor:
    model.eval()
    return torch.softmax(model(x), dim=1)


def _reset_all(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def pseudo_labels(model: nn.Module, ctx: UnlearnContext, r: CTRecipe) -> list[tuple[Tensor, Tensor]]:
    """Part B's selection: forget examples likely to be mistaken, with their wrong labels as targets."""
    forget = list(ctx.forget)  # fixed order: the forget set is small
    x = torch.cat([b[0] for b in forget])
    y = torch.cat([b[1] for b in forget])
    original = _probabilities(model, x)

    probe = copy.deepcopy(model)
    _train(probe, ctx, r.probe_epochs, r.lr, r, "probe fine-tune")
    probed = _probabilities(probe, x)
    moved_wrong = probed.gather(1, y[:, None]).squeeze(1) < original.gather(1, y[:, None]).squeeze(1)

    scratch = copy.deepcopy(model)
    _reset_all(scratch)
    _train(scratch, ctx, r.scratch_epochs, r.scratch_lr, r, "scratch model")
    scratch_pred = _probabilities(scratch, x).argmax(1)
    mistaken = scratch_pred != y

    wrong_class = probed.scatter(1, y[:, None], -1.0).argmax(1)  # the probe's most likely wrong class
    target = torch.where(mistaken, scratch_pred, wrong_class)
    keep = moved_wrong | mistaken
    xs, ts = x[keep], target[keep]
    bs = ctx.forget.batch_size
    return [(xs[i:i + bs], ts[i:i + bs]) for i in range(0, len(ts), bs)]


@needs_roles(lambda r: ("square_convs",) if r.pseudo_label_fraction < 1 else ())
def _ct(model: nn.Module, ctx: UnlearnContext, r: CTRecipe) -> None:
    # One draw per run, even for pure A, so the generator's later draws do not depend on the fraction.
    use_pseudo_labels = float(torch.rand((), generator=ctx.generator)) < r.pseudo_label_fraction
    if use_pseudo_labels:
        extra = pseudo_labels(model, ctx, r)
        _train(model, ctx, r.epochs, r.lr, r, "pseudo-label fine-tune", extra)
    else:
        transpose_kernels(model)
        _train(model, ctx, r.epochs, r.lr, r, "retrain transposed")


register("ct", origin="5th place, toshi_k & marvelworld (NeurIPS 2023)",
         summary="transpose every conv kernel, retrain 3 epochs (cosine); optional per-run mix with "
                 "their pseudo-label fine-tune (pseudo_label_fraction)",
         recipe=CTRecipe)(_ct)
