"""Single-operator ONNX models built with onnx.helper, for tests and benchmarks of one layer."""

from __future__ import annotations

from onnx import TensorProto, helper


def one_op_model(node, shape, opset=17, initializers=()):
    """``node`` reading graph input "x" and writing graph output "y", both float [N, *shape]."""
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *shape])], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
