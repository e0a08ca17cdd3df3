"""Small helpers over onnx_ir used by passes and emitters."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.errors import KilnError

KILN_DOMAIN = "kiln"


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant data as numpy, or None when it is computed at run time."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def static_shape(value: ir.Value) -> tuple[int, ...]:
    """The value's shape as ints; a KilnError if any dimension is unknown."""
    shape = value.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        where = value.producer().name if value.producer() is not None else "graph input"
        raise KilnError(f"value {value.name!r} (from {where!r}) has no static shape ({shape}); "
                        "Kiln needs every shape known at compile time")
    return tuple(int(d) for d in shape)


def size(value: ir.Value) -> int:
    return int(np.prod(static_shape(value), dtype=np.int64))


def attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value


def add_initializer(graph: ir.Graph, name_hint: str, array: np.ndarray) -> ir.Value:
    """Register a new constant in the graph under a unique name."""
    existing = {v.name for v in graph.initializers.values()}
    name, n = name_hint, 1
    while name in existing:
        name = f"{name_hint}_{n}"
        n += 1
    array = np.ascontiguousarray(array)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def single_consumer(value: ir.Value) -> ir.Node | None:
    """The only node that reads ``value`` (and value is no graph output), else None."""
    if value.is_graph_output():
        return None
    users = value.consumers()
    return users[0] if len(users) == 1 else None


def replace_node(graph: ir.Graph, old_nodes: list[ir.Node], new_nodes: list[ir.Node],
                 old_values: list[ir.Value], new_values: list[ir.Value]) -> None:
    """Swap ``old_nodes`` for ``new_nodes``; new values take the old names (graph outputs too)."""
    for old, new in zip(old_values, new_values):
        new.shape = old.shape
        new.type = old.type
    ir.convenience.replace_nodes_and_values(graph, old_nodes[-1], old_nodes, new_nodes, old_values, new_values)


def bn_scale_shift(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) per channel of an inference BatchNormalization, or None if not constant:
    BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta = scale * y + shift."""
    params = [const_array(v) for v in node.inputs[1:5]]
    if any(p is None for p in params) or len(node.outputs) > 1 and any(o.uses() for o in node.outputs[1:]):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    scale = gamma / np.sqrt(var + attr(node, "epsilon", 1e-5))
    return scale, beta - mean * scale


def is_inference_dropout(node: ir.Node) -> bool:
    """A Dropout that passes its input through: no training_mode input, a constant false
    one, or a constant ratio of 0 (opset >= 12; older opsets are inference-only here)."""
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = const_array(training)
    if flag is not None and not bool(flag.reshape(-1)[0]):
        return True
    ratio = const_array(node.inputs[1]) if node.inputs[1] is not None else None
    return ratio is not None and ratio.size == 1 and float(ratio.reshape(-1)[0]) == 0.0


def runtime_inputs(node: ir.Node) -> list[ir.Value]:
    """The node's distinct non-constant inputs, in input order (what a layer reads at run time)."""
    seen, out = set(), []
    for v in node.inputs:
        if v is not None and const_array(v) is None and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out
