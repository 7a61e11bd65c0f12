"""The real CIFAR-10 JPEG tree named by $UNLEARNX_CIFAR10_JPEG, else one beside the checkout (skipped, visibly,
where there is none).

Decoding 60,000 JPEGs takes 10-30 s on 2 cores, hence ``slow``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnx.data import load
from unlearnx.data import cache as image_cache

CIFAR10_JPEG = Path(os.environ.get("UNLEARNX_CIFAR10_JPEG")
                    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPEG.is_dir(), reason=f"no CIFAR-10 JPEG tree at {CIFAR10_JPEG}")
def test_cifar10_jpeg_tree_loads_and_reloads_from_the_cache(tmp_path, monkeypatch):
    splits = load(CIFAR10_JPEG, cache_dir=tmp_path)
    assert splits.class_names == CLASSES and splits.input_shape == (3, 32, 32)
    assert {k: len(v) for k, v in splits.named().items()} == {"retain": 45000, "forget": 5000,
                                                              "validation": 5000, "test": 5000}
    train = splits.train_split()
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    held_out = torch.cat([splits.test.labels, splits.validation.labels])
    assert torch.bincount(held_out).tolist() == [1000] * 10
    name = train.ids[12345]
    with Image.open(CIFAR10_JPEG / name) as img:
        expected = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(train.images[12345], expected)

    monkeypatch.setattr(image_cache, "decode_files", lambda paths: (_ for _ in ()).throw(AssertionError("decoded")))
    assert load(CIFAR10_JPEG, cache_dir=tmp_path).split_hash() == splits.split_hash()
