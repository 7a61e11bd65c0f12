"""Session-wide trained models on the embedded digits, shared by the method tests that need a real original.

Each is trained once per test session (a few seconds each on a CPU) and handed out as a state_dict; a test
builds its own model from it with :func:`fresh_small`, so no test can change another's starting point.

- ``digits_class``: the digits splits, forget = every train example of class 3 (``classes:3``).
- ``class_original``: trained on retain + forget of ``digits_class`` (knows class 3: ~96% forget accuracy);
  a model retrained on the retain set alone never predicts class 3, so the forget accuracy an unlearning
  method should move towards is 0.
"""
from __future__ import annotations

import copy

import pytest
import torch

from unlearnx import data
from unlearnx.data.batches import TensorBatches
from unlearnx.data.splits import Split
from unlearnx.models import build_model
from unlearnx.training import TrainRecipe, train_model

ORIGINAL_EPOCHS = 6


def train_small(splits, *, include_forget: bool, seed: int = 0, epochs: int = ORIGINAL_EPOCHS) -> dict:
    """state_dict of the small ResNet trained with the digits recipe on retain (+ forget)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("small", splits.num_classes)
        parts = [splits.retain] + ([splits.forget] if include_forget else [])
        train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
        batches = TensorBatches(train, 64, generator=torch.Generator().manual_seed(seed),
                                normalization=splits.normalization)
        train_model(model, batches, TrainRecipe.preset("digits", epochs=epochs))
    return copy.deepcopy(model.eval().state_dict())


def fresh_small(state: dict, num_classes: int = 10):
    model = build_model("small", num_classes)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="session")
def digits_class():
    return data.load("digits", forget="classes:3")


@pytest.fixture(scope="session")
def class_original(digits_class) -> dict:
    return train_small(digits_class, include_forget=True)
