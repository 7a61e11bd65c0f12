"""What every method shares: the run context, recipe dataclasses, and the registry by name."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from ..layers import check_roles, model_roles, roles_needed
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


@dataclass(frozen=True)
class Rule:
    """A range rule for one recipe field: ``rule(value)`` is None when ``value`` passes, else the phrase
    it breaks (">= 1"), which the recipe turns into "<method>: <field> must be >= 1, got 0".

    ``bad_values`` are values that break the rule (the tests use them to prove every rule is in force).
    """

    phrase: str
    passes: Callable[[Any], bool]
    bad_values: tuple = ()

    def __call__(self, value) -> str | None:
        return None if self.passes(value) else self.phrase


def _noted(phrase: str, note: str) -> str:
    return f"{phrase} ({note})" if note else phrase


def at_least(n, note: str = "") -> Rule:
    return Rule(_noted(f">= {n}", note), lambda v: v >= n, (n - 1,))


def greater_than(n, note: str = "") -> Rule:
    return Rule(_noted(f"> {n}", note), lambda v: v > n, (n, n - 1))


def in_range(lo, hi, closed: tuple[bool, bool] = (True, True)) -> Rule:
    """``lo <= v <= hi``; ``closed=(True, False)`` is [lo, hi), and so on."""
    left, right = closed

    def passes(v):
        return (lo <= v if left else lo < v) and (v <= hi if right else v < hi)

    phrase = f"in {'[' if left else '('}{lo}, {hi}{']' if right else ')'}"
    open_ends = (() if left else (lo,)) + (() if right else (hi,))
    return Rule(phrase, passes, (lo - 1, hi + 1) + open_ends)


def one_of(*choices) -> Rule:
    names = [repr(c) for c in choices]
    phrase = " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]
    return Rule(phrase, lambda v: v in choices, ("nope",))


def each(rule: Rule, non_empty: bool = False) -> Rule:
    """Every entry of a list/tuple field passes ``rule`` (and there is one at least, if ``non_empty``)."""
    phrase = f"a {'non-empty ' if non_empty else ''}list of values {rule.phrase}"

    def passes(values):
        return (len(values) > 0 or not non_empty) and all(rule.passes(v) for v in values)

    return Rule(phrase, passes, tuple((bad,) for bad in rule.bad_values) + (((),) if non_empty else ()))


BATCHES_AS_GIVEN = "0 keeps the given batches"

# Rules for fields that many recipes share, by field name; a recipe's own ``limits`` add to or override these.
COMMON_LIMITS: dict[str, Rule] = {
    "epochs": at_least(1),
    "lr": greater_than(0),
    "momentum": in_range(0, 1, closed=(True, False)),
    "weight_decay": at_least(0),
    "retain_weight_decay": at_least(0),
    "retain_batch_size": at_least(0, BATCHES_AS_GIVEN),
    "forget_batch_size": at_least(0, BATCHES_AS_GIVEN),
    "temperature": greater_than(0),
}


@dataclass
class Recipe:
    """Base of every method's recipe: the published defaults as dataclass fields.

    Every recipe is validated when it is built (constructor, ``replace``, :func:`make_recipe`): each
    field with a rule in :data:`COMMON_LIMITS` or in the ``limits`` of the class or its bases, then the
    class's :meth:`check` for rules that join several fields.
    """

    # Provenance, shown by `unlearnx methods --details/--json` (see :func:`describe`): the write-up /
    # repository and file the recipe follows; what the sources leave open; every intentional difference
    # from the source with its reason (empty where faithful).
    source: ClassVar[str] = ""
    uncertain: ClassVar[str] = ""
    deviations: ClassVar[tuple[str, ...]] = ()
    # Range rules for this class's fields, beyond or instead of COMMON_LIMITS (merged along the MRO).
    limits: ClassVar[dict[str, Rule]] = {}
    # The method's name for error messages; set by `register` on each recipe class.
    method_name: ClassVar[str] = ""
    # Changes to the published values for the embedded digits demo (preset "digits"). Published recipes
    # assume CIFAR-10-sized epochs (~370 batches); digits has ~20, so methods that re-initialise or
    # perturb weights get too few steps to recover at the published values. Measured in bench/results.
    digits_demo: ClassVar[dict[str, Any]] = {}
    # Float fields that may be inf/nan (every other float field must be finite).
    allow_nonfinite: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self):
        from ..typed import coerce_fields

        # A class's own name only: a registered base's name must not stand for an unregistered subclass.
        method = vars(type(self)).get("method_name") or type(self).__name__
        coerce_fields(self, method, self.allow_nonfinite)  # types from the annotations, before the rules
        for key, rule in self.rules().items():
            value = getattr(self, key)
            try:
                broken = rule(value)
            except TypeError:  # a value of the wrong kind (e.g. a list from a JSON recipe file)
                broken = rule.phrase
            if broken:
                shown = repr(value) if isinstance(value, str) else value
                raise ValueError(f"{method}: {key} must be {broken}, got {shown}")
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ``ValueError(f"{self.method_name}: ...")``. None by default."""

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """{field: rule} for this recipe: COMMON_LIMITS for the fields it has, then ``limits`` along the MRO."""
        fields = {f.name for f in dataclasses.fields(cls)}
        rules = {key: rule for key, rule in COMMON_LIMITS.items() if key in fields}
        for klass in reversed(cls.__mro__):
            rules.update(vars(klass).get("limits", {}))
        unknown = sorted(set(rules) - fields)
        if unknown:
            raise TypeError(f"{cls.__name__}.limits names {', '.join(unknown)}, which it has no field for")
        return rules

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
        if vars(recipe).get("method_name", name) != name:
            raise RuntimeError(f"{recipe.__name__} is already the recipe of {recipe.method_name!r}; "
                               f"give {name!r} a subclass of its own")
        recipe.method_name = name  # error messages name the method
        METHODS[name] = MethodInfo(name=name, origin=origin, summary=summary, recipe=recipe, fn=fn)
        return fn

    return decorator


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


# "published": the recipe dataclass defaults; "digits": those with the class's `digits_demo` changes.
PRESETS = ("published", "digits")


def preset_for(source_kind: str | None) -> str:
    """The preset a run on data of ``source_kind`` (see :func:`unlearnx.data.detect_source`) starts from."""
    return "digits" if source_kind == "digits" else "published"


def preset_changes(name: str, preset: str = "published") -> dict[str, Any]:
    """{field: value} that ``preset`` changes in the published recipe of ``name``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown recipe preset {preset!r}; available: {', '.join(PRESETS)}")
    return dict(get_method(name).recipe.digits_demo) if preset == "digits" else {}


def describe(name: str) -> dict[str, Any]:
    """A method's provenance as plain data: origin, summary, source, recipe (every default), presets
    ({preset: its changes}), uncertain, deviations. One source for `methods --json` and `--details`."""
    info = get_method(name)
    recipe = info.recipe
    return {"name": name, "origin": info.origin, "summary": info.summary, "source": recipe.source,
            "recipe": info.default_recipe().as_dict(),
            "presets": {preset: preset_changes(name, preset) for preset in PRESETS},
            "uncertain": recipe.uncertain, "deviations": list(recipe.deviations)}


def make_recipe(name: str, overrides: dict[str, Any] | None = None, recipe_file=None,
                preset: str = "published") -> Recipe:
    """The recipe of ``name``: the published defaults, changed by ``preset`` ("published" or "digits"),
    then by values from ``recipe_file`` (JSON/TOML), then by ``overrides``."""
    info = get_method(name)
    recipe = info.default_recipe()
    values: dict[str, Any] = preset_changes(name, preset)
    if recipe_file is not None:
        path = Path(recipe_file)
        values.update(read_recipe_file(path))
    values.update(overrides or {})
    return apply_overrides(recipe, values, name)


def read_recipe_file(path: Path) -> dict[str, Any]:
    """{setting: value} from a .json or .toml file, with errors that name the file."""
    if not path.exists():
        raise FileNotFoundError(f"recipe file {path} does not exist")
    if path.suffix not in (".json", ".toml"):
        raise ValueError(f"recipe file {path}: use a .json or .toml file, not {path.suffix or 'no extension'}")
    try:
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ValueError(f"recipe file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"recipe file {path} must hold a table of settings (e.g. {{\"epochs\": 4}}), "
                         f"not a {type(values).__name__}")
    return values


def apply_overrides(recipe, values: dict[str, Any], what: str):
    """A copy of the dataclass ``recipe`` with ``values`` converted to each field's annotated type (see
    :mod:`unlearnx.typed`: strings from the command line, JSON/TOML values and Python objects alike); an
    unknown key is an error that lists the valid ones."""
    from ..typed import coerce, field_types

    types = field_types(type(recipe))
    nonfinite = getattr(recipe, "allow_nonfinite", frozenset())
    changes = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in types:
            raise ValueError(f"{what} has no setting {key!r}; valid settings: {', '.join(sorted(types))}")
        changes[key] = coerce(value, types[key], what=what, key=key, allow_nonfinite=key in nonfinite)
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


def check_model(model: nn.Module, ctx: UnlearnContext, method: str, needs=()) -> None:
    """Before any work: the model runs on the data and gives one logit per class, and has the layer roles
    (see :mod:`unlearnx.layers`) that ``method`` needs."""
    if isinstance(model, torch.jit.ScriptModule):  # cannot be traced with hooks: only methods needing no roles
        if needs:
            check_roles(model, method, needs, ctx.retain)
        return
    width = model_roles(model, ctx.retain).num_classes
    if width != ctx.num_classes:
        raise ValueError(f"the model outputs {width} logits per example, but the data has {ctx.num_classes} classes")
    check_roles(model, method, needs, ctx.retain)


def run_method(model: nn.Module, ctx: UnlearnContext, method: str, recipe: Recipe | None = None) -> nn.Module:
    info = get_method(method)
    recipe = recipe or info.default_recipe()
    if not isinstance(recipe, info.recipe):
        raise TypeError(f"{method} needs a {info.recipe.__name__}, got {type(recipe).__name__}")
    if ctx.forget.num_examples == 0:
        raise ValueError("the forget set is empty: nothing to unlearn")
    check_model(model, ctx, method, roles_needed(info.fn, recipe))
    from .nan_guard import run_guarded

    run_guarded(info.fn, model, ctx, recipe, method)  # NaN/inf weights: an error naming phase and recipe values
    model.eval()
    return model
