"""The 2nd-6th place methods (msg, cfw, prmq, ct, kde) on a small digits problem with the small ResNet."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import unlearnx
from unlearnx import ops
from unlearnx.api import splits_context, unlearn_splits
from unlearnx.data import Split, Splits, TensorBatches, load
from unlearnx.methods import make_recipe
from unlearnx.methods.cfw import vision_confuser
from unlearnx.methods.ct import transpose_kernels
from unlearnx.methods.kde import kl_t
from unlearnx.methods.msg import reinit_convs, warmup_linear_decay
from unlearnx.methods.prmq import fp16_round_trip, prunable, prune_and_reinit
from unlearnx.models import build_model
from unlearnx.training import TrainRecipe, accuracy, train_model

METHODS = ["msg", "cfw", "prmq", "ct", "kde"]
# Shorter runs of every recipe for the plumbing tests (the published lengths run in test_default_recipe).
FAST = {
    "msg": dict(epochs=2),
    "cfw": dict(epochs=2, jitter_after_epoch=0),
    "prmq": dict(epochs=1.0),
    "ct": dict(epochs=1),
    "kde": dict(warmup_epochs=1, epochs=1),
}


def _take(split: Split, n: int) -> Split:
    return split.subset(torch.arange(min(n, len(split))))


@pytest.fixture(scope="module")
def problem():
    """A digits subset and a small ResNet trained on retain + forget (once per module)."""
    full = load("digits")
    splits = Splits(retain=_take(full.retain, 320), forget=_take(full.forget, 64),
                    validation=_take(full.validation, 64), test=_take(full.test, 128), num_classes=10,
                    source="digits-subset", normalization=full.normalization)
    torch.manual_seed(0)
    model = build_model("small", 10)
    train = Split(torch.cat([splits.retain.images, splits.forget.images]),
                  torch.cat([splits.retain.labels, splits.forget.labels]))
    batches = TensorBatches(train, 32, generator=torch.Generator().manual_seed(0), normalization=splits.normalization)
    train_model(model, batches, TrainRecipe.preset("digits", epochs=6, batch_size=32))
    return splits, model.eval()


def _fresh(model):
    return copy.deepcopy(model)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_loads_strictly(model):
    fresh = build_model("small", 10)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def _forget_accuracy(model, splits):
    return accuracy(model, TensorBatches(splits.forget, 256, shuffle=False, normalization=splits.normalization))


def _xy(split, splits):
    return splits.normalization(split.images), split.labels


class _DictDataset(Dataset):
    """The competition's batches: dicts with image, age_group and extra keys."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "age_group": self.y[i], "age": 20 + int(self.y[i]), "person_id": i}


# ---------------------------------------------------------------------------------------------- plumbing


@pytest.mark.parametrize("method", METHODS)
def test_runs_through_splits_and_loads_strictly(problem, method):
    splits, original = problem
    model = _fresh(original)
    unlearn_splits(model, splits, method, seed=0, **FAST[method])
    _assert_loads_strictly(model)
    assert not model.training
    assert any(not torch.equal(a, b) for a, b in zip(_state(model).values(), _state(original).values()))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_runs_through_dataloaders(problem, method, kind):
    splits, original = problem
    loaders = []
    for split in (splits.retain, splits.forget, splits.validation):
        x, y = _xy(split, splits)
        dataset = TensorDataset(x, y) if kind == "tuple" else _DictDataset(x, y)
        loaders.append(DataLoader(dataset, batch_size=64, shuffle=True))
    model = _fresh(original)
    returned = unlearnx.unlearn(model, *loaders, method=method, seed=1, **FAST[method])
    assert returned is model  # changed in place, as the harness needs
    _assert_loads_strictly(model)


@pytest.mark.parametrize("method", METHODS)
def test_seed_reproduces_bit_identically_and_seeds_differ(problem, method):
    splits, original = problem
    runs = []
    for seed in (5, 5, 6):
        model = _fresh(original)
        unlearn_splits(model, splits, method, seed=seed, **FAST[method])
        runs.append(_state(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.parametrize("method", METHODS)
def test_unknown_setting_names_the_valid_ones(method):
    with pytest.raises(ValueError, match=r"has no setting 'nope'.*valid settings: .*epochs"):
        make_recipe(method, {"nope": 1})
    with pytest.raises(ValueError, match=r"epochs must be (an integer|a number), got many"):
        make_recipe(method, {"epochs": "many"})


@pytest.mark.parametrize("method, bad, message", [
    ("msg", dict(reinit_fraction=1.5), "reinit_fraction must be in"),
    ("msg", dict(warmup_epochs=7), "warmup_epochs must be in 1..2"),
    ("cfw", dict(class_weights="lots"), "class_weights must be"),
    ("cfw", dict(weighting="row"), "weighting must be"),
    ("cfw", dict(weighted_class=12), "weighted_class must be in 0..9"),
    ("prmq", dict(prune_amount=2.0), "prune_amount must be in"),
    ("prmq", dict(epochs=-1.0), "epochs must be >= 0"),
    ("ct", dict(pseudo_label_fraction=-0.1), "pseudo_label_fraction must be in"),
    ("kde", dict(temperature=0.0), "temperature must be > 0"),
    ("kde", dict(warmup_classes="0,12"), "warmup_classes must be class indices"),
])
def test_bad_values_raise_clear_errors(problem, method, bad, message):
    splits, original = problem
    with pytest.raises(ValueError, match=message):
        unlearn_splits(_fresh(original), splits, method, seed=0, **{**FAST[method], **bad})


@pytest.mark.parametrize("method", METHODS)
def test_default_recipe_does_not_raise_forget_accuracy(problem, method):
    splits, original = problem
    model = _fresh(original)
    unlearn_splits(model, splits, method, seed=2)
    assert _forget_accuracy(model, splits) <= _forget_accuracy(original, splits)


# ------------------------------------------------------------------------------------------------ msg


def _with_random_grads(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
    return model


@pytest.mark.parametrize("global_selection", [False, True])
def test_msg_reinit_changes_exactly_the_smallest_gradients(problem, global_selection):
    _, original = problem
    model = _with_random_grads(_fresh(original))
    before = _state(model)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    masks = reinit_convs(model, 0.3, ops.select(True).masked_reinit_, torch.Generator().manual_seed(0),
                         global_selection=global_selection)
    assert set(masks) == set(convs) and len(convs) == 6
    after = _state(model)
    total = 0
    all_scores, all_masks = [], []
    for name, conv in convs.items():
        mask, key = masks[name], f"{name}.weight"
        assert torch.equal(after[key][~mask], before[key][~mask])  # kept entries bit-identical
        assert not torch.equal(after[key][mask], before[key][mask]) or mask.sum() == 0
        if not global_selection:
            assert int(mask.sum()) == round(0.3 * mask.numel())
            score = conv.weight.grad.abs()
            assert score[mask].max() <= score[~mask].min()  # the smallest |G| were chosen
        total += int(mask.sum())
        all_scores.append(conv.weight.grad.abs().flatten())
        all_masks.append(mask.flatten())
    if global_selection:
        scores, chosen = torch.cat(all_scores), torch.cat(all_masks)
        assert total == round(0.3 * scores.numel())
        assert scores[chosen].max() <= scores[~chosen].min()
    # Nothing else moved (BN, fc).
    assert all(torch.equal(after[k], before[k]) for k in before if not any(k == f"{n}.weight" for n in convs))


def test_msg_reinit_fused_and_pure_agree_on_float64(problem):
    _, original = problem
    results = []
    for fused in (True, False):
        model = _with_random_grads(_fresh(original).double())
        masks = reinit_convs(model, 0.3, ops.select(fused).masked_reinit_, torch.Generator().manual_seed(3))
        results.append((masks, _state(model)))
    (masks_a, state_a), (masks_b, state_b) = results
    assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert state_a["conv1.weight"].dtype == torch.float64


def test_msg_fused_and_pure_runs_agree(problem):
    # Batches are float32 (Normalization and LoaderBatches cast), so the whole run is compared in float32;
    # MSG's only fused op is masked_reinit_, which is exact, so the runs are bit-identical.
    splits, original = problem
    states = []
    for fused in (True, False):
        model = _fresh(original)
        unlearn_splits(model, splits, "msg", seed=4, fused=fused, **FAST["msg"])
        states.append(_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_msg_kept_weights_follow_the_gradient_scale(problem):
    # With nothing re-initialised, a zero gradient scale and no momentum/decay, conv weights cannot move.
    splits, original = problem
    model = _fresh(original)
    unlearn_splits(model, splits, "msg", seed=0, reinit_fraction=0.0, kept_grad_scale=0.0, momentum=0.0,
                   weight_decay=0.0, epochs=1)
    before, after = _state(original), _state(model)
    convs = [k for k in before if k.endswith("weight") and before[k].dim() == 4]
    assert convs and all(torch.equal(before[k], after[k]) for k in convs)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_msg_schedule_is_warmup_then_linear_decay():
    assert warmup_linear_decay(5, None) == pytest.approx([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    assert warmup_linear_decay(3, 1) == pytest.approx([1, 2 / 3, 1 / 3])


# ------------------------------------------------------------------------------------------------ cfw


def test_cfw_noise_hits_conv1_with_the_asked_scale(problem):
    splits, original = problem
    model = _fresh(original)
    ctx = splits_context(model, splits, generator=torch.Generator().manual_seed(0))
    before = _state(model)
    vision_confuser(model, ctx, 0.6)
    after = _state(model)
    diff = after["conv1.weight"] - before["conv1.weight"]
    assert 0.5 < float(diff.std()) < 0.7 and abs(float(diff.mean())) < 0.1
    assert all(torch.equal(after[k], before[k]) for k in before if k != "conv1.weight")
    vision_confuser(model, ctx, 0.01, all_convs=True)
    assert not torch.equal(_state(model)["layer2.0.downsample.0.weight"], before["layer2.0.downsample.0.weight"])


def test_cfw_zero_noise_and_weights_run_as_plain_fine_tune(problem):
    splits, original = problem
    a, b = _fresh(original), _fresh(original)
    unlearn_splits(a, splits, "cfw", seed=0, noise_std=0.0, jitter_std=0.0, class_weights="none", epochs=1)
    unlearn_splits(b, splits, "cfw", seed=0, noise_std=0.0, jitter_std=0.0, class_weights="writeup",
                   other_class_weight=1.0, epochs=1)  # all weights 1: the same loss
    assert all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values()))


# ----------------------------------------------------------------------------------------------- prmq


def test_prmq_prunes_and_redraws_99_percent(problem):
    _, original = problem
    model = _fresh(original)
    keys = set(model.state_dict())
    before = {(id(m), n): getattr(m, n).detach().clone() for m, n in prunable(model)}
    params_before = [id(p) for p in model.parameters()]
    prune_and_reinit(model, 0.99, torch.Generator().manual_seed(0))
    changed = total = 0
    for m, n in prunable(model):
        now = getattr(m, n)
        changed += int((now != before[(id(m), n)]).sum())
        total += now.numel()
        if n == "bias":
            assert torch.all(now[now != before[(id(m), n)]] == 0)  # pruned biases stay 0
    assert changed >= 0.99 * total - 1
    # No pruning hooks, *_orig parameters or masks left; the same Parameter objects.
    assert set(model.state_dict()) == keys and [id(p) for p in model.parameters()] == params_before
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_prmq_fp16_round_trip_keeps_dtype_and_rounds(problem):
    _, original = problem
    model = _fresh(original)
    model.bn1.running_var[0] = 1e6  # outside fp16's range: kept, not turned into inf
    fp16_round_trip(model)
    w = model.conv1.weight
    assert w.dtype == torch.float32 and torch.equal(w, w.half().float())
    assert float(model.bn1.running_var[0]) == 1e6


# ------------------------------------------------------------------------------------------------- ct


def test_ct_transposes_every_kernel_in_place(problem):
    splits, original = problem
    model = _fresh(original)
    ids = [id(p) for p in model.parameters()]
    unlearn_splits(model, splits, "ct", seed=0, epochs=0, pseudo_label_fraction=0.0)  # part A every run
    for (name, m), (_, m0) in zip(model.named_modules(), original.named_modules()):
        if isinstance(m, torch.nn.Conv2d):
            assert torch.equal(m.weight, m0.weight.transpose(2, 3)), name
    assert [id(p) for p in model.parameters()] == ids
    _assert_loads_strictly(model)


def test_ct_rejects_non_square_kernels():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, kernel_size=(3, 1)))
    with pytest.raises(ValueError, match="3x1 kernel"):
        transpose_kernels(net)


def test_ct_pseudo_label_part_runs(problem):
    splits, original = problem
    model = _fresh(original)
    unlearn_splits(model, splits, "ct", seed=0, pseudo_label_fraction=1.0, epochs=1, probe_epochs=1,
                   scratch_epochs=1)
    _assert_loads_strictly(model)
    # Part B never transposes: conv1 stays close to the original rather than its transpose.
    w, w0 = model.conv1.weight, original.conv1.weight
    assert (w - w0).norm() < (w - w0.transpose(2, 3)).norm()


# ------------------------------------------------------------------------------------------------ kde


def test_kde_resets_conv1_and_fc_only(problem):
    splits, original = problem
    model = _fresh(original)
    unlearn_splits(model, splits, "kde", seed=0, warmup_epochs=0, epochs=0)
    before, after = _state(original), _state(model)
    reset = {"conv1.weight", "fc.weight", "fc.bias"}
    assert all(not torch.equal(before[k], after[k]) for k in reset)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in reset)


def test_kde_without_validation_warms_up_on_retain(problem):
    splits, original = problem
    x, y = _xy(splits.retain, splits)
    xf, yf = _xy(splits.forget, splits)
    model = _fresh(original)
    unlearnx.unlearn(model, DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
                     DataLoader(TensorDataset(xf, yf), batch_size=64), None, method="kde", seed=0, **FAST["kde"])
    _assert_loads_strictly(model)


def test_kde_distillation_loss_fused_and_pure_agree_on_float64():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(16, 10, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(16, 10, generator=g, dtype=torch.float64)
    grads = []
    for fused in (True, False):
        loss = kl_t(ops.select(fused), student, teacher, 5.0)
        (grad,) = torch.autograd.grad(loss, student)
        grads.append((loss.detach(), grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)
