"""The NeurIPS 2023 competition layout (what the Kaggle notebooks read).

::

    retain.csv, forget.csv, validation.csv   columns person_id, age_group, age, image_id
    test.csv                                  optional, same columns: the test split
    images/<a>/<b>.png                        image_id "<a>-<b>" (split at the first "-")
    age_class_weights.json                    optional {age_group: train count}
    original_model.pth                        optional state_dict of the original model

Pixels stay raw 0-255 floats, as the competition fed them (``Normalization.raw()``); ``person_id`` becomes
the splits' ``groups``. Labels are the age groups 0..C-1, where the number of classes C is the checkpoint's
(the given one, else ``original_model.pth``) head size, else the number of groups ``age_class_weights.json``
names, else one more than the largest age_group in the CSVs; a checkpoint and a weights file that disagree,
or a label outside 0..C-1, is an error. The competition had 10 groups. Without ``test.csv`` there is no test
split (``test=None``) and validation is the held-out split.
The forget set is ``forget.csv``, unless a :class:`ForgetSpec` is given: then it is re-drawn from
retain + forget (e.g. ``groups:15`` forgets 15 random people, as the organisers did).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from .cache import cached_images
from .forget import ForgetSpec, select_forget
from .splits import Normalization, Split, Splits

COLUMNS = ("person_id", "age_group", "age", "image_id")
CSV_FILES = ("retain.csv", "forget.csv", "validation.csv")
TEST_CSV = "test.csv"  # optional


def competition_checkpoint(path) -> Path | None:
    """``original_model.pth`` of a competition folder, or None when it has none."""
    checkpoint = Path(path) / "original_model.pth"
    return checkpoint if checkpoint.is_file() else None


def image_path(root: Path, image_id: str) -> str:
    """``abc-1`` -> ``<root>/images/abc/1.png`` (the Kaggle dataset's rule)."""
    person, sep, number = image_id.partition("-")
    if not sep or not person or not number:
        raise ValueError(f"image_id {image_id!r} is not of the form '<folder>-<name>'")
    return os.path.join(root, "images", person, number + ".png")


def _read_rows(root: Path, name: str) -> list[dict]:
    """Rows of one CSV with a ``_line`` (1-based line number in the file) for error messages."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"competition folder {root}: missing {name}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column {missing[0]!r} (columns are {header}; "
                             f"expected {', '.join(COLUMNS)})")
        reader.fieldnames = header
        rows = []
        for row in reader:
            if not any((v or "").strip() for k, v in row.items() if k is not None):
                continue  # blank line
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            row["_line"] = reader.line_num
            rows.append(row)
    return rows


def _age_group(row: dict, path: Path) -> int:
    text = row["age_group"]
    try:
        value = float(text)
        if value != int(value):
            raise ValueError
        value = int(value)
    except ValueError:
        raise ValueError(f"{path} line {row['_line']} (image_id {row['image_id']!r}): age_group {text!r} "
                         "is not an integer") from None
    return value


def _check_age_groups(root: Path, labels: dict[str, list[int]], rows: dict[str, list[dict]], num_classes: int,
                      origin: str) -> None:
    """Every label in 0..num_classes-1, else an error naming the first row outside."""
    for name, values in labels.items():
        for value, row in zip(values, rows[name]):
            if not 0 <= value < num_classes:
                raise ValueError(f"{root / name} line {row['_line']} (image_id {row['image_id']!r}): age_group "
                                 f"{value} is outside 0..{num_classes - 1} ({origin})")


def _num_classes(root: Path, labels: dict[str, list[int]], declared: list[int] | None,
                 checkpoint: Path | None) -> tuple[int, str]:
    """``(number of classes, where it came from)``: the checkpoint's head, else the weights file, else the labels."""
    from ..models import checkpoint_num_classes

    head = checkpoint_num_classes(checkpoint) if checkpoint is not None else None
    weights = root / "age_class_weights.json"
    if head is not None and declared is not None and head != len(declared):
        raise ValueError(f"the checkpoint {checkpoint} predicts {head} classes but {weights} names "
                         f"{len(declared)} age groups (0..{len(declared) - 1}); they must agree")
    if head is not None:
        return head, f"the checkpoint {checkpoint.name} predicts {head} classes"
    if declared is not None:
        return len(declared), f"{weights.name} names {len(declared)} age groups"
    largest = max((max(v) for v in labels.values() if v), default=0)
    return max(largest + 1, 1), f"no checkpoint or {weights.name}: the largest age_group sets the classes"


def _person_codes(all_rows: list[list[dict]]) -> dict[str, int]:
    """person_id -> int64 group: the id itself when every id is an integer, else its rank among the ids."""
    ids = sorted({row["person_id"] for rows in all_rows for row in rows})
    try:
        return {p: int(p) for p in ids}
    except ValueError:
        return {p: i for i, p in enumerate(ids)}


def _class_weights(root: Path) -> list[int] | None:
    """Per-class counts from ``age_class_weights.json`` (groups 0..largest key; unnamed groups count 0)."""
    path = root / "age_class_weights.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty object {{age_group: count}}, got {json.dumps(data)[:40]}")
    counts: dict[int, int] = {}
    for key, value in data.items():
        try:
            group = int(key)
        except ValueError:
            raise ValueError(f"{path}: key {key!r} is not an age group") from None
        if group < 0:
            raise ValueError(f"{path}: age group {group} is negative")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: count for age group {group} must be a non-negative number, got {value!r}")
        counts[group] = int(value)
    return [counts.get(group, 0) for group in range(max(counts) + 1)]


def load_competition(path, forget: ForgetSpec | None = None, seed: int = 0, cache_dir=None,
                     checkpoint=None) -> Splits:
    """Load a competition folder; ``checkpoint`` (default: its ``original_model.pth``) sets the class count."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"competition folder {root} does not exist")
    names = CSV_FILES + ((TEST_CSV,) if (root / TEST_CSV).is_file() else ())
    rows = {name: _read_rows(root, name) for name in names}
    if not rows["forget.csv"]:
        raise ValueError(f"competition folder {root}: forget.csv has no rows (the forget set is empty)")
    if not rows["retain.csv"]:
        raise ValueError(f"competition folder {root}: retain.csv has no rows (the retain set is empty)")

    seen: dict[str, tuple[str, int]] = {}
    for name in names:
        for row in rows[name]:
            image_id = row["image_id"]
            if image_id in seen:
                other, line = seen[image_id]
                what = "twice in" if other == name else f"in both {other} (line {line}) and"
                raise ValueError(f"competition folder {root}: image_id {image_id!r} is {what} {name} "
                                 f"(line {row['_line']}); the splits must not overlap")
            seen[image_id] = (name, row["_line"])

    labels = {name: [_age_group(r, root / name) for r in rows[name]] for name in names}
    declared = _class_weights(root)
    checkpoint = Path(checkpoint) if checkpoint is not None else competition_checkpoint(root)
    num_classes, origin = _num_classes(root, labels, declared, checkpoint)
    _check_age_groups(root, labels, rows, num_classes, origin)

    codes = _person_codes(list(rows.values()))
    splits: dict[str, Split] = {}
    for name in names:
        csv_path = root / name
        files = []
        for r in rows[name]:
            try:
                file = image_path(root, r["image_id"])
            except ValueError as exc:
                raise ValueError(f"{csv_path} line {r['_line']}: {exc}") from None
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{csv_path} line {r['_line']} (image_id {r['image_id']!r}): "
                                        f"image file {file} does not exist")
            files.append(file)
        images = cached_images(files, namespace="competition", cache_dir=cache_dir) if files else None
        if images is None:  # an empty validation.csv or test.csv: keep a well-formed empty split
            shape = splits["retain.csv"].images.shape[1:]
            images = torch.empty((0, *shape), dtype=torch.uint8)
        splits[name] = Split(images, torch.tensor(labels[name], dtype=torch.long), [r["image_id"] for r in rows[name]],
                             torch.tensor([codes[r["person_id"]] for r in rows[name]], dtype=torch.long))

    shapes = {name: tuple(s.images.shape[1:]) for name, s in splits.items() if len(s)}
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if shape != first:
            example = image_path(root, splits[name].ids[0])
            raise ValueError(f"competition folder {root}: {name} images (e.g. {example}) are {shape[2]}x{shape[1]} "
                             f"but retain.csv images are {first[2]}x{first[1]}; all images must have the same size")

    def present(name: str) -> Split | None:
        return splits[name] if name in splits and len(splits[name]) else None

    retain, forget_split = splits["retain.csv"], splits["forget.csv"]
    description = f"forget.csv ({len(forget_split)} images of {len(torch.unique(forget_split.groups))} people)"
    result = Splits(
        retain=retain, forget=forget_split, validation=present("validation.csv"), test=present(TEST_CSV),
        num_classes=num_classes, source=str(root), normalization=Normalization.raw(),
        class_names=[f"age group {i}" for i in range(num_classes)], forget_description=description,
        kind="competition", checkpoint=competition_checkpoint(root), declared_class_counts=declared,
        augmentation="crop+flip",  # face photos: natural images
    )
    if forget is not None:
        # train = retain rows then forget rows; draw another forget set from it
        train = result.train_split()
        index = select_forget(train.labels, forget, seed=seed, groups=train.groups)
        result = result.with_forget(index, forget.describe() + f" (seed {seed}, from retain.csv + forget.csv)")
    return result
