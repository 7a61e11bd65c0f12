"""torchvision's CIFAR-10 python-pickle folder (``cifar-10-batches-py``).

``data_batch_1`` .. ``data_batch_5`` are the training set, ``test_batch`` the held-out set (split 50/50 into
test and validation like the ImageFolder source), ``batches.meta`` the class names. The pickles are read
with an unpickler that only builds numpy arrays, so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .forget import ForgetSpec
from .imagefolder import CIFAR10_NORMALIZATION, train_and_held_out_splits
from .splits import Split, Splits

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SIDE = 32

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are expected)")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path}: not a CIFAR-10 python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    # Python 2 pickles read with encoding="bytes" have bytes keys
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 pickle folder {path.parent}: missing {path.name}")
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: missing key {key!r} (keys are {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise ValueError(f"{path}: 'data' must be uint8 [N, {3 * SIDE * SIDE}], got {data.dtype} {list(data.shape)}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    images = torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def pickle_folder(path) -> Path:
    """The folder holding the batches: ``path`` itself or its ``cifar-10-batches-py`` child."""
    path = Path(path)
    nested = path / "cifar-10-batches-py"
    return nested if not (path / TRAIN_BATCHES[0]).exists() and nested.is_dir() else path


def load_cifar_pickle(path, forget: ForgetSpec | None = None, seed: int = 0) -> Splits:
    folder = pickle_folder(path)
    parts = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    ids = [f"{name}:{i}" for name, (_, y) in zip(TRAIN_BATCHES, parts) for i in range(len(y))]
    train = Split(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), ids)
    test_x, test_y = _read_batch(folder / TEST_BATCH)
    held_out = Split(test_x, test_y, [f"{TEST_BATCH}:{i}" for i in range(len(test_y))])

    class_names = [str(i) for i in range(10)]
    if (folder / META).is_file():
        names = _unpickle(folder / META).get("label_names")
        if names is not None:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    num_classes = len(class_names)

    return train_and_held_out_splits(
        train, held_out, forget, seed, num_classes=num_classes, source=str(folder),
        normalization=CIFAR10_NORMALIZATION, class_names=class_names, kind="cifar-pickle", augmentation="crop+flip")
