"""The data every command and method works on: decoded uint8 images and labels, split four ways."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor


_AFFINE_CACHE: dict = {}


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
        # One fused multiply-add per batch: x * (scale / std) + (-mean / std).
        a, b = self._affine(images.shape[1], images.device)
        if b is None:
            return images.float() * a if a != 1.0 else images.float()
        return torch.addcmul(b, images.float(), a)

    def _affine(self, channels: int, device: torch.device):
        key = (self, channels, str(device))
        if key not in _AFFINE_CACHE:
            if all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std):
                _AFFINE_CACHE[key] = (self.scale, None)
            else:
                mean = torch.tensor(self._per_channel(self.mean, channels), dtype=torch.float64)
                std = torch.tensor(self._per_channel(self.std, channels), dtype=torch.float64)
                a = (self.scale / std).float().view(1, -1, 1, 1).to(device)
                b = (-mean / std).float().view(1, -1, 1, 1).to(device)
                _AFFINE_CACHE[key] = (a, b)
        return _AFFINE_CACHE[key]

    @staticmethod
    def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
        if len(values) == 1:
            return list(values) * channels
        if len(values) != channels:
            raise ValueError(f"normalization has {len(values)} values for {channels} image channels")
        return list(values)


@dataclass(eq=False)  # identity: element-wise tensor == would raise on `split_a == split_b`
class Split:
    """One split: ``images`` uint8 [N, C, H, W], ``labels`` int64 [N], optional per-example ``ids`` and
    ``groups`` (int64 [N], e.g. the competition's person_id, for forgetting whole people)."""

    images: Tensor
    labels: Tensor
    ids: list[str] | None = None
    groups: Tensor | None = None
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)
    _pixel_digest: bytes | None = field(default=None, repr=False, compare=False)

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
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups).long()
            if self.groups.shape != self.labels.shape:
                raise ValueError(f"split groups must be [N] with N={len(self.labels)}, got {tuple(self.groups.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        ids = [self.ids[i] for i in index.tolist()] if self.ids is not None else None
        groups = self.groups[index] if self.groups is not None else None
        return Split(self.images[index], self.labels[index], ids, groups)

    def partition(self, index: Tensor) -> tuple["Split", "Split"]:
        """``(rest, chosen)``: the examples not at ``index`` (in order) and those at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[index] = False
        return self.subset(torch.nonzero(keep).flatten()), self.subset(index)

    def pixel_digest(self) -> bytes:
        """A fingerprint of the pixels (computed once: splits are not modified in place)."""
        if self._pixel_digest is None:
            # sha1 is ~2x faster than sha256 here and this is a fingerprint, not a security check
            self._pixel_digest = hashlib.sha1(self.images.cpu().contiguous().numpy()).digest()
        return self._pixel_digest

    def on(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """Images and labels resident on ``device`` (copied once, then reused)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.images, self.labels
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]


@dataclass(eq=False)
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
    # Sorted positions of the forget examples in the source's training set (retain + forget, in the
    # source's order; retain holds the rest, in order). Defaults to "forget after retain". Split files
    # store this, so a split reloads exactly.
    forget_index: Tensor | None = None
    kind: str = ""                              # digits | competition | imagefolder | cifar-pickle | torchvision
    checkpoint: Path | None = None              # the source's original model (competition original_model.pth)
    declared_class_counts: list[int] | None = None  # per-class train counts the source ships (age_class_weights.json)
    # The light augmentation that suits these images when a model is trained from scratch on them
    # (unlearnx.data.augment): crop+flip for natural images, none for digits.
    augmentation: str = "none"

    def __post_init__(self):
        if len(self.forget) == 0:
            raise ValueError(f"the forget set of {self.source!r} is empty: nothing to unlearn")
        if len(self.retain) == 0:
            raise ValueError(f"the retain set of {self.source!r} is empty")
        from .augment import check_augmentation

        check_augmentation(self.augmentation)
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
        n_train = len(self.retain) + len(self.forget)
        if self.forget_index is None:
            self.forget_index = torch.arange(len(self.retain), n_train)
        self.forget_index = torch.as_tensor(self.forget_index, dtype=torch.long)
        index = self.forget_index
        if (index.shape != (len(self.forget),) or (index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_train))
                or bool((index[1:] <= index[:-1]).any())):
            raise ValueError(f"forget_index must be {len(self.forget)} sorted, distinct positions in 0..{n_train - 1}")

    @property
    def class_counts(self) -> list[int]:
        """Per-class counts of the training set (retain + forget), as the competition's class weights use.

        A source that ships its own counts (the competition's ``age_class_weights.json``) gives those.
        """
        if self.declared_class_counts is not None:
            return list(self.declared_class_counts)
        labels = torch.cat([self.retain.labels, self.forget.labels])
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    @property
    def held_out(self) -> str | None:
        """The split that stands for unseen data (test, else validation), or None when there is neither."""
        if self.test is not None and len(self.test):
            return "test"
        return "validation" if self.validation is not None and len(self.validation) else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.retain.images.shape[1:])  # type: ignore[return-value]

    def named(self) -> dict[str, Split | None]:
        return {"retain": self.retain, "forget": self.forget, "validation": self.validation, "test": self.test}

    def train_split(self) -> Split:
        """The source's training set (retain + forget) in the source's own order."""
        retain_pos = torch.ones(len(self.retain) + len(self.forget), dtype=torch.bool)
        retain_pos[self.forget_index] = False
        retain_pos = torch.nonzero(retain_pos).flatten()
        order = torch.empty(len(retain_pos) + len(self.forget_index), dtype=torch.long)
        # order[position in train] = position in cat(retain, forget)
        order[retain_pos] = torch.arange(len(retain_pos))
        order[self.forget_index] = torch.arange(len(retain_pos), len(order))
        both = [self.retain, self.forget]
        ids = None
        if all(s.ids is not None for s in both):
            joined = self.retain.ids + self.forget.ids
            ids = [joined[i] for i in order.tolist()]
        groups = None
        if all(s.groups is not None for s in both):
            groups = torch.cat([s.groups for s in both])[order]
        return Split(torch.cat([s.images for s in both])[order], torch.cat([s.labels for s in both])[order],
                     ids, groups)

    def with_forget(self, forget_index: Tensor, description: str) -> "Splits":
        """The same source with another forget set: ``forget_index`` are positions in :meth:`train_split`."""
        forget_index = torch.sort(torch.as_tensor(forget_index, dtype=torch.long)).values
        retain, forget = self.train_split().partition(forget_index)
        return replace(self, retain=retain, forget=forget, forget_index=forget_index, forget_description=description)

    def split_hash(self) -> str:
        """A short fingerprint of which examples went where, recorded in every report.

        Content only (split sizes, labels, pixels), not the source's path, so the same data gives the same
        hash on every machine.
        """
        h = hashlib.sha256(b"unlearnx-split")
        for name, split in self.named().items():
            h.update(name.encode())
            if split is not None:
                h.update(str(len(split)).encode())
                h.update(split.labels.cpu().numpy().tobytes())
                h.update(split.pixel_digest())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "source": self.source,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "sizes": {k: (len(v) if v is not None else 0) for k, v in self.named().items()},
            "forget": self.forget_description,
            "held_out": self.held_out_description(),
            "split_hash": self.split_hash(),
        }

    def held_out_description(self) -> str:
        """Which split the report's held-out numbers (test accuracy, MIA) come from, in words."""
        if self.held_out == "test":
            return "test"
        if self.held_out == "validation":
            return "validation (the source has no test split)"
        return "none (the source has no test or validation split)"
