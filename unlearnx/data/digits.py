"""The embedded default source: scikit-learn's bundled handwritten digits (real data, no download).

1,797 grey 8x8 images of 10 classes, scaled to 0-255 and upsampled to 3x16x16 so the same tensors feed
the small default model and torchvision's ResNet-18.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .forget import ForgetSpec, select_forget
from .splits import Normalization, Split, Splits

SIZE = 16
# Channel statistics of the upsampled images in [0, 1]; inputs are centred like CIFAR's.
MEAN, STD = (0.19,), (0.33,)


def load_digits_splits(forget: ForgetSpec | None = None, seed: int = 0, test_fraction: float = 0.2,
                       validation_fraction: float = 0.1) -> Splits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float()  # [N, 8, 8] in 0..16
    x = F.interpolate(x.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(bunch.target).long()

    # A fixed held-out split (seed 0) so every forget choice is measured on the same test set.
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(round(test_fraction * len(y)))
    n_val = int(round(validation_fraction * len(y)))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    train = Split(x[train_idx], y[train_idx], [f"digits:{i}" for i in train_idx.tolist()])

    spec = forget or ForgetSpec()
    forget_idx = select_forget(train.labels, spec, seed=seed)
    retain, forget_split = train.partition(forget_idx)
    return Splits(
        retain=retain,
        forget=forget_split,
        validation=Split(x[val_idx], y[val_idx], [f"digits:{i}" for i in val_idx.tolist()]),
        test=Split(x[test_idx], y[test_idx], [f"digits:{i}" for i in test_idx.tolist()]),
        num_classes=10,
        source="digits",
        normalization=Normalization(mean=MEAN, std=STD),
        class_names=[str(i) for i in range(10)],
        forget_description=spec.describe() + f" (seed {seed})",
        forget_index=forget_idx,
        kind="digits",
    )
