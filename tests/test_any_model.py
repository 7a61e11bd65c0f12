"""Every method on models that are not ResNets: a torchvision MobileNet and two user factories (a plain CNN
and a tiny vision transformer), through the command line and through the code path it uses."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cli.main import main  # noqa: E402
from unlearnx import data as data_mod  # noqa: E402
from unlearnx.api import unlearn_splits  # noqa: E402
from unlearnx.methods import METHODS  # noqa: E402
from unlearnx.models import build_model, parse_model_spec, save_state_dict  # noqa: E402

HERE = Path(__file__).parent
SPECS = ("torchvision:mobilenet_v3_small", "user_models:plain_cnn", "user_models:tiny_vit")

# The fewest steps each method takes (one epoch / round / cycle): these tests check that a method runs on
# the model and leaves a loadable state_dict; unlearning itself is tested per method elsewhere.
TINY = {
    "cfw": {"epochs": 1}, "ct": {"epochs": 1}, "finetune": {"epochs": 1}, "grad-ascent": {"rounds": 1},
    "kde": {"warmup_epochs": 1, "epochs": 1}, "l1-sparse": {"epochs": 1}, "msg": {"epochs": 1},
    "neggrad": {"epochs": 1}, "neggrad-plus": {"epochs": 1}, "prmq": {"epochs": 0.5},
    "random-label": {"epochs": 1}, "reinit-cycles": {"alg1_cycle_epochs": (1,), "alg1_t_max": 1},
    "retrain": {"epochs": 1}, "rni": {"epochs": 2, "fine_epochs": 1}, "salun": {"epochs": 1},
    "scl": {"epochs": 1}, "scl-bikl": {"epochs": 1}, "scrub": {"epochs": 1, "msteps": 1},
}
# What a model lacks, per method that refuses it: (spec, method) -> words the one-line refusal must hold.
REFUSALS = {("user_models:tiny_vit", "ct"): "Conv2d layers whose kernels are all square",
            ("user_models:tiny_vit", "msg"): "Conv2d layers"}


def test_every_method_has_tiny_settings():
    assert set(TINY) == set(METHODS)


@pytest.fixture(scope="module")
def small_digits():
    """The embedded digits cut to 96 retain / 24 forget / 32 validation examples: seconds per method."""
    splits = data_mod.load(None)
    cut = {name: getattr(splits, name).subset(torch.arange(n))
           for name, n in (("retain", 96), ("forget", 24), ("validation", 32))}
    return dataclasses.replace(splits, **cut, test=None, forget_index=None)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("method", sorted(TINY))
def test_method_runs_on_the_model_or_names_the_missing_role(spec, method, small_digits):
    splits = small_digits
    torch.manual_seed(0)
    model = build_model(spec, splits.num_classes, splits.input_shape[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected_refusal = REFUSALS.get((spec, method))
    if expected_refusal:
        with pytest.raises(ValueError) as info:
            unlearn_splits(model, splits, method, seed=0, **TINY[method])
        message = str(info.value)
        assert expected_refusal in message and message.startswith(method) and "\n" not in message
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # refused before any work
        return
    unlearn_splits(model, splits, method, seed=0, **TINY[method])
    after = model.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in after.items())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    fresh = build_model(spec, splits.num_classes, splits.input_shape[0])
    fresh.load_state_dict(after, strict=True)


# --- the command line ---


def _run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNX_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _checkpoint(spec, path, num_classes=10, in_channels=3):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_state_dict(build_model(spec, num_classes, in_channels), path)
    return path


@pytest.mark.parametrize("spec,method,sets", [
    ("torchvision:mobilenet_v3_small", "kde", ("warmup_epochs=1", "epochs=1")),
    ("user_models:tiny_vit", "reinit-cycles", ("alg1_cycle_epochs=1", "alg1_t_max=1")),
])
def test_cli_unlearns_a_non_resnet_and_records_the_spec(cache, spec, method, sets):
    ckpt = _checkpoint(spec, cache / "original.pt")
    out = cache / "run"
    options = [x for s in sets for x in ("--set", s)]
    result = _run("unlearn", "-m", method, "--model", spec, "--checkpoint", ckpt, "--no-reference", "--seed", 0,
                  "--out", out, "-q", *options)
    assert result.exit_code == 0, result.output
    model = build_model(spec, 10, 3)
    model.load_state_dict(torch.load(out / "unlearned.pt", weights_only=True), strict=True)
    report = json.loads((out / "report.json").read_text())
    assert report["arch"] == spec and report["model"]["spec"] == spec
    assert report["model"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_cli_refuses_a_method_whose_role_the_model_lacks_in_one_line(cache):
    ckpt = _checkpoint("user_models:tiny_vit", cache / "original.pt")
    result = _run("unlearn", "-m", "msg", "--model", "user_models:tiny_vit", "--checkpoint", ckpt, "--no-reference",
                  "--out", cache / "run", "-q")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "Error: msg needs Conv2d layers, which this model lacks"
    assert not (cache / "run" / "unlearned.pt").exists()


def test_cli_with_a_user_factory_on_pythonpath_in_a_new_process(tmp_path):
    """A true command line: the factory module is found through PYTHONPATH; the original is trained."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "UNLEARNX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cli.main", "unlearn", "-m", "cfw", "--model", "user_models:plain_cnn:width=4",
           "--no-reference", "--seed", "0", "--set", "epochs=1", "--out", str(out), "-q"]
    result = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    model = build_model("user_models:plain_cnn:width=4", 10, 3)
    model.load_state_dict(torch.load(out / "unlearned.pt", weights_only=True), strict=True)


@pytest.mark.parametrize("spec,words", [
    ("torchvision:resnet_nope", "torchvision has no classification model 'resnet_nope'"),
    ("no_such_module_here:make", "cannot import no_such_module_here"),
    ("user_models:missing", "user_models has no callable 'missing'"),
    ("user_models:not_a_model", "the factory returned a dict, not an nn.Module"),
    ("user_models:plain_cnn:depth=3", "plain_cnn() got an unexpected keyword argument 'depth'"),
    ("torchvision:squeezenet1_1", "does not run on the data's 3x16x16 inputs"),
    ("torchvision:googlenet", "aux_logits=false"),
    ("nonsense", "unknown model 'nonsense'"),
    ("missing.ts", "model file missing.ts does not exist"),
])
def test_bad_model_specs_are_one_line_errors_before_training(cache, spec, words):
    result = _run("unlearn", "-m", "finetune", "--model", spec, "--out", cache / "run", "-q")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and words in last
    assert not (cache / "cache" / "models").exists() or not any((cache / "cache" / "models").iterdir())


def test_checkpoint_errors_name_the_problem_for_any_model(cache):
    spec = "torchvision:mobilenet_v3_small"
    wrong_classes = _checkpoint(spec, cache / "five.pt", num_classes=5)
    result = _run("unlearn", "--model", spec, "--checkpoint", wrong_classes, "--out", cache / "a", "-q")
    assert result.exit_code == 2 and "checkpoint has 5 classes, the data has 10" in result.output
    other = _checkpoint("user_models:plain_cnn", cache / "cnn.pt")
    result = _run("unlearn", "--model", spec, "--checkpoint", other, "--out", cache / "b", "-q")
    assert result.exit_code == 2 and "checkpoint is for another architecture" in result.output


def test_torchvision_models_adapt_the_stem_to_the_data_channels():
    model = build_model("torchvision:mobilenet_v3_small", 4, 1)
    assert model.features[0][0].in_channels == 1 and model(torch.zeros(2, 1, 16, 16)).shape == (2, 4)
    from torchvision.models import VisionTransformer

    from unlearnx.models import adapt_input_channels

    vit = VisionTransformer(image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16,
                            num_classes=3)
    adapt_input_channels(vit, 1, "vit")  # the patch embedding is the stem
    assert vit.conv_proj.in_channels == 1 and vit(torch.zeros(2, 1, 16, 16)).shape == (2, 3)


def test_model_files(cache, small_digits):
    """A TorchScript file trains with methods that need no layer roles; others, and torch.export programs,
    are refused in one line saying why."""
    import warnings

    model = build_model("user_models:plain_cnn", 10, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(cache / "model.ts"))
        program = torch.export.export(model, (torch.zeros(2, 3, 16, 16),))
        torch.export.save(program, str(cache / "model.pt2"))
    assert parse_model_spec(str(cache / "model.ts")).kind == "file"
    result = _run("unlearn", "-m", "finetune", "--model", cache / "model.ts", "--seed", 0, "--out", cache / "ok", "-q")
    assert result.exit_code == 0, result.output
    loaded = torch.jit.load(str(cache / "model.ts"))
    loaded.load_state_dict(torch.load(cache / "ok" / "unlearned.pt", weights_only=True), strict=True)
    assert "retrained" not in json.loads((cache / "ok" / "report.json").read_text())  # no from-scratch reference
    result = _run("unlearn", "-m", "kde", "--model", cache / "model.ts", "--out", cache / "kde", "-q")
    assert result.exit_code == 2 and "TorchScript model's layers cannot be traced" in result.output
    result = _run("unlearn", "-m", "finetune", "--model", cache / "model.pt2", "--out", cache / "pt2", "-q")
    assert result.exit_code == 2 and "a torch.export program cannot be trained" in result.output
    result = _run("train", "--model", cache / "model.ts", "--out", cache / "t.pt")
    assert result.exit_code == 2 and "a model file only holds trained weights" in result.output


def test_python_api_takes_a_model_without_resnet_names():
    import unlearnx
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = build_model("user_models:plain_cnn", 3, 1)
    x, y = torch.randn(48, 1, 12, 12), torch.arange(48) % 3
    retain = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    forget = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=16)
    before = [p.clone() for p in net.parameters()]
    unlearnx.unlearn(net, retain, forget, method="kde", seed=0, warmup_epochs=1, epochs=1)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


SCRIPT_RUNS = {"finetune", "grad-ascent", "l1-sparse", "neggrad", "neggrad-plus", "random-label", "salun", "scl",
               "scl-bikl", "scrub"}  # the methods that need no layer roles


@pytest.mark.parametrize("method", sorted(TINY))
def test_torchscript_model_runs_the_methods_without_roles_and_refuses_the_rest(method, small_digits):
    import warnings

    from unlearnx.models import copy_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = copy_model(torch.jit.script(build_model("user_models:plain_cnn", 10, 3)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if method in SCRIPT_RUNS:
        unlearn_splits(model, small_digits, method, seed=0, **TINY[method])
        assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
        return
    with pytest.raises(ValueError, match=f"^{method}: a TorchScript model's layers cannot be traced"):
        unlearn_splits(model, small_digits, method, seed=0, **TINY[method])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_cached_models_of_a_factory_are_keyed_by_its_source(tmp_path, monkeypatch):
    """Editing a factory's file must not let the cache answer with a model the old code built."""
    from unlearnx.models import spec_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "edited_factory.py"
    source.write_text("from torch import nn\n\ndef make(num_classes, in_channels):\n"
                      "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 256, num_classes))\n")
    first = spec_fingerprint("edited_factory:make")
    source.write_text(source.read_text().replace("nn.Flatten(), ", "nn.Flatten(), nn.Identity(), "))
    assert spec_fingerprint("edited_factory:make") != first
    assert spec_fingerprint("resnet18") == spec_fingerprint("small") == ""  # built-in keys stay as they were
