"""Comparisons, And/Or/Xor, Not, Cast and Where with a run-time condition (bool tensors as C++
``bool``) against ONNX Runtime, in float and in fixed point; and constant comparisons folded
at compile time instead of becoming layers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln

RNG = np.random.default_rng(12)
N, W = 16, 8
# x on a grid of 1/16 (exact in fixed<16,6>: 10 fractional bits); z equals x at about a third of
# the positions (Equal is true there) and differs by a multiple of 1/16 elsewhere; the thresholds
# lie halfway between grid points, so no comparison is a tie.
X = (RNG.integers(-80, 80, (N, W)) / 16).astype(np.float32)
Z = np.where(RNG.random((N, W)) < 0.35, X, X + RNG.integers(-8, 9, (N, W)) / 16).astype(np.float32)
THRESH = ((RNG.integers(-40, 40, W) + 0.5) / 16).astype(np.float32)
OUTS = ("both", "eq", "diff", "masked", "weighted", "truncated", "le", "gt")


def logic_model():
    """x, z [N,8] -> And/Or/Xor/Not of comparisons, Where on a computed mask, Cast both ways."""
    nodes = [
        h.make_node("Less", ["x", "t"], ["lt"]),
        h.make_node("GreaterOrEqual", ["x", "z"], ["ge"]),
        h.make_node("And", ["lt", "ge"], ["both"]),
        h.make_node("Not", ["ge"], ["not_ge"]),
        h.make_node("Or", ["lt", "not_ge"], ["either"]),
        h.make_node("Xor", ["lt", "ge"], ["diff"]),
        h.make_node("Equal", ["x", "z"], ["eq"]),
        h.make_node("Where", ["both", "x", "z"], ["masked"]),
        h.make_node("Cast", ["either"], ["either_f"], to=T.FLOAT),
        h.make_node("Mul", ["either_f", "x"], ["gated"]),
        h.make_node("Add", ["gated", "z"], ["weighted"]),
        h.make_node("Cast", ["x"], ["x_int"], to=T.INT64),    # toward zero: -2.5 -> -2
        h.make_node("Cast", ["x_int"], ["truncated"], to=T.FLOAT),
        h.make_node("LessOrEqual", ["x", "t"], ["le"]),
        h.make_node("Greater", ["z", "t"], ["gt_b"]),
        h.make_node("Cast", ["gt_b"], ["gt"], to=T.FLOAT),
    ]
    ins = [h.make_tensor_value_info(n, T.FLOAT, ["N", W]) for n in ("x", "z")]
    bool_outs = {"both", "eq", "diff", "le"}
    outs = [h.make_tensor_value_info(n, T.BOOL if n in bool_outs else T.FLOAT, ["N", W]) for n in OUTS]
    return h.make_model(h.make_graph(nodes, "logic", ins, outs, [nh.from_array(THRESH, "t")]),
                        opset_imports=[h.make_opsetid("", 17)], ir_version=10)


def test_float_matches_onnxruntime(tmp_path):
    project = kiln.compile(logic_model(), output_dir=tmp_path / "p", precision="float")
    got, ref = project.csim([X, Z], return_all=True), project.reference([X, Z])
    for name, y, r in zip(OUTS, got, ref):
        np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6, err_msg=name)
    masks = dict(zip(OUTS, ref))
    for name in ("both", "eq", "diff", "le"):  # the case has both outcomes in every mask
        assert 0 < masks[name].mean() < 1, name
    assert np.any(X != np.trunc(X)) and np.any(X < -1)  # negative non-integers: truncation is toward zero
    typedefs = (project.path / "firmware" / "defines.h").read_text()
    assert "typedef bool" in typedefs


def test_fixed_point_is_exact_on_representable_inputs(tmp_path):
    """fixed<16,6>: every input and threshold is a multiple of 2**-5, exact in 10 fractional
    bits, so every comparison, mask, selection, truncation and 0/1 product is exact: the
    C-simulation equals ONNX Runtime bit for bit (error 0, not a tolerance)."""
    project = kiln.compile(logic_model(), output_dir=tmp_path / "p", precision="fixed<16,6>")
    got, ref = project.csim([X, Z], return_all=True), project.reference([X, Z])
    for name, y, r in zip(OUTS, got, ref):
        np.testing.assert_array_equal(y.astype(np.float64), r, err_msg=name)
    # the other builds of the same design: overflow counting, tracing, weights as headers
    counted, counts = project.csim_overflow([X, Z])
    assert counts and all(c["count"] == 0 for c in counts)
    traced, trace = project.csim_trace([X, Z])
    np.testing.assert_array_equal(trace["both"].reshape(N, W), ref[0])  # traced with its shape [1, 8]
    for run in (counted, traced, project.csim([X, Z], return_all=True, weights="header")):
        for name, y, r in zip(OUTS, run, ref):
            np.testing.assert_array_equal(y.astype(np.float64), r, err_msg=name)


def test_fixed_point_compares_quantized_values(tmp_path):
    """A comparison in a fixed-point design sees the quantized input: x = t + 2**-12 is above
    the threshold t in float, but fixed<16,6> (truncation, LSB 2**-10) holds it as t, so
    Greater(x, t) is false there; one LSB from the threshold is the stated limit."""
    t = np.float32(0.5)
    node = h.make_node("Greater", ["x", "t"], ["gt"])
    graph = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 2])],
                         [h.make_tensor_value_info("gt", T.BOOL, ["N", 2])], [nh.from_array(np.array(t), "t")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    x = np.array([[t + 2.0 ** -12, t + 2.0 ** -9]], np.float32)
    project = kiln.compile(model, output_dir=tmp_path / "p", precision="fixed<16,6>")
    np.testing.assert_array_equal(project.reference([x])[0], [[1, 1]])
    np.testing.assert_array_equal(project.csim([x]), [[0, 1]])


def test_constant_comparisons_fold(tmp_path):
    """Equal/Less/Not/And on constants (a mask computed from initializers, as exporters write
    causal or padding masks) is computed at compile time: only Where remains, with a constant condition."""
    pos = np.arange(W, dtype=np.int64)
    nodes = [h.make_node("Less", ["pos", "limit"], ["inside"]),
             h.make_node("Equal", ["pos", "skip"], ["skipped"]),
             h.make_node("Not", ["skipped"], ["kept"]),
             h.make_node("And", ["inside", "kept"], ["mask"]),
             h.make_node("Where", ["mask", "x", "zero"], ["y"])]
    inits = [nh.from_array(pos, "pos"), nh.from_array(np.array(6, np.int64), "limit"),
             nh.from_array(np.array(2, np.int64), "skip"), nh.from_array(np.array(0, np.float32), "zero")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", W])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", W])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    project = kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    lowered = onnx.load(project.path / "kiln_ir.onnx")
    assert [n.op_type for n in lowered.graph.node] == ["Where"]
    expected = np.where((pos < 6) & (pos != 2), X, 0)
    np.testing.assert_allclose(project.csim([X]), expected, rtol=0, atol=0)
