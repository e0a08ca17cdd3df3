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

from kiln.annotations import (QUANT_SPECS as SPECS_KEY, is_dense_or_conv, is_quantize, is_standard, quant_note,
                              quant_spec, set_precision, set_quant_note)
from kiln.ir_utils import add_initializer, const_array
from kiln.op_traits import traits
from kiln.precision import FixedType
from kiln.quant import QuantSpec, fitting_type

SCALE_SIGNIFICANT_BITS = 24  # of the per-output scale constant
REQUANT_SIGNIFICANT_BITS = 17  # of the requantizing Mul's constant (its smallest value)
BIAS_INTEGER_TOLERANCE = 1e-5  # relative: float32 rounding of an int32 bias times s_x * s_w, divided back


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
            if not is_dense_or_conv(node) or len(node.inputs) < 2:
                continue
            specs = node.inputs[1].meta.get(SPECS_KEY)
            w = const_array(node.inputs[1])
            if not specs or w is None or any(s.zero_point or s.bipolar for s in specs) or all(s.exact for s in specs):
                continue
            is_dense = node.op_type == "Dense"
            found = _integer_weights(w, specs, w.ndim - 1 if is_dense else 0)
            if found is None:
                continue
            q, scales = found
            name = node.name or "layer"
            bits, signed = max(s.bits for s in specs), any(s.signed for s in specs)
            q_val = add_initializer(graph, f"{name}_Wq", q.astype(np.float32))
            set_precision(q_val, FixedType(bits, bits, signed=signed))
            set_quant_note(q_val, f"folded: into the layer, as exact {bits}-bit integer weights "
                                  f"and {len(set(scales))} non-power-of-two scale(s) multiplying each output after the sum")
            node.replace_input_with(1, q_val)
            if len(node.inputs) > 2 and const_array(node.inputs[2]) is not None:
                node.replace_input_with(2, _divided_bias(graph, node, scales, "weights'"))
            rank = len(node.outputs[0].shape or [])
            _scale_after(graph, node, scales if is_dense else scales.reshape([-1] + [1] * max(0, rank - 2)))
            modified = True
        return ir.passes.PassResult(model, modified)


def _divided_bias(graph: ir.Graph, layer: ir.Node, divisor, whose: str) -> ir.Value:
    """A new bias constant b / divisor for ``layer`` (its type is derived from the accumulator);
    a quantized bias keeps a note of where it went."""
    old = layer.inputs[2]
    b = const_array(old).astype(np.float64) / divisor
    quantized = old.meta.get(SPECS_KEY)
    integers = quantized is not None and bool(np.all(np.abs(b - np.round(b)) <= 1e-3 + BIAS_INTEGER_TOLERANCE * np.abs(b)))
    if integers:  # a bias quantized with scale s_x * s_w (ONNX Runtime's int32 bias): exact integers again
        b = np.round(b)
    value = add_initializer(graph, f"{layer.name or 'layer'}_b_scaled", b.astype(np.float32))
    if quantized is not None:
        value.meta[SPECS_KEY] = quantized
    if integers:
        set_precision(value, fitting_type(min(float(b.min()), 0.0), max(float(b.max()), 0.0), 0))
        set_quant_note(value, f"folded: divided by the {whose} scale(s), exact integers added to the integer sum")
    elif quant_note(old) is not None:
        set_quant_note(value, f"folded: divided by the {whose} scale(s) and added to the integer "
                              "sum (type derived from the accumulator)")
    return value


def _scale_after(graph: ir.Graph, layer: ir.Node, factor) -> None:
    """Multiply ``layer``'s output by ``factor`` (a scalar, or per output channel shaped to
    broadcast): into the per-output scale Mul an earlier fold placed after it, or a new Mul.
    The Mul's output takes over the layer output's name (it holds what the model computed
    there: traces and calibration profiles find it); the layer's own output is renamed."""
    out = layer.outputs[0]
    users = out.consumers()
    name = layer.name or "layer"
    factor = np.asarray(factor, dtype=np.float64)
    if len(users) == 1 and users[0].op_type == "Mul" and users[0].name == f"{name}_output_scale":
        mul = users[0]
        mul.replace_input_with(1, _scale_constant(graph, f"{name}_scale",
                                                  const_array(mul.inputs[1]).astype(np.float64) * factor))
        return
    readers = list(out.uses())  # before the Mul below becomes one of them
    original = out.name
    out.name = f"{name}_unscaled"
    scaled = ir.Value(name=original, shape=out.shape, type=out.type)
    mul = ir.Node("", "Mul", [out, _scale_constant(graph, f"{name}_scale", factor)], outputs=[scaled],
                  name=f"{name}_output_scale")
    for user, index in readers:
        user.replace_input_with(index, scaled)
    if out.is_graph_output():
        outputs = graph.outputs
        outputs[outputs.index(out)] = scaled
    graph.insert_after(layer, mul)


def _scale_constant(graph: ir.Graph, name: str, scales: np.ndarray) -> ir.Value:
    """The scale(s) as a constant held to SCALE_SIGNIFICANT_BITS significant bits."""
    value = add_initializer(graph, name, scales.astype(np.float32))
    magnitude = float(np.max(np.abs(scales)))
    set_precision(value, fitting_type(0.0, magnitude, SCALE_SIGNIFICANT_BITS - 1 - math.floor(math.log2(magnitude))))
    return value


def _reading_layers(value: ir.Value) -> list[ir.Node] | None:
    """The Dense/Conv layers that read ``value`` as their data input, directly or through ops a
    positive scale commutes with (relu(s*x) = s*relu(x), max, reshapes: ``commutes_with_scale`` in
    kiln/op_traits.py); None when any other reader (or a graph output) is on the way."""
    layers, stack = {}, [value]
    while stack:
        v = stack.pop()
        if v.is_graph_output() or not v.uses():
            return None
        for user, index in v.uses():
            if index == 0 and is_dense_or_conv(user):
                layers[id(user)] = user
            elif is_standard(user) and traits(user.op_type).commutes_with_scale and index == 0:
                stack.extend(user.outputs)
            else:
                return None
    return list(layers.values())


class FoldActivationScalePass(ir.passes.InPlacePass):
    """A non-power-of-two activation quantizer read only by Dense/Conv layers (directly or
    through Relu, max pooling, reshapes) passes on its integers ``q - zero_point`` and its
    scale moves past the layers' sums:

        Dense(Quantize(x), W, b)  ->  Mul(Dense(Quantize_int(x), W, b / s), s)

    (merged into FoldWeightScalePass's per-output Mul when there is one: ``_scale_after``). The layers then
    multiply narrow integers, exactly, instead of ~17-bit approximations of q * s. Last, a per-output
    scale Mul read only by a quantizer moves into that quantizer (``_requantize``).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if not is_quantize(node) or node.outputs[0].is_graph_output():
                continue
            spec = quant_spec(node)
            layers = None if spec.exact or spec.bipolar else _reading_layers(node.outputs[0])
            if not layers:
                continue
            for layer in layers:
                if len(layer.inputs) > 2 and layer.inputs[2] is not None:
                    layer.replace_input_with(2, _divided_bias(graph, layer, spec.scale, "input's"))
                _scale_after(graph, layer, spec.scale)
            node.attributes["integer_output"] = ir.AttrInt64("integer_output", 1)
            set_quant_note(node, f"folded: scale {spec.scale:.6g} is not a power of two; the layer passes the "
                                 f"integers q{' - zero point' if spec.zero_point else ''} on and the scale multiplies "
                                 "the next layers' outputs after their sums")
            modified = True
        modified |= _requantize(graph)
        return ir.passes.PassResult(model, modified)


def _requantize(graph: ir.Graph) -> bool:
    """Dense/Conv -> per-output scale Mul(S) -> Quantize(scale s): the Mul multiplies by
    S / s instead (normalised by a power of two 2^k into [1, 2), REQUANT_SIGNIFICANT_BITS
    significant bits: one DSP48 port), so the quantizer only shifts by 2^-k, rounds and
    clamps: one multiply per value in all (the requantization of integer kernels), instead
    of a 24-bit Mul and a second multiply by 1/s. The quantizer's ``input_scale`` (second
    input, s * 2^-k) says what its input now holds; the Mul's output is renamed
    ``<name>__requant`` since it no longer holds the model's value of that name."""
    modified = False
    for node in list(graph):
        if not is_quantize(node) or len(node.inputs) != 1 or quant_spec(node).bipolar:
            continue
        mul = node.inputs[0].producer()
        if mul is None or mul.op_type != "Mul" or not (mul.name or "").endswith("_output_scale"):
            continue
        scales = const_array(mul.inputs[1])
        scaled = mul.outputs[0]
        if scales is None or not np.all(scales > 0) or scaled.is_graph_output() or len(scaled.uses()) != 1:
            continue
        spec = quant_spec(node)
        ratio = scales.astype(np.float64) / spec.scale
        k = -math.floor(math.log2(float(ratio.max())))
        ratio = ratio * 2.0 ** k
        value = add_initializer(graph, f"{mul.name}_requant", ratio.astype(np.float32))
        frac = REQUANT_SIGNIFICANT_BITS - 1 - math.floor(math.log2(float(ratio.min())))
        set_precision(value, fitting_type(0.0, float(ratio.max()), frac))
        mul.replace_input_with(1, value)
        scaled.name = f"{scaled.name}__requant"
        node.resize_inputs(2)
        node.replace_input_with(1, add_initializer(graph, f"{node.name or 'quantize'}_input_scale",
                                                   np.array(spec.scale * 2.0 ** -k, np.float32)))
        set_quant_note(node, f"; the per-output Mul before it multiplies by the scale(s) / this "
                             f"scale (times 2^{k}), so it only shifts, rounds and clamps", append=True)
        modified = True
    return modified
