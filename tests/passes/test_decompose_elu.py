"""passes/decompose_elu.py: Elu/Selu/Celu as element-wise ops, exact against ONNX Runtime."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from kiln.passes import DecomposeEluPass, lowering_passes


def _model(op, attrs):
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="act", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


@pytest.mark.parametrize("op,attrs", [("Elu", {"alpha": 0.7}), ("Selu", {}), ("Celu", {"alpha": 1.5})])
def test_elu_family_decomposes_exactly(op, attrs):
    proto = _model(op, attrs)
    model = ir.serde.deserialize_model(proto)
    DecomposeEluPass(ops=(op,))(model)
    assert {n.op_type for n in model.graph} <= {"Relu", "Min", "Exp", "Sub", "Mul", "Add", "Div"}
    x = np.linspace(-6, 6, 64, dtype=np.float32).reshape(1, 64)
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(run(ir.serde.serialize_model(model))[0], run(proto)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op,kept", [("Elu", True), ("Selu", True), ("Celu", False)])
def test_lowering_keeps_the_activations_the_backend_has(op, kept):
    model = ir.serde.deserialize_model(_model(op, {}))
    lowering_passes()(model)
    assert (op in {n.op_type for n in model.graph}) is kept
