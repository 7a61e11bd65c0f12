"""Execution backends: local worker processes and a real Ray cluster give the serial path's results, in
the same cache; failures are reported by run; a cluster unlearnx starts listens on loopback only.

Ray tests start real clusters, never mocks, inside a private network and PID namespace
(``unshare -npf --mount-proc``), so every address Ray picks is loopback (or a documentation-range veth
that routes nowhere) and every process started dies with the namespace.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnx.data.splits import Normalization, Split, Splits
from unlearnx.executor import Execution, ProcessExecutor, RunFailed, SerialExecutor, make_executor
from unlearnx.methods import make_recipe
from unlearnx.models import build_model
from unlearnx.protocol import retrained_references, unlearned_runs
from unlearnx.training import TrainRecipe

RUNS = 4
HERE = Path(__file__).parent


def tiny_splits() -> Splits:
    """48 learnable 8x8 images in 4 classes (brightness by class), split 32/8/8/8 — milliseconds per run."""
    g = torch.Generator().manual_seed(0)

    def split(n, offset):
        labels = (torch.arange(n) + offset) % 4
        images = (labels.view(-1, 1, 1, 1) * 60 + torch.randint(0, 40, (n, 3, 8, 8), generator=g)).to(torch.uint8)
        return Split(images, labels)

    return Splits(retain=split(32, 0), forget=split(8, 1), validation=split(8, 2), test=split(8, 3), num_classes=4,
                  source="tiny", normalization=Normalization())


def tiny_recipe() -> TrainRecipe:
    return TrainRecipe(epochs=2, batch_size=16)


def tiny_original(splits):
    torch.manual_seed(0)
    return build_model("small", splits.num_classes, 3).eval()


def _protocol(cache, execution, method="finetune", **overrides):
    splits = tiny_splits()
    with make_executor(execution) as executor:
        refs = retrained_references(splits, "small", tiny_recipe(), RUNS, cache_dir=cache, executor=executor)
        runs = unlearned_runs(tiny_original(splits), splits, method, make_recipe(method, overrides), RUNS,
                              cache_dir=cache, executor=executor)
        return refs, runs, executor.describe()


def test_process_backend_gives_the_serial_results_in_the_same_cache(tmp_path):
    torch.set_num_threads(1)  # the workers run with one thread each (--cpus-per-run 1)
    serial = _protocol(tmp_path / "serial", Execution())
    parallel = _protocol(tmp_path / "process", Execution(backend="process", workers=2, timing_runs=1))
    for a, b in zip(serial[:2], parallel[:2]):
        np.testing.assert_array_equal(a.confs, b.confs)
        np.testing.assert_array_equal(a.retain_accuracy, b.retain_accuracy)
    # a run is a run wherever it ran: the same cache folders
    for kind in ("references", "runs"):
        assert sorted(p.name for p in (tmp_path / "serial" / kind).iterdir()) == \
               sorted(p.name for p in (tmp_path / "process" / kind).iterdir())
    refs, runs, execution = parallel
    assert execution["backend"] == "process" and execution["workers"] == 2
    assert sum(execution["nodes"].values()) == 2 * RUNS
    assert [p["concurrent"] for p in runs.placement] == [1, 2, 2, 2]  # run 0 timed alone
    assert all(p["worker"].startswith("pid") for p in runs.placement)
    assert runs.timed_alone.shape == (1,)
    assert all(p["worker"] == "driver" and p["concurrent"] == 1 for p in serial[1].placement)


def test_a_resumed_protocol_only_does_missing_runs(tmp_path):
    splits = tiny_splits()
    refs = retrained_references(splits, "small", tiny_recipe(), 2, cache_dir=tmp_path)
    executor = SerialExecutor()
    more = retrained_references(splits, "small", tiny_recipe(), 3, cache_dir=tmp_path, executor=executor)
    assert sum(executor.nodes.values()) == 1  # only run 2 was done
    np.testing.assert_array_equal(more.confs[:2], refs.confs)


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_an_error_inside_a_run_names_method_and_run_and_is_not_retried(tmp_path, backend):
    execution = Execution(backend=backend, workers=2 if backend == "process" else None, timing_runs=0)
    splits = tiny_splits()
    with make_executor(execution) as executor, pytest.raises(RunFailed, match=r"finetune run \d+ failed: .*NaN"):
        unlearned_runs(tiny_original(splits), splits, "finetune", make_recipe("finetune", {"lr": 1e30}), 2,
                       cache_dir=tmp_path, executor=executor)


def test_a_dead_worker_process_has_its_run_retried(tmp_path):
    """A worker that dies (killed, out of memory) loses its run; the run goes again in a fresh pool."""
    splits = tiny_splits()
    with ProcessExecutor(Execution(backend="process", workers=1, timing_runs=0)) as executor:
        pool = executor._start(splits, None)
        pool.submit(int).result()  # a live worker ...
        for process in pool._processes.values():
            process.kill()  # ... that dies
            process.join()
        refs = retrained_references(splits, "small", tiny_recipe(), 2, cache_dir=tmp_path, executor=executor)
    assert refs.n == 2 and sum(executor.nodes.values()) == 2


def test_bad_execution_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        Execution(backend="process", workers=0).check()
    with pytest.raises(ValueError, match="need --backend ray"):
        Execution(backend="process", ray_address="auto").check()
    with pytest.raises(ValueError, match="--backend must be one of"):
        Execution(backend="dask").check()


def test_loopback_addresses_are_told_from_reachable_ones():
    from unlearnx.executor import _is_loopback

    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.1.1"):
        assert _is_loopback(host), host
    for host in ("198.51.100.2", "10.0.0.1", "::ffff:10.0.0.1"):
        assert not _is_loopback(host), host


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'unlearnx\[ray\]'"):
        Execution(backend="ray").check()


# --- real Ray clusters in a private namespace ------------------------------------------------------------

def _in_namespace(script: str, work: Path, timeout: int = 420, **env) -> subprocess.CompletedProcess:
    """Run tests/ray_namespace/SCRIPT as root in a new network + PID namespace. Fails (never skips) when
    the namespace cannot be made: these tests must not quietly stop checking."""
    if importlib.util.find_spec("ray") is None:
        pytest.fail("Ray is not installed (pip install -r requirements.txt)")
    probe = subprocess.run(["unshare", "-npf", "--mount-proc", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"cannot create a private network namespace for the Ray tests: {probe.stderr}"
    bin_dir = str(Path(sys.executable).parent)
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], "WORK": str(work), **env}
    return subprocess.run(["unshare", "-npf", "--mount-proc", "bash", str(HERE / "ray_namespace" / script)],
                          env=full_env, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)


@pytest.mark.slow
def test_ray_runs_land_on_two_nodes_and_survive_losing_one(tmp_path):
    result = _in_namespace("two_nodes.sh", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "node2-killed").exists(), "the second node never ran a run"
    out = json.loads((tmp_path / "result.json").read_text())
    assert out["n"] == RUNS and len(out["placement"]) == RUNS
    assert len({p["node"] for p in out["placement"]}) == 2  # runs landed on both nodes
    # the same runs as the serial path, wherever they ran and whatever was lost on the way
    serial = retrained_references(tiny_splits(), "small", tiny_recipe(), RUNS, cache_dir=tmp_path / "serial")
    np.testing.assert_allclose(np.array(out["confs"]), serial.confs, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ray_local_cluster_listens_on_loopback_only_and_leaves_nothing(tmp_path):
    sys.path.insert(0, str(HERE))
    from fixtures import write_competition_folder

    data = write_competition_folder(tmp_path / "data", n_people=12, images_per_person=6, arch="small")
    result = _in_namespace("loopback_only.sh", tmp_path, DATA=str(data))
    log = (tmp_path / "evaluate.log").read_text()
    assert result.returncode == 0 and "evaluate exit 0" in log, log[-3000:] + result.stderr[-2000:]
    listeners = [line.split() for line in (tmp_path / "listeners.txt").read_text().splitlines() if line.strip()]
    assert any("gcs_server" in " ".join(fields) for fields in listeners), "never saw Ray listening"
    for fields in listeners:
        host = fields[3].rsplit(":", 1)[0].strip("[]")
        assert host in ("127.0.0.1", "::1", "::ffff:127.0.0.1"), f"listener beyond loopback: {' '.join(fields)}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["execution"]["backend"] == "ray" and len(report["placement"]["finetune"]) == 3
    left = [line for line in (tmp_path / "left.txt").read_text().splitlines() if "ray" in line.lower()]
    assert not left, f"Ray processes outlived the command: {left}"


@pytest.mark.slow
def test_cli_references_then_a_leaderboard_of_several_methods(tmp_path, monkeypatch):
    """`train --references` fills the cache that `evaluate --methods` then reuses (nothing retrained); one
    table for every method, written as JSON, CSV, Markdown and PNG, with the execution and placement."""
    from click.testing import CliRunner

    from unlearnx.cli.main import main

    from fixtures import write_competition_folder

    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    data = write_competition_folder(tmp_path / "data", n_people=12, images_per_person=6, arch="small")

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    result = run("train", "--data", data, "--model", "small", "--references", 3, "--backend", "process",
                 "--workers", 2, "--timing-runs", 1)
    assert result.exit_code == 0, result.output
    assert "3 retrained references" in result.output and "(3 trained now)" in result.output
    out = tmp_path / "board.json"
    result = run("evaluate", "--methods", "finetune,grad-ascent", "--data", data, "--runs", 3, "--backend",
                 "process", "--workers", 2, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["method"] for r in report["leaderboard"]] == ["finetune", "grad-ascent"]
    assert report["execution"]["backend"] == "process" and report["execution"]["workers"] == 2
    assert sum(report["execution"]["nodes"].values()) == 6  # the 6 unlearned runs; references came from the cache
    assert [p["concurrent"] for p in report["placement"]["retrained"]] == [1, 2, 2]
    for suffix in (".csv", ".md", ".png"):
        assert out.with_suffix(suffix).stat().st_size > 0
    assert "grad-ascent" in out.with_suffix(".md").read_text()
    row = report["leaderboard"][0]
    for key in ("forget_quality", "score", "retain_accuracy_ratio", "test_accuracy_ratio", "mia", "seconds", "rte"):
        assert np.isfinite(row[key]), key

    result = run("evaluate", "--methods", "finetune,nope", "--data", data, "--runs", 3)
    assert result.exit_code == 2 and "unknown method(s) nope" in result.output
