"""Writing an unlearned model for deployment: ``torch.export`` (.pt2) or TorchScript (.ts, deprecated by PyTorch).

Both take any batch size: the .pt2 program is exported with a dynamic batch dimension (``torch.export.Dim``),
and TorchScript keeps Python's shape handling.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_open

MAX_BATCH = 1 << 16


def export_model(model: nn.Module, fmt: str, out_dir, input_shape) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ``out_dir``; returns the file written."""
    out_dir = Path(out_dir)
    model = model.eval().cpu()
    if fmt == "pt2":
        path = out_dir / "model.pt2"
        with atomic_open(path, "wb") as f:
            torch.export.save(export_program(model, input_shape), f)
    elif fmt == "torchscript":
        path = out_dir / "model.ts"
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export; users asked for it explicitly.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
            with atomic_open(path, "wb") as f:
                torch.jit.save(scripted, f)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'torchscript' or 'pt2'")
    return path


def export_program(model: nn.Module, input_shape) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` for inputs ``[batch, *input_shape]``, any batch from 1 to MAX_BATCH."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = torch.zeros(2, *input_shape)  # 2, not 1: export would specialise a size-1 dimension
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
