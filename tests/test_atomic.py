"""Every file unlearnx writes goes through unlearnx.atomic: complete or absent, and safe when two processes
write the same path (two commands sharing one cache)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnx import atomic

ROOT = Path(__file__).resolve().parents[1]

# Two processes save the same cache entries over and over: a run .npz, a store's meta.json, a cached model
# and a decoded-image entry. With a shared fixed temporary name one rename steals the other's file.
WRITER = r"""
import sys
from pathlib import Path
import torch
from unlearnx.protocol import RunStore
from unlearnx.atomic import torch_save, write_json

folder, tag, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    store = RunStore(folder / "runs", {"kind": "unlearned", "writer": tag})
    store.save(0, {"confs": torch.full((200,), float(tag)).numpy(), "retain_accuracy": 0.5, "test_accuracy": 0.5,
                   "forget_accuracy": 0.5, "seconds": 1.0, "mia": 0.5})
    write_json(folder / "runs" / "meta.json", {"writer": tag, "round": r})
    torch_save({"w": torch.full((64, 64), float(tag))}, folder / "models" / "original.pt")
print("ok")
"""


def test_two_processes_writing_the_same_cache_entries_both_finish_with_valid_files(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(tag), "150"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == "ok"
    with np.load(tmp_path / "runs" / "run-0000.npz") as run:
        assert set(np.unique(run["confs"])) <= {1.0, 2.0} and run["confs"].shape == (200,)
    assert json.loads((tmp_path / "runs" / "meta.json").read_text())["writer"] in (1, 2)
    model = torch.load(tmp_path / "models" / "original.pt", weights_only=True)
    assert model["w"].shape == (64, 64)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_json(target, {"run": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_open(target, "w") as f:
            f.write('{"run": 2, "half')
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic.write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_package_writes_files_only_through_the_atomic_helper():
    """No module writes a file by another route (open(..., 'w'), torch.save to a path, np.savez, fixed
    '.tmp' names, Path.write_text): every write is complete-or-absent."""
    pattern = re.compile(r"""(?<!atomic_)open\([^)]*['"][wa]b?['"]|\.write_text\(|\.write_bytes\(|np\.savez\(|"""
                         r"""\.tmp["']|torch\.save\((?![^,]*,\s*f\))|json\.dump\(""")
    offenders = []
    for folder in ("unlearnx", "cli", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "atomic.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
