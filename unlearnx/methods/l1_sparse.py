"""ℓ1-sparse unlearning (Jia et al., NeurIPS 2023, arXiv 2304.04934; ``--unlearn FT_prune``).

Fine-tune on the retain set with CE + α_t·‖θ‖₁ over all parameters, where the ℓ1 weight decays
linearly per epoch: α_t = α·(1 − t/(T − no_l1_epochs)) for epoch t < T − no_l1_epochs, else 0.
Sparsity pushes the model towards a "pruned" solution, which the paper finds forgets better than plain FT.
Deterministic apart from data order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..training import run_epoch, sgd
from .base import Recipe, at_least, register


@dataclass
class L1SparseRecipe(Recipe):
    source = ("OPTML-Group/Unlearn-Sparse (arXiv 2304.04934), --unlearn FT_prune: CE + linearly decaying "
              "l1 penalty, 10 epochs, lr 0.01")
    deviations = ()
    uncertain = "alpha is a tuned flag in the source; 5e-4 is the value re-implementations commonly use"
    limits = {"alpha": at_least(0), "no_l1_epochs": at_least(0)}

    # Unlearn-Sparse FT_prune on CIFAR-10: 10 epochs, lr 0.01, SGD momentum 0.9, wd 5e-4, batch 256.
    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    retain_batch_size: int = 256       # 0 keeps the batches as given
    alpha: float = 5e-4                # initial ℓ1 weight (uncertain)
    no_l1_epochs: int = 0              # final epochs without the ℓ1 term

    def check(self):
        if self.no_l1_epochs > self.epochs:
            raise ValueError(f"{self.method_name}: no_l1_epochs must be <= epochs ({self.epochs}), "
                             f"got {self.no_l1_epochs}")


def alpha_schedule(alpha: float, epochs: int, no_l1_epochs: int = 0) -> list[float]:
    """The ℓ1 weight of each epoch t = 0..epochs-1: linear decay from ``alpha``, then 0."""
    decay_epochs = epochs - no_l1_epochs
    return [alpha * (1 - t / decay_epochs) if t < decay_epochs else 0.0 for t in range(epochs)]


@register("l1-sparse", origin="baseline: l1-sparse fine-tuning (Jia et al., NeurIPS 2023)",
          summary="fine-tune on retain with CE + a_t*||θ||_1, a_t decaying linearly from 5e-4 (10 epochs, lr 0.01)",
          recipe=L1SparseRecipe)
def _l1_sparse(model, ctx, r: L1SparseRecipe) -> None:
    retain = ctx.retain.rebatch(r.retain_batch_size, shuffle=True) if r.retain_batch_size else ctx.retain
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd(params, r.lr, r.momentum, r.weight_decay)

    for epoch, weight in enumerate(alpha_schedule(r.alpha, r.epochs, r.no_l1_epochs)):
        def loss_fn(m, x, y, weight=weight):
            loss = F.cross_entropy(m(x), y)
            if weight:
                # One fused sum over all parameters (torch._foreach_norm) instead of a Python loop of norms.
                loss = loss + weight * torch.stack(torch._foreach_norm(params, 1)).sum()
            return loss

        run_epoch(model, retain, optimizer, loss_fn, progress=ctx.progress,
                  description=f"l1-sparse {epoch + 1}/{r.epochs} (alpha {weight:.2g})", amp_dtype=ctx.amp_dtype)
