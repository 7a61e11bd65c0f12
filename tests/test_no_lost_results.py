"""A finished run is never thrown away; bad checkpoints and diverging methods say what went wrong."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from unlearnx import data
from unlearnx.cli.main import main
from unlearnx.models import build_model, load_checkpoint
from unlearnx.pipeline import measure, shadow_members, train_from_scratch
from unlearnx.training import TrainRecipe

from fixtures import StopAfter, write_checkpoint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_an_evaluation_failure_keeps_the_unlearned_model_and_says_so(tmp_path, monkeypatch):
    import unlearnx.pipeline

    measure_ = unlearnx.pipeline.measure
    calls = []

    def broken(model, *args, **kwargs):  # the original is measured before unlearning; the unlearned model fails
        calls.append(model)
        if len(calls) > 1:
            raise RuntimeError("evaluation exploded")
        return measure_(model, *args, **kwargs)

    monkeypatch.setattr("unlearnx.pipeline.measure", broken)
    out = tmp_path / "run"
    checkpoint = write_checkpoint(tmp_path / "original.pt", "small", 10)
    result = run("unlearn", "-m", "finetune", "--checkpoint", checkpoint, "--out", out, "--seed", 0,
                 "--set", "epochs=1", "-q", "--no-reference")
    assert result.exit_code == 2
    assert "model is saved at" in result.output and "evaluation exploded" in result.output
    assert "Traceback" not in result.output
    state = torch.load(out / "unlearned.pt", weights_only=True)
    build_model("small", 10).load_state_dict(state)  # complete and loadable
    assert not (out / "report.json").exists()


def test_a_forget_set_too_small_for_the_mia_marks_it_unavailable(digits):
    tiny = digits.with_forget(torch.arange(4), "4 examples")
    model = build_model("small", 10)
    section = measure(model, tiny, all_mias=True)
    assert "mia" not in section and "mias" not in section
    assert "at least 6" in section["mia_unavailable"]
    assert 0.0 <= section["forget"]["accuracy"] <= 1.0


def test_the_svc_shadow_members_are_a_random_sample_of_every_class():
    labels = torch.arange(10).repeat_interleave(50)  # a class-sorted source
    pick = shadow_members(len(labels), 50)
    assert len(pick) == 50 == len(set(pick.tolist()))
    assert len(set(labels[pick].tolist())) >= 8  # the first 50 would be one class
    assert torch.equal(pick, shadow_members(len(labels), 50))  # seeded


def test_a_checkpoint_with_nan_is_refused_naming_the_parameter(tmp_path):
    state = build_model("small", 10, 3).state_dict()
    state["layer1.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad.pt: parameter layer1.0.conv2.weight holds 1 NaN/inf"):
        load_checkpoint(path, "small", 10, 3)


def test_a_method_that_diverges_names_the_method_phase_and_recipe_values(digits):
    from unlearnx.api import seed_everything, splits_context
    from unlearnx.methods import make_recipe, run_method

    model = build_model("small", 10)
    ctx = splits_context(model, digits, batch_size=64, generator=seed_everything(0))
    recipe = make_recipe("finetune", {"lr": "1e30"})
    with pytest.raises(FloatingPointError) as err:
        run_method(model, ctx, "finetune", recipe)
    text = str(err.value)
    assert text.startswith("finetune:") and "lr=1e+30" in text and "step" in text


def test_training_never_resumes_another_configurations_state(digits, tmp_path):
    a = TrainRecipe.preset("digits", epochs=2)
    b = TrainRecipe.preset("digits", epochs=2, lr=0.01)
    partial = tmp_path / "model.pt.partial"
    with pytest.raises(KeyboardInterrupt):
        train_from_scratch(digits, "small", a, seed=1, resume_path=partial, progress=StopAfter(1))
    assert partial.exists()
    resumed_b = train_from_scratch(digits, "small", b, seed=1, resume_path=partial)
    fresh_b = train_from_scratch(digits, "small", b, seed=1)
    for key, value in fresh_b.state_dict().items():
        assert torch.equal(value, resumed_b.state_dict()[key]), key


def test_train_removes_its_partial_state_only_after_saving_and_checks_out_first(tmp_path):
    result = run("train", "--out", tmp_path, "--set", "epochs=1")
    assert result.exit_code == 2 and "is a folder" in result.output
    out = tmp_path / "m.pt"
    result = run("train", "--out", out, "--set", "epochs=1")
    assert result.exit_code == 0, result.output
    assert out.exists() and not out.with_name("m.pt.partial").exists()


def test_unlearn_checks_batch_size_and_checkpoint_before_any_work(tmp_path):
    result = run("unlearn", "--batch-size", 0, "--out", tmp_path / "a")
    assert result.exit_code == 2 and "--batch-size must be at least 1" in result.output
    result = run("unlearn", "--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "b")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_user_input_errors_of_any_kind_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr("unlearnx.data.load", unwritable)
    result = CliRunner().invoke(main, ["unlearn", "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2 and "PermissionError" in result.output and "Traceback" not in result.output
    # --debug sets UNLEARNX_DEBUG in this process; monkeypatch restores it (absent) after the test
    monkeypatch.setenv("UNLEARNX_DEBUG", "0")
    result = CliRunner().invoke(main, ["--debug", "unlearn", "--out", str(tmp_path / "r"), "-q"])
    assert isinstance(result.exception, PermissionError)
