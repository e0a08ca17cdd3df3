"""Pad (constant, reflect, edge, wrap; cropping), Tile and Expand vs ONNX Runtime.

These layers only move data (or write the constant), so float matches ONNX Runtime
exactly, and fixed<16,6> (10 fractional bits, truncating) within one lsb, 2^-10.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import kiln


def _i64(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def pad_model(opset: int):
    """x [N, 3, 4, 5] and z [N, 1, 4, 1] -> Pads of every mode, a Tile and an Expand."""
    if opset >= 11:
        inits = [_i64("p_const", [0, 1, 2, 0, 0, 0, 1, 3]), helper.make_tensor("v", TensorProto.FLOAT, [], [1.5]),
                 _i64("p_reflect", [0, 0, 2, 3, 0, 0, 1, 4]), _i64("p_edge", [0, 0, -1, 2, 0, 1, 3, -2]),
                 _i64("reps", [1, 2, 1, 3]), _i64("shape", [1, 3, 4, 5])]
        nodes = [helper.make_node("Pad", ["x", "p_const", "v"], ["y_const"], name="pad_c", mode="constant"),
                 helper.make_node("Pad", ["x", "p_reflect"], ["y_reflect"], name="pad_r", mode="reflect"),
                 helper.make_node("Pad", ["x", "p_edge"], ["y_edge"], name="pad_e", mode="edge")]
    else:
        inits = [_i64("reps", [1, 2, 1, 3]), _i64("shape", [1, 3, 4, 5])]
        nodes = [helper.make_node("Pad", ["x"], ["y_const"], name="pad_c", pads=[0, 1, 2, 0, 0, 0, 1, 3], value=1.5),
                 helper.make_node("Pad", ["x"], ["y_reflect"], name="pad_r", mode="reflect",
                                  pads=[0, 0, 2, 3, 0, 0, 1, 4]),
                 helper.make_node("Pad", ["x"], ["y_edge"], name="pad_e", mode="edge", pads=[0, 0, -1, 2, 0, 1, 3, -2])]
    nodes += [helper.make_node("Tile", ["x", "reps"], ["y_tile"], name="tile"),
              helper.make_node("Expand", ["z", "shape"], ["y_expand"], name="expand")]
    shapes = {"y_const": [4, 7, 8], "y_reflect": [3, 7, 12], "y_edge": [4, 6, 5], "y_tile": [6, 4, 15],
              "y_expand": [3, 4, 5]}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5]),
                                           helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 1, 4, 1])],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, ["N", *s]) for k, s in shapes.items()],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("opset, precision, bound", [(18, "float", 0.0), (10, "float", 0.0),
                                                     (13, "fixed<16,6>", 2.0 ** -10)])
def test_pad_tile_expand_match_onnxruntime(tmp_path, opset, precision, bound):
    project = kiln.compile(pad_model(opset), output_dir=tmp_path / "p", precision=precision)
    rng = np.random.default_rng(opset)
    x = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(np.float32)
    z = (rng.standard_normal((2, 1, 4, 1)) * 4).astype(np.float32)
    got, ref = project.csim([x, z], return_all=True), project.reference([x, z])
    assert [g.shape[1:] for g in got] == [(4, 7, 8), (3, 7, 12), (4, 6, 5), (6, 4, 15), (3, 4, 5)]
    for g, r in zip(got, ref):
        assert np.max(np.abs(g - r)) <= bound
    assert np.all(got[0][:, 0] == 1.5)  # the constant, exactly, in both precisions


def test_pads_from_a_runtime_tensor_are_refused(tmp_path):
    node = helper.make_node("Pad", ["x", "p"], ["y"], name="pad_rt", mode="edge")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                            helper.make_tensor_value_info("p", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=r"Pad \(pads, constant_value and axes must be constants\): 'pad_rt'"):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    assert not (tmp_path / "p").exists()
