"""``torchvision:NAME:ROOT``: the standard datasets read by torchvision's own classes from format-exact files.

The fixtures write each dataset's real on-disk format (CIFAR pickles, SVHN MATLAB files, MNIST IDX files), so
torchvision's readers are what is tested. torchvision also checks the CIFAR and SVHN files against the
published MD5 sums; the tests put the fixture files' own sums in those tables (``trust``), and one test shows
that files with other sums are refused.
"""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from unlearnx.data import detect_source, load
from unlearnx.data.imagefolder import CIFAR10_NORMALIZATION

try:
    from tests.fixtures import write_torchvision_cifar, write_torchvision_mnist, write_torchvision_svhn
except ImportError:  # pytest puts tests/ itself on sys.path when tests/ is not a package
    from fixtures import write_torchvision_cifar, write_torchvision_mnist, write_torchvision_svhn


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust(monkeypatch, name: str, root) -> None:
    """Put the fixture files' MD5 sums where torchvision keeps the published ones."""
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        folder = root / cls.base_folder
        for attr in ("train_list", "test_list"):
            monkeypatch.setattr(cls, attr, [[f, md5(folder / f)] for f, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / cls.meta["filename"])})
    elif name == "svhn":
        table = {split: [url, file, md5(root / file) if (root / file).exists() else sum_]
                 for split, (url, file, sum_) in tvd.SVHN.split_list.items()}
        monkeypatch.setattr(tvd.SVHN, "split_list", table)


def write(name: str, root, n_train: int = 30, n_test: int = 20):
    if name in ("cifar10", "cifar100"):
        return write_torchvision_cifar(root, name, n_train, n_test)
    if name == "svhn":
        return write_torchvision_svhn(root, n_train, n_test)
    return write_torchvision_mnist(root, name, n_train, n_test)


def written_train_example(name: str, root, i: int) -> tuple[torch.Tensor, int]:
    """Example ``i`` of the training files, read back without torchvision, as [C, H, W] uint8 and its label."""
    if name == "cifar10":
        with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
            batch = pickle.load(f)
        return torch.from_numpy(batch["data"][i].reshape(3, 32, 32)), batch["labels"][i]
    if name == "cifar100":
        with open(root / "cifar-100-python" / "train", "rb") as f:
            batch = pickle.load(f)
        return torch.from_numpy(batch["data"][i].reshape(3, 32, 32)), batch["fine_labels"][i]
    if name == "svhn":
        from scipy.io import loadmat

        mat = loadmat(root / "train_32x32.mat")
        label = int(mat["y"][i, 0])
        return torch.from_numpy(mat["X"][..., i].transpose(2, 0, 1).copy()), 0 if label == 10 else label
    raw = root / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"
    images = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    return torch.from_numpy(images[i].copy()).unsqueeze(0), int(labels[i])


EXPECTED = {  # name: (classes, input shape, first class name, augmentation)
    "cifar10": (10, (3, 32, 32), "class0", "crop+flip"),
    "cifar100": (100, (3, 32, 32), "fine0", "crop+flip"),
    "svhn": (10, (3, 32, 32), "0", "crop"),
    "fashion-mnist": (10, (1, 28, 28), "T-shirt/top", "none"),
    "mnist": (10, (1, 28, 28), "0 - zero", "none"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dataset_loads_from_its_own_format(name, tmp_path, monkeypatch):
    root = write(name, tmp_path / name)
    trust(monkeypatch, name, root)
    source = f"torchvision:{name}:{root}"
    assert detect_source(source) == "torchvision"
    splits = load(source, seed=1)
    classes, shape, first_class, augmentation = EXPECTED[name]
    assert splits.kind == "torchvision" and splits.num_classes == classes and splits.input_shape == shape
    assert splits.class_names[0] == first_class and splits.augmentation == augmentation
    assert len(splits.retain) + len(splits.forget) == 30 and len(splits.forget) == 3
    assert len(splits.test) == len(splits.validation) == 10  # the test files halved, as for ImageFolder
    train = splits.train_split()
    assert train.ids == [f"train:{i}" for i in range(30)]
    for i in (0, 4):
        image, label = written_train_example(name, root, i)
        assert torch.equal(train.images[i], image) and int(train.labels[i]) == label
    if name == "svhn":  # SVHN's label 10 is the digit 0
        assert 0 in train.labels.tolist() and 10 not in train.labels.tolist()
    if name == "cifar10":
        assert splits.normalization == CIFAR10_NORMALIZATION
    assert load(source, seed=1).split_hash() == splits.split_hash()


def test_a_model_trains_and_unlearns_on_grey_images(tmp_path):
    """MNIST-style sources keep one channel; the models, methods and metrics take it."""
    from unlearnx.api import unlearn_splits
    from unlearnx.pipeline import measure, train_from_scratch
    from unlearnx.training import TrainRecipe

    root = write_torchvision_mnist(tmp_path, "mnist", n_train=60, n_test=20)
    splits = load(f"torchvision:mnist:{root}")
    model = train_from_scratch(splits, "small", TrainRecipe.preset("scratch", epochs=2, batch_size=32), seed=0)
    assert model.conv1.in_channels == 1
    unlearn_splits(model, splits, "finetune", seed=0)
    assert set(measure(model, splits)) >= {"retain", "forget", "test", "validation", "mia"}


def test_missing_root_says_where_to_get_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load(f"torchvision:cifar10:{tmp_path / 'nowhere'}")
    message = str(info.value)
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in message
    assert "cifar-10-python.tar.gz" in message and "download=True" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load(f"torchvision:mnist:{tmp_path / 'empty'}")
    message = str(info.value)
    assert "no usable training files" in message and "(missing)" in message and str(tmp_path / "empty" / "MNIST" / "raw") in message
    assert "torchvision.datasets.MNIST" in message


def test_files_other_than_the_published_ones_are_refused(tmp_path):
    root = write_torchvision_cifar(tmp_path, "cifar10", n_train=10, n_test=4)  # checksums not trusted
    with pytest.raises(FileNotFoundError, match="not the published files"):
        load(f"torchvision:cifar10:{root}")
    root = write_torchvision_svhn(tmp_path / "svhn", n_train=10, n_test=4)
    with pytest.raises(FileNotFoundError, match="not the published files"):
        load(f"torchvision:svhn:{root}")


def test_corrupt_idx_file_is_one_line(tmp_path):
    root = write_torchvision_mnist(tmp_path, "mnist", n_train=10, n_test=4)
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0c\x01junk")
    with pytest.raises(ValueError, match="cannot read the training files"):
        load(f"torchvision:mnist:{root}")


@pytest.mark.parametrize("source, message", [
    ("torchvision:imagenet:/data", "unknown torchvision dataset 'imagenet'; use torchvision:NAME:ROOT with NAME one of"),
    ("torchvision:cifar10", "no ROOT folder given"),
    ("torchvision:cifar10:", "no ROOT folder given"),
])
def test_bad_source_strings(source, message):
    with pytest.raises(ValueError, match=message):
        detect_source(source)
