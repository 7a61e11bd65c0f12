"""An ImageFolder tree: ``train/<class>/*`` and ``test/<class>/*`` (e.g. CIFAR-10 as JPEGs).

Classes are the sorted folder names under ``train/`` (torchvision's ``ImageFolder`` order). The held-out
``test/`` folder is split 50/50 into test and validation exactly as the starting kit does
(``random_split(test, [0.5, 0.5], generator=manual_seed(42))``: test = first half, validation = second);
a ``val/`` or ``validation/`` folder, when present, is the validation split instead and ``test/`` stays
whole. The forget set is drawn from ``train/`` with a :class:`ForgetSpec`. Pixels are normalised with the
CIFAR-10 channel statistics.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .cache import cached_images
from .forget import ForgetSpec, select_forget
from .splits import Normalization, Split, Splits

# torchvision's IMG_EXTENSIONS
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
CIFAR10_NORMALIZATION = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
HELD_OUT_SPLIT_SEED = 42


def list_class_files(folder: Path) -> tuple[list[str], list[str], list[int]]:
    """``(classes, files, labels)`` of one ImageFolder split, in torchvision's order (sorted, recursive).

    Paths are plain strings: pathlib costs seconds on 60,000 files.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"ImageFolder split {folder} does not exist")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"ImageFolder split {folder} has no class folders (expected {folder}/<class>/<image>)")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        count = len(files)
        for root, dirs, names in os.walk(os.path.join(folder, name), followlinks=True):
            dirs.sort()
            files.extend(os.path.join(root, n) for n in sorted(names)
                         if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES)
        labels.extend([label] * (len(files) - count))
    return classes, files, labels


def _load_split(folder: Path, classes: list[str], cache_dir, listing=None) -> Split:
    found, files, labels = listing or list_class_files(folder)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder} has class folders {unknown} that train/ does not have")
    if not files:
        raise ValueError(f"ImageFolder split {folder} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    remap = torch.tensor([classes.index(c) for c in found], dtype=torch.long)
    labels_t = remap[torch.tensor(labels, dtype=torch.long)]
    images = cached_images(files, namespace="imagefolder", cache_dir=cache_dir)
    # ids relative to the tree's root ("train/cat/0001.jpg"): the same on every machine
    prefix = len(os.path.join(str(folder.parent), ""))
    return Split(images, labels_t, [f[prefix:] for f in files])


def held_out_halves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting kit's ``random_split(held_out, [0.5, 0.5], generator=manual_seed(42))`` indices."""
    from torch.utils.data import random_split

    first, second = random_split(range(n), [0.5, 0.5], generator=torch.Generator().manual_seed(HELD_OUT_SPLIT_SEED))
    return torch.tensor(first.indices, dtype=torch.long), torch.tensor(second.indices, dtype=torch.long)


def train_and_held_out_splits(train: Split, held_out: Split, forget: ForgetSpec | None, seed: int,
                              **fields) -> Splits:
    """The splits of a source with a training set and one held-out set: the forget set is drawn from ``train``
    with ``forget`` and ``seed``, the held-out set is halved into test and validation (:func:`held_out_halves`).
    ``fields`` are the rest of :class:`Splits` (num_classes, source, normalization, ...)."""
    first, second = held_out_halves(len(held_out))
    spec = forget or ForgetSpec()
    forget_index = select_forget(train.labels, spec, seed=seed)
    retain, forget_split = train.partition(forget_index)
    return Splits(retain=retain, forget=forget_split, validation=held_out.subset(second), test=held_out.subset(first),
                  forget_description=spec.describe() + f" (seed {seed})", forget_index=forget_index, **fields)


def load_imagefolder(path, forget: ForgetSpec | None = None, seed: int = 0, cache_dir=None) -> Splits:
    path = Path(path)
    if not (path / "train").is_dir():
        raise FileNotFoundError(f"ImageFolder tree {path}: missing train/ folder")
    listing = list_class_files(path / "train")
    classes = listing[0]
    present = set(listing[2])
    for label, name in enumerate(classes):
        if label not in present:
            raise ValueError(f"ImageFolder class folder {path / 'train' / name} has no image files")
    train = _load_split(path / "train", classes, cache_dir, listing)

    val_dir = next((path / d for d in ("val", "validation") if (path / d).is_dir()), None)
    test = _load_split(path / "test", classes, cache_dir) if (path / "test").is_dir() else None
    if val_dir is not None:
        validation = _load_split(val_dir, classes, cache_dir)
    elif test is not None:
        if len(test) < 2:
            raise ValueError(f"{path / 'test'} has {len(test)} image; the 50/50 test/validation split needs 2")
        first, second = held_out_halves(len(test))
        test, validation = test.subset(first), test.subset(second)
    else:
        raise FileNotFoundError(f"ImageFolder tree {path}: missing test/ folder (held-out images)")

    spec = forget or ForgetSpec()
    forget_index = select_forget(train.labels, spec, seed=seed)
    retain, forget_split = train.partition(forget_index)
    return Splits(
        retain=retain, forget=forget_split, validation=validation, test=test, num_classes=len(classes),
        source=str(path), normalization=CIFAR10_NORMALIZATION, class_names=classes,
        forget_description=spec.describe() + f" (seed {seed})", forget_index=forget_index, kind="imagefolder",
        augmentation="crop+flip",
    )
