"""Recipe values are typed from the dataclass annotations: one error, whichever way a value comes in."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

import unlearnx
from unlearnx.cli.main import main
from unlearnx.methods import Recipe, make_recipe
from unlearnx.training import TrainRecipe

TWO_AND_A_HALF = "scl: epochs must be an integer, got 2.5"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_an_int_field_refuses_2_5_the_same_way_from_set_file_and_python(tmp_path):
    result = _cli("unlearn", "--set", "epochs=2.5", "--out", tmp_path / "a", "-q")
    assert result.exit_code == 2 and TWO_AND_A_HALF in result.output
    recipe_file = tmp_path / "r.json"
    recipe_file.write_text(json.dumps({"epochs": 2.5}))
    result = _cli("unlearn", "--recipe", recipe_file, "--out", tmp_path / "b", "-q")
    assert result.exit_code == 2 and TWO_AND_A_HALF in result.output
    toml = tmp_path / "r.toml"
    toml.write_text("epochs = 2.5\n")
    assert TWO_AND_A_HALF in _cli("unlearn", "--recipe", toml, "--out", tmp_path / "c", "-q").output
    for value in (2.5, "2.5"):
        with pytest.raises(ValueError, match=f"^{TWO_AND_A_HALF}$"):
            make_recipe("scl", {"epochs": value})
    with pytest.raises(ValueError, match=f"^{TWO_AND_A_HALF}$"):
        unlearnx.unlearn(None, [], [], method="scl", epochs=2.5)
    with pytest.raises(ValueError, match=f"^{TWO_AND_A_HALF}$"):
        make_recipe("scl").replace(epochs=2.5)
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_an_int_field_refuses_true_and_a_float_field_refuses_inf_and_nan():
    with pytest.raises(ValueError, match="^scl: epochs must be an integer, got True$"):
        make_recipe("scl", {"epochs": True})
    for value in ("inf", float("inf"), float("nan"), "-inf"):
        with pytest.raises(ValueError, match="^scl: temperature must be a finite number, got"):
            make_recipe("scl", {"temperature": value})
    with pytest.raises(ValueError, match="^scl: temperature must be a number, got warm$"):
        make_recipe("scl", {"temperature": "warm"})
    recipe = make_recipe("scl", {"epochs": "3", "temperature": 2})
    assert recipe.epochs == 3 and isinstance(recipe.temperature, float)


def test_a_field_may_allow_non_finite_values():
    @dataclass
    class Capped(Recipe):
        cap: float = 1.0
        allow_nonfinite = frozenset({"cap"})

    assert math.isinf(Capped(cap="inf").cap)
    with pytest.raises(ValueError, match="cap must be a number"):
        Capped(cap="x")


def test_lists_and_optional_fields():
    assert make_recipe("scrub", {"lr_decay_epochs": "3,5"}).lr_decay_epochs == (3, 5)
    assert make_recipe("scrub", {"lr_decay_epochs": [4, 6]}).lr_decay_epochs == (4, 6)
    assert make_recipe("scrub", {"lr_decay_epochs": "[2, 7]"}).lr_decay_epochs == (2, 7)
    with pytest.raises(ValueError, match=r"^scrub: lr_decay_epochs must be a list of integers, got \[3, 5.5\]$"):
        make_recipe("scrub", {"lr_decay_epochs": [3, 5.5]})
    assert make_recipe("rni", {"fine_lrs": "1e-3,2e-3,1,1,1,1"}).fine_lrs == (1e-3, 2e-3, 1.0, 1.0, 1.0, 1.0)
    assert make_recipe("msg", {"warmup_epochs": "none"}).warmup_epochs is None
    assert make_recipe("msg", {"warmup_epochs": "2"}).warmup_epochs == 2
    with pytest.raises(ValueError, match=r"^msg: warmup_epochs must be an integer or None, got 1.5$"):
        make_recipe("msg", {"warmup_epochs": 1.5})


def test_the_training_recipe_is_typed_and_checked_before_training(tmp_path):
    with pytest.raises(ValueError, match="^training recipe: epochs must be an integer, got 2.5$"):
        TrainRecipe(epochs=2.5)
    with pytest.raises(ValueError, match="^training recipe: lr must be > 0, got 0.0$"):
        TrainRecipe(lr=0)
    result = _cli("train", "--set", "epochs=2.5", "--out", tmp_path / "m.pt")
    assert result.exit_code == 2 and "training recipe: epochs must be an integer, got 2.5" in result.output
