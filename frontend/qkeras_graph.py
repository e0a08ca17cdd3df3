"""The ONNX graph the QKeras converter builds: values with their shapes, unique names,
constants and QONNX ``Quant`` nodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kiln.frontend.qkeras_quantizers import QuantParams

QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass
class Value:
    """A tensor in the ONNX graph standing for a Keras tensor."""

    name: str
    shape: list  # ONNX shape, batch first ("N" or an int)
    nchw: bool = False  # a 4-D channels_last Keras tensor kept transposed to NCHW


class GraphBuilder:
    """Accumulates nodes, initializers and value_info with unique names."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, list] = {}
        self._used: set[str] = set()

    def fresh(self, name: str) -> str:
        candidate, i = name, 1
        while candidate in self._used:
            candidate, i = f"{name}_{i}", i + 1
        self._used.add(candidate)
        return candidate

    def const(self, name: str, array: np.ndarray) -> str:
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], out: str, shape: list, domain: str = "", **attrs) -> Value:
        out = self.fresh(out)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        self.shapes[out] = list(shape)
        return Value(out, list(shape))

    def quant(self, x: str, params: QuantParams, out: str, shape: list) -> Value:
        inputs = [x, self.const(f"{out}_scale", params.scale.astype(np.float32)),
                  self.const(f"{out}_zeropt", np.asarray(0.0, np.float32)),
                  self.const(f"{out}_bitwidth", np.asarray(float(params.bits), np.float32))]
        return self.node("Quant", inputs, out, shape, domain=QONNX_DOMAIN, signed=int(params.signed),
                         narrow=int(params.narrow), rounding_mode="ROUND")

    def transpose(self, v: Value, perm: tuple, out: str) -> Value:
        return self.node("Transpose", [v.name], out, [v.shape[p] for p in perm], perm=list(perm))
