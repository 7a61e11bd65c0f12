"""Models: torchvision's ResNet-18 (the competition's model), a small ResNet for the embedded default, any
torchvision classifier, a user's factory, or a TorchScript file (see :func:`parse_model_spec`).

Recipes find the layers they touch by role (:mod:`unlearnx.layers`), not by attribute name.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ARCHITECTURES = ("resnet18", "small")
MODEL_HELP = ("resnet18 | small | torchvision:NAME[:key=value,...] (any torchvision classifier) | "
              "package.module:callable[:key=value,...] (called with num_classes and in_channels) | "
              "a TorchScript file")
MODEL_FILE_SUFFIXES = (".ts", ".pt", ".pth", ".jit", ".pt2")


class SmallResNet(nn.Module):
    """A two-stage ResNet (one BasicBlock per stage, widths 16/32) for tiny inputs; trains in seconds."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, kernel_size=1, stride=2, bias=False),
                             nn.BatchNorm2d(2 * width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2, downsample=down))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value: ``kind`` is builtin, torchvision, factory or file."""

    text: str
    kind: str
    target: str
    kwargs: dict = field(default_factory=dict)

    @property
    def trains_from_scratch(self) -> bool:
        """Whether a freshly initialised copy can be built (a model file only holds its trained weights)."""
        return self.kind != "file"


def _parse_kwargs(text: str, spec: str) -> dict:
    kwargs = {}
    for pair in filter(None, text.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--model {spec}: expected key=value after the name, got {pair!r}")
        try:
            kwargs[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            kwargs[key.strip()] = value.strip()
    return kwargs


def parse_model_spec(spec: str) -> ModelSpec:
    """``resnet18``, ``small``, ``torchvision:NAME[:k=v,...]``, ``package.module:callable[:k=v,...]``, or
    the path of a TorchScript file; errors name the problem in one line."""
    spec = str(spec).strip()
    if spec in ARCHITECTURES:
        return ModelSpec(spec, "builtin", spec)
    if Path(spec).suffix in MODEL_FILE_SUFFIXES or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec} does not exist")
        return ModelSpec(spec, "file", str(path))
    if spec.startswith("torchvision:"):
        _, _, rest = spec.partition(":")
        name, _, options = rest.partition(":")
        from torchvision import models

        available = models.list_models(module=models)
        if name not in available:
            close = [a for a in available if name and (name in a or a in name)][:5]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--model {spec}: torchvision has no classification model {name!r}{hint}")
        return ModelSpec(spec, "torchvision", name, _parse_kwargs(options, spec))
    if ":" in spec:
        module, _, rest = spec.partition(":")
        name, _, options = rest.partition(":")
        if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or not name.isidentifier():
            raise ValueError(f"--model {spec}: expected package.module:callable")
        return ModelSpec(spec, "factory", f"{module}:{name}", _parse_kwargs(options, spec))
    raise ValueError(f"unknown model {spec!r}; use {MODEL_HELP}")


def _factory(spec: ModelSpec):
    module_name, _, name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--model {spec.text}: cannot import {module_name} ({exc}); is its folder on "
                         "PYTHONPATH?") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"--model {spec.text}: {module_name} has no callable {name!r}")
    return module, fn


def spec_fingerprint(spec: str) -> str:
    """What besides the spec text decides the model a spec builds (for cache keys): a user factory's
    source file, torchvision's version. Empty for the built-in models."""
    parsed = parse_model_spec(spec)
    if parsed.kind == "factory":
        module, _ = _factory(parsed)
        source = getattr(module, "__file__", None)
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else ""
    if parsed.kind == "torchvision":
        import torchvision

        return torchvision.__version__
    if parsed.kind == "file":
        return hashlib.sha256(Path(parsed.target).read_bytes()).hexdigest()[:16]
    return ""


def adapt_input_channels(model: nn.Module, in_channels: int, spec: str) -> nn.Module:
    """The rule for a torchvision model on data without 3 channels: the stem conv (the first conv the input
    meets, see :mod:`unlearnx.layers`) is replaced by a freshly initialised one taking ``in_channels``,
    with the same kernel, stride, padding and bias (as ``build_model("resnet18")`` does with ``conv1``)."""
    from .layers import model_roles

    stem = model_roles(model).stem
    old = model.get_submodule(stem) if stem else None
    if not isinstance(old, nn.Conv2d) or old.groups != 1:
        raise ValueError(f"--model {spec}: cannot adapt it to {in_channels} input channels (its first layer is "
                         f"{type(old).__name__ if old is not None else 'not found'}, not a plain Conv2d)")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, bias=old.bias is not None, padding_mode=old.padding_mode)
    parent, _, child = stem.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new.to(old.weight.device, old.weight.dtype))
    return model


def load_model_file(path, spec: str | None = None) -> nn.Module:
    """A whole model from a TorchScript file; a ``torch.export`` program or a pickled module is refused in
    one line saying why."""
    path = Path(path)
    name = spec or str(path)
    if path.suffix == ".pt2":
        raise ValueError(f"--model {name}: a torch.export program cannot be trained (torch supports neither "
                         "train() nor eval() on it, and its batch-norm/dropout behaviour is fixed at export); "
                         "save the model with torch.jit.script(model).save(...) or give a factory")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        pickled = False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
            pickled = any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names)
        if pickled:
            raise ValueError(f"--model {name}: holds a pickled Python object (torch.save of a model or a "
                             "state_dict), not a TorchScript model; pass a state_dict with --checkpoint and the "
                             "model's factory with --model") from None
        raise ValueError(f"--model {name}: is not a TorchScript model file") from None


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model (uses the global torch RNG, so ``torch.manual_seed`` fixes it) for a
    model spec (see :func:`parse_model_spec`); a model file gives its own weights."""
    spec = parse_model_spec(arch)
    if spec.kind == "torchvision":
        from torchvision import models

        try:
            model = models.get_model(spec.target, weights=None, num_classes=num_classes, **spec.kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ValueError(f"--model {spec.text}: torchvision cannot build it ({exc})") from None
        return adapt_input_channels(model, in_channels, spec.text) if in_channels != 3 else model
    if spec.kind == "factory":
        _, fn = _factory(spec)
        try:
            model = fn(num_classes=num_classes, in_channels=in_channels, **spec.kwargs)
        except Exception as exc:
            raise ValueError(f"--model {spec.text}: calling {spec.target}(num_classes={num_classes}, "
                             f"in_channels={in_channels}) failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {spec.text}: the factory returned a {type(model).__name__}, not an nn.Module")
        return model
    if spec.kind == "file":
        return load_model_file(spec.target, spec.text)
    if arch == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    if arch == "small":
        return SmallResNet(num_classes=num_classes, in_channels=in_channels)
    raise ValueError(f"unknown model {arch!r}; use {MODEL_HELP}")


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy to train. ``copy.deepcopy`` of a TorchScript model gives non-leaf parameters that
    no optimiser accepts, so those are copied by saving and loading."""
    if isinstance(model, torch.jit.ScriptModule):
        import io

        buffer = io.BytesIO()
        torch.jit.save(model, buffer)
        buffer.seek(0)
        param = next(model.parameters(), None)
        return torch.jit.load(buffer, map_location=param.device if param is not None else "cpu")
    return copy.deepcopy(model)


def describe_model(spec: str | None, model: nn.Module) -> dict:
    """What a report records so a run can be repeated: the spec, what it built, and its size."""
    out = {"spec": spec, "class": f"{type(model).__module__}.{type(model).__qualname__}",
           "parameters": sum(p.numel() for p in model.parameters())}
    if spec:
        out["kind"] = parse_model_spec(spec).kind
        fingerprint = spec_fingerprint(spec)
        if fingerprint:
            out["code"] = fingerprint
    return out


def check_model_runs(model: nn.Module, input_shape, num_classes: int, spec: str) -> None:
    """Before any training: ``model`` takes the data's inputs and gives ``num_classes`` logits, in eval and
    in training mode (where e.g. GoogLeNet's auxiliary outputs would otherwise break the loss)."""
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError(f"--model {spec}: the model has no parameters to train")
    x = torch.zeros(2, *input_shape, device=param.device, dtype=param.dtype)
    shape = "x".join(str(s) for s in input_shape)
    probe = copy.deepcopy(model)  # a training-mode forward updates batch-norm statistics
    for training in (False, True):
        probe.train(training)
        try:
            with torch.no_grad():
                out = probe(x)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"--model {spec}: does not run on the data's {shape} inputs ({first})") from None
        mode = "training" if training else "eval"
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"--model {spec}: returns a {type(out).__name__} in {mode} mode, not a logits tensor "
                             "(turn auxiliary outputs off, e.g. torchvision:googlenet:aux_logits=false)")
        if tuple(out.shape) != (2, num_classes):
            raise ValueError(f"--model {spec}: returns logits of shape {tuple(out.shape)} for 2 inputs; the data "
                             f"has {num_classes} classes")


def default_arch(source_kind: str) -> str:
    """The small model for the embedded digits, the competition's ResNet-18 for everything else."""
    return "small" if source_kind == "digits" else "resnet18"


def _unwrap_state_dict(obj, path) -> dict:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict (expected a mapping of parameter names to tensors)")
    # Checkpoints saved from DataParallel / torch.compile wrappers carry a prefix.
    for prefix in ("module.", "_orig_mod."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def infer_arch(state_dict: dict) -> str | None:
    """Which of our architectures a state_dict belongs to, or None."""
    keys = set(state_dict)
    for arch in ARCHITECTURES:
        reference = build_model(arch, 2).state_dict()
        if set(reference) == keys:
            return arch
    return None


def read_state_dict(path) -> dict:
    """The parameter tensors of checkpoint ``path`` (``weights_only=True``), with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's messages run to many lines and advise weights_only=False: say what matters
        text = str(exc)
        if "Unsupported global" in text:  # a pickled model or optimizer object rather than a state_dict
            raise ValueError(f"{path}: holds Python objects besides tensors, and checkpoints are loaded with "
                             "weights_only=True for safety; save model.state_dict() instead") from None
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        informative = len(first_line) > 20 and "Weights only load failed" not in first_line
        reason = first_line if informative else "unreadable contents"
        raise ValueError(f"{path}: is not a PyTorch checkpoint ({reason})") from None
    return _unwrap_state_dict(obj, path)


def checkpoint_num_classes(path) -> int | None:
    """How many classes the checkpoint's head (``fc``) predicts, or None when it has no ``fc`` layer."""
    weight = read_state_dict(path).get("fc.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def load_checkpoint(path, arch: str | None, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build ``arch`` and load ``path`` into it strictly, with clear errors for mismatches.

    ``arch=None`` infers the architecture from the checkpoint's keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    found = infer_arch(state)
    if arch is None:
        if found is None:
            raise ValueError(f"{path}: its parameters match none of the known models ({', '.join(ARCHITECTURES)})")
        arch = found
    model = build_model(arch, num_classes, in_channels)
    expected = model.state_dict()
    if set(state) != set(expected):
        what = f"a {found!r} model" if found else "another architecture"
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        detail = (f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}")
        raise ValueError(f"{path}: checkpoint is for {what}, not {arch!r} ({detail}{', ...' if len(missing or unexpected) > 3 else ''})")
    head_weight = _head_weight(model)
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            if name == head_weight:
                raise ValueError(f"{path}: checkpoint has {tensor.shape[0]} classes, the data has {num_classes}")
            raise ValueError(f"{path}: parameter {name} has shape {tuple(tensor.shape)}, "
                             f"{arch} expects {tuple(expected[name].shape)}")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{path}: parameter {name} holds {bad} NaN/inf value{'s' if bad > 1 else ''}; "
                             "the checkpoint is damaged or its training diverged")
    model.load_state_dict(state, strict=True)
    return model


def _head_weight(model: nn.Module) -> str:
    """The state_dict key of the classifier head's weight (``fc.weight`` on a ResNet)."""
    from .layers import model_roles

    try:
        head = model_roles(model).head
    except ValueError:  # e.g. a TorchScript model: its layers cannot be traced
        head = None
    return f"{head}.weight" if head else "fc.weight"


def save_state_dict(model: nn.Module, path) -> None:
    """Save ``model.state_dict()`` atomically (see :mod:`unlearnx.atomic`)."""
    from .atomic import torch_save

    torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
