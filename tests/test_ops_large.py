"""scl_loss switches from its direct kernel to a BLAS path above 2^23 multiply-adds: check both sides."""
from __future__ import annotations

import pytest
import torch

from unlearnx import ops
from unlearnx.ops import reference


@pytest.mark.skipif(not ops.fused_available(), reason="native extension not built")
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("bf, br, c", [(1024, 1024, 10), (512, 1024, 16), (7, 33, 3)])
def test_scl_loss_matches_reference_on_both_kernels(bf, br, c, dtype, tol):
    g = torch.Generator().manual_seed(bf + br + c)
    f = torch.randn(bf, c, generator=g, dtype=dtype, requires_grad=True)
    r = torch.randn(br, c, generator=g, dtype=dtype, requires_grad=True)
    f_ref, r_ref = f.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    loss = ops.scl_loss(f, r, 1.15)
    expected = reference.scl_loss(f_ref, r_ref, 1.15)
    torch.testing.assert_close(loss, expected, rtol=tol, atol=tol)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(f.grad, f_ref.grad, rtol=tol, atol=tol * 1e-2)
    torch.testing.assert_close(r.grad, r_ref.grad, rtol=tol, atol=tol * 1e-2)
