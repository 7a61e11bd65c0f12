"""Training augmentation: random crop with zero padding and horizontal flip, per example, seeded."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearnx.data import Split, TensorBatches
from unlearnx.data.augment import augment
from unlearnx.training import TrainRecipe


def images(n=16, size=16):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def windows(image, pad):
    """Every crop of the zero-padded image at every offset, flipped or not: what torchvision could produce."""
    padded = F.pad(image, (pad, pad, pad, pad))
    size = image.shape[-1]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + size, dx:dx + size]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop.flip(2)


def test_each_output_is_a_padded_crop_or_its_mirror_and_draws_vary():
    x = images()
    out = augment(x, "crop+flip", torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    found = []
    for image, result in zip(x, out):
        matches = [how for how, window in windows(image, 2) if torch.equal(window, result)]
        assert matches, "an output that no crop or flip of its input gives"
        found.append(matches[0])
    assert len({how[:2] for how in found}) > 4 and {how[2] for how in found} == {False, True}


def test_crop_alone_never_flips_and_flip_alone_never_moves():
    x = images()
    cropped = augment(x, "crop", torch.Generator().manual_seed(2))
    for image, result in zip(x, cropped):
        assert any(torch.equal(w, result) for (_, _, flipped), w in windows(image, 2) if not flipped)
    flipped = augment(x, "flip", torch.Generator().manual_seed(2))
    assert all(torch.equal(r, i) or torch.equal(r, i.flip(2)) for i, r in zip(x, flipped))
    assert torch.equal(augment(x, "none"), x)


def test_seeded_draws_repeat():
    x = images()
    a = augment(x, "crop+flip", torch.Generator().manual_seed(3))
    b = augment(x, "crop+flip", torch.Generator().manual_seed(3))
    c = augment(x, "crop+flip", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batches_augment_only_when_asked():
    split = Split(images(8), torch.arange(8) % 2)
    plain = TensorBatches(split, 8, shuffle=False, generator=torch.Generator().manual_seed(0))
    augmented = plain.augmented("crop+flip")
    (x0, y0), = list(plain)
    (x1, y1), = list(augmented)
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)
    assert plain.augment == "none" and augmented.rebatch(4).augment == "crop+flip"


def test_bad_augmentation_names_and_loaders_are_refused():
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        TrainRecipe.preset("scratch", augment="rotate")
    from torch import nn

    from unlearnx.training import train_model

    loader = [(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ValueError, match="needs tensor-resident batches"):
        train_model(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), loader,
                    TrainRecipe.preset("scratch", epochs=1, augment="flip"))
