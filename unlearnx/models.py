"""Models: torchvision's ResNet-18 (the competition's model) and a small ResNet for the embedded default.

Both keep ResNet's attribute names (``conv1``, ``bn1``, ``layer*``, ``downsample``, ``fc``) because
several recipes address layers by name (3rd place adds noise to ``conv1``, 6th resets ``conv1`` and
``fc``, 8th skips ``fc`` and ``downsample``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ARCHITECTURES = ("resnet18", "small")


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


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised model (uses the global torch RNG, so ``torch.manual_seed`` fixes it)."""
    if arch == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    if arch == "small":
        return SmallResNet(num_classes=num_classes, in_channels=in_channels)
    raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


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
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            if name == "fc.weight":
                raise ValueError(f"{path}: checkpoint has {tensor.shape[0]} classes, the data has {num_classes}")
            raise ValueError(f"{path}: parameter {name} has shape {tuple(tensor.shape)}, "
                             f"{arch} expects {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True)
    return model


def save_state_dict(model: nn.Module, path) -> None:
    """Save ``model.state_dict()`` atomically (write to a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
