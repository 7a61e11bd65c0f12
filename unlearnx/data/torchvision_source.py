"""Standard datasets read from a local torchvision root: ``torchvision:NAME:ROOT``.

NAME is one of ``cifar10``, ``cifar100``, ``svhn``, ``fashion-mnist``, ``mnist``. The files are read with
torchvision's own dataset classes and ``download=False`` (nothing is fetched), from the layout those classes
use::

    cifar10        ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100       ROOT/cifar-100-python/{train, test, meta}
    svhn           ROOT/{train_32x32.mat, test_32x32.mat}
    fashion-mnist  ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    mnist          ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte

torchvision checks the CIFAR and SVHN files against their published MD5 sums before reading them, so only the
genuine files load (its CIFAR reader unpickles, which is safe only for those). The training set is the
source's train split (the forget set is drawn from it); its test split is halved into test and validation
as the ImageFolder source does. MNIST-style images stay one grey channel.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .forget import ForgetSpec
from .imagefolder import CIFAR10_NORMALIZATION, train_and_held_out_splits
from .splits import Normalization, Split, Splits

PREFIX = "torchvision:"


@dataclass(frozen=True)
class Dataset:
    """One supported dataset: torchvision's class, where its files go and how its pixels are treated."""

    title: str                      # as users know it
    class_name: str                 # torchvision.datasets.<class_name>
    layout: str                     # where torchvision looks under ROOT
    download_hint: str              # where to get the files
    normalization: Normalization
    augmentation: str               # light augmentation for training from scratch (see unlearnx.data.augment)


_CIFAR_HINT = ("download {url} and extract it in ROOT, or run `python -c \"import torchvision; "
               "torchvision.datasets.{cls}('ROOT', download=True)\"` on a machine with internet and copy ROOT")

DATASETS = {
    "cifar10": Dataset("CIFAR-10", "CIFAR10", "ROOT/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
                       _CIFAR_HINT.format(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", cls="CIFAR10"),
                       CIFAR10_NORMALIZATION, "crop+flip"),
    "cifar100": Dataset("CIFAR-100", "CIFAR100", "ROOT/cifar-100-python/ (train, test, meta)",
                        _CIFAR_HINT.format(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                           cls="CIFAR100"),
                        Normalization(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)), "crop+flip"),
    "svhn": Dataset("SVHN", "SVHN", "ROOT/train_32x32.mat and ROOT/test_32x32.mat",
                    "download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and test_32x32.mat into ROOT, or "
                    "run `python -c \"import torchvision; [torchvision.datasets.SVHN('ROOT', split=s, download=True) "
                    "for s in ('train', 'test')]\"` on a machine with internet and copy ROOT",
                    Normalization(mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970)), "crop"),
    "fashion-mnist": Dataset("Fashion-MNIST", "FashionMNIST",
                             "ROOT/FashionMNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                             "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
                             "run `python -c \"import torchvision; torchvision.datasets.FashionMNIST('ROOT', "
                             "download=True)\"` on a machine with internet and copy ROOT (or gunzip the four files "
                             "of https://github.com/zalandoresearch/fashion-mnist into ROOT/FashionMNIST/raw/)",
                             Normalization(mean=(0.2860,), std=(0.3530,)), "none"),
    "mnist": Dataset("MNIST", "MNIST",
                     "ROOT/MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                     "t10k-labels-idx1-ubyte)",
                     "run `python -c \"import torchvision; torchvision.datasets.MNIST('ROOT', download=True)\"` on a "
                     "machine with internet and copy ROOT (or gunzip the four files of "
                     "https://ossci-datasets.s3.amazonaws.com/mnist/ into ROOT/MNIST/raw/)",
                     Normalization(mean=(0.1307,), std=(0.3081,)), "none"),
}
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion-mnist",
            "fashion_mnist": "fashion-mnist"}


def is_torchvision_source(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(PREFIX)


def parse_source(source: str) -> tuple[str, Path]:
    """``"torchvision:NAME:ROOT"`` -> ``(name, root)``; a clear error for anything else."""
    _, _, rest = source.partition(":")
    name, sep, root = rest.partition(":")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    usage = f"use torchvision:NAME:ROOT with NAME one of {', '.join(DATASETS)}"
    if name not in DATASETS:
        raise ValueError(f"data source {source!r}: unknown torchvision dataset {name!r}; {usage}")
    if not sep or not root:
        raise ValueError(f"data source {source!r}: no ROOT folder given; {usage}")
    return name, Path(root).expanduser()


def _missing(dataset: Dataset, root: Path, what: str) -> FileNotFoundError:
    hint = dataset.download_hint.replace("ROOT", str(root))
    layout = dataset.layout.replace("ROOT", str(root))
    return FileNotFoundError(f"torchvision {dataset.title}: {what}; torchvision (download=False) reads {layout}. "
                             f"To get the files: {hint}")


def _read(dataset: Dataset, root: Path, train: bool):
    """torchvision's dataset object for one split, with torchvision's errors turned into one line."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, dataset.class_name)
    kwargs = {"split": "train" if train else "test"} if dataset.class_name == "SVHN" else {"train": train}
    which = "training" if train else "test"
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError as exc:
        if "not found" in str(exc):  # "Dataset not found or corrupted. You can use download=True ..."
            # torchvision checks the CIFAR and SVHN files' MD5 sums; MNIST's only for presence
            checked = "missing" if "MNIST" in dataset.class_name else "missing, or not the published files"
            raise _missing(dataset, root, f"no usable {which} files under {root} ({checked})") from None
        problem = exc
    except (OSError, ValueError, TypeError, AssertionError, KeyError, IndexError, EOFError,
            pickle.UnpicklingError) as exc:
        problem = exc
    first_line = (str(problem).strip().splitlines() or [""])[0][:200]
    raise ValueError(f"torchvision {dataset.title} under {root}: cannot read the {which} files "
                     f"({type(problem).__name__}: {first_line})")


def _as_split(ds, prefix: str) -> Split:
    """torchvision's arrays as a Split: CIFAR keeps [N, H, W, C], SVHN [N, C, H, W], MNIST [N, H, W]."""
    data = ds.data
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels  # SVHN
    images = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if images.dim() == 3:                       # MNIST-style: one grey channel
        images = images.unsqueeze(1)
    elif type(ds).__name__.startswith("CIFAR"):
        images = images.permute(0, 3, 1, 2)
    images = images.to(torch.uint8).contiguous()
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    return Split(images, labels, [f"{prefix}:{i}" for i in range(len(labels))])


def _class_names(ds, name: str) -> list[str]:
    classes = getattr(ds, "classes", None)
    if name == "svhn" or not classes:
        return [str(i) for i in range(10)]
    return [str(c) for c in classes]


def load_torchvision(source: str, forget: ForgetSpec | None = None, seed: int = 0) -> Splits:
    name, root = parse_source(source)
    dataset = DATASETS[name]
    if not root.is_dir():
        raise _missing(dataset, root, f"the folder {root} does not exist")
    train_ds = _read(dataset, root, train=True)
    test_ds = _read(dataset, root, train=False)
    train, held_out = _as_split(train_ds, "train"), _as_split(test_ds, "test")
    class_names = _class_names(train_ds, name)
    if len(held_out) < 2:
        raise ValueError(f"torchvision {dataset.title} under {root}: the test split has {len(held_out)} image; "
                         "the 50/50 test/validation split needs 2")
    return train_and_held_out_splits(
        train, held_out, forget, seed, num_classes=len(class_names), source=f"{PREFIX}{name}:{root}",
        normalization=dataset.normalization, class_names=class_names, kind="torchvision",
        augmentation=dataset.augmentation)
