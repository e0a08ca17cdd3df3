"""CumSum (kiln::cumsum, kiln_math.h) against ONNX Runtime: plain, exclusive, reverse and
both, along different axes, in float and fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 5, 6)).astype(np.float32)
# (axis, exclusive, reverse) per output
VARIANTS = [(1, 0, 0), (-1, 1, 0), (1, 0, 1), (2, 1, 1)]


def cumsum_model(axis_type=T.INT64):
    nodes, inits = [], []
    for k, (axis, exclusive, reverse) in enumerate(VARIANTS):
        inits.append(h.make_tensor(f"ax{k}", axis_type, [], [axis]))
        nodes.append(h.make_node("CumSum", ["x", f"ax{k}"], [f"y{k}"], exclusive=exclusive, reverse=reverse))
    outs = [h.make_tensor_value_info(f"y{k}", T.FLOAT, ["N", 5, 6]) for k in range(len(VARIANTS))]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N", 5, 6])], outs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("axis_type", [T.INT64, T.INT32])
def test_float_matches_onnxruntime(tmp_path, axis_type):
    project = kiln.compile(cumsum_model(axis_type), output_dir=tmp_path / "p", precision="float")
    got, ref = project.csim(X, return_all=True), project.reference(X)
    for variant, y, r in zip(VARIANTS, got, ref):
        np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6, err_msg=str(variant))


def test_fixed_point_within_the_bound_of_its_bit_widths(tmp_path):
    """fixed<18,6> (12 fractional bits, truncation): each input is off by < 1 LSB, the running
    sum grows integer bits so it cannot overflow, the output truncation adds < 1 LSB: a sum of
    at most 6 values is off by < 7 LSB."""
    project = kiln.compile(cumsum_model(), output_dir=tmp_path / "p", precision="fixed<18,6>")
    got, ref = project.csim(X, return_all=True), project.reference(X)
    for variant, y, r in zip(VARIANTS, got, ref):
        err = np.abs(y.astype(np.float64) - r)
        assert 0 < err.max() < 7 * 2.0 ** -12, (variant, float(err.max()))


def test_runtime_axis_is_refused(tmp_path):
    graph = h.make_graph([h.make_node("CumSum", ["x", "ax"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["N", 6]), h.make_tensor_value_info("ax", T.INT64, [])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 6])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=r"CumSum \(the axis must be a constant scalar\)"):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
