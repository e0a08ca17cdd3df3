"""Split through the HLS backend vs ONNX Runtime: every form of the split sizes, any axis.

Split only moves data, so the float C-sim matches ONNX Runtime exactly, and in fixed point
each output is the input as its type holds it: fixed<16,6> has 10 fractional bits and
truncates (AP_TRN), so every element is within one lsb (2^-10) of ONNX Runtime for inputs
inside its +-32 range.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import kiln

SHAPE = [6, 4, 5]


def split_model(opset: int):
    """x [N, 6, 4, 5] -> Split on axis 1 into 1/2/3 channels (its second part unused) and
    on the last axis into 2/2/1; the sizes as the opset spells them."""
    inits = []
    if opset >= 18:
        inits.append(helper.make_tensor("s1", TensorProto.INT64, [3], [1, 2, 3]))
        nodes = [helper.make_node("Split", ["x", "s1"], ["a", "b", "c"], name="split_c", axis=1),
                 helper.make_node("Split", ["x"], ["d", "e", "f"], name="split_w", axis=-1, num_outputs=3)]
    elif opset >= 13:
        inits += [helper.make_tensor("s1", TensorProto.INT64, [3], [1, 2, 3]),
                  helper.make_tensor("s2", TensorProto.INT64, [3], [2, 2, 1])]
        nodes = [helper.make_node("Split", ["x", "s1"], ["a", "b", "c"], name="split_c", axis=1),
                 helper.make_node("Split", ["x", "s2"], ["d", "e", "f"], name="split_w", axis=-1)]
    else:
        nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], name="split_c", axis=1, split=[1, 2, 3]),
                 helper.make_node("Split", ["x"], ["d", "e", "f"], name="split_w", axis=3, split=[2, 2, 1])]
    outs = {"a": [1, 4, 5], "c": [3, 4, 5], "d": [6, 4, 2], "e": [6, 4, 2], "f": [6, 4, 1]}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *s]) for k, s in outs.items()],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("opset, precision, bound", [(18, "float", 0.0), (13, "float", 0.0),
                                                     (11, "fixed<16,6>", 2.0 ** -10)])
def test_split_matches_onnxruntime(tmp_path, opset, precision, bound):
    project = kiln.compile(split_model(opset), output_dir=tmp_path / "p", precision=precision)
    x = (np.random.default_rng(opset).standard_normal((3, *SHAPE)) * 4).astype(np.float32)
    got, ref = project.csim(x, return_all=True), project.reference(x)
    assert [g.shape for g in got] == [(3, 1, 4, 5), (3, 3, 4, 5), (3, 6, 4, 2), (3, 6, 4, 2), (3, 6, 4, 1)]
    for g, r in zip(got, ref):
        assert np.max(np.abs(g - r)) <= bound
    if precision == "float":
        np.testing.assert_array_equal(got[1], x[:, 3:])


def test_split_sizes_from_a_runtime_tensor_are_refused(tmp_path):
    node = helper.make_node("Split", ["x", "s"], ["a", "b"], name="split_rt", axis=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                            helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    with pytest.raises(kiln.KilnError, match="split sizes must be a constant|no static shape"):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    assert not (tmp_path / "p").exists()
