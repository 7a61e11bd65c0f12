"""The data every command and method works on: decoded uint8 images and labels, split four ways."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model inputs: ``(x * scale - mean) / std`` per channel.

    The competition fed raw 0-255 floats (``scale=1``, mean 0, std 1); CIFAR-10 recipes use /255 and
    the usual channel statistics.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0

    @classmethod
    def raw(cls) -> "Normalization":
        return cls(mean=(0.0,), std=(1.0,), scale=1.0)

    def __call__(self, images: Tensor) -> Tensor:
        x = images.float()
        if self.scale != 1.0:
            x = x * self.scale
        channels = x.shape[1]
        if any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std):
            mean = torch.tensor(self._per_channel(self.mean, channels), device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self._per_channel(self.std, channels), device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    @staticmethod
    def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
        if len(values) == 1:
            return list(values) * channels
        if len(values) != channels:
            raise ValueError(f"normalization has {len(values)} values for {channels} image channels")
        return list(values)


@dataclass
class Split:
    """One split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N], optional per-example ``ids``."""

    images: Tensor
    labels: Tensor
    ids: list[str] | None = None
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(f"split images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"split images must be uint8 (decoded pixels), got {self.images.dtype}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"split labels must be [N] with N={self.images.shape[0]}, got {tuple(self.labels.shape)}")
        self.labels = self.labels.long()
        if self.ids is not None and len(self.ids) != len(self.labels):
            raise ValueError("split ids must have one entry per image")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        ids = [self.ids[i] for i in index.tolist()] if self.ids is not None else None
        return Split(self.images[index], self.labels[index], ids)

    def on(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """Images and labels resident on ``device`` (copied once, then reused)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.images, self.labels
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]


@dataclass
class Splits:
    """Retain / forget / validation / test splits of one data source (a split may be None)."""

    retain: Split
    forget: Split
    validation: Split | None
    test: Split | None
    num_classes: int
    source: str
    normalization: Normalization = field(default_factory=Normalization)
    class_names: list[str] | None = None
    forget_description: str = ""

    def __post_init__(self):
        if len(self.forget) == 0:
            raise ValueError(f"the forget set of {self.source!r} is empty: nothing to unlearn")
        if len(self.retain) == 0:
            raise ValueError(f"the retain set of {self.source!r} is empty")
        for name in ("retain", "forget", "validation", "test"):
            split = getattr(self, name)
            if split is None or len(split) == 0:
                continue
            lo, hi = int(split.labels.min()), int(split.labels.max())
            if lo < 0 or hi >= self.num_classes:
                bad = int(((split.labels < 0) | (split.labels >= self.num_classes)).nonzero()[0])
                where = f" ({split.ids[bad]})" if split.ids else ""
                raise ValueError(f"{name} split: label {int(split.labels[bad])} at row {bad}{where} is outside "
                                 f"0..{self.num_classes - 1}")

    @property
    def class_counts(self) -> list[int]:
        """Per-class counts of the training set (retain + forget), as the competition's class weights use."""
        labels = torch.cat([self.retain.labels, self.forget.labels])
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.retain.images.shape[1:])  # type: ignore[return-value]

    def named(self) -> dict[str, Split | None]:
        return {"retain": self.retain, "forget": self.forget, "validation": self.validation, "test": self.test}

    def split_hash(self) -> str:
        """A short fingerprint of which examples went where, recorded in every report."""
        h = hashlib.sha256(self.source.encode())
        for name, split in self.named().items():
            h.update(name.encode())
            if split is not None:
                h.update(str(len(split)).encode())
                h.update(split.labels.numpy().tobytes())
                h.update(hashlib.sha256(split.images.numpy().tobytes()).digest())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {k: (len(v) if v is not None else 0) for k, v in self.named().items()},
            "forget": self.forget_description,
            "split_hash": self.split_hash(),
        }
