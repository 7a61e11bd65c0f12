"""The methods behave as their sources do where a default once differed (one test per fixed deviation).

grad-ascent's seed update rule is tested in test_methods_misc.py; msg's per-layer selection in
test_methods_ranked.py (the default is asserted here).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
from click.testing import CliRunner

from conftest import fresh_small
from unlearnx.api import unlearn_splits
from unlearnx.cli.main import main
from unlearnx.methods import METHODS, PRESETS, cfw, ct, describe, make_recipe, preset_changes, scl, scrub
from unlearnx.training import run_epoch as real_run_epoch


# ---------------------------------------------------------------- ct: the per-run mix and Algorithm 1

def test_ct_default_is_their_best_blend():
    assert make_recipe("ct").pseudo_label_fraction == 266 / 512


def _one_hot(classes, confidence):
    """Probabilities putting ``confidence`` on each row's class and the rest spread evenly over 2 others."""
    rows = torch.full((len(classes), 3), 0.0)
    for i, (c, conf) in enumerate(zip(classes, confidence)):
        rows[i] = (1 - conf) / 2
        rows[i, c] = conf
    return rows


def test_ct_algorithm1_keeps_exactly_its_examples():
    # 6 forget examples, 3 classes, true label 0 for all. T = 0.5 nat.
    y = torch.zeros(6, dtype=torch.long)
    #            ex:  0    1    2    3    4    5
    original = _one_hot([0, 0, 1, 0, 1, 1], [0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    probed = _one_hot([2, 0, 2, 0, 1, 1], [0.6, 0.9, 0.6, 0.9, 0.6, 0.6])
    scratch = _one_hot([0, 1, 0, 2, 2, 1], [0.9, 0.95, 0.9, 0.4, 0.95, 0.4])
    keep, target = ct.algorithm1(y, original, probed, scratch, entropy_threshold=0.5)
    # 0: original right, fine-tune moved to 2 -> kept, label 2 (fine-tuned prediction).
    # 1: fine-tune still right; scratch confidently wrong (class 1, entropy < T) -> kept, label 1.
    # 2: original wrong, so the direction rule does not apply; scratch right -> dropped.
    # 3: fine-tune right; scratch wrong but unsure (entropy > T) -> dropped.
    # 4: original wrong; scratch confidently wrong (2) -> kept, label 2.
    # 5: original wrong; scratch wrong but unsure -> dropped.
    assert keep.tolist() == [True, True, False, False, True, False]
    assert target[keep].tolist() == [2, 1, 2]
    entropy = lambda p: -(p * p.log()).sum().item()  # noqa: E731
    assert entropy(scratch[1]) < 0.5 < entropy(scratch[3])


# ---------------------------------------------------------------- neggrad-plus: eval mode, BN statistics frozen

def test_neggrad_plus_keeps_batchnorm_statistics(digits_class, class_original):
    model = fresh_small(class_original)
    unlearn_splits(model, digits_class, "neggrad-plus", seed=0, epochs=1)
    after = model.state_dict()
    buffers = [k for k in after if "running_" in k]
    assert buffers and all(torch.equal(after[k], class_original[k]) for k in buffers)
    assert any(not torch.equal(after[k], class_original[k]) for k, _ in model.named_parameters())
    # Control: the same loop in train mode (what the method did before) moves the statistics.
    control = fresh_small(class_original)
    unlearn_splits(control, digits_class, "finetune", seed=0)
    assert any(not torch.equal(control.state_dict()[k], class_original[k]) for k in buffers)


def test_neggrad_plus_follows_the_scrub_repo():
    r = make_recipe("neggrad-plus")
    assert (r.alpha, r.epochs, r.lr, r.momentum, r.l2_weight, r.weight_decay) == (0.95, 10, 0.01, 0.0, 0.1, 0.0)


# ---------------------------------------------------------------- scrub: the batches its loop iterates

def test_scrub_iterates_the_source_loaders_batch_sizes(digits_class, class_original, monkeypatch):
    sizes = {}

    def recording_run_epoch(model, batches, optimizer, loss_fn, *, description="", **kwargs):
        sizes.setdefault("max" if "max" in description else "min", [len(y) for _, y in batches])
        return real_run_epoch(model, batches, optimizer, loss_fn, description=description, max_steps=1, **kwargs)

    monkeypatch.setattr(scrub, "run_epoch", recording_run_epoch)
    unlearn_splits(fresh_small(class_original), digits_class, "scrub", seed=0, epochs=1, msteps=1)
    n_forget, n_retain = len(digits_class.forget.labels), len(digits_class.retain.labels)
    assert sizes["max"] == [min(512, n_forget)] * math.ceil(n_forget / 512)
    assert sizes["min"][0] == 256 and sum(sizes["min"]) == n_retain


# ---------------------------------------------------------------- cfw: the jitter comes after epoch epochs - 2

@pytest.mark.filterwarnings("ignore:Detected call of")  # the epochs are stubbed out
@pytest.mark.parametrize("epochs", [4, 6])
def test_cfw_jitters_after_epoch_epochs_minus_2(digits_class, class_original, monkeypatch, epochs):
    events = []
    monkeypatch.setattr(cfw, "run_epoch", lambda *a, **k: events.append("epoch"))
    monkeypatch.setattr(cfw, "vision_confuser", lambda model, ctx, std, all_convs=False: events.append(std))
    unlearn_splits(fresh_small(class_original), digits_class, "cfw", seed=0, epochs=epochs)
    # first the σ 0.6 noise, then epochs; the 0.005 jitter right after epoch index epochs - 2.
    assert events[0] == 0.6 and events.count("epoch") == epochs
    jitter_at = events.index(0.005)
    assert events[1:jitter_at].count("epoch") == epochs - 1 and events[jitter_at + 1:] == ["epoch"]


# ---------------------------------------------------------------- scl / scl-bikl: retain LR follows the batch size

@pytest.mark.parametrize("method", ["scl", "scl-bikl"])
def test_scl_retain_lr_follows_the_batch_size(digits_class, class_original, monkeypatch, method):
    assert make_recipe(method).retain_learning_rate() == pytest.approx(0.004)
    assert make_recipe(method, {"retain_batch_size": 512}).retain_learning_rate() == pytest.approx(0.008)
    assert make_recipe(method, {"retain_batch_size": 512, "retain_lr": 0.001}).retain_learning_rate() == 0.001
    lrs = []
    real_sgd = scl.sgd
    monkeypatch.setattr(scl, "sgd", lambda params, lr, *a, **k: lrs.append(lr) or real_sgd(params, lr, *a, **k))
    monkeypatch.setattr(scl, "run_epoch", lambda *a, **k: 0.0)
    unlearn_splits(fresh_small(class_original), digits_class, method, seed=0, retain_batch_size=512, epochs=1)
    assert lrs[-1] == pytest.approx(0.008)  # the retain optimiser is built last


# ---------------------------------------------------------------- rni: the noise gate follows reset_fc

@pytest.mark.parametrize("reset_fc", [True, False])
def test_rni_noise_gate_follows_reset_fc(digits_class, class_original, reset_fc):
    # One stage-2 epoch with every LR 0: only noise (and the fc reset) can change weights.
    model = fresh_small(class_original)
    unlearn_splits(model, digits_class, "rni", seed=0, epochs=1, fine_epochs=0, lr=0.0, reset_fc=reset_fc,
                   retain_batch_size=512)
    changed = [k for k, p in model.named_parameters() if not torch.equal(p, class_original[k])]
    if reset_fc:  # the port: no noise in the first reset_epochs epochs after an fc reset
        assert sorted(changed) == ["fc.bias", "fc.weight"]
    else:  # no reset, so no quiet epoch: noise from epoch 0
        assert len(changed) > 0


# ---------------------------------------------------------------- msg: per-layer selection by default

def test_msg_selects_per_layer_by_default():
    assert make_recipe("msg").global_selection is False


# ---------------------------------------------------------------- provenance of every method

PROVENANCE_FIELDS = {"name", "origin", "summary", "source", "recipe", "presets", "uncertain", "deviations"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_states_its_provenance(name):
    d = describe(name)
    assert set(d) == PROVENANCE_FIELDS
    assert d["origin"] and d["summary"] and isinstance(d["uncertain"], str)
    # The source is written next to the method itself, not inherited from another method's recipe.
    assert vars(METHODS[name].recipe).get("source"), f"{name} names no source of its own"
    assert "deviations" in vars(METHODS[name].recipe), f"{name} does not say whether it deviates"
    assert all(isinstance(line, str) and line for line in d["deviations"])
    assert d["recipe"] == dataclasses.asdict(METHODS[name].default_recipe())  # every default
    assert set(d["presets"]) == set(PRESETS)
    for preset, changes in d["presets"].items():
        assert changes == preset_changes(name, preset)


def test_methods_json_prints_every_methods_provenance():
    result = CliRunner().invoke(main, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert [d["name"] for d in printed] == sorted(METHODS) and len(printed) == 18
    assert printed == [json.loads(json.dumps(describe(name))) for name in sorted(METHODS)]


def test_methods_details_shows_the_same_provenance():
    result = CliRunner().invoke(main, ["methods", "--details"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for name in sorted(METHODS):
        d = describe(name)
        for phrase in [d["source"], d["uncertain"], *d["deviations"]]:
            assert " ".join(phrase.split())[:60] in text, (name, phrase[:60])


def test_readme_method_table_matches_the_registry():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("| name | origin | what it does | deviations from the source |")
    lines = text[start:text.index("\n\n", start)].splitlines()[2:]
    rows = {}
    for line in lines:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells[1:]
    assert sorted(rows) == sorted(METHODS)
    for name, (origin, summary, deviations) in rows.items():
        d = describe(name)
        assert (origin, summary) == (d["origin"], d["summary"]), name
        assert deviations == ("; ".join(d["deviations"]) or "none"), name
