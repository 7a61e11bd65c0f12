"""The one way unlearnx writes a file: a uniquely named temporary file in the target folder, flushed and
fsynced, then renamed over the target (``os.replace``). Readers see the old file or the new one, never
half of one, and two processes writing the same path (say, the same cache entry) both succeed: the
last rename wins and both versions are complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # mkstemp makes 0600 files; finished files get the usual permissions


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``with atomic_open(path) as f: ...``: ``path`` appears, complete, only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text = {} if "b" in mode else {"encoding": encoding or "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path, obj: Any, **dump_kwargs) -> Path:
    dump_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def torch_save(obj: Any, path) -> Path:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def save_npz(path, **arrays) -> Path:
    """``np.savez`` to exactly ``path`` (through a file object, so numpy adds no ``.npz`` of its own)."""
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


__all__ = ["atomic_open", "write_bytes", "write_text", "write_json", "torch_save", "save_npz"]
