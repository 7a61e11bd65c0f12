"""Fused losses and re-initialisation ops (PyTorch custom ops, dispatcher-registered).

``bikl_loss``, ``scl_loss`` and ``masked_reinit_`` run the native kernels of ``unlearnx._C`` when it
is built, and otherwise the pure-PyTorch references in :mod:`unlearnx.ops.reference` (the import
already warned once why). Inputs are validated here, with messages that name the argument;
non-contiguous inputs are made contiguous rather than rejected.

Gradients: ``bikl_loss`` w.r.t. ``logits`` only (``target`` is a constant; a target that requires
grad raises ValueError, pass ``target.detach()``); ``scl_loss`` w.r.t. both inputs. The fused losses
support first-order gradients only (double backward raises).
"""
from __future__ import annotations

import types
import warnings

import torch
from torch import Tensor

from .. import _ext
from . import _registrations  # noqa: F401  (fake kernels, when the ops exist)
from . import reference

__all__ = ["bikl_loss", "scl_loss", "masked_reinit_", "fused_available", "backends", "select", "reference"]

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_BACKENDS = _ext.compiled_backends()
_warned_devices: set[str] = set()
_native_calls = 0  # calls that ran a kernel of unlearnx._C, so reports say "fused" only when one did


def native_calls() -> int:
    """How many op calls in this process ran a native kernel (compare before and after a run)."""
    return _native_calls


def impl_label(fused: bool, native_calls_before: int) -> str:
    """``"fused"`` when fused ops were asked for and a native kernel ran since ``native_calls_before``;
    ``"pytorch"`` otherwise (fused asked for, but ``_C`` missing or the method uses no fused op)."""
    return "fused" if fused and native_calls() > native_calls_before else "pytorch"


def fused_available() -> bool:
    """True when the native ops are loaded (for at least the CPU backend)."""
    return _ext.has_ops()


def backends() -> dict[str, bool]:
    """Which native backends are compiled and loaded, e.g. ``{"cpu": True, "cuda": False}``."""
    return dict(_BACKENDS)


def _use_native(device: torch.device) -> bool:
    kind = device.type
    if kind == "meta":
        return _ext.has_ops()
    if _BACKENDS.get(kind, False):
        global _native_calls
        _native_calls += 1
        return True
    if _ext.has_ops() and kind not in _warned_devices:  # _C is loaded but lacks this backend
        _warned_devices.add(kind)
        warnings.warn(f"unlearnx._C has no {kind} kernels (built without them); using the pure-PyTorch "
                      f"references on {kind}", _ext.ExtensionWarning, stacklevel=3)
    return False


def _check_float_tensor(op: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    allowed = _CUDA_DTYPES if x.device.type in ("cuda", "meta") else _CPU_DTYPES
    if x.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{op}: {name} must have dtype {names} on {x.device.type}, got {x.dtype}")
    return x


def _check_matrix(op: str, name: str, x: object) -> Tensor:
    x = _check_float_tensor(op, name, x)
    if x.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D [batch, classes], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{op}: {name} must be non-empty, got shape {tuple(x.shape)}")
    return x


def _check_same(op: str, name: str, x: Tensor, ref_name: str, ref: Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(f"{op}: {name} is on {x.device} but {ref_name} is on {ref.device}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} has dtype {x.dtype} but {ref_name} has {ref.dtype}")


def _check_number(op: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    return float(value)


def bikl_loss(logits: Tensor, target: Tensor, reverse_weight: float = 1.0) -> Tensor:
    """Bidirectional KL, batch mean, scalar:
    ``sum(t*(log t - log_softmax(z)))/B + reverse_weight * sum(p*(log p - log t))/B``, p = softmax(z).

    ``logits`` [B, C]; ``target`` [B, C] probabilities, a constant (must not require grad). With
    ``reverse_weight=0`` it is KL(target || softmax) (stage 1 of the 1st place with a uniform target).
    With ``reverse_weight > 0`` a target entry of 0 makes the loss infinite, as the formula says.
    float16/bfloat16 inputs (CUDA) give a float32 loss, as under autocast; their gradient comes back in the
    input's dtype, rounded once after ``grad_output`` scales it.
    """
    op = "bikl_loss"
    logits = _check_matrix(op, "logits", logits)
    target = _check_float_tensor(op, "target", target)
    if target.shape != logits.shape:
        raise ValueError(f"{op}: target must have the shape of logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    _check_same(op, "target", target, "logits", logits)
    if target.requires_grad:
        raise ValueError(f"{op}: target must not require grad (it is a constant probability table); "
                         "pass target.detach()")
    w = _check_number(op, "reverse_weight", reverse_weight)
    if not _use_native(logits.device):
        return reference.bikl_loss(logits, target, w)
    return torch.ops.unlearnx.bikl_loss.default(logits.contiguous(), target.contiguous(), w)


def scl_loss(forget_logits: Tensor, retain_logits: Tensor, temperature: float = 1.15) -> Tensor:
    """1st-place contrastive forget loss, scalar: ``mean(-log_softmax(F @ R.T / temperature, dim=1))``
    over the [B_f, B_r] similarity matrix. Gradients flow to both inputs (detach ``retain_logits`` as
    the 1st place does to train on the forget batch only). float16/bfloat16 inputs (CUDA) give a float32
    loss, as under autocast."""
    op = "scl_loss"
    forget_logits = _check_matrix(op, "forget_logits", forget_logits)
    retain_logits = _check_matrix(op, "retain_logits", retain_logits)
    if retain_logits.shape[1] != forget_logits.shape[1]:
        raise ValueError(f"{op}: retain_logits has {retain_logits.shape[1]} classes but forget_logits has "
                         f"{forget_logits.shape[1]} (shapes {tuple(retain_logits.shape)} and "
                         f"{tuple(forget_logits.shape)})")
    _check_same(op, "retain_logits", retain_logits, "forget_logits", forget_logits)
    t = _check_number(op, "temperature", temperature)
    if not t > 0:
        raise ValueError(f"{op}: temperature must be > 0, got {temperature}")
    if not _use_native(forget_logits.device):
        return reference.scl_loss(forget_logits, retain_logits, t)
    return torch.ops.unlearnx.scl_loss.default(forget_logits.contiguous(), retain_logits.contiguous(), t)


def masked_reinit_(weight: Tensor, scores: Tensor, fraction: float, std: float, *, largest: bool = False,
                   seed: int | None = None) -> Tensor:
    """Re-initialise in place, with N(0, std^2), the ``round(fraction * weight.numel())`` entries of
    ``weight`` with the smallest ``scores`` (the largest if ``largest``); all other entries stay
    bit-identical. Returns the bool mask of re-initialised entries (shape of ``weight``).

    Selection is O(n) (nth_element on CPU, radix select on CUDA). Exactly k entries are selected:
    ties at the threshold are taken in flat index order, -0.0 equals +0.0, NaN ranks above +inf.
    ``seed=None`` draws from the default generator of weight's device (follows ``torch.manual_seed``);
    an int seed gives a reproducible result: the k values are drawn in one ``normal_`` call in the weight's
    dtype and written in index order, as :func:`reference.masked_reinit_` does, so both give the same
    weights for a seed. Not differentiable (runs under no_grad).
    """
    op = "masked_reinit_"
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise TypeError(f"{op}: weight must be a floating-point torch.Tensor, got "
                        f"{weight.dtype if isinstance(weight, Tensor) else type(weight).__name__}")
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(f"{op}: scores must be a floating-point torch.Tensor, got "
                        f"{scores.dtype if isinstance(scores, Tensor) else type(scores).__name__}")
    _check_float_tensor(op, "weight", weight)
    _check_float_tensor(op, "scores", scores)
    if scores.shape != weight.shape:
        raise ValueError(f"{op}: scores must have the shape of weight {tuple(weight.shape)}, got "
                         f"{tuple(scores.shape)}")
    if scores.device != weight.device:
        raise ValueError(f"{op}: scores is on {scores.device} but weight is on {weight.device}")
    fraction = _check_number(op, "fraction", fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{op}: fraction must be in [0, 1], got {fraction}")
    std = _check_number(op, "std", std)
    if not std >= 0.0:
        raise ValueError(f"{op}: std must be >= 0, got {std}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"{op}: seed must be None or an int in [0, 2**63), got {seed!r}")
    with torch.no_grad():
        if not _use_native(weight.device):
            return reference.masked_reinit_(weight, scores, fraction, std, largest=largest, seed=seed)
        scores = scores.detach().contiguous()
        if weight.is_contiguous():
            return torch.ops.unlearnx.masked_reinit_.default(weight, scores, fraction, std, bool(largest), seed)
        dense = weight.contiguous()  # the kernel writes a dense buffer; copy back keeps the in-place contract
        mask = torch.ops.unlearnx.masked_reinit_.default(dense, scores, fraction, std, bool(largest), seed)
        weight.copy_(dense)
        return mask


def select(fused: bool = True) -> types.SimpleNamespace:
    """The three ops as a namespace: the fused wrappers (``fused=True``; they fall back to the references
    when ``_C`` is unavailable) or :mod:`unlearnx.ops.reference` (``fused=False``)."""
    source = (bikl_loss, scl_loss, masked_reinit_) if fused else (
        reference.bikl_loss, reference.scl_loss, reference.masked_reinit_)
    return types.SimpleNamespace(bikl_loss=source[0], scl_loss=source[1], masked_reinit_=source[2],
                                 fused=bool(fused) and fused_available())
