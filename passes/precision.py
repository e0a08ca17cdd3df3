"""Attach a numeric type to every computed value and each layer's weights/accumulator.

Precision lives on the IR: ``value.meta["kiln.precision"]`` holds the type object and
``value.metadata_props["kiln.precision"]`` its text (visible in a dumped .onnx in
Netron). Layer-level choices (weight, bias, accumulator types, reuse factor) are node
metadata props. The default is the model precision; ``[layers.NAME]`` in the config
overrides it for that node. Unset accumulators are derived by the HLS emitters from
operand types and fan-in so that sums cannot overflow.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.config import Config
from kiln.errors import KilnError
from kiln.precision import IntType, parse_precision

PRECISION_KEY = "kiln.precision"


def precision_of(value: ir.Value):
    """The type attached to ``value`` (graph inputs and computed values)."""
    p = value.meta.get(PRECISION_KEY)
    if p is None and PRECISION_KEY in value.metadata_props:
        p = parse_precision(value.metadata_props[PRECISION_KEY])
    return p


class AssignPrecisionPass(ir.passes.InPlacePass):
    """Model default precision everywhere, per-layer overrides from the config."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = {node.name for node in graph}
        unknown = sorted(set(self.config.layers) - names)
        if unknown:
            raise KilnError(f"config names layer(s) not in the model: {unknown}; "
                            f"layers are: {sorted(n for n in names if n)}")
        for value in graph.inputs:
            self._set(value, self.config.precision)
        for node in graph:
            layer = self.config.layer(node.name)
            for out in node.outputs:
                self._set(out, layer.precision or self.config.precision)
            for key in ("weight", "bias", "accum"):
                chosen = getattr(layer, key)
                if chosen is not None:
                    node.metadata_props[f"kiln.{key}"] = str(chosen)
            model_rf = self.config.reuse_factor if self.config.reuse_factor != "auto" else 1
            node.metadata_props["kiln.reuse_factor"] = str(layer.reuse_factor or model_rf)
            if layer.reuse_factor is not None:
                node.metadata_props["kiln.reuse_explicit"] = "1"
        return ir.passes.PassResult(model, True)

    @staticmethod
    def _set(value: ir.Value, precision) -> None:
        if value.dtype is not None and value.dtype.is_integer():
            precision = IntType()  # ids and indices stay integers whatever the model precision
        value.meta[PRECISION_KEY] = precision
        value.metadata_props[PRECISION_KEY] = str(precision)
