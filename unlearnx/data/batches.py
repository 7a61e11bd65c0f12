"""Iterables of ``(x, y)`` batches that methods consume.

Two kinds, one interface (``Batches``):
- ``TensorBatches``: the fast path. The whole split lives in one uint8 tensor (on the GPU when there is
  one); a batch is an index into it, normalised on the fly. No DataLoader, no workers, no collation.
- ``LoaderBatches``: wraps a user's ``DataLoader`` (the competition harness), yielding ``(x, y)`` from
  tuple or dict batches (``image``/``age_group``), so methods never see the difference.

Both can be re-batched (``rebatch``) and sub-sampled (``subset``), which some recipes need (e.g. SCL's
retain batch 256, MSG's random retain subset of the forget set's size). Shuffling draws from the
``torch.Generator`` they were given, so a seeded run is reproducible.
"""
from __future__ import annotations

import math
from typing import Iterator, Protocol

import torch
from torch import Tensor

from .augment import augment as augment_batch
from .splits import Normalization, Split


class Batches(Protocol):
    batch_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    @property
    def num_examples(self) -> int: ...

    def rebatch(self, batch_size: int, shuffle: bool | None = None) -> "Batches": ...

    def subset(self, n: int) -> "Batches": ...

    def labels(self) -> Tensor: ...


class TensorBatches:
    """Batches drawn from a tensor-resident split."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool = True,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 normalization: Normalization | None = None, channels_last: bool = False,
                 drop_last: bool = False, dtype: torch.dtype = torch.float32, augment: str = "none"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.device = torch.device(device)
        self.normalization = normalization or Normalization()
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.dtype = dtype  # the model's parameter dtype (float64 for exactness checks)
        self.augment = augment  # training augmentation drawn per batch (unlearnx.data.augment)

    def _clone(self, **changes) -> "TensorBatches":
        kwargs = dict(split=self.split, batch_size=self.batch_size, shuffle=self.shuffle,
                      generator=self.generator, device=self.device, normalization=self.normalization,
                      channels_last=self.channels_last, drop_last=self.drop_last, dtype=self.dtype,
                      augment=self.augment)
        kwargs.update(changes)
        return TensorBatches(**kwargs)

    @property
    def num_examples(self) -> int:
        return len(self.split)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.split.on(self.device)
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                x, y = images[lo:hi], labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = images.index_select(0, idx), labels.index_select(0, idx)
            if self.augment != "none":  # on the uint8 pixels, so padding is black as in torchvision
                x = augment_batch(x, self.augment, self.generator)
            x = self.normalization(x)
            if self.dtype != x.dtype:
                x = x.to(self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def rebatch(self, batch_size: int, shuffle: bool | None = None) -> "TensorBatches":
        return self._clone(batch_size=batch_size, shuffle=self.shuffle if shuffle is None else shuffle)

    def augmented(self, augment: str) -> "TensorBatches":
        """The same batches with training augmentation ``augment`` drawn on every pass."""
        return self._clone(augment=augment)

    def subset(self, n: int) -> "TensorBatches":
        n = min(int(n), len(self.split))
        index = torch.randperm(len(self.split), generator=self.generator)[:n]
        return self._clone(split=self.split.subset(index))

    def labels(self) -> Tensor:
        return self.split.labels


def _as_xy(batch) -> tuple[Tensor, Tensor]:
    """Accept ``(x, y, ...)`` tuples/lists or the competition's dict batches."""
    if isinstance(batch, dict):
        try:
            x = batch["image"]
        except KeyError:
            raise ValueError(f"dict batches need an 'image' key; got keys {sorted(batch)}") from None
        for key in ("age_group", "label", "labels", "target"):
            if key in batch:
                return x, batch[key]
        raise ValueError(f"dict batches need a label key ('age_group' or 'label'); got keys {sorted(batch)}")
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"batches must be (x, y) tuples or dicts with 'image' and 'age_group', got {type(batch).__name__}")


class LoaderBatches:
    """Adapter over a user's ``torch.utils.data.DataLoader`` (or any re-iterable of batches)."""

    def __init__(self, loader, device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32):
        self.loader = loader
        self.device = torch.device(device)
        self.dtype = dtype
        self.generator = generator
        self.batch_size = int(getattr(loader, "batch_size", None) or 0) or self._peek_batch_size()

    def _peek_batch_size(self) -> int:
        x, _ = _as_xy(next(iter(self.loader)))
        return int(x.shape[0])

    @property
    def num_examples(self) -> int:
        dataset = getattr(self.loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "__len__"):
            return len(dataset)
        return sum(int(_as_xy(b)[1].shape[0]) for b in self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            x, y = _as_xy(batch)
            yield (x.to(self.device, self.dtype, non_blocking=True),
                   torch.as_tensor(y).to(self.device, torch.long, non_blocking=True))

    def _dataset(self):
        dataset = getattr(self.loader, "dataset", None)
        if dataset is None:
            raise ValueError("re-batching needs a DataLoader with a .dataset")
        return dataset

    def _new_loader(self, dataset, batch_size: int, shuffle: bool):
        from torch.utils.data import DataLoader

        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          collate_fn=getattr(self.loader, "collate_fn", None),
                          num_workers=getattr(self.loader, "num_workers", 0),
                          generator=self.generator)

    def rebatch(self, batch_size: int, shuffle: bool | None = None) -> "LoaderBatches":
        shuffle = True if shuffle is None else shuffle
        loader = self._new_loader(self._dataset(), batch_size, shuffle)
        return LoaderBatches(loader, self.device, self.generator, self.dtype)

    def subset(self, n: int) -> "LoaderBatches":
        from torch.utils.data import Subset

        dataset = self._dataset()
        index = torch.randperm(len(dataset), generator=self.generator)[: int(n)].tolist()
        return LoaderBatches(self._new_loader(Subset(dataset, index), self.batch_size, True), self.device,
                             self.generator, self.dtype)

    def labels(self) -> Tensor:
        return torch.cat([torch.as_tensor(_as_xy(b)[1]).long().cpu() for b in self.loader])


def as_batches(obj, device: torch.device | str = "cpu", generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32):
    """``TensorBatches``/``LoaderBatches`` pass through; DataLoaders and iterables get wrapped."""
    if obj is None or isinstance(obj, (TensorBatches, LoaderBatches)):
        return obj
    return LoaderBatches(obj, device=device, generator=generator, dtype=dtype)
