"""ONNX (Kiln's IR after the frontend and fusions) -> a MIL program, op by op.

Each ONNX op family has one small lowering function, registered by op type in ``REGISTRY``
(ops_tensor.py, ops_nn.py, ops_quant.py). ``Lowering`` walks the graph in order, keeps every
ONNX value as a MIL Var (or, for initializers, a numpy array turned into a ``const`` when an op
needs it) and returns the output Vars. The same walk runs twice: once with the graph inputs as
placeholders (the program that is saved) and once with a sample as constant inputs, where MIL's
value inference computes every op that has it (the Linux numerics check, see verify.py).
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import onnx_ir as ir

from kiln.errors import KilnError
from kiln.ir_utils import static_shape
from kiln.names import layer_name

KILN_OPS = ("Gelu", "LayerNormalization")  # Kiln's fusions that keep the standard op's semantics
REGISTRY: dict = {}  # op_type -> fn(lw, node) -> list of outputs (Var or np.ndarray)
CHECKS: dict = {}    # op_type -> fn(node) -> reason it cannot be lowered, or None


def lowers(*op_types, check=None):
    def register(fn):
        for op in op_types:
            REGISTRY[op] = fn
            if check is not None:
                CHECKS[op] = check
        return fn
    return register


def mil_name(name: str) -> str:
    """A MIL identifier for an ONNX name (CoreML feature names follow it)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else f"v_{out}"


def check_supported(model: ir.Model, source: str) -> None:
    """Every node CoreML cannot take, in one KilnError."""
    from kiln.backends.coreml import ops_nn, ops_quant, ops_tensor  # noqa: F401 - fill REGISTRY

    problems: dict[str, list[str]] = defaultdict(list)
    for i, node in enumerate(model.graph):
        label = f"{node.domain + '.' if node.domain not in ('', 'ai.onnx') else ''}{node.op_type}"
        std = node.domain in ("", "ai.onnx") or (node.domain == "kiln" and node.op_type in KILN_OPS)
        if not std or node.op_type not in REGISTRY:
            problems[f"{label} (operator not supported by the CoreML backend)"].append(layer_name(node, i))
            continue
        reason = CHECKS.get(node.op_type, lambda n: None)(node)
        if reason:
            problems[f"{label} ({reason})"].append(layer_name(node, i))
    for value in model.graph.outputs:
        if value.producer() is None:
            problems["graph output computed by no layer (a constant or a graph input)"].append(value.name)
    if problems:
        lines = [f"  {what}: {', '.join(repr(n) for n in names)}" for what, names in sorted(problems.items())]
        raise KilnError(f"{source}: {sum(map(len, problems.values()))} node(s) cannot be compiled for the CoreML "
                        "backend:\n" + "\n".join(lines))


class Lowering:
    """One walk of the graph inside a MIL program context."""

    def __init__(self, model: ir.Model, quantized_weights: dict | None = None, constant_inputs: bool = False):
        self.model = model
        self.quantized_weights = quantized_weights or {}  # initializer name -> (q int8, scale, zero point)
        self.constant_inputs = constant_inputs  # value-inference walk: constexpr ops are materialized
        self.env: dict[str, object] = {}
        self.opset = model.opset_imports.get("", 13)
        self.used_ops: set[str] = set()

    # --- values --------------------------------------------------------------------
    def value(self, v: ir.Value):
        """The Var or numpy array of an ONNX value (initializers stay numpy until needed)."""
        if v.name in self.env:
            return self.env[v.name]
        if v.const_value is not None:
            arr = v.const_value.numpy()
            self.env[v.name] = arr
            return arr
        raise KilnError(f"value {v.name!r} is used before it is computed")

    def var(self, v: ir.Value | None, dtype=None):
        """The value as a MIL Var (a const for numpy); int64 becomes int32, float64 float32."""
        from coremltools.converters.mil import Builder as mb

        x = self.value(v)
        if not isinstance(x, np.ndarray):
            return x
        if v.name in self.quantized_weights and not self.constant_inputs:
            q, scale, zp, axis = self.quantized_weights[v.name]
            return mb.constexpr_affine_dequantize(quantized_data=q, scale=scale, zero_point=zp, axis=axis,
                                                  name=mil_name(v.name) + "_dq")
        return mb.const(val=as_mil_array(x, dtype))

    def static(self, v: ir.Value | None, what: str, node) -> np.ndarray | None:
        """A constant input (shape, axes, indices); an error naming the node when it is computed."""
        if v is None:
            return None
        x = self.value(v)
        if not isinstance(x, np.ndarray):
            raise KilnError(f"node {node.name!r} ({node.op_type}): its {what} must be a constant for CoreML")
        return x

    def shape(self, v: ir.Value) -> list[int]:
        return [int(d) for d in static_shape(v)]

    # --- walk ----------------------------------------------------------------------
    def run(self, inputs: dict) -> list:
        from kiln.backends.coreml import ops_nn, ops_quant, ops_tensor  # noqa: F401 - fill REGISTRY

        self.env.update(inputs)
        for node in self.model.graph:
            outs = REGISTRY[node.op_type](self, node)
            self.used_ops.add(node.op_type)
            for value, out in zip(node.outputs, outs):
                if value is not None and out is not None:
                    self.env[value.name] = out
        results = []
        for v in self.model.graph.outputs:
            results.append(self.env[v.name])
        return results


def as_mil_array(x: np.ndarray, dtype=None) -> np.ndarray:
    x = np.asarray(x)
    if dtype is not None:
        return x.astype(dtype)
    if x.dtype == np.int64 or x.dtype == np.uint64:
        return x.astype(np.int32)
    if x.dtype == np.float64:
        return x.astype(np.float32)
    return x


def attr(node, name, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value
