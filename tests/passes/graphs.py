"""Small hand-built graphs for the pass unit tests: onnx.helper -> shape inference -> onnx_ir, and ORT on them."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def const(name: str, value) -> onnx.TensorProto:
    value = np.asarray(value)
    return numpy_helper.from_array(value.astype(np.float32) if value.dtype == np.float64 else value, name)


def model(nodes, inputs: dict, outputs: dict, initializers=(), opset: int = 17) -> ir.Model:
    """A shape-inferred IR model; inputs/outputs: name -> shape (float32)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, F, s) for n, s in outputs.items()],
                              initializer=list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(proto)
    return ir.from_proto(onnx.shape_inference.infer_shapes(proto, strict_mode=True))


def run(m: ir.Model, feeds: dict) -> list[np.ndarray]:
    """ONNX Runtime on the model as it is now (standard ops only)."""
    proto = ir.to_proto(m)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ops(m: ir.Model) -> list[str]:
    """Domain-qualified op types in graph order."""
    return [f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in m.graph]


def node(m: ir.Model, op_type: str) -> ir.Node:
    (found,) = [n for n in m.graph if n.op_type == op_type]
    return found


def attrs(n: ir.Node) -> dict:
    return {k: a.value for k, a in n.attributes.items()}


def const_of(value: ir.Value) -> np.ndarray:
    return ir.convenience.get_const_tensor(value).numpy()


def rng_input(shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
