"""The CPU kernels compile for aarch64 (x86 SIMD only behind architecture checks). CI runs the full check
(code generation) with tools/cross_compile_check.sh; here the compiler's front end, when it is installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CXX = "aarch64-linux-gnu-g++"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no {CXX} (apt-get install g++-aarch64-linux-gnu)")
def test_cpu_kernels_compile_for_aarch64():
    env = {**os.environ, "SYNTAX_ONLY": "1", "PYTHON": sys.executable, "CXX": CXX}
    result = subprocess.run(["bash", str(ROOT / "tools" / "cross_compile_check.sh")], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "all 4 files compile for aarch64" in result.stdout
