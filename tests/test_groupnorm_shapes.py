"""GroupNormalization output shapes: onnx 1.23's shape inference gives its output no type, so
the frontend (frontend/shape_fill.py) types it from the input; the layers after it (here a
Conv, a Flatten and a Gemm that need static shapes) then compile and match ONNX Runtime.
GroupNormalization-18 (opset 18-20, scale and bias per group) is refused by onnx 1.23's
checker as deprecated: one clear error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln
from kiln.frontend.onnx_loader import load_onnx
from tests.helpers import run_kiln

C, G, S = 4, 2, 5
RNG = np.random.default_rng(21)


def gn_block(opset: int) -> onnx.ModelProto:
    """x [N,4,5,5] -> GroupNorm(2 groups) -> Relu -> Conv 3x3 -> Flatten -> Gemm(3); only the
    input and the final output are declared (their batch axis symbolic)."""
    n_param = C if opset >= 21 else G
    inits = [nh.from_array(RNG.uniform(0.5, 1.5, n_param).astype(np.float32), "s"),
             nh.from_array(RNG.uniform(-0.5, 0.5, n_param).astype(np.float32), "b"),
             nh.from_array((0.2 * RNG.standard_normal((2, C, 3, 3))).astype(np.float32), "w"),
             nh.from_array((0.2 * RNG.standard_normal((2 * (S - 2) ** 2, 3))).astype(np.float32), "fc")]
    nodes = [h.make_node("GroupNormalization", ["x", "s", "b"], ["gn"], num_groups=G, epsilon=1e-5),
             h.make_node("Relu", ["gn"], ["r"]), h.make_node("Conv", ["r", "w"], ["c"]),
             h.make_node("Flatten", ["c"], ["f"]), h.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = h.make_graph(nodes, "gn_block", [h.make_tensor_value_info("x", T.FLOAT, ["N", C, S, S])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["N", 3])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def test_onnx_leaves_the_output_unshaped():
    """The premise: without the frontend's fill, GroupNormalization-21's output has no type (and
    strict inference fails on the Relu after it)."""
    inferred = onnx.shape_inference.infer_shapes(gn_block(21), strict_mode=False)
    assert not {"gn", "r"} & {v.name for v in inferred.graph.value_info}
    with pytest.raises(onnx.shape_inference.InferenceError, match="Relu"):
        onnx.shape_inference.infer_shapes(gn_block(21), strict_mode=True)


def test_loader_gives_static_shapes():
    model = load_onnx(gn_block(21)).model
    shapes = {v.name: v.shape for n in model.graph for v in n.outputs}
    assert shapes["gn"] == ir_shape((1, C, S, S)) and shapes["r"] == ir_shape((1, C, S, S))
    assert shapes["c"] == ir_shape((1, 2, S - 2, S - 2)) and shapes["f"] == ir_shape((1, 2 * (S - 2) ** 2))


def ir_shape(dims):
    import onnx_ir as ir
    return ir.Shape(dims)


@pytest.mark.parametrize("precision, bound", [("float", 1e-5), ("fixed<18,8>", 0.03)])
def test_block_matches_onnxruntime(tmp_path, precision, bound):
    """float: 1e-5 relative; fixed<18,8> (10 fractional bits, the GroupNorm error bound of
    tests/test_groupnorm.py, 0.015 for |scale| <= 1.5, carried through a Conv and a Gemm whose
    weights have |w| sums below 2): 0.03 relative to the output scale."""
    x = (2 * RNG.standard_normal((6, C, S, S))).astype(np.float32)
    project = kiln.compile(gn_block(21), output_dir=tmp_path / "p", precision=precision)
    got, ref = project.csim(x), project.reference(x)[0]
    assert got.shape == ref.shape == (6, 3)
    assert np.max(np.abs(got - ref)) <= bound * np.max(np.abs(ref))


def test_opset_18_is_one_clear_error(tmp_path):
    path = tmp_path / "gn18.onnx"
    onnx.save(gn_block(18), path)
    result = run_kiln("compile", str(path), "--board", "vu13p", "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("kiln: error:") and "Traceback" not in result.stderr
    assert "GroupNormalization is deprecated in domain_version of 18" in result.stderr
    assert not (tmp_path / "out").exists()
