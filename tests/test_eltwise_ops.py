"""Element-wise Sin, Cos (kiln::unary_math), Min/Max (variadic, broadcasting: a chain of
kiln::binary calls), Mod (fmod=1), Where (constant condition, kiln::select) against ONNX
Runtime, in float and fixed point; and SiLU (x * Sigmoid(x), torch.nn.SiLU's opset-17
export) computed by the existing Sigmoid and Mul layers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln

RNG = np.random.default_rng(5)
X = (2 * RNG.standard_normal((4, 3, 6))).astype(np.float32)
Z = (2 * RNG.standard_normal((4, 3, 6))).astype(np.float32)
C = RNG.standard_normal((3, 1)).astype(np.float32)        # broadcast over the last axis
COND = RNG.integers(0, 2, (1, 6)).astype(bool)            # broadcast over N and the middle axis
DIVISOR = np.array([1.5, -0.75, 2.0, -3.0, 0.5, 1.25], np.float32)
OUTS = ("sin", "cos", "min3", "max2", "max1", "where", "mod")


def eltwise_model():
    """x, z [N,3,6] -> sin(x), cos(x), min(x, z, C), max(x, z), max(x), where(COND, x, z), fmod(x, DIVISOR)."""
    nodes = [h.make_node("Sin", ["x"], ["sin"]), h.make_node("Cos", ["x"], ["cos"]),
             h.make_node("Min", ["x", "z", "c"], ["min3"]), h.make_node("Max", ["x", "z"], ["max2"]),
             h.make_node("Max", ["x"], ["max1"]), h.make_node("Where", ["cond", "x", "z"], ["where"]),
             h.make_node("Mod", ["x", "d"], ["mod"], fmod=1)]
    inits = [nh.from_array(C, "c"), nh.from_array(COND, "cond"), nh.from_array(DIVISOR, "d")]
    ins = [h.make_tensor_value_info(n, T.FLOAT, ["N", 3, 6]) for n in ("x", "z")]
    outs = [h.make_tensor_value_info(n, T.FLOAT, ["N", 3, 6]) for n in OUTS]
    return h.make_model(h.make_graph(nodes, "g", ins, outs, inits), opset_imports=[h.make_opsetid("", 17)],
                        ir_version=10)


def test_float_matches_onnxruntime(tmp_path):
    project = kiln.compile(eltwise_model(), output_dir=tmp_path / "p", precision="float")
    got, ref = project.csim([X, Z], return_all=True), project.reference([X, Z])
    for name, y, r in zip(OUTS, got, ref):
        np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6, err_msg=name)


def test_fixed_point_within_the_bound_of_its_bit_widths(tmp_path):
    """fixed<20,6> (14 fractional bits, truncation): inputs and constants are off by < 1 LSB;
    min/max/where pick one of them, exactly representable in the output type (< 1 LSB);
    sin/cos (slope <= 1, evaluated in float) add the output's truncation (< 2 LSB). Mod is
    left out: fmod jumps by the divisor where x crosses a multiple of it, so a 1-LSB input
    error has no bound on the output there."""
    project = kiln.compile(eltwise_model(), output_dir=tmp_path / "p", precision="fixed<20,6>")
    got, ref = project.csim([X, Z], return_all=True), project.reference([X, Z])
    lsb = 2.0 ** -14
    for name, y, r in zip(OUTS, got, ref):
        if name == "mod":
            continue
        err = np.abs(y.astype(np.float64) - r)
        assert err.max() < (2 if name in ("sin", "cos") else 1) * lsb, (name, float(err.max()))
        assert err.max() > 0, name  # computed in fixed point
    # the overflow-counting variant renames the output in every call of the Min chain (which
    # reads its running result in place): the same outputs, no value out of range
    wide, rows = project.csim_overflow([X, Z])
    for name, y, w in zip(OUTS, got, wide):
        np.testing.assert_array_equal(y, w, err_msg=name)
    assert rows and all(r["count"] == 0 for r in rows), rows


def test_where_with_a_runtime_condition_matches_onnxruntime(tmp_path):
    """Where on a mask computed at run time (Less): refused before bool tensors were layer
    ports (issue 12); now a bool tensor feeds kiln::select (tests/test_logic_ops.py has more)."""
    graph = h.make_graph([h.make_node("Less", ["x", "z"], ["m"]), h.make_node("Where", ["m", "x", "z"], ["y"])],
                         "g", [h.make_tensor_value_info(n, T.FLOAT, ["N", 6]) for n in ("x", "z")],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 6])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    project = kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    x, z = X.reshape(-1, 6), Z.reshape(-1, 6)
    np.testing.assert_allclose(project.csim([x, z]), np.minimum(x, z), rtol=0, atol=0)


@pytest.mark.parametrize("precision,tol", [("float", 1e-5), ("fixed<18,8>", 2.0 ** -7)])
def test_torch_silu_export_is_sigmoid_times_x(tmp_path, precision, tol):
    """torch.nn.SiLU at opset 17 exports Sigmoid + Mul; fixed<18,8> (10 fractional bits):
    the table sigmoid is accurate to ~2^-10 and x * sigmoid(x) scales that by |x| <= 4,
    so the error stays below 2^-7 (relative to the output scale)."""
    import onnx
    import torch

    from tests.helpers import export_torch, relative_error

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = torch.nn.Linear(8, 8), torch.nn.SiLU()

        def forward(self, x):
            return self.act(self.fc(x))

    torch.manual_seed(0)
    path = export_torch(Block().eval(), torch.zeros(1, 8), tmp_path / "silu.onnx", opset=17)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Sigmoid" in ops and "Mul" in ops, ops
    x = RNG.uniform(-2, 2, (16, 8)).astype(np.float32)
    project = kiln.compile(path, output_dir=tmp_path / "p", precision=precision)
    got, (ref,) = project.csim(x), project.reference(x)
    if precision == "float":
        np.testing.assert_allclose(got, ref, rtol=tol, atol=1e-6)
    else:
        assert relative_error(got, ref) < tol
