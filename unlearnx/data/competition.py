"""The NeurIPS 2023 competition layout (what the Kaggle notebooks read).

::

    retain.csv, forget.csv, validation.csv   columns person_id, age_group, age, image_id
    images/<a>/<b>.png                        image_id "<a>-<b>" (split at the first "-")
    age_class_weights.json                    optional {age_group: train count}
    original_model.pth                        optional state_dict of the original model

Pixels stay raw 0-255 floats, as the competition fed them (``Normalization.raw()``); labels are the age
groups 0..9; ``person_id`` becomes the splits' ``groups``. There is no test split (``test=None``).
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

NUM_AGE_GROUPS = 10
COLUMNS = ("person_id", "age_group", "age", "image_id")
CSV_FILES = ("retain.csv", "forget.csv", "validation.csv")


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
    if not 0 <= value < NUM_AGE_GROUPS:
        raise ValueError(f"{path} line {row['_line']} (image_id {row['image_id']!r}): age_group {value} is outside "
                         f"0..{NUM_AGE_GROUPS - 1}")
    return value


def _person_codes(all_rows: list[list[dict]]) -> dict[str, int]:
    """person_id -> int64 group: the id itself when every id is an integer, else its rank among the ids."""
    ids = sorted({row["person_id"] for rows in all_rows for row in rows})
    try:
        return {p: int(p) for p in ids}
    except ValueError:
        return {p: i for i, p in enumerate(ids)}


def _class_weights(root: Path) -> list[int] | None:
    path = root / "age_class_weights.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{age_group: count}}, got {type(data).__name__}")
    counts = [0] * NUM_AGE_GROUPS
    for key, value in data.items():
        try:
            group = int(key)
        except ValueError:
            raise ValueError(f"{path}: key {key!r} is not an age group") from None
        if not 0 <= group < NUM_AGE_GROUPS:
            raise ValueError(f"{path}: age group {group} is outside 0..{NUM_AGE_GROUPS - 1}")
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{path}: count for age group {group} must be a non-negative number, got {value!r}")
        counts[group] = int(value)
    return counts


def load_competition(path, forget: ForgetSpec | None = None, seed: int = 0, cache_dir=None) -> Splits:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"competition folder {root} does not exist")
    rows = {name: _read_rows(root, name) for name in CSV_FILES}
    if not rows["forget.csv"]:
        raise ValueError(f"competition folder {root}: forget.csv has no rows (the forget set is empty)")
    if not rows["retain.csv"]:
        raise ValueError(f"competition folder {root}: retain.csv has no rows (the retain set is empty)")

    seen: dict[str, tuple[str, int]] = {}
    for name in CSV_FILES:
        for row in rows[name]:
            image_id = row["image_id"]
            if image_id in seen:
                other, line = seen[image_id]
                what = "twice in" if other == name else f"in both {other} (line {line}) and"
                raise ValueError(f"competition folder {root}: image_id {image_id!r} is {what} {name} "
                                 f"(line {row['_line']}); the splits must not overlap")
            seen[image_id] = (name, row["_line"])

    codes = _person_codes(list(rows.values()))
    splits: dict[str, Split] = {}
    for name in CSV_FILES:
        csv_path = root / name
        labels = torch.tensor([_age_group(r, csv_path) for r in rows[name]], dtype=torch.long)
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
        if images is None:  # an empty validation.csv: keep a well-formed empty split
            shape = splits["retain.csv"].images.shape[1:]
            images = torch.empty((0, *shape), dtype=torch.uint8)
        splits[name] = Split(images, labels, [r["image_id"] for r in rows[name]],
                             torch.tensor([codes[r["person_id"]] for r in rows[name]], dtype=torch.long))

    shapes = {name: tuple(s.images.shape[1:]) for name, s in splits.items() if len(s)}
    first = next(iter(shapes.values()))
    for name, shape in shapes.items():
        if shape != first:
            example = image_path(root, splits[name].ids[0])
            raise ValueError(f"competition folder {root}: {name} images (e.g. {example}) are {shape[2]}x{shape[1]} "
                             f"but retain.csv images are {first[2]}x{first[1]}; all images must have the same size")

    retain, forget_split = splits["retain.csv"], splits["forget.csv"]
    description = f"forget.csv ({len(forget_split)} images of {len(torch.unique(forget_split.groups))} people)"
    result = Splits(
        retain=retain, forget=forget_split, validation=splits["validation.csv"] if len(splits["validation.csv"]) else None,
        test=None, num_classes=NUM_AGE_GROUPS, source=str(root), normalization=Normalization.raw(),
        class_names=[f"age group {i}" for i in range(NUM_AGE_GROUPS)], forget_description=description,
        kind="competition", checkpoint=competition_checkpoint(root), declared_class_counts=_class_weights(root),
    )
    if forget is not None:
        # train = retain rows then forget rows; draw another forget set from it
        train = result.train_split()
        index = select_forget(train.labels, forget, seed=seed, groups=train.groups)
        result = result.with_forget(index, forget.describe() + f" (seed {seed}, from retain.csv + forget.csv)")
    return result
