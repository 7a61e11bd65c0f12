"""SalUn (Fan et al., ICLR 2024, arXiv 2310.12508): random labels restricted to salient weights.

1. Saliency mask: in eval mode, sum the gradient of the forget loss over all forget batches; keep the
   ``threshold`` fraction (50%) of all parameter entries with the largest |g|, globally, as 1, the rest 0.
2. Random-label training (``random_label.py``) with every gradient multiplied by the mask.

With ``reset_masked`` (the current repo, PR #33 "Fix weight decay") masked-out weights stay exactly at
θ_0: here weight decay is folded into the gradient before masking, so their gradient and momentum stay
zero, which equals the repo's reset-to-θ_0 with zeroed momentum. Without it the optimiser's weight
decay still shrinks them, as the paper's first code did.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..training import sgd
from .base import in_range, register
from .random_label import RandomLabelRecipe, rl_epochs


@dataclass
class SalUnRecipe(RandomLabelRecipe):
    source = ("OPTML-Group/Unlearn-Saliency (commit a6e89fd), Classification/generate_mask.py (threshold 0.5) "
              "and unlearn/RL.py with the mask, CIFAR-10 10% example (lr 0.013, 10 epochs)")
    deviations = ()
    uncertain = ("lr 0.013 is the repo's CIFAR-10 10% example (an older README showed 0.1; Deep Unlearn uses "
                 "0.01 without momentum); users report forget accuracy staying > 90% unless the LR is raised")
    limits = {"threshold": in_range(0, 1, closed=(False, True))}  # the mask keeps at least one entry

    # Unlearn-Saliency CIFAR-10 10% example: 10 epochs, lr 0.013, bs 256, momentum 0.9, wd 5e-4, mask 0.5.
    epochs: int = 10
    lr: float = 0.013
    threshold: float = 0.5             # fraction of all parameter entries kept trainable (mask/with_0.5.pt)
    reset_masked: bool = True          # masked-out weights stay at θ_0 (repo's weight-decay fix)


def saliency_mask(model: nn.Module, forget, threshold: float) -> dict[str, Tensor]:
    """{parameter name: 0/1 mask}: exactly ``int(threshold * N)`` of all N entries are 1, those with the
    largest |sum over forget batches of the gradient of the forget loss|."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.eval()  # as the source: BN uses its running statistics and they do not change
    total = [torch.zeros_like(p) for _, p in named]
    for x, y in forget:
        # The source ascends −CE; |∇(−CE)| = |∇CE|, so the sign does not matter for the mask.
        grads = torch.autograd.grad(-F.cross_entropy(model(x), y), [p for _, p in named])
        torch._foreach_add_(total, grads)
    model.train(was_training)

    scores = torch.cat([g.abs().flatten() for g in total])
    keep = int(scores.numel() * threshold)
    flat = torch.zeros_like(scores)
    # topk selects exactly `keep` entries even when |g| ties at the cut (many exact zeros are common).
    flat[torch.topk(scores, keep, sorted=False).indices] = 1.0
    return {name: part.view_as(p) for (name, p), part in zip(named, flat.split([p.numel() for _, p in named]))}


def masked_gradient_hook(model: nn.Module, mask: dict[str, Tensor], weight_decay: float = 0.0):
    """A ``before_step`` that multiplies every gradient by its mask, after adding ``weight_decay``·θ
    (so decay, too, only reaches the unmasked entries)."""
    pairs = [(p, mask[name].to(p.dtype)) for name, p in model.named_parameters() if name in mask]

    def before_step():
        with torch.no_grad():
            for p, m in pairs:
                if p.grad is None:
                    continue
                if weight_decay:
                    p.grad.add_(p, alpha=weight_decay)
                p.grad.mul_(m)

    return before_step


@register("salun", origin="baseline: SalUn (Fan et al., ICLR 2024)",
          summary="random labels with gradients masked to the 50% most forget-salient weights (10 epochs, lr 0.013)",
          recipe=SalUnRecipe)
def _salun(model, ctx, r: SalUnRecipe) -> None:
    forget = ctx.forget.rebatch(r.forget_batch_size, shuffle=True) if r.forget_batch_size else ctx.forget
    mask = saliency_mask(model, forget, r.threshold)
    if r.reset_masked:
        # Decay moves into the masked gradient, so masked-out entries get zero update and zero momentum.
        optimizer = sgd(model.parameters(), r.lr, r.momentum, 0.0)
        hook = masked_gradient_hook(model, mask, r.weight_decay)
    else:
        optimizer = sgd(model.parameters(), r.lr, r.momentum, r.weight_decay)
        hook = masked_gradient_hook(model, mask)
    rl_epochs(model, ctx, r, optimizer, before_step=hook, name="salun")
