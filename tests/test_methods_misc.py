"""rni, reinit-cycles, grad-ascent, retrain, finetune on the embedded digits with the small ResNet."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import unlearnx
from unlearnx import data
from unlearnx.api import unlearn_splits
from unlearnx.data.batches import TensorBatches
from unlearnx.data.splits import Split
from unlearnx.methods import UnlearnContext, make_recipe
from unlearnx.methods import grad_ascent, reinit_cycles, retrain, rni
from unlearnx.methods.finetune import FineTuneRecipe
from unlearnx.models import build_model
from unlearnx.training import TrainRecipe, accuracy, train_model

# Short versions of each recipe so the whole file stays fast; the defaults run in the measurement script.
QUICK = {
    "rni": dict(epochs=3, fine_epochs=1, retain_batch_size=128),
    "reinit-cycles": dict(alg1_cycle_epochs="1,1", retain_batch_size=128),
    "grad-ascent": dict(rounds=2, retain_steps=6),
    "retrain": dict(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1, min_save_epoch=0, retain_batch_size=128),
    "finetune": dict(),
}
METHODS = list(QUICK)
RETAIN_ONLY = ["rni", "reinit-cycles", "retrain", "finetune"]


@pytest.fixture(scope="module")
def splits():
    return data.load("digits")


def _train_original(splits, seed: int, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("small", splits.num_classes)
    train = Split(torch.cat([splits.retain.images, splits.forget.images]),
                  torch.cat([splits.retain.labels, splits.forget.labels]))
    batches = TensorBatches(train, 64, generator=torch.Generator().manual_seed(seed),
                            normalization=splits.normalization)
    train_model(model, batches, TrainRecipe.preset("digits", epochs=epochs))
    return model.eval()


@pytest.fixture(scope="module")
def original(splits):
    return _train_original(splits, seed=0, epochs=8)  # long enough to memorise the forget set


def _acc(model, splits, name):
    split = getattr(splits, name)
    return accuracy(model, TensorBatches(split, 512, shuffle=False, normalization=splits.normalization))


def _run(original, splits, method, seed, **overrides):
    model = copy.deepcopy(original)
    out = unlearn_splits(model, splits, method, seed=seed, **{**QUICK[method], **overrides})
    assert out is model  # in place, as the harness needs
    return model


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _TupleSet(Dataset):
    def __init__(self, split, normalization, as_dict=False):
        self.x = normalization(split.images)
        self.y = split.labels
        self.as_dict = as_dict

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.as_dict:
            return {"image": self.x[i], "age_group": self.y[i], "person_id": 0}
        return self.x[i], self.y[i]


class _ForbiddenLoader(DataLoader):
    """A forget loader that fails the test if any method reads it."""

    def __iter__(self):
        raise AssertionError("the forget set was read")


def _loaders(splits, as_dict=False, forbid_forget=False):
    def make(split, cls=DataLoader):
        return cls(_TupleSet(split, splits.normalization, as_dict), batch_size=64, shuffle=True)

    forget = make(splits.forget, _ForbiddenLoader if forbid_forget else DataLoader)
    return make(splits.retain), forget, make(splits.validation)


# ---------------------------------------------------------------- every method

@pytest.mark.parametrize("method", METHODS)
def test_runs_in_place_loads_strictly_and_seeds_reproduce(original, splits, method):
    a = _run(original, splits, method, seed=7)
    build_model("small", splits.num_classes).load_state_dict(a.state_dict(), strict=True)
    assert not _same(a, original)
    assert all(torch.isfinite(p).all() for p in a.parameters())
    assert all(p.requires_grad for p in a.parameters())  # no tensor left frozen
    b = _run(original, splits, method, seed=7)
    c = _run(original, splits, method, seed=8)
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("method", METHODS)
def test_tuple_and_dict_loaders_give_the_same_run(original, splits, method):
    results = []
    for as_dict in (False, True):
        net = copy.deepcopy(original)
        out = unlearnx.unlearn(net, *_loaders(splits, as_dict), method=method, seed=3, **QUICK[method])
        assert out is net
        build_model("small", splits.num_classes).load_state_dict(net.state_dict(), strict=True)
        results.append(net)
    assert not _same(results[0], original)
    assert _same(results[0], results[1])  # same data, same seed: the batch format must not matter


@pytest.mark.parametrize("method", RETAIN_ONLY)
def test_retain_only_methods_never_read_the_forget_set(original, splits, method):
    net = copy.deepcopy(original)
    unlearnx.unlearn(net, *_loaders(splits, forbid_forget=True), method=method, seed=0, **QUICK[method])
    assert not _same(net, original)


# ---------------------------------------------------------------- rni

def test_rni_resets_fc_first(original, splits):
    # With every learning rate 0 and no noise the only change is the FC reset, drawn from the global RNG.
    model = _run(original, splits, "rni", seed=5, lr=0.0, fine_lrs="0,0,0", noise_std=0.0)
    expected = copy.deepcopy(original)
    torch.manual_seed(5)
    expected.fc.reset_parameters()
    assert torch.equal(model.fc.weight, expected.fc.weight) and torch.equal(model.fc.bias, expected.fc.bias)
    assert not torch.equal(model.fc.weight, original.fc.weight)
    assert torch.equal(model.conv1.weight, original.conv1.weight)


def test_rni_stage2_epoch0_trains_only_the_drawn_tensors(original, splits):
    stage2_epoch0 = dict(epochs=1, fine_epochs=0, layer_select=5)  # 5 of the small model's 10 non-bn tensors
    recipe = make_recipe("rni", stage2_epoch0)
    # The method's first draw from the seeded generator is this selection.
    chosen = set(rni.select_trainable(original, recipe, torch.Generator().manual_seed(11)))
    assert all(n in chosen for n, _ in original.named_parameters() if "bn" in n)
    model = _run(original, splits, "rni", seed=11, **stage2_epoch0)
    before, after = dict(original.named_parameters()), dict(model.named_parameters())
    frozen = [n for n in before if n not in chosen and not n.startswith("fc.")]  # fc was reset
    assert frozen, "the draw should leave some tensor frozen"
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"{name} was frozen but changed"
    for name in chosen - {"fc.weight", "fc.bias"}:
        assert not torch.equal(before[name], after[name]), f"{name} was trainable but did not change"


def test_rni_noise_count_and_skip_rule(original):
    recipe = rni.RNIRecipe()
    model = copy.deepcopy(original)
    ctx = UnlearnContext(retain=None, forget=None, generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in model.named_parameters()]
    noised = rni.add_noise(model, names, skip=set(), r=recipe, ctx=ctx)
    assert len(noised) == int(recipe.noise_ratio * recipe.layer_select) and not any("bn" in n for n in noised)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, dict(original.named_parameters())[n])]
    assert sorted(changed) == sorted(noised)
    again = rni.add_noise(model, names, skip=set(names), r=recipe, ctx=ctx)
    assert again == []


def test_rni_bad_recipe(original, splits):
    with pytest.raises(ValueError, match="fine_lrs has 2 values"):
        _run(original, splits, "rni", 0, fine_lrs="1e-3,1e-3", fine_epochs=3, epochs=4)
    with pytest.raises(ValueError, match="skip_rule"):
        _run(original, splits, "rni", 0, skip_rule="sometimes")


# ---------------------------------------------------------------- reinit-cycles

def test_reinit_pool_excludes_fc_and_shortcuts():
    for arch, convs in (("small", 5), ("resnet18", 17)):
        pool = [n for n, _ in reinit_cycles.layer_pool(build_model(arch, 10))]
        assert len(pool) == convs and not any("downsample" in n or n.startswith("fc") for n in pool)
    with_bn = reinit_cycles.layer_pool(build_model("small", 10), include_bn=True)
    assert any(isinstance(m, nn.BatchNorm2d) for _, m in with_bn)


def test_reinit_changes_exactly_the_drawn_layers(original):
    model = copy.deepcopy(original)
    reset = reinit_cycles.reinit_random_layers(model, 6, torch.Generator().manual_seed(0))
    assert 1 <= len(reset) <= 6
    before = dict(original.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            same = torch.equal(module.weight, before[name].weight)
            assert same == (name not in reset), name


def test_reinit_cycles_never_touch_fc_or_downsample(original, splits):
    # Learning rate 0: only the re-initialisations change weights.
    model = _run(original, splits, "reinit-cycles", seed=2, alg1_lr=0.0, alg1_cycle_epochs="1,1,1")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, dict(original.named_parameters())[n])}
    assert changed and all(n.endswith("conv1.weight") or n.endswith("conv2.weight") for n in changed)
    assert not any(n.startswith("fc.") or "downsample" in n for n in changed)


def test_reinit_cycles_schedules():
    assert reinit_cycles.cycle_lrs(reinit_cycles.ReinitCyclesRecipe()) == [[1e-3], [1e-3, 5e-4], [1e-3, 5e-4]]
    alg2 = reinit_cycles.cycle_lrs(reinit_cycles.ReinitCyclesRecipe(schedule="alg2"))
    assert alg2 == [[5e-4, 1e-3], [1e-3], [1e-3], [1e-3]]


def test_reinit_cycles_bad_recipe(original, splits):
    with pytest.raises(ValueError, match="schedule must be 'alg1' or 'alg2'"):
        _run(original, splits, "reinit-cycles", 0, schedule="alg3")
    with pytest.raises(ValueError, match="alg2_epoch_lrs has 2 values"):
        _run(original, splits, "reinit-cycles", 0, schedule="alg2", alg2_epoch_lrs="1e-3,1e-3")


# ---------------------------------------------------------------- grad-ascent

def _forget_loss(model, splits):
    from unlearnx.metrics import loss_accuracy, predict
    from unlearnx.pipeline import evaluation_batches

    return loss_accuracy(*predict(model, evaluation_batches(splits, "cpu")["forget"]))["loss"]


def test_grad_ascent_forgets_more_than_its_retain_rounds_alone(original, splits):
    # The safeguarded variant. Same seed, same data order; the control run skips the ascent (forget_lr 0), so
    # any difference in forget accuracy/loss comes from the forget rounds, not from the retain rounds' training.
    model = copy.deepcopy(original)
    unlearn_splits(model, splits, "grad-ascent", seed=0, variant="safeguarded")
    control = copy.deepcopy(original)
    unlearn_splits(control, splits, "grad-ascent", seed=0, variant="safeguarded", forget_lr=0.0)
    # Forget accuracy can tie on a few dozen examples; the forget loss cannot hide the ascent.
    assert _forget_loss(model, splits) > _forget_loss(control, splits)
    assert _acc(model, splits, "forget") <= _acc(control, splits, "forget")
    assert _acc(model, splits, "forget") < _acc(original, splits, "forget")
    assert _acc(model, splits, "test") > _acc(original, splits, "test") - 0.05  # guards kept it a classifier


def test_grad_ascent_plain_variant_is_alternating_sgd(splits):
    # The plain rule with one LR: θ += lr·∇CE(forget batch), then θ −= lr·∇CE(retain batch), no momentum,
    # no weight decay, no cap, no clipping. Two batches of each, replayed by hand on a linear model (a second
    # step in each direction would show any momentum).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, splits.num_classes))
    by_hand, start = copy.deepcopy(model), copy.deepcopy(model)
    seen = []

    def record(module, inputs, output):
        if torch.is_grad_enabled():  # not run_method's up-front look at the model (a no-grad forward pass)
            seen.append(inputs[0].detach().clone())

    handle = model[1].register_forward_hook(record)
    unlearn_splits(model, splits, "grad-ascent", seed=0, lr=0.5, forget_steps=2, retain_steps=2)
    handle.remove()
    assert len(seen) == 4
    labels = {"forget": splits.forget.labels, "retain": splits.retain.labels}
    lr = 0.5
    for x, sign in zip(seen, (+1.0, +1.0, -1.0, -1.0)):
        # Find the batch's labels: the flattened inputs identify the examples.
        split = "forget" if sign > 0 else "retain"
        flat = splits.normalization(getattr(splits, split).images).flatten(1)
        index = torch.cdist(x, flat).argmin(1)
        y = labels[split][index]
        by_hand.zero_grad()
        torch.nn.functional.cross_entropy(by_hand[1](x), y).backward()
        with torch.no_grad():
            for p in by_hand.parameters():
                p.add_(sign * lr * p.grad)
    for a, b in zip(model.state_dict().values(), by_hand.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The control: the safeguarded variant's momentum and weight decay give other weights.
    other = start
    unlearn_splits(other, splits, "grad-ascent", seed=0, lr=0.5, forget_lr=0.5, forget_steps=2, retain_steps=2,
                   variant="safeguarded", rounds=1, loss_cap=0.0, max_grad_norm=0.0)
    assert not torch.allclose(other[1].weight, model[1].weight, atol=1e-4)


def test_grad_ascent_cap_stops_the_push():
    model = nn.Linear(4, 3)
    x = torch.randn(8, 4)
    with torch.no_grad():  # a confidently wrong model: the batch CE is far above the cap
        model.weight.zero_()
        model.bias.copy_(torch.tensor([50.0, -50.0, -50.0]))
    y = torch.ones(8, dtype=torch.long)
    grad_ascent.ascent_loss(cap=2.0)(model, x, y).backward()
    assert model.weight.grad.abs().max() == 0 and model.bias.grad.abs().max() == 0
    model.zero_grad()
    grad_ascent.ascent_loss(cap=None)(model, x, y).backward()
    assert model.bias.grad.abs().max() > 0


def test_grad_ascent_bad_recipe(original, splits):
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        _run(original, splits, "grad-ascent", 0, rounds=0)


# ---------------------------------------------------------------- retrain

def test_retrain_ignores_the_original_weights(original, splits):
    other = build_model("small", splits.num_classes)  # a different (untrained) original
    a = _run(original, splits, "retrain", seed=4)
    b = _run(other, splits, "retrain", seed=4)
    assert _same(a, b)


def test_retrain_recipe_mirrors_train_recipe():
    fields = set(retrain.RetrainRecipe().as_dict()) - {"retain_batch_size"} | {"batch_size"}
    assert fields == set(TrainRecipe().__dict__)
    assert retrain.RetrainRecipe(retain_batch_size=32).train_recipe() == TrainRecipe.preset(
        "competition", batch_size=32, min_save_epoch=20)


# ---------------------------------------------------------------- finetune and overrides

def test_finetune_presets():
    assert FineTuneRecipe.preset("salun").lr == 0.01 and FineTuneRecipe.preset("salun").schedule == "constant"
    with pytest.raises(ValueError, match="unknown finetune preset"):
        FineTuneRecipe.preset("nope")


def test_bad_overrides_name_the_valid_keys():
    with pytest.raises(ValueError, match="valid settings:.*fine_lrs"):
        make_recipe("rni", {"learning_rate": "0.1"})
    with pytest.raises(ValueError, match="finetune: lr must be a number, got fast"):
        make_recipe("finetune", {"lr": "fast"})
    with pytest.raises(ValueError, match="schedule must be 'cosine' or 'constant'"):
        unlearnx.unlearn(build_model("small", 10), [(torch.zeros(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))],
                         [(torch.zeros(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))], method="finetune",
                         schedule="linear")
