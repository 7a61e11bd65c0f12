"""Compiled model steps (torch.compile, TorchInductor): the model stays itself, the fused ops stay in the
graph, seeded results match the eager path, compile time is measured apart, and the default is a rule.

Compiling takes seconds per graph on 2 cores; graphs are reused by every later model of the same
architecture in the process, so these tests share one small model shape (digits, 16 px).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unlearnx import data, ops
from unlearnx.api import seed_everything, splits_context, unlearn_splits
from unlearnx.cli.main import main
from unlearnx.compiled import MIN_WORK_TO_PAY, RECOMPILE_LIMIT, compiled, decide
from unlearnx.layers import model_roles
from unlearnx.methods import make_recipe, run_method
from unlearnx.models import build_model
from unlearnx.protocol import RunSet, unlearned_runs

from conftest import fresh_small

# Seeded compiled and eager runs differ only by floating-point rounding (Inductor fuses and reorders
# reductions), which training then carries on: at the end of a digits-preset run the weights differ by less
# than this share of each tensor's largest entry (measured: finetune 2e-6, scl 3e-3) ...
PARAM_TOLERANCE = {"finetune": 1e-4, "scl": 2e-2}
# ... and the accuracies over the splits (hundreds of examples) by at most a point.
ACCURACY_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def original(digits_class, class_original):
    return fresh_small(class_original)


@pytest.fixture
def no_compiled_graphs():
    """Forget the graphs earlier tests compiled, so a test sees its own compiles (Inductor's on-disk cache
    keeps this cheap)."""
    torch._dynamo.reset()


def _run(model, splits, method, compile, seed=0):
    ctx = splits_context(model, splits, generator=seed_everything(seed))
    with compiled(model, compile) as stats:
        run_method(model, ctx, method, make_recipe(method, preset="digits"))
    return stats


def test_fused_ops_stay_in_the_graph_of_a_compiled_step():
    if not ops.fused_available():
        pytest.skip("unlearnx._C is not built: the fused ops (and their fake kernels) do not exist")
    model = build_model("small", 10, 3).train()
    x_f, x_r = torch.randn(8, 3, 16, 16), torch.randn(16, 3, 16, 16)

    def step(x_f, x_r):
        z_f = model(x_f)
        with torch.no_grad():
            z_r = model(x_r)
        uniform = torch.full_like(z_f, 0.1)
        return ops.scl_loss(z_f, z_r, 1.15) + ops.bikl_loss(z_f, uniform, 0.85)

    explained = torch._dynamo.explain(step)(x_f, x_r)
    assert explained.graph_break_count == 0, explained.break_reasons
    graph_ops = {str(node.target) for graph in explained.graphs for node in graph.graph.nodes}
    assert {"unlearnx.scl_loss.default", "unlearnx.bikl_loss.default"} <= graph_ops, graph_ops
    # ...and the compiled step computes the eager values and gradients.
    expected = step(x_f, x_r)
    expected.backward()
    eager_grad = model.fc.weight.grad.clone()
    model.zero_grad()
    got = torch.compile(step)(x_f, x_r)
    got.backward()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.fc.weight.grad, eager_grad, rtol=1e-3, atol=1e-5)


def test_compiled_model_keeps_its_keys_layers_and_roles(digits_class, original):
    model = copy.deepcopy(original)
    keys = list(model.state_dict())
    conv1, fc = model.conv1, model.fc
    with compiled(model):
        assert model._compiled_call_impl is not None
        assert list(model.state_dict()) == keys  # no "_orig_mod." prefixes
        assert model.conv1 is conv1 and model.fc is fc
        roles = model_roles(copy.deepcopy(model), torch.zeros(2, 3, 16, 16))  # traced eagerly, with hooks
        assert (roles.stem, roles.head) == ("conv1", "fc")
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())
    fresh = build_model("small", 10, 3)
    fresh.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("method", ["finetune", "scl"])
def test_seeded_compiled_runs_match_the_eager_path(method, digits_class, original, no_compiled_graphs):
    eager, fast = copy.deepcopy(original), copy.deepcopy(original)
    _run(eager, digits_class, method, compile=False)
    stats = _run(fast, digits_class, method, compile=True)
    a, b = eager.state_dict(), fast.state_dict()
    assert list(a) == list(b)
    for key in a:
        if a[key].is_floating_point():
            scale = float(a[key].abs().max()) or 1.0
            assert float((a[key] - b[key]).abs().max()) / scale < PARAM_TOLERANCE[method], key
        else:
            assert torch.equal(a[key], b[key]), key
    from unlearnx.protocol import run_summary

    got, want = run_summary(fast, digits_class, "cpu"), run_summary(eager, digits_class, "cpu")
    for key in ("forget_accuracy", "retain_accuracy", "test_accuracy"):
        assert abs(got[key] - want[key]) <= ACCURACY_TOLERANCE, key
    assert 0 < stats.graphs <= RECOMPILE_LIMIT  # it did run compiled, within the recompile bound


def test_later_runs_reuse_the_compiled_graphs_and_compile_time_is_kept_apart(digits, tmp_path, no_compiled_graphs):
    model = build_model("small", 10, 3).eval()
    recipe = make_recipe("scl", preset="digits")
    runs = unlearned_runs(model, digits, "scl", recipe, 2, cache_dir=tmp_path, compile=True)
    # A new model instance of the same architecture reuses what the first run compiled.
    assert runs.graphs_compiled[1] == 0 and runs.compile_seconds[1] < 1.0
    assert 0 < runs.graphs_compiled[0] <= RECOMPILE_LIMIT and runs.compile_seconds[0] > 0
    assert runs.graph_breaks.sum() == 0  # the whole forward is one graph
    assert np.all(runs.seconds > 0)
    # The compiled runs are cached apart from eager ones, and read back with their compile fields.
    again = unlearned_runs(model, digits, "scl", recipe, 2, cache_dir=tmp_path, compile=True)
    assert again.reused.all() and np.array_equal(again.compile_seconds, runs.compile_seconds)
    assert len(list((tmp_path / "runs").iterdir())) == 1


class _BreaksTheGraph(torch.nn.Module):
    """A forward with a data-dependent Python branch: dynamo must leave the graph there."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        if x.sum().item() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_graph_breaks_are_counted(no_compiled_graphs):
    model, x = _BreaksTheGraph(), torch.ones(2, 4)
    expected = model(x)
    with compiled(model) as stats:
        got = model(x)
    torch.testing.assert_close(got, expected)
    assert stats.graph_breaks >= 1 and stats.graphs >= 1


def test_run_sets_stored_before_compilation_read_as_not_compiled():
    stored = {"confs": np.zeros(3), "retain_accuracy": 1.0, "test_accuracy": 1.0, "forget_accuracy": 1.0,
              "seconds": 2.0, "mia": 0.5}
    runs = RunSet.from_results([stored, stored])
    assert runs.compile_seconds.tolist() == [0.0, 0.0] and runs.graphs_compiled.tolist() == [0, 0]
    assert runs.graph_breaks.tolist() == [0, 0]


def test_api_compile_flag(digits, original):
    model = copy.deepcopy(original)
    unlearn_splits(model, digits, "finetune", seed=0, compile=True, epochs=1)
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())


def test_torchscript_models_are_refused_in_one_line():
    scripted = torch.jit.script(build_model("small", 10, 3))
    with pytest.raises(ValueError, match="TorchScript model cannot be compiled"):
        with compiled(scripted):
            pass


@pytest.mark.parametrize("choice, device, arch, runs, retain, shape, expected", [
    ("on", "cpu", "resnet18", 1, 10, (3, 8, 8), True),
    ("off", "cpu", "small", 512, 45000, (3, 32, 32), False),
    ("auto", "cpu", "small", 1, 45000, (3, 32, 32), True),       # one long run wins the compile back
    ("auto", "cpu", "small", 8, 900, (3, 32, 32), False),        # 8 short runs do not
    ("auto", "cpu", "small", 8, 1617, (3, 16, 16), False),       # the digits demo
    ("auto", "cpu", "resnet18", 512, 45000, (3, 32, 32), False),  # not measured faster
    ("auto", "cuda", "small", 512, 45000, (3, 32, 32), False),    # not measured on a GPU
    (None, "cpu", "small", 16, 1000, (3, 32, 32), True),
])
def test_the_default_is_a_rule_with_a_reason(choice, device, arch, runs, retain, shape, expected):
    enabled, why = decide(choice, device, arch, runs, retain, shape)
    assert enabled is expected and why
    if choice in (None, "auto") and arch == "small" and device == "cpu":
        assert (runs * retain * shape[1] * shape[2] >= MIN_WORK_TO_PAY) is expected


def test_a_bad_choice_is_refused():
    with pytest.raises(ValueError, match="compile must be one of"):
        decide("maybe", "cpu", "small", 1, 1, (3, 8, 8))


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_unlearn_reports_compile_apart_from_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = _cli("unlearn", "-m", "finetune", "--seed", 0, "--compile", "-v", "--no-reference", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "compiled model calls: on" in result.output and "graph(s) compiled, 0 graph break(s)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["compile"]["enabled"] is True and report["compile"]["why"]
    assert report["timings"]["compile"] == report["compile"]["compile_seconds"]
    assert report["seconds"] == report["timings"]["unlearn"]
    state = torch.load(out / "unlearned.pt", weights_only=True)
    build_model("small", 10, 3).load_state_dict(state, strict=True)
    # The default for one short run is eager, and the report says why.
    result = _cli("unlearn", "-m", "finetune", "--seed", 0, "--no-reference", "--out", tmp_path / "eager", "-q")
    report = json.loads((tmp_path / "eager" / "report.json").read_text())
    assert report["compile"]["enabled"] is False and "too little work" in report["compile"]["why"]


def test_cli_refuses_compiling_a_torchscript_model_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.ts"
    torch.jit.script(build_model("small", 10, 3)).save(str(path))
    result = _cli("unlearn", "-m", "finetune", "--model", path, "--compile", "--out", tmp_path / "run", "-q")
    assert result.exit_code != 0
    assert "TorchScript model cannot be compiled" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_cli_bench_ingredients_time_the_compiled_path_beside_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    result = _cli("bench", "--methods", "finetune", "--runs", 1, "--ingredients", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["methods"]
    impls = [r["impl"].split(" (")[0] for r in rows]
    assert impls == ["pytorch", "resident", "fused", "fused+compile"]
    compiled_row = rows[-1]
    assert "compiled model" in compiled_row["ingredients"] and compiled_row["compile_seconds"] >= 0
    assert all("compile_seconds" not in r for r in rows[:-1])
    assert "compile_seconds" in (out.with_suffix(".md")).read_text()


def test_every_method_gets_the_same_impl_ladder(digits, original):
    from unlearnx.bench.methods import bench_methods

    rows = bench_methods(digits, original, "small", ["neggrad", "finetune"], preset="digits")
    assert [(r["method"], r["impl"].split(" (")[0]) for r in rows] == [
        ("neggrad", "pytorch"), ("neggrad", "fused"), ("finetune", "pytorch"), ("finetune", "fused")]


def test_cli_evaluate_records_compile_per_method_and_keeps_it_out_of_run_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    result = _cli("evaluate", "-m", "finetune", "--runs", 3, "--compile", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    block = report["compile"]
    assert block["enabled"] is True and block["mode"] == "default"
    assert block["methods"]["finetune"]["compile_seconds"] == block["compile_seconds"] >= 0
    # Run seconds are per run, without compiling.
    assert report["metrics"]["unlearned"]["seconds"]["mean"] > 0
    result = _cli("evaluate", "-m", "finetune", "--runs", 3, "--out", tmp_path / "eager.json", "-q")
    assert json.loads((tmp_path / "eager.json").read_text())["compile"]["enabled"] is False


def test_cli_bench_takes_a_user_model(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    result = _cli("bench", "--methods", "finetune", "--model", "user_models:plain_cnn", "--runs", 1, "--compile",
                  "--out", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["model"]["spec"] == "user_models:plain_cnn"
    assert [r["impl"].split(" (")[0] for r in report["methods"]] == ["pytorch", "fused", "fused+compile"]
    result = _cli("bench", "--methods", "finetune", "--model", "no_such_module:f", "--out", tmp_path / "x.json")
    assert result.exit_code != 0 and "no_such_module" in result.output and "Traceback" not in result.output
