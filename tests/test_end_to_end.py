"""Every registered method on the competition layout with a ResNet-18 checkpoint, as the Kaggle harness
would call it (dict batches of raw 0-255 pixels), and through the tensor-resident fast path."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import unlearnx
from unlearnx import data
from unlearnx.api import unlearn_splits
from unlearnx.methods import METHODS
from unlearnx.models import build_model, load_checkpoint

from fixtures import write_competition_folder

# Small budgets so every method finishes in seconds; the recipe logic is unchanged.
FAST = {
    "cfw": {"epochs": 2, "jitter_after_epoch": 0},
    "ct": {"epochs": 1},
    "finetune": {},
    "grad-ascent": {"rounds": 1},
    "kde": {"warmup_epochs": 1, "epochs": 1},
    "l1-sparse": {"epochs": 1},
    "msg": {"epochs": 1},
    "neggrad": {"epochs": 1},
    "neggrad-plus": {"epochs": 1},
    "prmq": {"epochs": 0.5},
    "random-label": {"epochs": 1},
    "reinit-cycles": {"alg1_cycle_epochs": "1"},
    "retrain": {"epochs": 1, "min_save_epoch": 0},
    "rni": {"epochs": 3, "fine_epochs": 1},
    "salun": {"epochs": 1},
    "scl": {"epochs": 1},
    "scl-bikl": {"epochs": 1},
    "scrub": {"epochs": 1, "msteps": 1},
}


def test_every_method_has_a_fast_budget():
    # A new method must be added here, so it is exercised end to end.
    assert set(FAST) == set(METHODS)


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    root = write_competition_folder(tmp_path_factory.mktemp("competition"), n_people=16, images_per_person=8)
    splits = data.load(root, cache_dir=False)
    return root, splits


class KaggleDataset(Dataset):
    """What the Kaggle notebooks' dataset returns: dicts of float 0-255 images and age groups."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return {"image": self.split.images[i].float(), "age_group": int(self.split.labels[i]),
                "image_id": self.split.ids[i] if self.split.ids else str(i)}


def _fresh_original(root, splits):
    return load_checkpoint(root / "original_model.pth", "resnet18", splits.num_classes)


@pytest.mark.parametrize("method", sorted(FAST))
def test_method_runs_like_the_competition_harness(competition, method):
    root, splits = competition
    net = _fresh_original(root, splits)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loaders = [DataLoader(KaggleDataset(s), batch_size=64, shuffle=True)
               for s in (splits.retain, splits.forget, splits.validation)]
    out = unlearnx.unlearn(net, *loaders, method=method, seed=0, **FAST[method])
    assert out is net  # in place, as the harness ignores the return value
    after = net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), f"{method} changed nothing"
    assert all(torch.isfinite(v.float()).all() for v in after.values()), f"{method} produced non-finite weights"
    # The harness reloads state_dicts into the same module tree: it must load strictly.
    build_model("resnet18", splits.num_classes).load_state_dict(after, strict=True)


@pytest.mark.parametrize("method", ["scl", "msg", "cfw"])
def test_fast_path_matches_nothing_global_and_is_reproducible(competition, method):
    root, splits = competition
    results = []
    for _ in range(2):
        net = _fresh_original(root, splits)
        unlearn_splits(net, splits, method, seed=5, **FAST[method])
        results.append(net.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), f"{method}: {key} differs between seeded runs"
