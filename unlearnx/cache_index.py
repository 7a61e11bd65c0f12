"""What the cache folder holds, and removing it: ``unlearnx cache`` and ``unlearnx cache clear``.

Entries, under the cache root (``$UNLEARNX_CACHE`` or ``~/.cache/unlearnx``):

- ``images-<key>.pt``: decoded images of a source (``.meta.json`` beside it);
- ``models/<name>.pt``: a trained original model or retrained reference (``.meta.json`` beside it), and
  ``.partial`` training state of an interrupted one;
- ``references/<key>/``: the protocol's retrained-reference runs; ``runs/<method>-<key>/``: its
  unlearned runs (``meta.json`` inside).

Each entry records the code fingerprint it was made with (:mod:`unlearnx.fingerprint`); an entry whose
fingerprint or torch version differs from the running code's is *stale*: no run will read it again.
Only these entries are listed or removed; nothing outside the cache root is ever touched.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

META_SUFFIX = ".meta.json"


def entry_meta(kind: str, key: str, identity: dict, **extra) -> dict:
    return {"kind": kind, "key": key, **identity, **extra,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_sidecar(entry: Path, meta: dict) -> None:
    """The metadata of a one-file entry, beside it."""
    from .atomic import write_json

    write_json(sidecar(entry), meta)


def sidecar(entry: Path) -> Path:
    return entry.with_name(entry.name + META_SUFFIX)


@dataclass
class Entry:
    kind: str
    key: str
    created: str
    size: int
    fingerprint: str
    stale: bool
    paths: list[Path] = field(default_factory=list)


def _size(path: Path) -> int:
    if path.is_symlink():
        return 0
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.exists() else 0


def _read(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _is_stale(meta: dict) -> bool:
    import torch

    from .fingerprint import code_fingerprint, data_fingerprint

    if not meta.get("code"):
        return True  # written before entries recorded their code: cannot be trusted
    current = data_fingerprint() if meta.get("scope") == "data" else code_fingerprint()
    return meta["code"] != current or meta.get("torch", torch.__version__) != torch.__version__


def _entry(kind: str, key: str, paths: list[Path], meta: dict) -> Entry:
    created = meta.get("created") or _dt.datetime.fromtimestamp(paths[0].stat().st_mtime, _dt.timezone.utc) \
        .isoformat(timespec="seconds")
    return Entry(kind=meta.get("kind", kind), key=key, created=created, size=sum(_size(p) for p in paths),
                 fingerprint=meta.get("code", "?"), stale=_is_stale(meta), paths=paths)


def entries(root) -> list[Entry]:
    """Every entry under ``root``, oldest first."""
    root = Path(root)
    found: list[Entry] = []
    if not root.is_dir():
        return found
    for path in sorted(root.glob("images-*.pt")):
        found.append(_entry("images", path.stem.removeprefix("images-"), [path, *_existing(sidecar(path))],
                            _read(sidecar(path))))
    models = root / "models"
    if models.is_dir():
        for path in sorted(models.glob("*.pt")):
            found.append(_entry("model", path.stem, [path, *_existing(sidecar(path))], _read(sidecar(path))))
        for path in sorted(models.glob("*.partial")):
            meta = _read(sidecar(path.with_suffix(".pt")))
            found.append(_entry("partial training", path.stem, [path], {**meta, "kind": "partial training"}))
    for kind, sub in (("references", "references"), ("unlearned runs", "runs")):
        folder = root / sub
        if folder.is_dir():
            for store in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
                found.append(_entry(kind, store.name, [store], _read(store / "meta.json")))
    return sorted(found, key=lambda e: e.created)


def _existing(path: Path) -> list[Path]:
    return [path] if path.exists() else []


def clear(root, stale_only: bool = False) -> list[Entry]:
    """Remove every entry (or only the stale ones) under ``root``; returns what was removed."""
    root = Path(root).resolve()
    removed = []
    for entry in entries(root):
        if stale_only and not entry.stale:
            continue
        for path in entry.paths:
            _remove_inside(path, root)
        removed.append(entry)
    return removed


def _remove_inside(path: Path, root: Path) -> None:
    """Delete ``path`` only if it lies inside ``root`` (links are removed as links, never followed)."""
    parent = path.parent.resolve()
    if parent != root and root not in parent.parents:
        raise ValueError(f"refusing to delete {path}: it is outside the cache folder {root}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


__all__ = ["Entry", "entries", "clear", "entry_meta", "write_sidecar", "sidecar"]
