"""Writing an unlearned model for deployment: ``torch.export`` (.pt2) or TorchScript (.ts, deprecated by PyTorch)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_open


def export_model(model: nn.Module, fmt: str, out_dir, input_shape) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ``out_dir``; returns the file written."""
    out_dir = Path(out_dir)
    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)
    if fmt == "pt2":
        path = out_dir / "model.pt2"
        program = torch.export.export(model, (example,))
        with atomic_open(path, "wb") as f:
            torch.export.save(program, f)
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
