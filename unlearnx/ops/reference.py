"""Pure-PyTorch references of the fused ops, written the way the competition notebooks write them.

They are the test oracle and the fallback when the native extension is unavailable. Known numeric
limits of the notebook forms (the fused kernels, which work in log space, do not have them):

* ``bikl_loss`` computes the reverse term as ``KLDivLoss(y.log(), Softmax(x))``. A target with
  zeros gives ``log(0) = -inf`` and an infinite loss when ``reverse_weight > 0`` (mathematically
  right: KL(p || t) is infinite), and when a softmax probability underflows to exactly 0 (logit
  gaps above ~100 in float32) the gradient of ``xlogy(p, p)`` is ``-inf * 0 = NaN``.
* ``masked_reinit_`` selects with a stable sort (O(n log n)); it is exact, not fast.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["bikl_loss", "scl_loss", "masked_reinit_"]


def bikl_loss(logits: Tensor, target: Tensor, reverse_weight: float = 1.0) -> Tensor:
    """KL(target || softmax(logits)) + reverse_weight * KL(softmax(logits) || target), batch mean.

    With ``reverse_weight=0`` this is the 1st place's stage-1 KL-to-uniform loss (for a uniform target).
    """
    kl = nn.KLDivLoss(reduction="batchmean")
    forward = kl(nn.LogSoftmax(dim=1)(logits), target)
    if reverse_weight == 0:  # the notebooks' one-sided loss; skips target.log()
        return forward
    return forward + reverse_weight * kl(target.log(), nn.Softmax(dim=1)(logits))


def scl_loss(forget_logits: Tensor, retain_logits: Tensor, temperature: float = 1.15) -> Tensor:
    """1st-place contrastive forget loss: mean of -log_softmax(F @ R.T / temperature, dim=1)."""
    sim = torch.matmul(forget_logits, retain_logits.T) / temperature
    return -torch.log_softmax(sim, dim=1).mean()


def masked_reinit_(weight: Tensor, scores: Tensor, fraction: float, std: float, *, largest: bool = False,
                   seed: int | None = None) -> Tensor:
    """Re-initialise, in place with N(0, std^2), the round(fraction * numel) entries of ``weight`` with the
    smallest ``scores`` (largest if ``largest``); return the bool mask.

    Ties are taken in flat index order (a stable sort); NaN scores rank above +inf, -0.0 equals +0.0.
    The k fresh values are drawn in one ``normal_`` call and written in index order, from
    ``torch.Generator().manual_seed(seed)`` when ``seed`` is given, else the device's default generator.
    """
    n = weight.numel()
    k = round(fraction * n)
    mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    if k == 0:
        return mask
    order = torch.sort(scores.detach().reshape(-1), stable=True, descending=largest).indices[:k]
    mask.view(-1)[order] = True
    generator = None
    if seed is not None:
        generator = torch.Generator(device=weight.device)
        generator.manual_seed(seed)
    noise = torch.empty(k, dtype=weight.dtype, device=weight.device).normal_(0.0, std, generator=generator)
    with torch.no_grad():
        weight[mask] = noise  # boolean-mask assignment fills in row-major (index) order
    return mask
