"""LayerNorm and GELU fusion on torch exports (opset 13: decomposed; 17: LayerNormalization op).

Both fused and unfused (``fuse=False``) graphs compile and agree with ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.helpers import export_torch, relative_error

import kiln

torch = pytest.importorskip("torch")


class NormGeluBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.ln1 = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16)
        self.l2, self.ln2 = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.ln1(self.l1(x)))
        return self.ln2(torch.nn.functional.gelu(self.l2(h), approximate="tanh"))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    model = NormGeluBlock()
    with torch.no_grad():  # non-trivial affine parameters
        for ln in (model.ln1, model.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    return model


X = np.random.default_rng(0).standard_normal((64, 5, 8)).astype(np.float32)


def lowered_ops(project) -> set[str]:
    return {f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in onnx.load(project.path / "kiln_ir.onnx").graph.node}


@pytest.mark.parametrize("opset", [13, 17])
def test_fused_and_unfused_agree_with_onnxruntime(tmp_path, block, opset):
    path = export_torch(block, torch.zeros(1, 5, 8), tmp_path / "m.onnx", opset=opset)
    fused = kiln.compile(path, output_dir=tmp_path / "fused", precision="float")
    ln = "LayerNormalization" if opset >= 17 else "kiln.LayerNormalization"
    assert lowered_ops(fused) == {"kiln.Dense", "kiln.Gelu", ln}
    assert relative_error(fused.csim(X), fused.reference(X)[0]) <= 1e-5
    unfused = kiln.compile(path, output_dir=tmp_path / "unfused", precision="float", fuse=False)
    assert "Tanh" in lowered_ops(unfused) and "kiln.Gelu" not in lowered_ops(unfused)
    assert relative_error(unfused.csim(X), unfused.reference(X)[0]) <= 1e-5


def test_fused_block_in_fixed_point(tmp_path, block):
    path = export_torch(block, torch.zeros(1, 5, 8), tmp_path / "m.onnx", opset=13)
    project = kiln.compile(path, output_dir=tmp_path / "q", precision="fixed<16,6>")
    err = np.abs(project.csim(X) - project.reference(X)[0])
    # LayerNorm outputs (|y| up to ~4) after two Dense layers, GELU tables and fixed<16,6> (lsb 1e-3)
    assert err.mean() <= 0.005 and err.max() <= 0.05
