"""A failed native build still installs the pure-PyTorch package, with a warning, unless
UNLEARNX_REQUIRE_NATIVE=1 makes it fatal."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def source_copy(tmp_path):
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    (tmp_path / "unlearnx").mkdir()
    (tmp_path / "cli").mkdir()
    return tmp_path


def _build(folder: Path, **env) -> subprocess.CompletedProcess:
    # A compiler that always fails stands in for a machine whose toolchain cannot build _C.
    # UNLEARNX_REQUIRE_NATIVE is reset: CI sets it for its own install.
    env = {**os.environ, "CC": "false", "CXX": "false", "FORCE_CPU": "1", "MAX_JOBS": "1",
           "UNLEARNX_REQUIRE_NATIVE": "0", **env}
    return subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(folder / "lib"),
                           "--build-temp", str(folder / "tmp")], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_failed_native_build_warns_and_succeeds(source_copy):
    result = _build(source_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "native extension did not build" in result.stderr and "pure-PyTorch" in result.stderr
    assert not list(source_copy.rglob("_C*.so"))


def test_unlearnx_require_native_makes_it_fatal(source_copy):
    result = _build(source_copy, UNLEARNX_REQUIRE_NATIVE="1")
    assert result.returncode != 0
    assert "native extension did not build" not in result.stderr
