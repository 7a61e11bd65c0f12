"""Exported models (torch.export .pt2 and TorchScript) load and match the eager model at any batch size."""
from __future__ import annotations

import warnings

import pytest
import torch

from unlearnx.export import export_model
from unlearnx.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("small", 10)
    # Non-trivial BatchNorm statistics, so eval-mode normalisation is exercised.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 3, 16, 16))
    return net.eval()


def _load(path):
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_exports_match_eager_at_batch_1_7_and_64(model, fmt, tmp_path):
    path = export_model(model, fmt, tmp_path, (3, 16, 16))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind
    loaded = _load(path)
    for batch in (1, 7, 64):
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x)
            got = loaded(x)
        assert got.shape == (batch, 10)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
