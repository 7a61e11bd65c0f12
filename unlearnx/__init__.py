"""unlearnx: machine unlearning for image classifiers.

The NeurIPS 2023 Machine Unlearning competition's best methods and the classical baselines, fused
C++/CUDA losses, the competition's own metric, and benchmarks against pure-PyTorch implementations.

    import unlearnx
    unlearnx.unlearn(net, retain_loader, forget_loader, validation_loader, method="scl")
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402,F401  (loads the native extension, or warns once and falls back)


def unlearn(net, retain_loader, forget_loader, validation_loader=None, method="scl", seed=None,
            fused=True, **overrides):
    """Run unlearning method ``method`` on ``net`` in place and return it.

    Drop-in for the competition harness ``unlearning(net, retain, forget, validation)``: loaders may
    yield ``(x, y)`` tuples or the competition's dicts (``image``, ``age_group``). See
    :func:`unlearnx.api.unlearn` for the full documentation.
    """
    from .api import unlearn as _unlearn

    return _unlearn(net, retain_loader, forget_loader, validation_loader, method=method, seed=seed,
                    fused=fused, **overrides)
