"""The cache never answers with another code's result; reports say what was reused; `unlearnx cache`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import unlearnx
from unlearnx import data, fingerprint
from unlearnx.cli.main import main
from unlearnx.pipeline import cached_model
from unlearnx.training import TrainRecipe

ONE_EPOCH = TrainRecipe.preset("digits", epochs=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


# Run against a copy of the package: edit one source file, then the native binary; print each fingerprint.
EDITS = r"""
from pathlib import Path
import unlearnx.fingerprint as f
pkg = Path(f.__file__).parent
def show():
    f.code_fingerprint.cache_clear()
    print(f.code_fingerprint())
show(); show()
scl = pkg / "methods" / "scl.py"
scl.write_text(scl.read_text().replace("def ", "def  ", 1)); show()
scl.write_text(scl.read_text().replace("def  ", "def ", 1)); show()
for so in pkg.glob("_C*.so"):
    so.write_bytes(so.read_bytes() + b"\0"); show()
"""


def test_a_source_or_native_build_change_changes_the_code_fingerprint(tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(Path(unlearnx.__file__).parent, copy / "unlearnx", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy), "UNLEARNX_DISABLE_EXT": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", EDITS], env=env, capture_output=True, text=True, check=True, cwd=copy)
    prints = out.stdout.split()
    assert prints[0] == prints[1]  # deterministic
    assert prints[2] != prints[0]  # a source edit
    assert prints[3] == prints[0]  # undone
    if len(prints) > 4:  # a rebuilt native extension counts too
        assert prints[4] != prints[0]


def test_a_code_change_makes_the_next_run_recompute_and_the_entry_stale(digits, monkeypatch, tmp_path):
    from unlearnx.cache_index import entries

    _, path, cached = cached_model(digits, "small", ONE_EPOCH, on="retain")
    assert not cached
    _, again, cached = cached_model(digits, "small", ONE_EPOCH, on="retain")
    assert cached and again == path
    assert [e.stale for e in entries(tmp_path / "cache")] == [False]

    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda: "0123456789abcdef")  # as after an edit
    _, changed, cached = cached_model(digits, "small", ONE_EPOCH, on="retain")
    assert not cached and changed != path
    by_path = {e.paths[0]: e for e in entries(tmp_path / "cache")}
    assert by_path[path].stale and not by_path[changed].stale


def test_the_device_type_and_torch_version_are_part_of_the_key(digits, monkeypatch):
    from unlearnx import pipeline

    key = pipeline._cache_key(digits, "small", ONE_EPOCH, "retain", 0, "cpu")
    assert pipeline._cache_key(digits, "small", ONE_EPOCH, "retain", 0, "cuda") != key
    monkeypatch.setattr("torch.__version__", "0.0.1")
    assert pipeline._cache_key(digits, "small", ONE_EPOCH, "retain", 0, "cpu") != key


def test_protocol_runs_report_reused_and_ran(digits, monkeypatch):
    from unlearnx.protocol import comparable_timings, retrained_references

    first = retrained_references(digits, "small", ONE_EPOCH, 2)
    assert first.cache_counts() == {"reused": 0, "ran": 2}
    second = retrained_references(digits, "small", ONE_EPOCH, 3)
    assert second.cache_counts() == {"reused": 2, "ran": 1}
    assert list(second.reused) == [True, True, False]
    assert comparable_timings(second, device="cpu") is None
    # Timings measured elsewhere (another host or torch) are never compared with this one's.
    monkeypatch.setattr(fingerprint, "timing_host", lambda device: "cuda: Another GPU; torch 9.9")
    assert "different hosts" in comparable_timings(second, device="cpu")


def test_cache_command_lists_and_clears_only_stale_entries_inside_the_root(digits, monkeypatch, tmp_path):
    root = tmp_path / "cache"
    cached_model(digits, "small", ONE_EPOCH, on="retain")
    (root / "notes.txt").write_text("a user's file")
    outside = tmp_path / "outside.pt"
    outside.write_text("keep")
    (root / "models" / "link.pt").symlink_to(outside)

    listing = CliRunner().invoke(main, ["cache"], catch_exceptions=False)
    assert listing.exit_code == 0
    assert "retrained model" in listing.output and fingerprint.code_fingerprint() in listing.output

    kept = CliRunner().invoke(main, ["cache", "clear", "--stale"], catch_exceptions=False)
    assert "removed 1 stale" in kept.output  # only the link, which records no code fingerprint
    assert outside.read_text() == "keep" and len(list((root / "models").glob("*.pt"))) == 1

    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda: "0123456789abcdef")
    assert "stale" in CliRunner().invoke(main, ["cache"], catch_exceptions=False).output
    cleared = CliRunner().invoke(main, ["cache", "clear", "--stale"], catch_exceptions=False)
    assert cleared.exit_code == 0 and "removed 1 stale" in cleared.output
    assert list((root / "models").glob("*")) == []
    assert (root / "notes.txt").read_text() == "a user's file"  # not an unlearnx entry: never deleted
    assert outside.read_text() == "keep"
