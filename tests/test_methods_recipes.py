"""Recipe validation: every registered method's recipe checks its fields when it is built.

Three layers, so that dropping a rule fails a test:
- every rule rejects the values it declares bad (boundaries included), naming the method and the field;
- a hand-written table of clearly bad values, per field name and per method, must raise (and must
  cover exactly the fields that have a rule, so a new rule gets a row);
- values that are meant to be accepted (0 epochs where the method supports it, 0 = "as given") pass.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

from unlearnx.cli.main import main
from unlearnx.methods import METHODS, Recipe, make_recipe, register
from unlearnx.methods.base import at_least, each, greater_than, in_range, one_of
from unlearnx.methods.random_label import RandomLabelRecipe
from unlearnx.methods.salun import SalUnRecipe

ALL = sorted(METHODS)

# A bad value for each shared field name, at the rule's edge where it can be: every method that has the field
# must refuse it, unless METHOD_BAD gives that method another value.
COMMON_BAD = {"epochs": 0, "lr": 0.0, "momentum": 1.0, "weight_decay": -1e-4, "retain_weight_decay": -1e-4,
              "retain_batch_size": -1, "forget_batch_size": -1, "temperature": 0.0}

# Bad values for each method's own checked fields, and for shared fields whose rule differs for that method.
SCL_BAD = {"epochs": -1, "kl_lr": 0.0, "reverse_weight": -0.1, "forget_lr": 0.0, "forget_eta_min": -1e-6, "retain_lr": 0.0,
           "retain_batch_size": 0}
METHOD_BAD = {
    "cfw": {"noise_std": -0.1, "jitter_std": -0.1, "other_class_weight": -1.0, "class_weights": "lots",
            "weighting": "row", "jitter_after_epoch": -1, "epochs": -1},
    "ct": {"epochs": -1, "pseudo_label_fraction": 1.1, "probe_epochs": -1, "scratch_epochs": -1, "scratch_lr": 0.0,
           "entropy_threshold": -0.1},
    "finetune": {"schedule": "linear"},
    "grad-ascent": {"variant": "bounded", "rounds": 0, "forget_lr": -0.1, "retain_momentum": 1.0,
                    "max_grad_norm": -1.0, "forget_steps": -1, "retain_steps": -1, "loss_cap": -0.5},
    "kde": {"warmup_epochs": -1, "warmup_lr": 0.0, "epochs": -1},
    "l1-sparse": {"alpha": -1e-4, "no_l1_epochs": -1},
    "msg": {"reinit_fraction": 1.5, "subset_size": -1, "kept_grad_scale": -0.1, "epochs": -1},
    "neggrad-plus": {"alpha": 1.2, "l2_weight": -1e-4},
    "prmq": {"prune_amount": 2.0, "entropy_weight": -1.0, "epochs": -0.5},
    "reinit-cycles": {"schedule": "alg3", "layers_per_cycle": -1, "input_noise_std": -0.01,
                      "alg1_cycle_epochs": (1, -1), "alg1_lr": -1e-3, "alg1_t_max": 0, "alg2_cycle_epochs": (),
                      "alg2_epoch_lrs": (1e-3, -1e-3)},
    "retrain": {"optimizer": "rmsprop", "retain_batch_size": 0, "min_save_epoch": -1, "augment": "rotate"},
    "rni": {"lr": -1e-4, "fine_epochs": -1, "reset_epochs": -1, "layer_select": 0, "noise_ratio": 1.5, "noise_std": -0.1,
            "skip_rule": "sometimes", "fine_lrs": (1e-3, -1e-3), "fine_momentum": 1.0, "fine_weight_decay": -1.0},
    "salun": {"threshold": 0.0},
    "scl": SCL_BAD,
    "scl-bikl": SCL_BAD,
    "scrub": {"msteps": -1, "gamma": -0.1, "alpha": -0.1, "lr_decay_rate": -0.1, "lr_decay_epochs": (3, -1)},
}

# Edge values that are meaningful and must stay accepted (several are other tests' controls).
ACCEPTED = [
    ("msg", {"epochs": 0}),                                  # re-initialise only
    ("ct", {"epochs": 0}),                                   # the kernel transpose alone
    ("kde", {"warmup_epochs": 0, "epochs": 0}),              # the conv1/fc reset alone
    ("scl", {"epochs": 0}),                                  # the stage-1 KL pass alone
    ("cfw", {"epochs": 0}),                                  # the noise alone
    ("msg", {"epochs": 0, "warmup_epochs": 3}),              # no retraining, so no warm-up to check
    ("prmq", {"epochs": 0.0}),                               # one step (int(len·0) + 1)
    ("rni", {"lr": 0.0, "fine_lrs": (0.0,) * 4}),            # a test's control: only the noise changes weights
    ("reinit-cycles", {"alg1_lr": 0.0}),
    ("reinit-cycles", {"alg2_epoch_lrs": ()}),               # alg2's list is only read with schedule=alg2
    ("grad-ascent", {"forget_lr": 0.0, "loss_cap": -1.0, "max_grad_norm": 0.0}),
    ("grad-ascent", {"variant": "safeguarded", "rounds": None}),   # unset: the variant's own count
    ("scl", {"retain_lr": None}),                            # unset: 0.001 * retain_batch_size / 64
    ("cfw", {"jitter_after_epoch": None}),                   # unset: epochs - 2
    ("grad-ascent", {"loss_cap": 0.0}),
    ("random-label", {"retain_batch_size": 0, "forget_batch_size": 0, "momentum": 0.0}),
    ("salun", {"threshold": 1.0}),
    ("neggrad-plus", {"alpha": 0.0}),
    ("neggrad-plus", {"alpha": 1.0}),
    ("l1-sparse", {"no_l1_epochs": 10}),
    ("rni", {"epochs": 4, "fine_epochs": 4}),
    ("ct", {"pseudo_label_fraction": 1.0, "probe_epochs": 0}),
    ("scrub", {"msteps": 0, "lr_decay_epochs": ()}),
]


def _default(method: str) -> Recipe:
    return METHODS[method].default_recipe()


def _must_raise(method: str, field: str, value):
    pattern = rf"^{re.escape(method)}: {field} must be .+, got .+$"
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(_default(method), **{field: value})


@pytest.mark.parametrize("method", ALL)
def test_default_recipe_builds_and_knows_its_method(method):
    recipe = _default(method)
    assert isinstance(recipe, METHODS[method].recipe)
    assert type(recipe).method_name == method
    assert make_recipe(method) == recipe


@pytest.mark.parametrize("method", ALL)
def test_every_rule_rejects_its_bad_values(method):
    rules = _default(method).rules()
    assert rules, f"{method} checks none of its fields"
    for field, rule in rules.items():
        assert rule.bad_values, f"{method}.{field}: the rule declares no bad value"
        for value in rule.bad_values:
            _must_raise(method, field, value)


@pytest.mark.parametrize("method", ALL)
def test_clearly_bad_values_are_refused(method):
    fields = {f.name for f in dataclasses.fields(METHODS[method].recipe)}
    table = {k: v for k, v in COMMON_BAD.items() if k in fields} | METHOD_BAD.get(method, {})
    for field, value in table.items():
        _must_raise(method, field, value)
    # The table names exactly the checked fields: a new rule needs a row here, a dropped rule fails above.
    assert set(table) == set(_default(method).rules())


@pytest.mark.parametrize("method, values", ACCEPTED)
def test_meaningful_edge_values_are_accepted(method, values):
    recipe = dataclasses.replace(_default(method), **values)
    assert all(getattr(recipe, k) == v for k, v in values.items())


def test_every_method_is_in_the_tables_or_needs_none():
    for method in ALL:
        own = set(_default(method).rules()) - set(COMMON_BAD)
        assert not own or method in METHOD_BAD, f"{method} has rules {sorted(own)} but no METHOD_BAD row"


@pytest.mark.parametrize("method, values, message", [
    ("l1-sparse", {"epochs": 4, "no_l1_epochs": 5}, "l1-sparse: no_l1_epochs must be <= epochs (4), got 5"),
    ("msg", {"epochs": 2, "warmup_epochs": 3}, "msg: warmup_epochs must be in 1..2, got 3"),
    ("msg", {"warmup_epochs": 0}, "msg: warmup_epochs must be in 1..5, got 0"),
    ("rni", {"epochs": 3, "fine_epochs": 4}, "rni: fine_epochs must be <= epochs (3), got 4"),
    ("rni", {"fine_lrs": (1e-3, 1e-3), "fine_epochs": 3}, "rni: fine_lrs has 2 values for fine_epochs=3"),
    ("reinit-cycles", {"schedule": "alg2", "alg2_epoch_lrs": (1e-3,) * 4},
     "reinit-cycles: alg2_epoch_lrs has 4 values for 5 epochs"),
])
def test_cross_field_rules(method, values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(_default(method), **values)


def test_overrides_from_strings_are_checked_with_the_same_message():
    with pytest.raises(ValueError, match=re.escape("scl: forget_lr must be > 0, got -1.0")):
        make_recipe("scl", {"forget_lr": "-1"})
    with pytest.raises(ValueError, match=re.escape("finetune: schedule must be 'cosine' or 'constant', got 'x'")):
        make_recipe("finetune", {"schedule": "x"})
    with pytest.raises(ValueError, match=re.escape("neggrad: forget_batch_size must be >= 0 (0 keeps the given "
                                                   "batches), got -2")):
        make_recipe("neggrad", {"forget_batch_size": "-2"})


def test_a_value_of_the_wrong_kind_is_a_value_error():
    # e.g. a list from a JSON recipe file: no TypeError from deep inside a comparison
    with pytest.raises(ValueError, match=re.escape("random-label: lr must be a number, got [1]")):
        make_recipe("random-label", {"lr": [1]})


def test_a_subclass_is_named_for_itself():
    with pytest.raises(ValueError, match="^salun: epochs"):
        SalUnRecipe(epochs=0)
    with pytest.raises(ValueError, match="^random-label: epochs"):
        RandomLabelRecipe(epochs=0)

    @dataclasses.dataclass
    class Unregistered(SalUnRecipe):
        pass

    with pytest.raises(ValueError, match="^Unregistered: threshold must be in \\(0, 1\\]"):
        Unregistered(threshold=0.0)  # inherits salun's rules, not its name


def test_limits_naming_no_field_are_a_bug_caught_at_build():
    @dataclasses.dataclass
    class Typo(Recipe):
        epochs: int = 1
        limits = {"epoch": at_least(1)}

    with pytest.raises(TypeError, match="Typo.limits names epoch"):
        Typo()


def test_one_recipe_class_cannot_serve_two_names():
    with pytest.raises(RuntimeError, match="already the recipe of 'salun'"):
        register("salun-again", origin="test", summary="test", recipe=SalUnRecipe)(lambda m, c, r: None)
    assert "salun-again" not in METHODS


def test_rule_phrases():
    assert one_of("a", "b", "c")("d") == "'a', 'b' or 'c'" and one_of("a", "b")("a") is None
    assert in_range(0, 1, closed=(True, False))(1) == "in [0, 1)" and in_range(0, 1)(1) is None
    assert in_range(0, 1, closed=(False, True))(0) == "in (0, 1]"
    assert greater_than(0)(float("nan")) == "> 0" and at_least(0)(float("nan")) == ">= 0"
    assert at_least(0, "0 = off")(-1) == ">= 0 (0 = off)"
    assert each(at_least(0), non_empty=True)(()) == "a non-empty list of values >= 0"
    assert each(at_least(0))(()) is None


def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["unlearn", "--method", "scl", "--set", "forget_lr=-1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "Error: scl: forget_lr must be > 0, got -1.0"
    assert not out.exists()


# --- presets -------------------------------------------------------------------------------------------------

def test_presets_name_their_source_kind():
    from unlearnx.methods import preset_for

    assert preset_for("digits") == "digits"
    for kind in ("competition", "imagefolder", "cifar-pickle", None):
        assert preset_for(kind) == "published"


@pytest.mark.parametrize("name", ALL)
def test_digits_preset_changes_exactly_its_declared_fields(name):
    from unlearnx.methods import preset_changes

    published = make_recipe(name).as_dict()
    digits = make_recipe(name, preset="digits").as_dict()
    changes = preset_changes(name, "digits")
    assert preset_changes(name, "published") == {}
    changed = {k for k in published if published[k] != digits[k]}
    assert changed == set(changes), f"{name}: the digits preset must change only (and all of) {sorted(changes)}"
    # Every change respects the recipe's rules (built through the same validation) and is not a no-op.
    for key, value in changes.items():
        assert published[key] != digits[key], f"{name}: digits preset sets {key} to its published value"


def test_overrides_apply_on_top_of_the_preset():
    from unlearnx.methods import preset_changes

    name = next(n for n in ALL if preset_changes(n, "digits"))
    key = next(iter(preset_changes(name, "digits")))
    field_type = type(getattr(make_recipe(name), key))
    assert make_recipe(name, {}, preset="digits").as_dict()[key] == preset_changes(name, "digits")[key]
    published = make_recipe(name).as_dict()[key]
    assert make_recipe(name, {key: published}, preset="digits").as_dict()[key] == field_type(published)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown recipe preset 'cifar'; available: published, digits"):
        make_recipe("scl", preset="cifar")


def test_retrain_on_digits_trains_like_the_cached_reference():
    # The digits preset of `retrain` is the reference model's own recipe, so the two are comparable.
    from unlearnx.training import TrainRecipe

    assert make_recipe("retrain", preset="digits").train_recipe() == TrainRecipe.preset("digits")
