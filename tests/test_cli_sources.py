"""Data sources users bring, end to end: class counts from the data, test.csv, and originals that learn."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from unlearnx import data
from unlearnx.cli.main import main
from unlearnx.models import build_model
from unlearnx.pipeline import cached_model, default_train_recipe, train_recipe_choice

from fixtures import write_competition_folder, write_imagefolder


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ages(tmp_path_factory):
    """A face-age-like folder: 8 age groups, a test.csv of held-out images, no original_model.pth."""
    return write_competition_folder(tmp_path_factory.mktemp("ages"), n_people=32, images_per_person=8, size=16,
                                    num_classes=8, with_checkpoint=False, test_fraction=0.2)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_eight_classes_test_csv_and_no_checkpoint_train_an_original_that_learns(ages, tmp_path):
    out = tmp_path / "run"
    result = run("unlearn", "-m", "finetune", "--data", ages, "--model", "small", "--out", out, "--seed", 0, "-q")
    assert result.exit_code == 0, result.output
    assert "training recipe of the original: scratch: SGD lr 0.1 momentum 0.9" in result.output
    assert "augmentation crop+flip" in result.output and "fits only the competition's own model" in result.output
    assert "original: train accuracy" in result.output and "test (held-out) accuracy" in result.output
    assert "under-trained" not in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["num_classes"] == 8 and report["data"]["held_out"] == "test"
    assert report["data"]["sizes"]["test"] > 0
    assert report["original"]["retain"]["accuracy"] > 0.5  # chance is 1/8
    assert report["original_fit"]["under_trained"] is False
    assert report["train_recipe"]["name"] == "scratch" and report["train_recipe"]["augment"] == "crop+flip"
    assert {"retain", "forget", "validation", "test", "mia"} <= set(report["unlearned"])
    build_model("small", 8).load_state_dict(torch.load(out / "unlearned.pt", weights_only=True), strict=True)


def test_an_original_that_barely_learnt_is_flagged(ages, tmp_path):
    out = tmp_path / "still.pt"
    result = run("train", "--data", ages, "--model", "small", "--set", "lr=1e-9", "--set", "epochs=1", "--out", out)
    assert result.exit_code == 0, result.output
    assert "training recipe: scratch with lr=1e-9, epochs=1:" in result.output
    assert "warning: the original looks under-trained" in result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["fit"]["under_trained"] is True and report["recipe_name"] == "scratch"


def test_without_test_csv_validation_is_the_held_out_split_and_the_run_says_so(tmp_path):
    folder = write_competition_folder(tmp_path / "f", n_people=15, images_per_person=6, size=16, num_classes=5,
                                      arch="small", n_forget_people=3)
    out = tmp_path / "run"
    result = run("unlearn", "-m", "finetune", "--data", folder, "--out", out, "--seed", 0, "-q")
    assert result.exit_code == 0, result.output
    assert "held-out split: validation (the source has no test split)" in result.output
    # the folder ships its original, so nothing is trained and no training recipe is named
    assert "training recipe" not in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["held_out"] == "validation (the source has no test split)"
    assert report["data"]["num_classes"] == 5 and "test" not in report["unlearned"]


def test_train_no_augment_switch(tmp_path):
    tree = write_imagefolder(tmp_path / "tree", classes=2, per_class=30, test_per_class=12, size=16)
    out = tmp_path / "m.pt"
    result = run("train", "--data", tree, "--model", "small", "--set", "epochs=1", "--no-augment", "--out", out)
    assert result.exit_code == 0, result.output
    assert "training recipe: scratch with epochs=1:" in result.output and "augmentation none" in result.output
    assert json.loads(out.with_suffix(".json").read_text())["recipe"]["augment"] == "none"


def test_recipe_per_source_and_its_cache_key(tmp_path):
    digits = data.load("digits")
    assert train_recipe_choice(digits)[0] == "digits" and default_train_recipe(digits).augment == "none"
    with_original = data.load(write_competition_folder(tmp_path / "c", n_people=6, images_per_person=3, size=16,
                                                       arch="small"), cache_dir=False)
    assert train_recipe_choice(with_original)[0] == "competition"
    competition = default_train_recipe(with_original)
    assert (competition.optimizer, competition.lr, competition.class_weighted, competition.keep_best_validation,
            competition.augment) == ("adam", 1e-4, True, True, "none")
    tree = data.load(write_imagefolder(tmp_path / "t", classes=2, per_class=4, test_per_class=2, size=16),
                     cache_dir=False)
    scratch = default_train_recipe(tree)
    assert train_recipe_choice(tree)[0] == "scratch"
    assert (scratch.optimizer, scratch.lr, scratch.momentum, scratch.augment) == ("sgd", 0.1, 0.9, "crop+flip")
    plain = default_train_recipe(tree, augment=False)
    assert plain.augment == "none"
    # trained originals and references are cached per recipe: another recipe is another entry
    paths = {cached_model(tree, "small", dataclasses.replace(r, epochs=1), on="train", cache_dir=tmp_path)[1]
             for r in (scratch, plain, competition)}
    assert len(paths) == 3
