"""Choosing the forget set for sources that do not come with one."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ForgetSpec:
    """What to forget: a random ``fraction`` of the training set (the starting kit's 10%), whole
    ``classes``, or whole groups (``groups`` of them chosen at random, as the competition chose 15 people).
    """

    mode: str = "random"          # "random" | "classes" | "groups"
    fraction: float = 0.1
    classes: tuple[int, ...] = ()
    groups: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "ForgetSpec":
        """``"0.1"`` / ``"random:0.1"``, ``"classes:0,3"``, ``"groups:15"``."""
        if text is None or text == "":
            return cls()
        kind, _, arg = text.partition(":")
        try:
            if not arg:
                return cls(mode="random", fraction=float(kind))
            if kind == "random":
                return cls(mode="random", fraction=float(arg))
            if kind == "classes":
                return cls(mode="classes", classes=tuple(int(c) for c in arg.split(",") if c != ""))
            if kind == "groups":
                return cls(mode="groups", groups=int(arg))
        except ValueError:
            pass
        raise ValueError(f"bad forget spec {text!r}: use a fraction like 0.1, 'random:0.1', 'classes:0,3' or 'groups:15'")

    def describe(self) -> str:
        if self.mode == "random":
            return f"random {self.fraction:.0%} of train"
        if self.mode == "classes":
            return "classes " + ",".join(map(str, self.classes))
        return f"all examples of {self.groups} random groups"


def select_forget(labels: Tensor, spec: ForgetSpec, seed: int = 0, groups: Tensor | None = None) -> Tensor:
    """Sorted indices (into ``labels``) of the forget set, drawn with ``seed``."""
    n = int(labels.shape[0])
    g = torch.Generator().manual_seed(int(seed))
    if spec.mode == "random":
        if not 0.0 < spec.fraction < 1.0:
            raise ValueError(f"forget fraction must be between 0 and 1, got {spec.fraction}")
        k = int(round(spec.fraction * n))
        if k == 0:
            raise ValueError(f"forget fraction {spec.fraction} of {n} examples selects nothing")
        index = torch.randperm(n, generator=g)[:k]
    elif spec.mode == "classes":
        if not spec.classes:
            raise ValueError("forget spec 'classes' needs at least one class, e.g. classes:0")
        wanted = torch.tensor(spec.classes, dtype=labels.dtype)
        index = torch.nonzero(torch.isin(labels, wanted)).flatten()
        if index.numel() == 0:
            raise ValueError(f"no training example has a class in {list(spec.classes)}")
    elif spec.mode == "groups":
        if groups is None:
            raise ValueError("forget spec 'groups' needs a source with groups (e.g. person_id)")
        unique = torch.unique(groups)
        if not 0 < spec.groups < unique.numel():
            raise ValueError(f"cannot forget {spec.groups} groups out of {unique.numel()}")
        chosen = unique[torch.randperm(unique.numel(), generator=g)[: spec.groups]]
        index = torch.nonzero(torch.isin(groups, chosen)).flatten()
    else:
        raise ValueError(f"unknown forget mode {spec.mode!r}")
    if index.numel() >= n:
        raise ValueError("the forget set would contain the whole training set; nothing would be retained")
    return torch.sort(index).values
