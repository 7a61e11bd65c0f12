"""The command line: the main job end to end, its outputs, and the errors users will hit."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from unlearnx.cli.main import main
from unlearnx.methods import METHODS
from unlearnx.models import build_model

from fixtures import StopAfter, write_checkpoint, write_competition_folder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_competition_folder(tmp_path_factory.mktemp("competition"), n_people=12, images_per_person=6)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_methods_lists_every_registered_method():
    result = run("methods", "--details")
    assert result.exit_code == 0
    for name in METHODS:
        assert name in result.output


def test_info_reports_backends():
    result = run("info")
    assert result.exit_code == 0
    assert "fused available" in result.output and "torch" in result.output
    assert "cache:" in result.output and "UNLEARNX_CACHE" in result.output


def test_unlearn_on_competition_folder_writes_loadable_outputs(folder, tmp_path):
    out = tmp_path / "run"
    result = run("unlearn", "--method", "scl", "--data", folder, "--out", out, "--seed", 0, "--set", "epochs=1",
                 "--quiet", "--export", "pt2")
    assert result.exit_code == 0, result.output
    state = torch.load(out / "unlearned.pt", weights_only=True)
    build_model("resnet18", 10).load_state_dict(state, strict=True)
    report = json.loads((out / "report.json").read_text())
    for key in ("command", "versions", "seed", "data", "method", "recipe", "seconds", "timings", "original",
                "unlearned"):
        assert key in report, key
    assert report["method"] == "scl" and report["seed"] == 0 and report["recipe"]["epochs"] == 1
    assert report["preset"] == "published"  # auto: only the embedded digits get the digits preset
    assert "retrained" not in report  # no reference unless asked for on non-default data
    # The competition layout has no test split: validation is the held-out split.
    assert set(report["unlearned"]) == {"retain", "forget", "validation", "mia"}
    for entry in ("retain", "forget", "validation"):
        assert 0.0 <= report["unlearned"][entry]["accuracy"] <= 1.0
    assert report["data"]["split_hash"] and report["versions"]["torch"] == torch.__version__
    import pandas as pd

    table = pd.read_csv(out / "metrics.csv")
    assert set(table["model"]) == {"original", "unlearned"}
    row = table[(table.model == "unlearned") & (table.split == "forget")].iloc[0]
    assert row["accuracy"] == pytest.approx(report["unlearned"]["forget"]["accuracy"])
    assert "| unlearned | forget |" in (out / "metrics.md").read_text()
    program = torch.export.load(str(out / "model.pt2"))
    x = torch.rand(2, 3, 32, 32) * 255
    model = build_model("resnet18", 10)
    model.load_state_dict(state)
    torch.testing.assert_close(program.module()(x), model.eval()(x))


def test_unlearn_refuses_to_overwrite_without_force(folder, tmp_path):
    out = tmp_path / "run"
    args = ("unlearn", "--method", "finetune", "--data", folder, "--out", out, "--quiet")
    assert run(*args).exit_code == 0
    refused = run(*args)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert run(*args, "--force").exit_code == 0


def test_seeded_cli_runs_are_bit_identical(folder, tmp_path):
    states = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        assert run("unlearn", "-m", "msg", "--data", folder, "--out", out, "--seed", 7, "--set", "epochs=1",
                   "-q").exit_code == 0
        states.append(torch.load(out / "unlearned.pt", weights_only=True))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("args, message", [
    (("--method", "nope"), "available: cfw"),
    (("--set", "nope=1"), "valid settings"),
    (("--set", "epochs"), "key=value"),
    (("--set", "epochs=many"), "scl: epochs must be an integer, got many"),
    (("--device", "cuda:7" if torch.cuda.is_available() else "cuda"), "cuda"),
    (("--data", "/no/such/folder"), "does not exist"),
])
def test_bad_options_give_one_line_errors(folder, tmp_path, args, message):
    base = ["unlearn", "--out", tmp_path / "o", "-q"]
    if "--data" not in args:
        base += ["--data", folder]
    result = run(*base, *args)
    if args[0] == "--device" and torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda is valid here")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_checkpoint_for_another_architecture_is_a_clear_error(folder, tmp_path):
    small = write_checkpoint(tmp_path / "small.pth", "small", 10)
    result = run("unlearn", "--data", folder, "--checkpoint", small, "--model", "resnet18", "--out", tmp_path / "o",
                 "-q")
    assert result.exit_code == 2
    assert "checkpoint is for a 'small' model, not 'resnet18'" in result.output


def test_checkpoint_with_other_class_count_is_a_clear_error(folder, tmp_path):
    five = write_checkpoint(tmp_path / "five.pth", "resnet18", 5)
    result = run("unlearn", "--data", folder, "--checkpoint", five, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 2
    assert "5 classes" in result.output


def test_train_then_evaluate_then_bench(folder, tmp_path):
    ckpt = tmp_path / "original.pt"
    result = run("train", "--data", folder, "--out", ckpt, "--set", "epochs=1")
    assert result.exit_code == 0, result.output
    assert json.loads(ckpt.with_suffix(".json").read_text())["recipe"]["epochs"] == 1

    report_path = tmp_path / "eval.json"
    result = run("evaluate", "-m", "finetune", "--data", folder, "--checkpoint", ckpt, "--runs", 3, "--out",
                 report_path, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["runs"] == 3 and 0.0 <= report["score"]["forget_quality"] <= 1.0
    assert set(report["metrics"]) == {"unlearned", "retrained"}
    assert report["cache"] == {"references": {"reused": 0, "ran": 3}, "unlearned": {"reused": 0, "ran": 3}}
    assert report["score"]["rte"] > 0  # every run timed here, now

    bench_path = tmp_path / "bench.json"
    result = run("bench", "--methods", "finetune", "--data", folder, "--checkpoint", ckpt, "--runs", 3,
                 "--out", bench_path, "-q")
    assert result.exit_code == 0, result.output
    bench = json.loads(bench_path.read_text())
    # finetune uses no fused op: the row says so rather than claiming "fused"
    assert {r["impl"] for r in bench["methods"]} == {"pytorch", "fused (no native op ran)"}
    # evaluate trained the references; bench reuses them and says so
    assert bench["cache"] == {"references": {"reused": 3, "ran": 0}, "unlearned": {"reused": 0, "ran": 6}}
    for row in bench["methods"]:
        for key in ("method", "impl", "seconds", "forget_accuracy", "retain_accuracy", "test_accuracy", "mia",
                    "score"):
            assert key in row, key
    assert bench_path.with_suffix(".md").read_text().count("finetune") == 2
    assert bench_path.with_suffix(".png").stat().st_size > 1000


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    from unlearnx import data
    from unlearnx.pipeline import train_from_scratch
    from unlearnx.training import TrainRecipe

    splits = data.load("digits")
    recipe = TrainRecipe.preset("digits", epochs=3)
    full = train_from_scratch(splits, "small", recipe, seed=1)

    partial = tmp_path / "state.partial"
    # Run one epoch, "crash", then resume with the full recipe from the saved state.
    with pytest.raises(KeyboardInterrupt):
        train_from_scratch(splits, "small", recipe, seed=1, resume_path=partial, progress=StopAfter(1))
    assert partial.exists()
    resumed = train_from_scratch(splits, "small", recipe, seed=1, resume_path=partial)
    assert partial.exists()  # the caller removes it once the final model is saved
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_all_mias_are_reported_by_name(folder, tmp_path):
    out = tmp_path / "run"
    result = run("unlearn", "-m", "finetune", "--data", folder, "--out", out, "--mia", "all", "-q")
    assert result.exit_code == 0, result.output
    mias = json.loads((out / "report.json").read_text())["unlearned"]["mias"]
    assert {"mia.loss_lr", "mia.entropy_lr", "mia.svc.confidence", "mia.svc.m_entropy"} <= set(mias)
    assert all(0.0 <= v <= 1.0 for v in mias.values())
    assert "mia.entropy_lr" in result.output and "lower (vs retrained)" in result.output


def test_tables_are_not_cut_to_80_columns_in_logs(monkeypatch, capsys):
    # Under pytest stdout is no terminal, as in CI logs or a pipe: rich would assume 80 columns and cut
    # each column of the bench table to a letter or two ("met…").
    from unlearnx.bench.report import render
    from unlearnx.cli.common import make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    row = {"method": "reinit-cycles", "impl": "resident+fused+channels_last", "runs": 3, "seconds": 12.5,
           "speedup": 1.25, "forget_accuracy": 0.9, "retain_accuracy": 0.95, "test_accuracy": 0.93, "mia": 0.5,
           "score": 0.05, "rte": 4.0}
    render({"methods": [row]}, make_console())
    out = capsys.readouterr().out
    assert "resident+fused+channels_last" in out and "forget_accuracy" in out and "…" not in out


def test_columns_variable_still_sets_the_width(monkeypatch):
    from unlearnx.cli.common import make_console

    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
    monkeypatch.delenv("COLUMNS")
    assert make_console().width == 160


def test_force_replaces_an_earlier_run_without_mixing_outputs(folder, tmp_path):
    out = tmp_path / "run"
    first = run("unlearn", "--method", "finetune", "--data", folder, "--out", out, "--seed", 1, "-q",
                "--export", "torchscript")
    assert first.exit_code == 0, first.output
    assert (out / "model.ts").exists()
    (out / "notes.txt").write_text("mine")
    second = run("unlearn", "--method", "finetune", "--data", folder, "--out", out, "--seed", 2, "-q", "--force")
    assert second.exit_code == 0, second.output
    # The first run's export must not sit beside the second run's report; the user's own file stays.
    assert not (out / "model.ts").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["seed"] == 2


def test_unseeded_run_records_the_seed_it_drew_and_repeats_with_it(folder, tmp_path):
    first = run("unlearn", "--method", "finetune", "--data", folder, "--out", tmp_path / "a", "-q")
    assert first.exit_code == 0, first.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["seed_drawn"] is True and isinstance(report["seed"], int)
    again = run("unlearn", "--method", "finetune", "--data", folder, "--out", tmp_path / "b", "-q",
                "--seed", report["seed"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["seed_drawn"] is False
    a = torch.load(tmp_path / "a" / "unlearned.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "unlearned.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_out_that_is_a_file_is_refused_before_any_work(folder, tmp_path):
    target = tmp_path / "afile.txt"
    target.write_text("keep")
    result = run("unlearn", "--data", folder, "--out", target, "--force", "-q")
    assert result.exit_code == 2
    assert "is a file; it must be a folder" in result.output and target.read_text() == "keep"


@pytest.mark.parametrize("name, text, message", [
    ("r.yaml", "epochs: 1", "use a .json or .toml file"),
    ("bad.json", "{epochs: 1}", "bad.json is not valid JSON"),
    ("list.json", "[1, 2]", "must hold a table of settings"),
])
def test_bad_recipe_files_are_named_in_the_error(folder, tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    result = run("unlearn", "--data", folder, "--recipe", path, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (b"\x80\x02garbage that is no checkpoint", "is not a PyTorch checkpoint"),
    (None, "holds Python objects besides tensors"),
])
def test_unreadable_checkpoints_are_one_line_errors(folder, tmp_path, content, message):
    path = tmp_path / "model.pth"
    if content is None:
        torch.save({"model": build_model("resnet18", 10)}, path)  # a pickled module, not a state_dict
    else:
        path.write_bytes(content)
    result = run("unlearn", "--data", folder, "--checkpoint", path, "--out", tmp_path / "o", "-q")
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "weights_only` set to `False`" not in result.output


def test_bench_checks_runs_and_data_before_timing_anything(tmp_path):
    result = run("bench", "--runs", 0, "-q")
    assert result.exit_code == 2 and "--runs must be at least 1" in result.output
    result = run("bench", "--data", tmp_path / "nope", "-q")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "timing the fused ops" not in result.output


def test_progress_is_plain_lines_where_there_is_no_terminal(folder, tmp_path):
    # CliRunner's streams are no terminal, like a log file: phases must still be reported as they start.
    result = run("unlearn", "--method", "finetune", "--data", folder, "--out", tmp_path / "o", "--seed", 0)
    assert result.exit_code == 0, result.output
    assert "s] finetune" in result.output
