"""Fake (meta) kernels of the native ops, for torch.compile / torch.export / opcheck.

Autograd is registered in C++ (csrc/autograd.cpp) because a Python autograd formula costs tens of
microseconds per call. Everything here is guarded by has_ops(): when ``_C`` is missing the ops do
not exist and registering would break ``import unlearnx``.
"""
from __future__ import annotations

import torch

from .._ext import has_ops


def _acc_dtype(x):
    """The dtype of the fused losses' value and saved gradients: float32 for half/bfloat16 inputs (as eager
    autocast returns these losses; gradients are rounded to the input's dtype after the backward scales them)."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _register() -> None:
    lib = "unlearnx::"

    @torch.library.register_fake(lib + "bikl_loss")
    def _bikl_loss_fake(logits, target, reverse_weight):
        torch._check(logits.dim() == 2, lambda: "bikl_loss: logits must be 2-D")
        torch._check(target.shape == logits.shape, lambda: "bikl_loss: target must have the shape of logits")
        return logits.new_empty((), dtype=_acc_dtype(logits))

    @torch.library.register_fake(lib + "_bikl_loss_fwd")
    def _bikl_loss_fwd_fake(logits, target, reverse_weight):
        torch._check(logits.dim() == 2, lambda: "bikl_loss: logits must be 2-D")
        torch._check(target.shape == logits.shape, lambda: "bikl_loss: target must have the shape of logits")
        return logits.new_empty((), dtype=_acc_dtype(logits)), logits.new_empty(logits.shape, dtype=_acc_dtype(logits))

    @torch.library.register_fake(lib + "_bikl_loss_backward")
    def _bikl_loss_backward_fake(grad_output, grad_logits):
        return grad_logits.new_empty(grad_logits.shape)

    def _check_scl(forget_logits, retain_logits):
        torch._check(forget_logits.dim() == 2 and retain_logits.dim() == 2, lambda: "scl_loss: inputs must be 2-D")
        torch._check(forget_logits.shape[1] == retain_logits.shape[1], lambda: "scl_loss: class counts differ")

    @torch.library.register_fake(lib + "scl_loss")
    def _scl_loss_fake(forget_logits, retain_logits, temperature):
        _check_scl(forget_logits, retain_logits)
        return forget_logits.new_empty((), dtype=_acc_dtype(forget_logits))

    @torch.library.register_fake(lib + "_scl_loss_fwd")
    def _scl_loss_fwd_fake(forget_logits, retain_logits, temperature, grad_forget, grad_retain):
        _check_scl(forget_logits, retain_logits)
        acc = _acc_dtype(forget_logits)
        d_forget = forget_logits.new_empty(forget_logits.shape if grad_forget else (0,), dtype=acc)
        d_retain = forget_logits.new_empty(retain_logits.shape if grad_retain else (0,), dtype=acc)
        return forget_logits.new_empty((), dtype=acc), d_forget, d_retain

    @torch.library.register_fake(lib + "_scl_loss_backward")
    def _scl_loss_backward_fake(grad_output, grad_forget, grad_retain):
        return grad_forget.new_empty(grad_forget.shape), grad_retain.new_empty(grad_retain.shape)

    @torch.library.register_fake(lib + "masked_reinit_")
    def _masked_reinit_fake(weight, scores, fraction, std, largest, seed):
        torch._check(scores.shape == weight.shape, lambda: "masked_reinit_: scores must have the shape of weight")
        return weight.new_empty(weight.shape, dtype=torch.bool)


if has_ops():
    _register()
