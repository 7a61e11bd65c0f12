"""Non-finite weights from a method: an error naming the method, the phase (epoch) where they appeared and
the recipe values most likely to blame, instead of a NaN model evaluated as if it were a result."""
from __future__ import annotations

from torch import nn

# Recipe fields whose size usually decides whether training diverges.
_SUSPECT_WORDS = ("lr", "temperature", "noise", "scale", "alpha", "beta", "gamma", "lambda", "std", "weight")


def first_nonfinite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding NaN/inf, or None."""
    import torch

    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def suspect_values(recipe) -> str:
    values = recipe.as_dict() if hasattr(recipe, "as_dict") else {}
    picked = [f"{k}={v}" for k, v in values.items()
              if any(w in k.split("_") or k.startswith(w) for w in _SUSPECT_WORDS)
              and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(picked) or "none of its numeric values stands out"


class _PhaseWatch:
    """Wraps the context's progress: at the start of each phase (an epoch, a pass) it checks the weights,
    so a divergence is pinned to the phase where it happened, at one check per phase."""

    def __init__(self, inner, model: nn.Module):
        self.inner, self.model = inner, model
        self.phase, self.steps, self.bad, self.bad_phase = "start", 0, None, None

    def start(self, description, total):
        self._check()
        self.phase, self.steps = description, 0
        self.inner.start(description, total)

    def advance(self, n=1):
        self.steps += n
        self.inner.advance(n)

    def _check(self):
        if self.bad is None and self.phase != "start":
            self.bad = first_nonfinite(self.model)
            if self.bad is not None:
                self.bad_phase = (self.phase, self.steps)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_guarded(fn, model: nn.Module, ctx, recipe, method: str) -> None:
    """``fn(model, ctx, recipe)``; raises ``FloatingPointError`` if the weights end non-finite."""
    watch = _PhaseWatch(ctx.progress, model)
    ctx.progress = watch
    try:
        fn(model, ctx, recipe)
    except FloatingPointError as exc:
        raise FloatingPointError(f"{method}: {exc} (at step {watch.steps} of {watch.phase!r}); recipe values "
                                 f"most likely to blame: {suspect_values(recipe)}") from None
    finally:
        ctx.progress = watch.inner
    watch._check()
    bad = watch.bad or first_nonfinite(model)
    if bad is not None:
        phase, steps = watch.bad_phase or (watch.phase, watch.steps)
        raise FloatingPointError(f"{method}: weight {bad} became NaN/inf during {phase!r} (by its step {steps}); "
                                 f"recipe values most likely to blame: {suspect_values(recipe)}")
