"""Loading of the native extension: the fallback path when `_C` is missing, build-info checks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from unlearnx import _ext

REPO = Path(__file__).resolve().parents[1]

_FALLBACK_SCRIPT = r"""
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import unlearnx
    from unlearnx import ops, _ext
import torch
from unlearnx.ops import reference
torch.manual_seed(0)
z, t = torch.randn(8, 10, requires_grad=True), torch.full((8, 10), 0.1)
f, r = torch.randn(4, 10), torch.randn(16, 10)
w, s = torch.randn(64), torch.randn(64)
w_ref = w.clone()
loss = ops.bikl_loss(z, t, 0.85)
loss.backward()
mask = ops.masked_reinit_(w, s, 0.3, 0.1, seed=3)
ref_mask = reference.masked_reinit_(w_ref, s, 0.3, 0.1, seed=3)
ext_warnings = [str(x.message) for x in caught if issubclass(x.category, _ext.ExtensionWarning)]
print(json.dumps({
    "fused": ops.fused_available(), "backends": ops.backends(), "warnings": ext_warnings,
    "bikl_equal": bool(torch.equal(loss, reference.bikl_loss(z, t, 0.85))),
    "scl_equal": bool(torch.equal(ops.scl_loss(f, r), reference.scl_loss(f, r))),
    "grad_ok": z.grad is not None,
    "reinit_equal": bool(torch.equal(mask, ref_mask) and torch.equal(w, w_ref)),
    "select_fused": ops.select(True).fused,
}))
"""


def test_fallback_when_extension_disabled():
    env = dict(os.environ, UNLEARNX_DISABLE_EXT="1")
    proc = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["fused"] is False and result["backends"] == {"cpu": False, "cuda": False}
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "UNLEARNX_DISABLE_EXT" in result["warnings"][0] and "pure-PyTorch" in result["warnings"][0]
    assert result["bikl_equal"] and result["scl_equal"] and result["grad_ok"] and result["reinit_equal"]
    assert result["select_fused"] is False


def test_version_mismatch_message(monkeypatch):
    monkeypatch.setattr(_ext, "_BUILD_INFO", {"torch": "0.0.1"})
    assert _ext._version_note() == f"unlearnx._C was built for torch 0.0.1, you have torch {torch.__version__}"
    monkeypatch.setattr(_ext, "_BUILD_INFO", {"torch": torch.__version__})
    assert _ext._version_note() == ""


def test_build_info_and_state_are_consistent():
    info = _ext.build_info()
    if _ext.has_ops():
        assert _ext.load_error() is None
        assert info.get("torch") == torch.__version__, "rebuild: the extension was built against another torch"
        assert json.loads(json.dumps(info)) == info
    else:
        assert _ext.load_error()
