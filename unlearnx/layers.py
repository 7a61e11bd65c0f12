"""The roles layers play in a classifier, found from its module graph rather than from attribute names.

Several recipes touch particular layers: the input stem (3rd place adds noise to it, 6th resets it), the
classifier head (6th and 7th reset it), normalisation layers, and projection shortcuts (8th keeps them
out of its re-initialisation pool). :func:`model_roles` finds them for any ``nn.Module`` by running one
forward pass on an example input with hooks:

- **stem**: the first convolution or linear layer the input meets (a ResNet's ``conv1``, a MobileNet's
  first conv, a vision transformer's patch embedding);
- **head**: the last ``nn.Linear`` executed whose output has the shape of the logits (``fc``,
  ``classifier.3``, ``heads.head``);
- **norms**: BatchNorm / InstanceNorm / LayerNorm / GroupNorm layers;
- **shortcuts**: the layers on the shorter branch of a residual addition, when that branch has layers of
  its own (a ResNet's ``downsample`` conv and BN); identity shortcuts have none.

On torchvision's ResNets and the small ResNet these are exactly ``conv1``, ``fc``, the ``bn*`` layers and
the ``downsample`` layers that the recipes were written against.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
WEIGHT_TYPES: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear)

# What each role means, for error messages and the README.
ROLE_TEXT = {
    "stem": "an input stem (the first conv or patch embedding the input meets)",
    "head": "a classifier head (a last nn.Linear whose output is the logits)",
    "convs": "Conv2d layers",
    "square_convs": "Conv2d layers whose kernels are all square",
    "weights": "Conv/Linear layers",
    "reinit_pool": "Conv/Linear layers outside the head and the projection shortcuts",
    "resettable": "a reset_parameters() on every module holding parameters",
}


@dataclass(frozen=True)
class ModelRoles:
    """Module names (as in ``model.named_modules()``) by role; ``None``/empty where the model has none."""

    stem: str | None
    head: str | None
    norms: tuple[str, ...]
    shortcuts: tuple[str, ...]
    executed: tuple[str, ...]     # modules with parameters, in the order the forward pass ran them
    num_classes: int | None       # width of the logits

    def module(self, model: nn.Module, name: str) -> nn.Module:
        return model.get_submodule(name)

    def main_path_norms(self) -> tuple[str, ...]:
        """Normalisation layers outside projection shortcuts (a ResNet's ``bn*``, not ``downsample.1``)."""
        return tuple(n for n in self.norms if n not in self.shortcuts)

    def reinit_pool(self, model: nn.Module, include_norms: bool = False) -> list[tuple[str, nn.Module]]:
        """Layers a random re-initialisation may reset: every conv and linear layer (and, if asked, every
        normalisation layer) outside the head and the projection shortcuts, in model order."""
        kinds = WEIGHT_TYPES + (NORM_TYPES if include_norms else ())
        skip = set(self.shortcuts) | ({self.head} if self.head else set())
        return [(name, m) for name, m in model.named_modules()
                if isinstance(m, kinds) and name not in skip and hasattr(m, "reset_parameters")]


# Roles per model, recomputed when the model's structure changes (cheap to compare, costly to trace).
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, ModelRoles]]" = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    return tuple((name, type(m).__name__) for name, m in model.named_modules())


def model_roles(model: nn.Module, example=None) -> ModelRoles:
    """The roles of ``model``'s layers (see the module docstring).

    ``example`` is an input batch (a Tensor) or a ``Batches`` whose first batch is used without drawing any
    randomness; without one, an input is guessed from the first layer (``[2, C, 32, 32]``, then other common sizes).
    """
    structure = _structure(model)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == structure:
        return cached[1]
    _refuse_script(model)
    x = example_input(example) if example is not None else None
    roles = _trace(model, x) if x is not None else _trace_guessing(model)
    _CACHE[model] = (structure, roles)
    return roles


def _refuse_script(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("a TorchScript model's layers cannot be traced: load its weights into the Python model "
                         "class instead to use a method that needs layer roles")


def example_input(example) -> Tensor:
    """A small input batch from a Tensor or from ``Batches`` (first examples, no shuffling, no RNG use)."""
    if isinstance(example, Tensor):
        return example[:2]
    from .data.batches import TensorBatches

    with torch.random.fork_rng(devices=[]):
        batches = example.rebatch(2, shuffle=False) if isinstance(example, TensorBatches) else example
        try:
            x, _ = next(iter(batches))
        except StopIteration:
            raise ValueError("cannot find the model's layer roles: the data has no batches") from None
    return x[:2]


def _trace_guessing(model: nn.Module) -> ModelRoles:
    first = next((m for m in model.modules() if isinstance(m, WEIGHT_TYPES)), None)
    param = next(model.parameters(), None)
    if first is None or param is None:
        raise ValueError("cannot find the model's layer roles: it has no conv or linear layer")
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    if isinstance(first, nn.Linear):
        shapes = [(2, first.in_features)]
    else:
        channels = first.in_channels
        shapes = [(2, channels) + (size,) * (first.weight.dim() - 2) for size in (32, 16, 28, 64, 224)]
    error = None
    for shape in shapes:
        try:
            return _trace(model, torch.zeros(shape, dtype=dtype, device=param.device))
        except Exception as exc:  # a guessed size the model does not take: try the next
            error = exc
    raise ValueError(f"cannot find the model's layer roles: no guessed input shape runs through it ({error})")


class _Recorder(TorchFunctionMode):
    """Remembers which operation produced each tensor (and from which input), and every addition of two
    same-shaped tensors (candidate residual joins)."""

    ADDS = {torch.add, Tensor.add, Tensor.add_, Tensor.__add__, Tensor.__iadd__, Tensor.__radd__}

    def __init__(self):
        super().__init__()
        self.producer: dict[int, tuple[str | None, Tensor]] = {}
        self.adds: list[tuple[Tensor, Tensor]] = []
        self.alive: list[Tensor] = []  # keeps every tensor seen alive so ids are not reused

    def note(self, output, source: Tensor | None, module: str | None) -> None:
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(out, Tensor) and isinstance(source, Tensor) and out is not source:
            self.alive += [out, source]
            self.producer[id(out)] = (module, source)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        tensors = [a for a in args if isinstance(a, Tensor)]
        if func in self.ADDS and len(tensors) == 2 and tensors[0].shape == tensors[1].shape:
            self.alive += tensors
            self.adds.append((tensors[0], tensors[1]))
        if tensors and id(result) not in self.producer:
            self.note(result, tensors[0], None)
        return result

    def path(self, t: Tensor) -> list[tuple[int, str | None]]:
        """(tensor id, module that produced it or None) from ``t`` back to the first tensor with no record."""
        out, seen = [], set()
        while id(t) not in seen:
            seen.add(id(t))
            entry = self.producer.get(id(t))
            out.append((id(t), entry[0] if entry else None))
            if entry is None:
                break
            t = entry[1]
        return out


def _shortcut_modules(rec: _Recorder) -> set[str]:
    """Layers on the shorter branch of each residual addition, when both branches have layers."""
    found: set[str] = set()
    for a, b in rec.adds:
        path_a, path_b = rec.path(a), rec.path(b)
        index_a = {tid: i for i, (tid, _) in enumerate(path_a)}
        fork = next(((i, index_a[tid]) for i, (tid, _) in enumerate(path_b) if tid in index_a), None)
        if fork is None:
            continue
        branch_b = [m for _, m in path_b[:fork[0]] if m]
        branch_a = [m for _, m in path_a[:fork[1]] if m]
        short, long_ = sorted((branch_a, branch_b), key=len)
        if short and len(short) < len(long_):
            found.update(short)
    return found


def _eager():
    """Compiled modules run their Python forward inside (torch < 2.6 cannot, and is refused --compile)."""
    import contextlib

    stance = getattr(torch.compiler, "set_stance", None)
    return stance("force_eager") if stance is not None else contextlib.nullcontext()


def _trace(model: nn.Module, x: Tensor) -> ModelRoles:
    rec = _Recorder()
    executed: list[str] = []
    outputs: dict[str, Tensor] = {}
    units = [(name, m) for name, m in model.named_modules()
             if name and (not list(m.children()) or list(m.parameters(recurse=False)))]

    def hook_for(name):
        def hook(module, inputs, output):
            source = next((i for i in inputs if isinstance(i, Tensor)), None)
            rec.note(output, source, name)
            if name not in outputs and list(module.parameters(recurse=False)):
                executed.append(name)
                out = output[0] if isinstance(output, (tuple, list)) else output
                if isinstance(out, Tensor):
                    outputs[name] = out
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in units]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        # Eagerly: hooks and the function mode must see every call (a compiled model would fuse them away).
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _eager(), rec:
            logits = model(x)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the model does not run on an input of shape {tuple(x.shape)}: {first}") from None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape [batch, classes], got {shape}")
    modules = dict(model.named_modules())
    stem = next((n for n in executed if isinstance(modules[n], WEIGHT_TYPES)), None)
    head = next((n for n in reversed(executed) if isinstance(modules[n], nn.Linear)
                 and outputs[n].shape == logits.shape), None)
    norms = tuple(n for n, m in model.named_modules() if isinstance(m, NORM_TYPES))
    shortcuts = _shortcut_modules(rec)
    return ModelRoles(stem=stem, head=head, norms=norms,
                      shortcuts=tuple(n for n in modules if n in shortcuts),
                      executed=tuple(executed), num_classes=int(logits.shape[1]))


def missing_roles(model: nn.Module, needs, example=None) -> list[str]:
    """The entries of ``needs`` (keys of :data:`ROLE_TEXT`) that ``model`` lacks."""
    needs = tuple(needs)
    if not needs:
        return []
    _refuse_script(model)  # its submodules are not nn.Conv2d etc., so every role would look missing
    roles = model_roles(model, example) if {"stem", "head", "reinit_pool"} & set(needs) else None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    have = {
        "stem": lambda: roles.stem is not None,
        "head": lambda: roles.head is not None,
        "convs": lambda: bool(convs),
        "square_convs": lambda: bool(convs) and all(m.weight.shape[2] == m.weight.shape[3] for m in convs),
        "weights": lambda: any(isinstance(m, WEIGHT_TYPES) for m in model.modules()),
        "reinit_pool": lambda: bool(roles.reinit_pool(model)),
        "resettable": lambda: not unresettable(model),
    }
    return [need for need in needs if not have[need]()]


def reset_function(module: nn.Module):
    """``module.reset_parameters`` (or ``_reset_parameters``, as nn.MultiheadAttention names it), or None."""
    for name in ("reset_parameters", "_reset_parameters"):
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def unresettable(model: nn.Module) -> list[str]:
    """Modules that hold parameters of their own but have no ``reset_parameters()``."""
    return [name or type(model).__name__ for name, m in model.named_modules()
            if list(m.parameters(recurse=False)) and reset_function(m) is None]


def needs_roles(*roles):
    """Declare the roles a method's function needs: ``@needs_roles("stem", "head")`` above its definition,
    or one function of the recipe returning them (``@needs_roles(lambda r: ("head",) if r.reset_fc else ())``).
    :func:`unlearnx.methods.run_method` checks them before any work."""
    if not (len(roles) == 1 and callable(roles[0])):
        unknown = [r for r in roles if r not in ROLE_TEXT]
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLE_TEXT)}")

    def decorator(fn):
        fn.roles_needed = roles[0] if len(roles) == 1 and callable(roles[0]) else tuple(roles)
        return fn

    return decorator


def roles_needed(fn, recipe) -> tuple[str, ...]:
    """The roles a method function declared with :func:`needs_roles`, for this recipe."""
    needs = getattr(fn, "roles_needed", ())
    return tuple(needs(recipe)) if callable(needs) else tuple(needs)


def check_roles(model: nn.Module, method: str, needs, example=None) -> None:
    """Refuse, in one line naming what is missing, a model that lacks a role ``method`` needs."""
    try:
        missing = missing_roles(model, needs, example)
    except ValueError as exc:  # the model could not be traced: say which method needed it
        raise ValueError(f"{method}: {exc}") from None
    if missing:
        what = "; ".join(ROLE_TEXT[m] for m in missing)
        if "resettable" in missing:
            what += f" (these have none: {', '.join(unresettable(model)[:3])})"
        raise ValueError(f"{method} needs {what}, which this model lacks")
