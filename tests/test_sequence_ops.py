"""Operators of token/sequence models, float C-sim vs ONNX Runtime: MatMul of two tensors,
Slice, Gather (embedding table with int64 ids, one token), ReduceMean (opset 13 and 18),
element-wise math of unfused exports (Erf, Pow, Sqrt, Abs)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 5, 6)).astype(np.float32)


def compile_run(tmp_path, nodes, inputs, outputs, inits, feeds, opset=17, precision="float"):
    graph = h.make_graph(nodes, "g", inputs, outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10)
    project = kiln.compile(model, output_dir=tmp_path / "p", precision=precision)
    return project.csim(feeds, return_all=True), project.reference(feeds)


def x_in(shape=("N", 5, 6)):
    return [h.make_tensor_value_info("x", T.FLOAT, list(shape))]


def y_out(shape):
    return [h.make_tensor_value_info("y", T.FLOAT, list(shape))]


CASES = {
    "slice_negative_step": ([h.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])], x_in(), y_out(["N", 2, 3]),
                            [nh.from_array(np.array(v, np.int64), n) for n, v in
                             (("s", [4, 0]), ("e", [0, 6]), ("a", [1, 2]), ("st", [-2, 2]))], X, 17),
    "gather_one_token": ([h.make_node("Gather", ["x", "i"], ["y"], axis=1)], x_in(), y_out(["N", 6]),
                         [nh.from_array(np.array(0, np.int64), "i")], X, 17),
    "reducemean_axes_attribute": ([h.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)], x_in(),
                                  y_out(["N", 6]), [], X, 13),
    "reducemean_axes_input": ([h.make_node("ReduceMean", ["x", "ax"], ["y"], keepdims=1)], x_in(),
                              y_out(["N", 5, 1]), [nh.from_array(np.array([-1], np.int64), "ax")], X, 18),
    "erf_pow_abs_sqrt": ([h.make_node("Erf", ["x"], ["a"]), h.make_node("Pow", ["a", "p"], ["b"]),
                          h.make_node("Abs", ["x"], ["c"]), h.make_node("Sqrt", ["c"], ["d"]),
                          h.make_node("Add", ["b", "d"], ["y"])], x_in(), y_out(["N", 5, 6]),
                         [nh.from_array(np.array(3.0, np.float32), "p")], X, 17),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_matches_onnxruntime(tmp_path, case):
    nodes, inputs, outputs, inits, x, opset = CASES[case]
    (got,), (ref,) = compile_run(tmp_path, nodes, inputs, outputs, inits, x, opset)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision,tol", [("float", 0.0), ("fixed<16,6>", 2.0 ** -10)])
def test_embedding_with_int64_ids(tmp_path, precision, tol):
    ids = RNG.integers(0, 10, (8, 7)).astype(np.int64)
    table = RNG.standard_normal((10, 4)).astype(np.float32)
    (got,), (ref,) = compile_run(tmp_path, [h.make_node("Gather", ["E", "ids"], ["y"])],
                                 [h.make_tensor_value_info("ids", T.INT64, ["N", 7])], y_out(["N", 7, 4]),
                                 [nh.from_array(table, "E")], ids, precision=precision)
    assert np.max(np.abs(got - ref)) <= tol  # rows copied exactly (up to weight rounding in fixed point)


@pytest.mark.parametrize("sa,sb", [((2, 3, 4, 5), (2, 3, 5, 6)), ((3, 4, 5), (5, 6)), ((2, 1, 4, 5), (3, 5, 2))])
def test_matmul_of_two_tensors_broadcasting(tmp_path, sa, sb):
    """Each sample is a (1, *sa) x (1, *sb) product (leading axis = batch)."""
    out = np.matmul(np.zeros((1, *sa)), np.zeros((1, *sb))).shape
    a = RNG.standard_normal((3, *sa)).astype(np.float32)
    b = RNG.standard_normal((3, *sb)).astype(np.float32)
    graph = h.make_graph([h.make_node("MatMul", ["a", "b"], ["y"])], "g",
                         [h.make_tensor_value_info("a", T.FLOAT, ["N", *sa]),
                          h.make_tensor_value_info("b", T.FLOAT, ["N", *sb])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", *out[1:]])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    project = kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    got = project.csim([a, b])
    ref = np.stack([np.matmul(a[i:i + 1], b[i:i + 1])[0] for i in range(len(a))])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, project.reference([a, b])[0], rtol=1e-5, atol=1e-6)
