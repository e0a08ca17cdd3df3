"""FuseDensePass (passes/dense.py) alone: Gemm and MatMul(+Add) -> kiln.Dense(x, W[K,N], b[N])."""

from __future__ import annotations

import numpy as np
from onnx import helper

from kiln.passes.dense import FuseDensePass
from tests.passes.graphs import attrs, const, const_of, model, node, ops, rng_input, run

rng = np.random.default_rng(2)
X = rng_input((4, 5))


def _dense(m, x):
    """numpy semantics of the kiln.Dense node followed by any remaining standard ops (here: at most an Add)."""
    d = node(m, "Dense")
    y = x @ const_of(d.inputs[1]) + const_of(d.inputs[2])
    adds = [n for n in m.graph if n.op_type == "Add"]
    return y + const_of(adds[0].inputs[1]) if adds else y


def test_matmul_add_becomes_one_dense():
    w, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    m = model([helper.make_node("MatMul", ["x", "w"], ["mm"], name="/fc/MatMul"),
               helper.make_node("Add", ["b", "mm"], ["y"], name="/fc/Add")],
              {"x": (4, 5)}, {"y": (4, 3)}, [const("w", w), const("b", b)])
    ref = run(m, {"x": X})[0]
    assert FuseDensePass()(m).modified
    assert ops(m) == ["kiln.Dense"] and m.opset_imports["kiln"] == 1
    d = node(m, "Dense")
    assert d.name == "/fc/MatMul" and [v.name for v in d.inputs] == ["x", "/fc/MatMul_W", "/fc/MatMul_b"]
    assert d.outputs[0].name == "y" and not attrs(d)
    np.testing.assert_allclose(_dense(m, X), ref, rtol=1e-5, atol=1e-5)


def test_gemm_trans_b_alpha_beta():
    w, c = rng.standard_normal((3, 5)), rng.standard_normal(3)
    m = model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0)],
              {"x": (4, 5)}, {"y": (4, 3)}, [const("w", w), const("c", c)])
    ref = run(m, {"x": X})[0]
    assert FuseDensePass()(m).modified and ops(m) == ["kiln.Dense"]
    np.testing.assert_allclose(const_of(node(m, "Dense").inputs[1]), 0.5 * w.T, rtol=1e-6)
    np.testing.assert_allclose(_dense(m, X), ref, rtol=1e-5, atol=1e-5)


def test_gemm_full_bias_becomes_dense_then_add():
    w, c = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    m = model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm")],
              {"x": (4, 5)}, {"y": (4, 3)}, [const("w", w), const("c", c)])
    ref = run(m, {"x": X})[0]
    assert FuseDensePass()(m).modified and ops(m) == ["kiln.Dense", "Add"]
    np.testing.assert_array_equal(const_of(node(m, "Dense").inputs[2]), np.zeros(3, np.float32))
    assert m.graph.outputs[0].name == "y" and m.graph.outputs[0].producer().op_type == "Add"
    np.testing.assert_allclose(_dense(m, X), ref, rtol=1e-5, atol=1e-5)


def test_matmul_of_two_inputs_stays():
    m = model([helper.make_node("MatMul", ["x", "z"], ["y"])], {"x": (4, 5), "z": (5, 3)}, {"y": (4, 3)})
    assert not FuseDensePass()(m).modified and ops(m) == ["MatMul"]
