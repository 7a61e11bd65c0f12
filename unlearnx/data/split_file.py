"""Split files: the forget choice, saved so every method (and every machine) sees the same split.

A split file is JSON::

    {"format": "unlearnx-split", "version": 1, "kind": "imagefolder", "source": "...",
     "train_size": 50000, "forget_index": [3, 17, ...], "forget_description": "...",
     "split_hash": "0ee914923b63ee4e", "sizes": {...}}

``forget_index`` are positions in the source's training set (:meth:`Splits.train_split`), so
``apply_split_file`` rebuilds retain/forget exactly, then checks that the result has the recorded
``split_hash`` (content only: labels and pixels of every split); a different data folder or a changed
file is a clear error rather than a silently different split.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import write_text
from .splits import Splits

FORMAT = "unlearnx-split"
VERSION = 1


def save_split(splits: Splits, path) -> Path:
    """Write ``splits``' forget choice to ``path`` (JSON, written atomically). Returns the path."""
    path = Path(path)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "kind": splits.kind,
        "source": splits.source,
        "train_size": len(splits.retain) + len(splits.forget),
        "forget_index": [int(i) for i in splits.forget_index.tolist()],
        "forget_description": splits.forget_description,
        "split_hash": splits.split_hash(),
        "sizes": {k: (len(v) if v is not None else 0) for k, v in splits.named().items()},
    }
    write_text(path, json.dumps(record) + "\n")
    return path


def read_split_file(path) -> dict:
    """The validated contents of a split file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"split file {path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"split file {path}: not an unlearnx split file (no \"format\": \"{FORMAT}\")")
    if record.get("version") != VERSION:
        raise ValueError(f"split file {path}: version {record.get('version')!r}, this unlearnx reads {VERSION}")
    for key, kind in (("train_size", int), ("forget_index", list), ("split_hash", str)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"split file {path}: field {key!r} is missing or not a {kind.__name__}")
    index = record["forget_index"]
    if not index or not all(isinstance(i, int) and 0 <= i < record["train_size"] for i in index):
        raise ValueError(f"split file {path}: forget_index must be a non-empty list of positions in "
                         f"0..{record['train_size'] - 1}")
    if len(set(index)) != len(index):
        raise ValueError(f"split file {path}: forget_index lists a position twice")
    return record


def apply_split_file(splits: Splits, path) -> Splits:
    """``splits`` with the forget set recorded in ``path``; errors if the data differ from the saved ones."""
    record = read_split_file(path)
    train_size = len(splits.retain) + len(splits.forget)
    if record["kind"] and splits.kind and record["kind"] != splits.kind:
        raise ValueError(f"split file {path} was saved for a {record['kind']} source ({record.get('source')}), "
                         f"not for {splits.kind} {splits.source}")
    if record["train_size"] != train_size:
        raise ValueError(f"split file {path} was saved for a training set of {record['train_size']} examples "
                         f"({record.get('source')}); {splits.source} has {train_size}")
    index = torch.tensor(sorted(record["forget_index"]), dtype=torch.long)
    if index.numel() >= train_size:
        raise ValueError(f"split file {path}: the forget set is the whole training set")
    result = splits.with_forget(index, record.get("forget_description") or f"from split file {Path(path).name}")
    found = result.split_hash()
    if found != record["split_hash"]:
        raise ValueError(f"split file {path}: the data differ from those the split was saved from (split hash "
                         f"{found}, file records {record['split_hash']}; saved from {record.get('source')})")
    return result
