"""Fold a non-power-of-two weight scale into the layer: integer weights, one multiply per output.

A quantized weight with scale s (per tensor or per output channel) is W = q * s with q a
small integer. Held as q*s in fixed point, every weight needs ~14 extra fractional bits
to stay accurate (kiln/quant.py ``weight_type``), so 4-bit weights become ~19-bit
multipliers. Instead this pass rewrites

    Dense(x, W, b)            ->  Mul(Dense(x, q, b / s), s)      (s per output column)
    Conv(x, W, b)             ->  Mul(Conv(x, q, b / s), s)       (s per output filter)

so the weights are exact ``bits``-bit integers (as cheap as a power-of-two scale), the sum
is exact, and the scale is one multiply per output value: x . (q*s) = (x . q) * s. The
``kiln.quant`` note of the weights says so, and ``kiln report`` lists it.

It applies when the frontend recorded the weights' quantizers (``kiln.quant_specs``: zero
point 0, not all power-of-two scales) and every output column/filter is exactly an integer
multiple of one of those scales within the quantizer's integer range.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.ir_utils import KILN_DOMAIN, add_initializer, const_array
from kiln.precision import FixedType
from kiln.quant import QuantSpec, fitting_type

SPECS_KEY = "kiln.quant_specs"
SCALE_SIGNIFICANT_BITS = 24  # of the per-output scale constant


def _integer_weights(w: np.ndarray, specs: list[QuantSpec], axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(q, s) with w == q * s[channel] along ``axis``, q integers in range, or None."""
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    q = np.empty_like(moved)
    scales = np.empty(moved.shape[0])
    for c in range(moved.shape[0]):
        for spec in specs:
            cand = moved[c] / spec.scale
            rounded = np.round(cand)
            if (np.all(np.abs(cand - rounded) <= 1e-3) and rounded.min() >= spec.q_min
                    and rounded.max() <= spec.q_max):
                q[c], scales[c] = rounded, spec.scale
                break
        else:
            return None
    return np.moveaxis(q, 0, axis), scales


class FoldWeightScalePass(ir.passes.InPlacePass):
    """Dense/Conv with non-power-of-two quantized weights -> integer weights + per-output Mul."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            is_dense = node.domain == KILN_DOMAIN and node.op_type == "Dense"
            is_conv = node.domain in ("", "ai.onnx") and node.op_type == "Conv"
            if not (is_dense or is_conv) or len(node.inputs) < 2:
                continue
            specs = node.inputs[1].meta.get(SPECS_KEY)
            w = const_array(node.inputs[1])
            if not specs or w is None or any(s.zero_point or s.bipolar for s in specs) or all(s.exact for s in specs):
                continue
            axis = w.ndim - 1 if is_dense else 0
            found = _integer_weights(w, specs, axis)
            if found is None:
                continue
            self._rewrite(graph, node, *found, is_dense, specs)
            modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _rewrite(graph, node, q, scales, is_dense, specs) -> None:
        name = node.name or "layer"
        bits, signed = max(s.bits for s in specs), any(s.signed for s in specs)
        q_val = add_initializer(graph, f"{name}_Wq", q.astype(np.float32))
        q_type = FixedType(bits, bits, signed=signed)
        q_val.meta["kiln.precision"] = q_type
        q_val.metadata_props["kiln.precision"] = str(q_type)
        q_val.metadata_props["kiln.quant"] = (f"folded: into the layer, as exact {bits}-bit integer weights "
                                              f"and {len(set(scales))} non-power-of-two scale(s) multiplying each "
                                              "output after the sum")
        inputs = [node.inputs[0], q_val]
        b = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        if b is not None:
            inputs.append(_divided_bias(graph, node, scales, "weights'"))
        elif len(node.inputs) > 2:
            inputs.append(node.inputs[2])
        shape = [len(scales)] if is_dense else [len(scales), 1, 1][: max(1, len(node.outputs[0].shape or []) - 1)]
        s_val = add_initializer(graph, f"{name}_scale", scales.astype(np.float32).reshape(shape))
        magnitude = float(np.max(scales))
        s_type = fitting_type(0.0, magnitude, SCALE_SIGNIFICANT_BITS - 1 - math.floor(math.log2(magnitude)))
        s_val.meta["kiln.precision"] = s_type
        s_val.metadata_props["kiln.precision"] = str(s_type)
        out = node.outputs[0]
        acc = ir.Value(name=f"{name}_unscaled", shape=out.shape, type=out.type)
        new = ir.Node(node.domain, node.op_type, inputs, outputs=[acc], attributes=list(node.attributes.values()),
                      name=node.name)
        for key, value in node.metadata_props.items():
            new.metadata_props[key] = value
        scaled = ir.Value(name=f"{name}_scaled", shape=out.shape, type=out.type)
        mul = ir.Node("", "Mul", [acc, s_val], outputs=[scaled], name=f"{name}_weight_scale")
        ir.convenience.replace_nodes_and_values(graph, node, [node], [new, mul], [out], [scaled])


def _divided_bias(graph: ir.Graph, layer: ir.Node, divisor, whose: str) -> ir.Value:
    """A new bias constant b / divisor for ``layer`` (its type is derived from the accumulator);
    a quantized bias keeps a note of where it went."""
    old = layer.inputs[2]
    b = const_array(old).astype(np.float64) / divisor
    value = add_initializer(graph, f"{layer.name or 'layer'}_b_scaled", b.astype(np.float32))
    if "kiln.quant" in old.metadata_props:
        value.metadata_props["kiln.quant"] = (f"folded: divided by the {whose} scale(s) and added to the integer "
                                              "sum (type derived from the accumulator)")
    return value


def _scale_after(graph: ir.Graph, layer: ir.Node, factor: float) -> None:
    """Multiply ``layer``'s outputs by ``factor``: into the per-output scale Mul that
    FoldWeightScalePass placed after it, or a new Mul."""
    out = layer.outputs[0]
    users = out.consumers()
    name = layer.name or "layer"
    if (len(users) == 1 and users[0].op_type == "Mul" and users[0].name == f"{name}_weight_scale"
            and not out.is_graph_output()):
        mul = users[0]
        scales = const_array(mul.inputs[1]).astype(np.float64) * factor
        mul.replace_input_with(1, _scale_constant(graph, f"{name}_scale", scales))
        return
    scaled = ir.Value(name=f"{name}_scaled", shape=out.shape, type=out.type)
    const = _scale_constant(graph, f"{name}_scale", np.array(factor))
    mul = ir.Node("", "Mul", [out, const], outputs=[scaled], name=f"{name}_input_scale")
    for user, index in list(out.uses()):
        user.replace_input_with(index, scaled)
    if out.is_graph_output():
        outputs = graph.outputs
        outputs[outputs.index(out)] = scaled
        scaled.name, out.name = out.name, f"{name}_unscaled"
    graph.insert_after(layer, mul)


def _scale_constant(graph: ir.Graph, name: str, scales: np.ndarray) -> ir.Value:
    value = add_initializer(graph, name, scales.astype(np.float32))
    magnitude = float(np.max(np.abs(scales)))
    t = fitting_type(0.0, magnitude, SCALE_SIGNIFICANT_BITS - 1 - math.floor(math.log2(magnitude)))
    value.meta["kiln.precision"] = t
    value.metadata_props["kiln.precision"] = str(t)
    return value


# ops through which a positive scale commutes: relu(s*x) = s*relu(x), max, reshapes
SCALE_COMMUTES = {"Relu", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
                  "Identity"}


def _reading_layers(value: ir.Value) -> list[ir.Node] | None:
    """The Dense/Conv layers that read ``value`` as their data input, directly or through
    SCALE_COMMUTES ops; None when any other reader (or a graph output) is on the way."""
    layers, stack = {}, [value]
    while stack:
        v = stack.pop()
        if v.is_graph_output() or not v.uses():
            return None
        for user, index in v.uses():
            if index == 0 and ((user.domain == KILN_DOMAIN and user.op_type == "Dense") or
                               (user.domain in ("", "ai.onnx") and user.op_type == "Conv")):
                layers[id(user)] = user
            elif user.domain in ("", "ai.onnx") and user.op_type in SCALE_COMMUTES and index == 0:
                stack.extend(user.outputs)
            else:
                return None
    return list(layers.values())


class FoldActivationScalePass(ir.passes.InPlacePass):
    """A non-power-of-two activation quantizer read only by Dense/Conv layers (directly or
    through Relu, max pooling, reshapes) passes on its integers ``q - zero_point`` and its
    scale moves past the layers' sums:

        Dense(Quantize(x), W, b)  ->  Mul(Dense(Quantize_int(x), W, b / s), s)

    (merged into FoldWeightScalePass's per-output Mul when there is one). The layers then
    multiply narrow integers, exactly, instead of ~17-bit approximations of q * s.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if not (node.domain == KILN_DOMAIN and node.op_type == "Quantize") or node.outputs[0].is_graph_output():
                continue
            attrs = {k: a.value for k, a in node.attributes.items()}
            spec = QuantSpec(scale=float(attrs["scale"]), zero_point=int(attrs.get("zero_point", 0)),
                             bits=int(attrs["bits"]), signed=bool(attrs.get("signed", 1)),
                             narrow=bool(attrs.get("narrow", 0)), rounding=str(attrs.get("rounding", "ROUND")),
                             bipolar=bool(attrs.get("bipolar", 0)))
            layers = None if spec.exact or spec.bipolar else _reading_layers(node.outputs[0])
            if not layers:
                continue
            for layer in layers:
                if len(layer.inputs) > 2 and layer.inputs[2] is not None:
                    layer.replace_input_with(2, _divided_bias(graph, layer, spec.scale, "input's"))
                _scale_after(graph, layer, spec.scale)
            node.attributes["integer_output"] = ir.AttrInt64("integer_output", 1)
            node.metadata_props["kiln.quant"] = (
                f"folded: scale {spec.scale:.6g} is not a power of two; the layer passes the integers "
                f"q{' - zero point' if spec.zero_point else ''} on and the scale multiplies the next layers' "
                "outputs after their sums")
            modified = True
        return ir.passes.PassResult(model, modified)
