"""Builds and loads the SIMT test extension (csrc/simt/simt_ops.cpp): the CUDA kernels of csrc/cuda/*.cuh
compiled for the CPU under the SIMT emulation. The first build takes about a minute; later loads reuse
build/simt (rebuilt when a source changes)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils import cpp_extension

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"


def load():
    """torch.ops.unlearnx_simt, built if needed."""
    if not hasattr(torch.ops.unlearnx_simt, "bikl_fwd"):
        build = Path(os.environ.get("UNLEARNX_SIMT_BUILD", REPO / "build" / "simt"))
        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name="unlearnx_simt",
            sources=[str(CSRC / "simt" / "simt_ops.cpp")],
            extra_include_paths=[str(CSRC)],
            extra_cflags=["-O2", "-std=c++20"],
            build_directory=str(build),
            is_python_module=False,
            verbose=False,
        )
    return torch.ops.unlearnx_simt
