"""What every method shares: the run context, recipe dataclasses, and the registry by name."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from ..training import NullProgress, Progress


@dataclass
class UnlearnContext:
    """Everything a method may use, handed in (nothing global).

    ``retain``/``forget``/``validation`` are ``Batches`` (see :mod:`unlearnx.data.batches`), yielding
    ``(x, y)`` on ``device`` with the harness batch size (64 unless the caller chose otherwise).
    ``ops`` is :func:`unlearnx.ops.select` of the fused or pure-PyTorch implementation. All randomness a
    method draws itself comes from ``generator`` (CPU); layer re-initialisation uses torch's global RNG,
    which the caller seeds from the same seed.
    """

    retain: Any
    forget: Any
    validation: Any = None
    num_classes: int = 10
    ops: Any = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: Progress = field(default_factory=NullProgress)
    amp_dtype: torch.dtype | None = None
    retain_class_counts: list[int] | None = None

    def class_counts(self) -> Tensor:
        """Per-class counts of the retain set (counted once from its labels if not given)."""
        if self.retain_class_counts is None:
            labels = self.retain.labels()
            self.retain_class_counts = torch.bincount(labels.cpu(), minlength=self.num_classes).tolist()
        return torch.tensor(self.retain_class_counts, dtype=torch.float32)

    def randn_like(self, t: Tensor, std: float = 1.0) -> Tensor:
        """Gaussian noise shaped like ``t`` drawn from the context's generator."""
        return (torch.randn(t.shape, generator=self.generator, dtype=torch.float32) * std).to(t.device, t.dtype)

    def randint(self, high: int, size=()) -> Tensor:
        return torch.randint(high, size, generator=self.generator)


@dataclass
class Recipe:
    """Base of every method's recipe: the published defaults as dataclass fields."""

    # A note on which values the sources do not confirm (shown by `unlearnx methods --details`).
    uncertain: ClassVar[str] = ""

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class MethodInfo:
    name: str
    origin: str
    summary: str
    recipe: type[Recipe]
    fn: Callable[[nn.Module, UnlearnContext, Recipe], None]

    def default_recipe(self) -> Recipe:
        return self.recipe()


METHODS: dict[str, MethodInfo] = {}


def register(name: str, *, origin: str, summary: str, recipe: type[Recipe]):
    """Register ``fn(model, ctx, recipe)`` under ``name``; it changes ``model`` in place."""

    def decorator(fn):
        if name in METHODS:
            raise RuntimeError(f"method {name!r} registered twice")
        METHODS[name] = MethodInfo(name=name, origin=origin, summary=summary, recipe=recipe, fn=fn)
        return fn

    return decorator


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def _coerce(value: Any, current: Any, key: str, method: str) -> Any:
    """Turn a command-line string into the type of the recipe's default."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            parsed = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t]
            kind = type(current[0]) if current else float
            return type(current)(kind(v) for v in parsed)
        if current is None:
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return text
    except (ValueError, TypeError):
        raise ValueError(f"{method}: cannot read {key}={value!r} as {type(current).__name__}") from None
    return text


def make_recipe(name: str, overrides: dict[str, Any] | None = None, recipe_file=None) -> Recipe:
    """The default recipe of ``name`` with values from ``recipe_file`` (JSON/TOML) then ``overrides``."""
    info = get_method(name)
    recipe = info.default_recipe()
    values: dict[str, Any] = {}
    if recipe_file is not None:
        path = Path(recipe_file)
        if not path.exists():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        if path.suffix == ".toml":
            import tomllib

            values.update(tomllib.loads(path.read_text()))
        else:
            values.update(json.loads(path.read_text()))
    values.update(overrides or {})
    return apply_overrides(recipe, values, name)


def apply_overrides(recipe, values: dict[str, Any], what: str):
    """A copy of the dataclass ``recipe`` with ``values`` (strings from the command line are converted to
    each field's type); an unknown key is an error that lists the valid ones."""
    valid = {f.name for f in dataclasses.fields(recipe)}
    changes = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in valid:
            raise ValueError(f"{what} has no setting {key!r}; valid settings: {', '.join(sorted(valid))}")
        changes[key] = _coerce(value, getattr(recipe, key), key, what)
    return dataclasses.replace(recipe, **changes)


def parse_overrides(pairs) -> dict[str, str]:
    """``["lr=0.01", "epochs=4"]`` -> ``{"lr": "0.01", "epochs": "4"}``."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def run_method(model: nn.Module, ctx: UnlearnContext, method: str, recipe: Recipe | None = None) -> nn.Module:
    info = get_method(method)
    recipe = recipe or info.default_recipe()
    if not isinstance(recipe, info.recipe):
        raise TypeError(f"{method} needs a {info.recipe.__name__}, got {type(recipe).__name__}")
    if ctx.forget.num_examples == 0:
        raise ValueError("the forget set is empty: nothing to unlearn")
    info.fn(model, ctx, recipe)
    model.eval()
    return model
