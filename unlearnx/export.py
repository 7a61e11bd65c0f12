"""Writing an unlearned model for deployment: ``torch.export`` (.pt2) or TorchScript (.ts, deprecated by PyTorch)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def export_model(model: nn.Module, fmt: str, out_dir, input_shape) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ``out_dir``; returns the file written."""
    out_dir = Path(out_dir)
    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)
    if fmt == "pt2":
        path = out_dir / "model.pt2"
        program = torch.export.export(model, (example,))
        tmp = path.with_suffix(".tmp.pt2")  # torch.export.save warns about names not ending in .pt2
        torch.export.save(program, str(tmp))
    elif fmt == "torchscript":
        path = out_dir / "model.ts"
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export; users asked for it explicitly.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(model)
        tmp = path.with_suffix(".tmp.ts")
        scripted.save(str(tmp))
    else:
        raise ValueError(f"unknown export format {fmt!r}; use 'torchscript' or 'pt2'")
    tmp.replace(path)
    return path
