"""The classical baselines: neggrad, neggrad-plus, random-label, scrub, salun, l1-sparse.

Every method runs on a small digits problem (a SmallResNet trained for a few epochs in a module
fixture) through ``unlearn_splits`` and through ``unlearnx.unlearn`` with tuple and dict DataLoaders;
results load strictly and reproduce bit-identically with a seed. Recipe-specific tests check what
each method promises (the mask, the label draws, the teacher, the schedules).
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

warnings.filterwarnings("ignore", message="unlearnx native ops unavailable")

import unlearnx  # noqa: E402
from unlearnx import ops  # noqa: E402
from unlearnx.api import make_context, unlearn_splits  # noqa: E402
from unlearnx.data import Splits, TensorBatches, load  # noqa: E402
from unlearnx.data.splits import Split  # noqa: E402
from unlearnx.methods import make_recipe  # noqa: E402
from unlearnx.methods.l1_sparse import alpha_schedule  # noqa: E402
from unlearnx.methods.random_label import random_labels  # noqa: E402
from unlearnx.methods.salun import masked_gradient_hook, saliency_mask  # noqa: E402
from unlearnx.methods.scrub import distill_kl, frozen_teacher, lr_at, scrub_epochs  # noqa: E402
from unlearnx.models import SmallResNet  # noqa: E402
from unlearnx.training import TrainRecipe, sgd, train_model  # noqa: E402

BASELINES = ["neggrad", "neggrad-plus", "random-label", "scrub", "salun", "l1-sparse"]
# One short epoch keeps the API tests fast; the recipe-specific tests use the published values where it matters.
SHORT = {"epochs": 1}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Digits with the retain set cut to 384 examples (the forget set stays: 126, random 10%)."""
    full = load("digits")
    keep = torch.arange(384)
    return Splits(retain=full.retain.subset(keep), forget=full.forget, validation=full.validation, test=full.test,
                  num_classes=full.num_classes, source="digits-small", normalization=full.normalization)


@pytest.fixture(scope="module")
def original(splits) -> dict:
    """state_dict of a SmallResNet trained briefly on retain + forget (fits the forget set)."""
    torch.manual_seed(0)
    model = SmallResNet(num_classes=10)
    train = Split(torch.cat([splits.retain.images, splits.forget.images]),
                  torch.cat([splits.retain.labels, splits.forget.labels]))
    batches = TensorBatches(train, 32, generator=torch.Generator().manual_seed(0), normalization=splits.normalization)
    train_model(model, batches, TrainRecipe.preset("digits", epochs=6, batch_size=32))
    return copy.deepcopy(model.state_dict())


def fresh(state: dict) -> SmallResNet:
    model = SmallResNet(num_classes=10)
    model.load_state_dict(state, strict=True)
    return model


def inputs(splits, split: Split) -> torch.Tensor:
    return splits.normalization(split.images)


@torch.no_grad()
def forget_ce(model, splits) -> float:
    model.eval()
    return float(F.cross_entropy(model(inputs(splits, splits.forget)), splits.forget.labels))


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def tensor_batches(splits, split, batch_size=64, shuffle=False, seed=0):
    return TensorBatches(split, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                         normalization=splits.normalization)


class DictDataset(Dataset):
    """The competition's dict samples (``image``, ``age_group`` and an extra key)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "age_group": self.y[i], "person_id": i}


def loaders(splits, kind: str):
    def make(split):
        x, y = inputs(splits, split), split.labels
        dataset = TensorDataset(x, y) if kind == "tuple" else DictDataset(x, y)
        return DataLoader(dataset, batch_size=64, shuffle=True)

    return make(splits.retain), make(splits.forget), make(splits.validation)


# ---------------------------------------------------------------- every baseline


@pytest.mark.parametrize("method", BASELINES)
def test_splits_run_changes_model_loads_strictly_and_reproduces(method, splits, original):
    a, b, c = fresh(original), fresh(original), fresh(original)
    unlearn_splits(a, splits, method, seed=3, **SHORT)
    unlearn_splits(b, splits, method, seed=3, **SHORT)
    unlearn_splits(c, splits, method, seed=4, **SHORT)
    assert changed(original, a.state_dict())
    assert all(torch.isfinite(v).all() for v in a.state_dict().values() if v.is_floating_point())
    assert_same_state(a.state_dict(), b.state_dict())   # the seed fixes everything on CPU
    assert changed(a.state_dict(), c.state_dict())      # another seed: another data order (and labels)
    fresh(a.state_dict())                               # strict load into a new model of the same arch
    assert not a.training


@pytest.mark.parametrize("method", BASELINES)
def test_tuple_and_dict_loaders_give_the_same_result(method, splits, original):
    results = []
    for kind in ("tuple", "dict"):
        net = fresh(original)
        returned = unlearnx.unlearn(net, *loaders(splits, kind), method=method, seed=5, **SHORT)
        assert returned is net
        results.append(net.state_dict())
    assert changed(original, results[0])
    assert_same_state(results[0], results[1])
    fresh(results[1])


@pytest.mark.parametrize("method", BASELINES)
def test_bad_settings_name_the_setting(method):
    with pytest.raises(ValueError, match="valid settings: .*epochs"):
        make_recipe(method, {"epoch": "3"})
    with pytest.raises(ValueError, match="epochs"):
        make_recipe(method, {"epochs": "0"})
    with pytest.raises(ValueError, match="lr"):
        make_recipe(method, {"lr": "fast"})
    with pytest.raises(ValueError, match="lr must be > 0"):
        make_recipe(method, {"lr": "-0.1"})


def test_bad_overrides_through_the_python_api(splits, original):
    with pytest.raises(ValueError, match="salun: threshold must be in"):
        unlearnx.unlearn(fresh(original), *loaders(splits, "tuple"), method="salun", threshold=1.5)
    with pytest.raises(ValueError, match="neggrad-plus: alpha must be in"):
        make_recipe("neggrad-plus", {"alpha": "1.2"})
    with pytest.raises(ValueError, match="no_l1_epochs"):
        make_recipe("l1-sparse", {"no_l1_epochs": "11"})
    with pytest.raises(ValueError, match="scrub: temperature"):
        make_recipe("scrub", {"temperature": "0"})
    assert make_recipe("scrub", {"lr_decay_epochs": "1,2"}).lr_decay_epochs == (1, 2)


# ---------------------------------------------------------------- neggrad / neggrad-plus


def test_neggrad_increases_the_forget_loss(splits, original):
    # The published lr 1e-4 barely moves this tiny model: its BN running statistics, updated on the
    # forget batches, can even lower the eval-mode forget loss. A larger LR shows the ascent itself.
    assert (make_recipe("neggrad").lr, make_recipe("neggrad").epochs) == (1e-4, 5)
    model = fresh(original)
    before = forget_ce(model, splits)
    unlearn_splits(model, splits, "neggrad", seed=0, lr=0.01)
    assert forget_ce(model, splits) > before + 0.2


def test_neggrad_plus_l2_term_pulls_towards_the_original(splits, original):
    def distance(l2_weight):
        model = fresh(original)
        unlearn_splits(model, splits, "neggrad-plus", seed=1, epochs=2, l2_weight=l2_weight)
        return sum(float((model.state_dict()[k] - original[k]).pow(2).sum())
                   for k, _ in model.named_parameters())

    assert distance(100.0) < 0.5 * distance(0.0)  # lr·α·wd = 0.95: each step removes ~95% of the drift


def test_neggrad_plus_ascends_on_forget_compared_with_pure_retain_descent(splits, original):
    plus, retain_only = fresh(original), fresh(original)
    unlearn_splits(plus, splits, "neggrad-plus", seed=2, epochs=2, alpha=0.5, lr=0.001)
    unlearn_splits(retain_only, splits, "neggrad-plus", seed=2, epochs=2, alpha=1.0, lr=0.001)
    assert forget_ce(plus, splits) > forget_ce(retain_only, splits)


# ---------------------------------------------------------------- random-label


def test_random_labels_come_from_the_generator():
    y = torch.arange(10).repeat(100)
    a = random_labels(y, 10, torch.Generator().manual_seed(7))
    b = random_labels(y, 10, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert int(a.min()) == 0 and int(a.max()) == 9
    assert (a == y).any()                                   # plain uniform: the true label can come back
    wrong = random_labels(y, 10, torch.Generator().manual_seed(7), exclude_true=True)
    assert not (wrong == y).any()
    assert set(wrong[y == 3].tolist()) == set(range(10)) - {3}


def test_random_label_run_depends_only_on_the_context_generator(splits, original):
    """With unshuffled batches kept as given, the only randomness left is the label draw."""

    def run(generator_seed):
        torch.manual_seed(0)  # the global RNG stays the same in every run
        model = fresh(original)
        ctx = make_context(model, tensor_batches(splits, splits.retain), tensor_batches(splits, splits.forget),
                           generator=torch.Generator().manual_seed(generator_seed))
        from unlearnx.methods import run_method

        run_method(model, ctx, "random-label", make_recipe("random-label", {"epochs": 1, "retain_batch_size": 0,
                                                              "forget_batch_size": 0}))
        return model.state_dict()

    assert_same_state(run(1), run(1))
    assert changed(run(1), run(2))


# ---------------------------------------------------------------- salun


def test_saliency_mask_keeps_exactly_the_largest_half(splits, original):
    model = fresh(original)
    forget = tensor_batches(splits, splits.forget)
    mask = saliency_mask(model, forget, 0.5)
    assert mask.keys() == dict(model.named_parameters()).keys()
    flat = torch.cat([m.flatten() for m in mask.values()])
    assert set(flat.unique().tolist()) <= {0.0, 1.0}
    assert int(flat.sum()) == int(flat.numel() * 0.5)

    # The kept entries are those with the largest |summed forget gradient|.
    model.zero_grad()
    model.eval()
    for x, y in forget:
        (-F.cross_entropy(model(x), y)).backward()
    scores = torch.cat([p.grad.abs().flatten() for p in model.parameters()])
    assert float(scores[flat == 1].min()) >= float(scores[flat == 0].max())
    assert_same_state(model.state_dict(), original)           # computing the mask changes nothing
    assert int(torch.cat([m.flatten() for m in saliency_mask(model, forget, 0.1).values()]).sum()) == \
        int(flat.numel() * 0.1)


def _masked_training(original, splits, weight_decay, fold_decay):
    model = fresh(original)
    mask = saliency_mask(model, tensor_batches(splits, splits.forget), 0.5)
    optimizer = sgd(model.parameters(), 0.05, 0.9, 0.0 if fold_decay else weight_decay)
    hook = masked_gradient_hook(model, mask, weight_decay if fold_decay else 0.0)
    from unlearnx.training import cross_entropy, run_epoch

    run_epoch(model, tensor_batches(splits, splits.retain, batch_size=128), optimizer, cross_entropy(),
              before_step=hook)
    return model, mask


def test_salun_reset_keeps_masked_out_weights_exactly(splits, original):
    model, mask = _masked_training(original, splits, 5e-4, fold_decay=True)
    moved = 0
    for name, p in model.named_parameters():
        assert torch.equal(p.detach()[mask[name] == 0], original[name][mask[name] == 0]), name
        moved += int((p.detach()[mask[name] == 1] != original[name][mask[name] == 1]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in mask.values())   # the salient half did train


def test_salun_without_reset_masked_out_weights_move_only_by_weight_decay(splits, original):
    model, mask = _masked_training(original, splits, 0.1, fold_decay=False)
    ratios = []
    for name, p in model.named_parameters():
        out = mask[name] == 0
        before, after = original[name][out], p.detach()[out]
        nonzero = before != 0
        ratios.append(after[nonzero] / before[nonzero])
    ratios = torch.cat(ratios)
    # Decay and momentum act on every masked-out entry alike: one common shrink factor below 1.
    assert float(ratios.max()) < 1.0
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5, atol=0)


def test_salun_run_leaves_masked_out_weights_at_the_original(splits, original):
    model = fresh(original)
    unlearn_splits(model, splits, "salun", seed=0, epochs=1, retain_batch_size=128)
    state = model.state_dict()
    kept_same = sum(int((state[n] == original[n]).sum()) for n, _ in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    assert kept_same >= total // 2   # at least the masked-out half is untouched


# ---------------------------------------------------------------- scrub


def test_distill_kl_matches_the_definition_on_both_paths():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 10, generator=g, dtype=torch.float64)
    T = 4.0
    q = F.softmax(t / T, dim=1)
    expected = (q * (q.log() - F.log_softmax(s / T, dim=1))).sum() / 6 * T * T
    fused = distill_kl(ops.select(True), s, t, T)
    pure = distill_kl(ops.select(False), s, t, T)
    assert torch.allclose(fused, expected) and torch.allclose(pure, expected)
    (grad_fused,) = torch.autograd.grad(fused, s)
    (grad_pure,) = torch.autograd.grad(pure, s)
    # d/ds of KL_T·T² = T·(softmax(s/T) − q)/B
    assert torch.allclose(grad_fused, T * (F.softmax(s / T, dim=1) - q) / 6)
    assert torch.allclose(grad_fused, grad_pure)


def test_scrub_lr_schedule():
    r = make_recipe("scrub")
    assert [lr_at(e, r) for e in (1, 2, 3)] == [5e-4] * 3   # milestones 3, 5, 9 decay only after epoch 3
    assert lr_at(4, r) == pytest.approx(5e-5) and lr_at(10, r) == pytest.approx(5e-7)


def test_scrub_keeps_the_teacher_and_its_max_steps_move_away_on_forget(splits, original):
    def run(**overrides):
        student = fresh(original)
        teacher = frozen_teacher(student)
        ctx = make_context(student, tensor_batches(splits, splits.retain, shuffle=True),
                           tensor_batches(splits, splits.forget, shuffle=True),
                           generator=torch.Generator().manual_seed(0))
        scrub_epochs(student, teacher, ctx, make_recipe("scrub", overrides))
        assert_same_state(teacher.state_dict(), original)       # parameters and BN statistics
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        student.eval()
        x = inputs(splits, splits.forget)
        with torch.no_grad():
            return float(distill_kl(ops.select(False), student(x), teacher(x), 1.0))

    # The default max steps (epochs 1-2) at least double the forget KL of the min steps alone (~2x here).
    assert run() > 1.5 * run(msteps=0) > 0


# ---------------------------------------------------------------- l1-sparse


def test_l1_alpha_schedule_values():
    assert alpha_schedule(5e-4, 5) == pytest.approx([5e-4, 4e-4, 3e-4, 2e-4, 1e-4])
    assert alpha_schedule(1.0, 4, no_l1_epochs=2) == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert alpha_schedule(1.0, 3, no_l1_epochs=3) == [0.0, 0.0, 0.0]


def test_l1_term_shrinks_the_weights(splits, original):
    def l1_norm(alpha):
        model = fresh(original)
        unlearn_splits(model, splits, "l1-sparse", seed=0, epochs=2, alpha=alpha)
        return sum(float(p.detach().abs().sum()) for p in model.parameters())

    assert l1_norm(5e-3) < l1_norm(0.0)
