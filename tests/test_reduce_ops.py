"""The reductions of kiln::reduce (kiln_math.h) against ONNX Runtime: ReduceSum, ReduceMean,
ReduceSumSquare, ReduceL1, ReduceL2, ReduceMax, ReduceMin, ReduceProd, with axes as an
attribute (opset 13) and as an input (opset 18), in float and in fixed point."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln
from kiln.backends.hls.layers import math as math_layers
from tests.helpers import header_enumerators as _enumerators

RNG = np.random.default_rng(3)
X = (0.5 * RNG.standard_normal((4, 5, 6))).astype(np.float32)
OPS = ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceProd")
# (axes, keepdims) per op: the reduced axes vary so that every stride pattern is walked
AXES = {"ReduceSum": ([1], 1), "ReduceMean": ([-1], 0), "ReduceSumSquare": ([1, 2], 1), "ReduceL1": ([2], 0),
        "ReduceL2": ([-1], 1), "ReduceMax": ([1], 0), "ReduceMin": ([1, 2], 0), "ReduceProd": ([2], 1)}


def _out_shape(axes, keepdims):
    dims = ["N", 5, 6]
    axes = [a % 3 for a in axes]
    return [1 if i in axes else d for i, d in enumerate(dims)] if keepdims else \
        [d for i, d in enumerate(dims) if i not in axes]


def reductions_model(opset: int):
    """x[N,5,6] -> one output per reduction; axes as an input at opset 18, an attribute at 13
    (where ReduceSum already takes them as an input)."""
    nodes, outs, inits = [], [], []
    for k, op in enumerate(OPS):
        axes, keepdims = AXES[op]
        if opset >= 18 or op == "ReduceSum":
            inits.append(nh.from_array(np.array(axes, np.int64), f"ax{k}"))
            nodes.append(h.make_node(op, ["x", f"ax{k}"], [f"y{k}"], keepdims=keepdims))
        else:
            nodes.append(h.make_node(op, ["x"], [f"y{k}"], axes=axes, keepdims=keepdims))
        outs.append(h.make_tensor_value_info(f"y{k}", T.FLOAT, _out_shape(axes, keepdims)))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, 6])], outs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def test_reduce_kernel_names_are_the_headers_enumerators():
    assert sorted(set(math_layers.REDUCE_OPS.values())) == sorted(_enumerators("kiln_math.h", "reduce_op"))


@pytest.mark.parametrize("opset", [13, 18])
def test_float_matches_onnxruntime(tmp_path, opset):
    project = kiln.compile(reductions_model(opset), output_dir=tmp_path / "p", precision="float")
    got, ref = project.csim(X, return_all=True), project.reference(X)
    for op, y, r in zip(OPS, got, ref):
        assert y.shape == r.shape, op
        np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6, err_msg=op)


def test_fixed_point_within_the_bound_of_its_bit_widths(tmp_path):
    """fixed<18,6> (12 fractional bits, truncation): each input is off by less than one LSB
    (2^-12) and so is the output; the accumulators cannot overflow (sums grow by log2(count)
    integer bits, squares keep all 24 product fraction bits, the product is float). So a sum of
    n values is off by < (n + 1) LSB, a sum of n squares by < (2 n max|x| + 1) LSB, the L2 norm
    by that over 2 ||x|| (+1 LSB), max/min by < 2 LSB, the mean by < 2 LSB, the product of n
    values by < n max|x|^(n-1) LSB (+1 LSB)."""
    project = kiln.compile(reductions_model(18), output_dir=tmp_path / "p", precision="fixed<18,6>")
    got, ref = project.csim(X, return_all=True), project.reference(X)
    lsb, m = 2.0 ** -12, float(np.max(np.abs(X)))
    bounds = {"ReduceSum": 6 * lsb, "ReduceMean": 2 * lsb, "ReduceSumSquare": (2 * 30 * m + 1) * lsb,
              "ReduceL1": 7 * lsb, "ReduceL2": None, "ReduceMax": 2 * lsb, "ReduceMin": 2 * lsb,
              "ReduceProd": (6 * m ** 5 + 1) * lsb}
    for op, y, r in zip(OPS, got, ref):
        err = np.abs(y.astype(np.float64) - r)
        if op == "ReduceL2":  # |d sqrt(s)| <= |ds| / (2 sqrt(s)), s the sum of 6 squares
            bound = (2 * 6 * m + 1) * lsb / (2 * np.sqrt(np.sum(X.astype(np.float64) ** 2, -1, keepdims=True))) + lsb
        else:
            bound = bounds[op]
        assert np.all(err < bound), (op, float(err.max()))
        assert np.max(err) > 0 or op in ("ReduceMax", "ReduceMin")  # it did compute in fixed point


def test_reduce_with_runtime_axes_is_refused(tmp_path):
    graph = h.make_graph([h.make_node("ReduceMax", ["x", "ax"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, 6]),
                          h.make_tensor_value_info("ax", T.INT64, [1])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 5])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=re.escape("ReduceMax (axes must be constant)")):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
