"""Light training augmentation on uint8 batches: random crop with zero padding, horizontal flip.

The standard recipe for training small-image classifiers from scratch (torchvision's
``RandomCrop(size, padding=size // 8)`` and ``RandomHorizontalFlip()``), done for a whole batch at once on
the batch's device, before normalisation (so padding is black, as torchvision pads PIL images). Draws come
from the caller's ``torch.Generator``, so a seeded run is reproducible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENTATIONS = ("none", "crop", "flip", "crop+flip")


def check_augmentation(name: str) -> str:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return name


def augment(images: Tensor, name: str, generator: torch.Generator | None = None) -> Tensor:
    """``images`` [B, C, H, W] with augmentation ``name`` applied independently to each example."""
    check_augmentation(name)
    if name == "none" or images.shape[0] == 0:
        return images
    batch, _, height, width = images.shape
    device = images.device
    if "crop" in name:
        pad = max(1, min(height, width) // 8)
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
        dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]   # [B, 1, H, 1]
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]    # [B, 1, 1, W]
        images = padded[torch.arange(batch, device=device)[:, None, None, None],
                        torch.arange(images.shape[1], device=device)[None, :, None, None], rows, cols]
    if "flip" in name:
        flip = (torch.rand(batch, generator=generator) < 0.5).to(device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images
