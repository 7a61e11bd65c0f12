"""Loads the native extension ``unlearnx._C`` (fused CPU/CUDA ops) if it can.

Importing never fails: when ``_C`` is missing, fails to load, or was built against another torch,
one :class:`ExtensionWarning` says why and :mod:`unlearnx.ops` uses its pure-PyTorch references.
Set ``UNLEARNX_DISABLE_EXT=1`` to skip loading on purpose (tests of the fallback path use it).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["ExtensionWarning", "has_ops", "assert_has_ops", "load_error", "build_info", "compiled_backends"]


class ExtensionWarning(UserWarning):
    """The native extension could not be used; the pure-PyTorch references run instead."""


_BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")
_LOAD_ERROR: str | None = None
_HAS_OPS = False


def _read_build_info() -> dict[str, Any]:
    try:
        return json.loads(_BUILD_INFO_PATH.read_text())
    except (OSError, ValueError):
        return {}


_BUILD_INFO = _read_build_info()


def _version_note() -> str:
    built = _BUILD_INFO.get("torch")
    if built and built != torch.__version__:
        return f"unlearnx._C was built for torch {built}, you have torch {torch.__version__}"
    return ""


def _load() -> None:
    global _LOAD_ERROR, _HAS_OPS
    if os.environ.get("UNLEARNX_DISABLE_EXT", "").lower() in ("1", "true", "yes", "on"):
        _LOAD_ERROR = "disabled by UNLEARNX_DISABLE_EXT"
        return
    note = _version_note()
    try:
        from . import _C  # noqa: F401  (runs the TORCH_LIBRARY registrations)
    except ImportError as exc:  # not built (no .so) or unresolved symbols (torch mismatch)
        reason = "not built" if "_C" in str(exc) and "cannot import name" in str(exc) else str(exc)
        _LOAD_ERROR = f"{note}: {reason}" if note else reason
        return
    except Exception as exc:  # OSError, or a RuntimeError from a static registration
        _LOAD_ERROR = f"{note}: {exc!r}" if note else repr(exc)
        return
    if not hasattr(torch.ops.unlearnx, "bikl_loss"):
        _LOAD_ERROR = "unlearnx._C loaded but registered no ops"
        return
    _HAS_OPS = True
    if note:  # loaded, but an ABI mismatch may still bite
        warnings.warn(f"{note}; rebuild with `pip install --no-build-isolation -e .` if ops misbehave",
                      ExtensionWarning, stacklevel=3)


_load()
if _LOAD_ERROR is not None:
    warnings.warn(f"unlearnx native ops unavailable ({_LOAD_ERROR}); using the pure-PyTorch references. "
                  "Build them with `pip install --no-build-isolation -e .`.", ExtensionWarning, stacklevel=3)


def has_ops() -> bool:
    """True when the fused ops of ``unlearnx._C`` are registered with torch."""
    return _HAS_OPS


def load_error() -> str | None:
    """Why the extension is not in use (``None`` when it is)."""
    return _LOAD_ERROR


def assert_has_ops() -> None:
    if not _HAS_OPS:
        raise RuntimeError(f"unlearnx native ops are unavailable: {_LOAD_ERROR}. "
                           "Rebuild with `pip install --no-build-isolation -e .`.")


def build_info() -> dict[str, Any]:
    """The build configuration written by setup.py (torch/CUDA versions, flags, sources); {} if absent."""
    return dict(_BUILD_INFO)


def compiled_backends() -> dict[str, bool]:
    """Which kernel backends are registered: {"cpu": bool, "cuda": bool}."""
    if not _HAS_OPS:
        return {"cpu": False, "cuda": False}
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return {"cpu": has("unlearnx::bikl_loss", "CPU"), "cuda": has("unlearnx::bikl_loss", "CUDA")}
