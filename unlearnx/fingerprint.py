"""Fingerprints of the code that produced a cached result, so a cache never answers with the result of
other code.

``code_fingerprint()`` hashes every ``.py`` file of the package (and of its command line), the native
extension's binary and its build configuration. A cache key built with :func:`cache_identity` also
holds the torch version and the device type. Any change (a comment too) makes the next run recompute:
conservative, never stale.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _source_dirs() -> list[Path]:
    """The package, plus the command line's folder (installed as ``unlearnx.cli`` from ``cli/``)."""
    import importlib.util

    dirs = [PACKAGE_DIR]
    spec = importlib.util.find_spec("unlearnx.cli")
    if spec is not None and spec.origin:
        cli = Path(spec.origin).resolve().parent
        if cli != PACKAGE_DIR and PACKAGE_DIR not in cli.parents:
            dirs.append(cli)
    return dirs


def _hash_files(h, files: list[Path], base: Path) -> None:
    for path in files:
        h.update(str(path.relative_to(base)).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """16 hex digits over the package's Python sources, ``_C``'s binary and ``_build_info.json``."""
    h = hashlib.sha256(b"unlearnx-code/1\0")
    for folder in _source_dirs():
        _hash_files(h, sorted(folder.rglob("*.py")), folder.parent)
    native = sorted(PACKAGE_DIR.glob("_C*.so")) + sorted(PACKAGE_DIR.glob("_C*.pyd"))
    native += [p for p in [PACKAGE_DIR / "_build_info.json"] if p.exists()]
    _hash_files(h, native, PACKAGE_DIR.parent)
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def data_fingerprint() -> str:
    """16 hex digits over the data-loading sources and the decoders' versions (decoded-image entries:
    decoding does not depend on the rest of the package, and CIFAR-10 takes a while to decode)."""
    import torch
    import torchvision

    h = hashlib.sha256(f"unlearnx-data/1\0{torch.__version__}\0{torchvision.__version__}\0".encode())
    _hash_files(h, sorted((PACKAGE_DIR / "data").rglob("*.py")), PACKAGE_DIR)
    return h.hexdigest()[:16]


def device_type(device) -> str:
    import torch

    return torch.device(device).type


def cache_identity(device) -> dict:
    """What a cached training or unlearning result depends on besides its own inputs."""
    import torch

    return {"code": code_fingerprint(), "torch": torch.__version__, "device": device_type(device)}


def timing_host(device) -> str:
    """Where a timing was taken: device model and torch version. Timings compare only on the same host."""
    import torch

    from .report import _cpu_model

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(dev.index if dev.index is not None else torch.cuda.current_device())
    else:
        name = _cpu_model()
    return f"{dev.type}: {name}; torch {torch.__version__}"


__all__ = ["code_fingerprint", "data_fingerprint", "cache_identity", "timing_host", "device_type"]
