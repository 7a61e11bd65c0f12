"""Per-split loss/accuracy helpers on a tiny linear model."""
import math

import pytest
import torch
from torch import nn

from unlearnx.metrics.evaluation import evaluate_splits, loss_accuracy, per_example_losses, predict


def _model():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    return model


def _batches(x, y, size=2):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


X = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [3.0, 0.0], [0.0, 1.0]])
Y = torch.tensor([0, 1, 2, 1, 0])  # the last two are wrong under _model()


def test_predict_collects_logits_labels_and_restores_mode():
    model = _model().train()
    logits, labels = predict(model, _batches(X, Y))
    assert logits.dtype == torch.float32 and labels.dtype == torch.int64 and logits.device.type == "cpu"
    torch.testing.assert_close(logits, X @ model.weight.detach().T)
    assert labels.tolist() == Y.tolist()
    assert model.training  # restored
    assert not predict(model.eval(), _batches(X, Y))[0].requires_grad and not model.training


def test_predict_uses_eval_mode():
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(p=0.9)).train()
    first, _ = predict(model, _batches(X, Y))
    second, _ = predict(model, _batches(X, Y))
    torch.testing.assert_close(first, second)  # dropout off


def test_predict_accepts_competition_dicts():
    batches = [{"image": X[:3], "age_group": Y[:3]}, {"image": X[3:], "age_group": Y[3:]}]
    assert predict(_model(), batches)[1].tolist() == Y.tolist()


def test_loss_accuracy_and_per_example_losses():
    logits, labels = predict(_model(), _batches(X, Y))
    result = loss_accuracy(logits, labels)
    assert result["accuracy"] == pytest.approx(3 / 5)
    losses = per_example_losses(logits, labels)
    expected = [-(torch.log_softmax(logits[i], 0)[labels[i]]).item() for i in range(5)]
    torch.testing.assert_close(losses, torch.tensor(expected))
    assert result["loss"] == pytest.approx(sum(expected) / 5, rel=1e-6)
    assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])


def test_evaluate_splits_skips_none():
    results = evaluate_splits(_model(), {"retain": _batches(X[:3], Y[:3]), "forget": _batches(X[3:], Y[3:]),
                                         "validation": None})
    assert set(results) == {"retain", "forget"}
    assert results["retain"]["accuracy"] == 1.0 and results["forget"]["accuracy"] == 0.0
    assert results["forget"]["loss"] > results["retain"]["loss"]


class _NaNModel(nn.Module):
    def forward(self, x):
        out = torch.zeros(x.shape[0], 3)
        out[-1, 0] = float("nan")
        return out


def test_nan_logits_name_the_split():
    with pytest.raises(ValueError, match="model produced NaN logits on split 'forget'"):
        evaluate_splits(_NaNModel(), {"forget": _batches(X, Y)})


def test_inf_logits():
    class InfModel(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), float("inf"))

    with pytest.raises(ValueError, match="inf logits"):
        predict(InfModel(), _batches(X, Y))


@pytest.mark.parametrize("splits, exc, match", [
    ({"test": []}, ValueError, "split 'test' is empty"),
    ({"test": [(X[:0], Y[:0])]}, ValueError, "split 'test' is empty"),
    ({"retain": _batches(X, torch.tensor([0, 1, 3, 0, 0]))}, ValueError,
     "label 3 at example 2 of split 'retain' is out of range for 3 classes"),
    ({"retain": _batches(X, torch.tensor([0, 1, -1, 0, 0]))}, ValueError, "out of range"),
    ({"retain": [(X, Y[:3])]}, ValueError, "5 inputs but 3 labels"),
    ({"retain": [(X, Y.float())]}, TypeError, "labels must be integers"),
    ({"retain": [X]}, TypeError, r"must be an \(x, y\) tuple"),
    ({"retain": [{"x": X}]}, ValueError, "without 'image'/'age_group'"),
    ({"retain": [(X.numpy(), Y)]}, TypeError, "must be tensors"),
])
def test_bad_batches(splits, exc, match):
    with pytest.raises(exc, match=match):
        evaluate_splits(_model(), splits)


def test_bad_model_output_and_arguments():
    with pytest.raises(ValueError, match="expected logits"):
        predict(nn.Identity(), [(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        predict(lambda x: x, _batches(X, Y))
    with pytest.raises(ValueError, match="is None"):
        predict(_model(), None, split="test")
    with pytest.raises(TypeError, match="mapping"):
        evaluate_splits(_model(), [("retain", _batches(X, Y))])
    with pytest.raises(ValueError, match=r"labels must have shape \[5\]"):
        loss_accuracy(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        per_example_losses(torch.zeros(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="NaN logits"):
        loss_accuracy(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long))
