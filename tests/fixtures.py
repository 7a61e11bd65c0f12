"""Small on-disk data sources for tests: a competition folder, an ImageFolder tree, a CIFAR pickle folder.

Images are learnable but tiny: class ``c`` has a mean brightness that grows with ``c`` plus noise, so a
model trained for a few steps beats chance. Everything is seeded; a call with the same arguments writes
byte-identical files.

    from tests.fixtures import write_competition_folder   # or `from fixtures import ...` inside tests/
"""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np

COMPETITION_COLUMNS = ("person_id", "age_group", "age", "image_id")


def make_images(labels: np.ndarray, size: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, size, size, 3]: brightness by class, a per-class tint, and noise."""
    n = len(labels)
    base = 30.0 + 190.0 * labels / max(num_classes - 1, 1)
    tint = np.stack([np.sin(labels * 1.7), np.cos(labels * 2.3), np.sin(labels * 0.9 + 1.0)], axis=1) * 25.0
    pixels = base[:, None, None, None] + tint[:, None, None, :] + rng.normal(0, 18.0, size=(n, size, size, 3))
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _save_image(array: np.ndarray, path: Path, **kwargs) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def write_competition_folder(root, n_people: int = 20, images_per_person: int = 10, size: int = 32,
                             num_classes: int = 10, seed: int = 0, with_checkpoint: bool = True,
                             arch: str = "resnet18", n_forget_people: int = 2,
                             with_class_weights: bool = True, test_fraction: float = 0.0) -> Path:
    """A competition-layout folder under ``root`` (created if needed); returns it.

    Each person has one age group (people spread over ``num_classes`` groups) and ``images_per_person``
    images; each image goes to validation (20%), test (``test_fraction``; written to ``test.csv`` when > 0) or
    train (the rest) by a seeded draw, and the forget set is all train images of the ``n_forget_people``
    smallest person ids (as the organisers chose it). Image
    ``p<person>-<k>`` is ``images/p<person>/<k>.png``. ``original_model.pth`` is an untrained
    ``build_model(arch, num_classes)`` state_dict (seeded, without touching the global RNG).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    people = np.arange(1, n_people + 1)
    group_of = people % num_classes
    rows = {"retain.csv": [], "forget.csv": [], "validation.csv": []}
    if test_fraction > 0:
        rows["test.csv"] = []
    labels, names = [], []
    for person, group in zip(people, group_of):
        for k in range(images_per_person):
            image_id = f"p{person}-{k}"
            draw = rng.random()
            if draw < 0.2:
                split = "validation.csv"
            elif draw < 0.2 + test_fraction:
                split = "test.csv"
            else:
                split = "forget.csv" if person <= n_forget_people else "retain.csv"
            age = int(group * 10 + rng.integers(0, 10))
            rows[split].append({"person_id": int(person), "age_group": int(group), "age": age, "image_id": image_id})
            labels.append(group)
            names.append(image_id)
    images = make_images(np.array(labels), size, num_classes, rng)
    for image_id, image in zip(names, images):
        person, _, k = image_id.partition("-")
        _save_image(image, root / "images" / person / f"{k}.png")
    for name, split_rows in rows.items():
        write_csv(root / name, split_rows)
    if with_class_weights:
        train = rows["retain.csv"] + rows["forget.csv"]
        counts = {str(c): sum(1 for r in train if r["age_group"] == c) for c in range(num_classes)}
        (root / "age_class_weights.json").write_text(json.dumps(counts))
    if with_checkpoint:
        write_checkpoint(root / "original_model.pth", arch, num_classes, seed)
    return root


def write_csv(path, rows: list[dict], columns=COMPETITION_COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_checkpoint(path, arch: str, num_classes: int, seed: int = 0) -> Path:
    """An untrained ``arch`` state_dict at ``path`` (the global torch RNG is left as it was)."""
    import torch

    from unlearnx.models import build_model, save_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, num_classes)
    save_state_dict(model, path)
    return Path(path)


def write_imagefolder(root, classes: int = 3, per_class: int = 12, test_per_class: int = 6, size: int = 32,
                      seed: int = 0, ext: str = "jpg") -> Path:
    """``root/train/<class>/<k>.<ext>`` and ``root/test/<class>/<k>.<ext>``; returns ``root``.

    Class folders are named ``c0``, ``c1``, ...; JPEGs are written at quality 95.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    options = {"quality": 95} if ext.lower() in ("jpg", "jpeg") else {}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in range(classes):
            images = make_images(np.full(count, c), size, max(classes, 2), rng)
            for k, image in enumerate(images):
                _save_image(image, root / split / f"c{c}" / f"{k:04d}.{ext}", **options)
    return root


def write_cifar_pickle(root, per_batch: int = 20, test_size: int = 20, num_classes: int = 10, seed: int = 0,
                       nested: bool = True) -> Path:
    """A fake ``cifar-10-batches-py`` folder (5 train batches of ``per_batch``, a test batch, batches.meta).

    Written like the real one: dicts with bytes keys, ``data`` uint8 [N, 3072] (channel planes), ``labels``
    a list of ints. Returns the folder holding the batches (``root/cifar-10-batches-py`` when ``nested``).
    """
    folder = Path(root) / "cifar-10-batches-py" if nested else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n: int, name: str) -> dict:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        images = make_images(labels, 32, num_classes, rng)  # [N, 32, 32, 3]
        data = images.transpose(0, 3, 1, 2).reshape(n, -1)
        return {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data,
                b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch, f"training batch {i} of 5"), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test_size, "testing batch 1 of 1"), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{c}".encode() for c in range(num_classes)],
                     b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f)
    return folder


# --- torchvision dataset roots, in each dataset's own on-disk format (torchvision 0.2x readers) -------------

def _labelled_images(n: int, num_classes: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return make_images(labels, size, num_classes, rng), labels  # [N, size, size, 3] uint8, [N]


def write_torchvision_cifar(root, name: str = "cifar10", n_train: int = 30, n_test: int = 20, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` (5 train batches, ``test_batch``, ``batches.meta``) or
    ``root/cifar-100-python`` (``train``, ``test``, ``meta``) as torchvision reads them: protocol-2 pickles of
    dicts with str keys, ``data`` uint8 [N, 3072] in channel planes, labels as lists of ints. Returns ``root``.
    torchvision also checks the published MD5 sums; tests replace those with the fixture's own."""
    rng = np.random.default_rng(seed)
    cifar100 = name == "cifar100"
    folder = Path(root) / ("cifar-100-python" if cifar100 else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = 100 if cifar100 else 10

    def batch(n: int, title: str) -> dict:
        images, labels = _labelled_images(n, num_classes, 32, rng)
        entry = {"batch_label": title, "data": images.transpose(0, 3, 1, 2).reshape(n, -1),
                 "filenames": [f"{title}_{i}.png" for i in range(n)]}
        if cifar100:
            entry.update(fine_labels=[int(v) for v in labels], coarse_labels=[int(v) // 5 for v in labels])
        else:
            entry["labels"] = [int(v) for v in labels]
        return entry

    def dump(obj, file: str) -> None:
        with open(folder / file, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    if cifar100:
        dump(batch(n_train, "training batch 1 of 1"), "train")
        dump(batch(n_test, "testing batch 1 of 1"), "test")
        dump({"fine_label_names": [f"fine{c}" for c in range(100)],
              "coarse_label_names": [f"coarse{c}" for c in range(20)]}, "meta")
    else:
        per_batch = n_train // 5
        for i in range(1, 6):
            dump(batch(per_batch, f"training batch {i} of 5"), f"data_batch_{i}")
        dump(batch(n_test, "testing batch 1 of 1"), "test_batch")
        dump({"label_names": [f"class{c}" for c in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072},
             "batches.meta")
    return Path(root)


def write_torchvision_svhn(root, n_train: int = 30, n_test: int = 20, seed: int = 0) -> Path:
    """``root/train_32x32.mat`` and ``root/test_32x32.mat`` as SVHN ships them: MATLAB files with ``X`` uint8
    [32, 32, 3, N] and ``y`` [N, 1] in 1..10, where 10 is the digit 0. Returns ``root``."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = _labelled_images(n, 10, 32, rng)
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(n, 1)
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0).copy(), "y": y})
    return root


def write_idx(path, array: np.ndarray) -> None:
    """One file in the IDX format of MNIST: magic (0, 0, 0x08 = uint8, number of dims), big-endian int32 sizes,
    then the bytes."""
    import struct

    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def write_torchvision_mnist(root, name: str = "mnist", n_train: int = 30, n_test: int = 20, seed: int = 0) -> Path:
    """``root/MNIST/raw`` (or ``root/FashionMNIST/raw``) with the four uncompressed IDX files torchvision reads:
    ``{train,t10k}-images-idx3-ubyte`` (uint8 [N, 28, 28]) and ``{train,t10k}-labels-idx1-ubyte``. Returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / ("FashionMNIST" if name == "fashion-mnist" else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = _labelled_images(n, 10, 28, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)


class StopAfter:
    """A progress reporter that interrupts training after ``epochs`` epochs, like a killed job."""

    def __init__(self, epochs):
        self.epochs, self.started = epochs, 0

    def start(self, description, total):
        self.started += 1
        if self.started > self.epochs:
            raise KeyboardInterrupt

    def advance(self, n=1):
        pass
