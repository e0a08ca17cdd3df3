"""Attach a numeric type to every computed value, with where it came from.

Precision lives on the IR: ``value.meta["kiln.precision"]`` holds the type object and
``value.metadata_props["kiln.precision"]`` its text (visible in ``kiln_ir.onnx`` in
Netron); ``kiln.precision_source`` says why it was chosen. In order of priority:

* ``config``     ``[layers.NAME] precision`` in the user's kiln.toml;
* ``quant``      the output of a quantizer (kiln.Quantize, see kiln/quant.py), and a graph
                 input read only by quantizers (so the testbench's conversion *is* the
                 quantization and nothing is rounded twice);
* ``inferred``   in a quantized model, a type derived exactly from the operand types:
                 a Dense/Conv output is its accumulator (operand widths + fan-in growth:
                 cannot overflow), ops whose output values are input values keep their input's type
                 (``keeps_input_type`` in kiln/op_traits.py: Relu, max pooling, reshapes), Add grows
                 one integer bit, Mul is the product type;
* ``calibrated`` ``--calibrate``: integer bits from the observed range, the rest of
                 ``--bits`` fractional (kiln/calibrate/types.py ``choose_fixed``), or, with
                 ``--max-error E``, as many fractional bits as rounding to within E needs;
* ``default``    the model precision.

Layer-level choices (weight, bias, accumulator types, reuse factor) are node metadata
props. Quantized constants carry their own type (set by the frontend); unset
accumulators are derived by the HLS emitters from operand types and fan-in.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import onnx_ir as ir

from kiln.annotations import (ROLES, is_dense_or_conv, is_quantize, is_standard, layer_type_text, precision_of,
                              quant_spec, set_layer_type, set_precision, set_reuse_factor, source_of)
from kiln.config import Config
from kiln.errors import KilnError
from kiln.ir_utils import attr, const_array
from kiln.op_traits import traits
from kiln.precision import (BoolType, FixedType, FloatType, IntType, Precision, accumulator_with_bias, parse_precision,
                            union_type)
from kiln.quant import fitting_type

MAX_INFERRED_WIDTH = 64
FLOAT_BIAS_SIGNIFICANT_BITS = 24
QUANT_INPUT_BITS = 27  # a graph input read by a multiply-form quantizer

__all__ = ["AssignPrecisionPass", "infer_exact", "precision_of", "source_of"]  # the last two: kiln/annotations.py


def infer_exact(node: ir.Node, types: list, weight_type) -> Precision | None:
    """The exact output type of ``node`` from its input types, or None when there is none.

    ``types``: the precision of each input (None for constants); ``weight_type(value)``
    gives a constant's type (its quantized type or the layer's weight type).
    """
    op = node.op_type
    x = types[0] if types else None
    if not isinstance(x, FixedType):
        return None
    if is_dense_or_conv(node):
        w_in = node.inputs[1]
        b_in = node.inputs[2] if len(node.inputs) > 2 else None
        w, b = weight_type(w_in), (weight_type(b_in) if b_in is not None else None)
        if not isinstance(w, FixedType) or (b is not None and not isinstance(b, FixedType)):
            return None
        shape = const_array(w_in).shape
        fan_in = shape[0] if op == "Dense" else int(math.prod(shape[1:]))
        return accumulator_with_bias(x, w, b, fan_in)
    if not is_standard(node):
        return None
    if traits(op).keeps_input_type:
        return x
    operands = [t if t is not None else weight_type(v) for t, v in zip(types, node.inputs) if v is not None]
    if not all(isinstance(t, FixedType) for t in operands):
        return None
    if op == "Concat":
        return union_type(operands)
    if op in ("Add", "Sub") and len(operands) == 2:
        return union_type(operands, extra_integer=1)
    if op == "Mul" and len(operands) == 2:
        a, b = operands
        signed = a.signed or b.signed
        return FixedType(a.width + b.width, a.integer + b.integer, signed=signed)
    return None


def _quantizers_reached(value: ir.Value):
    """The quantizer specs that read ``value``, directly or through ops that only pass its values
    on (Relu, max pooling, reshapes: ``keeps_input_type``, which commute with a monotone rounding);
    None when any path reaches something else (then its conversion is not the model's rounding)."""
    specs: set = set()
    frontier, seen = [value], set()
    while frontier:
        v = frontier.pop()
        users = v.consumers()
        if not users or v.is_graph_output():
            return None
        for u in users:
            if is_quantize(u) and u.inputs[0] is v:
                specs.add(quant_spec(u))
            elif (is_standard(u) and traits(u.op_type).keeps_input_type and u.inputs[0] is v
                  and all(const_array(i) is not None for i in u.inputs[1:] if i is not None) and len(u.outputs) == 1):
                if id(u) not in seen:
                    seen.add(id(u))
                    frontier.append(u.outputs[0])
            else:
                return None
    return specs


class AssignPrecisionPass(ir.passes.InPlacePass):
    """Types for every value: config > quantizer > exact inference > calibration > default."""

    def __init__(self, config: Config, profile=None, bits: int | None = None, quantized: bool = False,
                 max_error: float | None = None):
        super().__init__()
        self.config = config
        self.profile = profile or {}   # value name -> observed stats (kiln/calibrate/)
        self.bits = bits
        self.max_error = max_error     # instead of bits: fractional bits so rounding errs <= max_error
        self.quantized = quantized

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = {node.name for node in graph}
        unknown = sorted(set(self.config.layers) - names - {v.name for v in graph.inputs})
        if unknown:
            raise KilnError(f"config names layer(s) not in the model: {unknown}; "
                            f"layers are: {sorted(n for n in names if n)}")
        float_mode = isinstance(self.config.precision, FloatType)
        quantized = self.quantized or any(is_quantize(n) for n in graph)
        self.quantized_model, self.notes = quantized, []
        for value in graph.inputs:
            self._set(value, *self._input_type(value, float_mode))
        for node in graph:
            layer = self.config.layer(node.name)
            for role in ROLES:
                chosen = getattr(layer, role)
                if chosen is not None:
                    set_layer_type(node, role, chosen)
            if self.profile and (self.bits or self.max_error) and not float_mode:  # calibrated
                self._fit_constant_types(node, layer)
            if not float_mode:
                self._warn_if_saturated(node)
            model_rf = self.config.reuse_factor if self.config.reuse_factor != "auto" else 1
            set_reuse_factor(node, layer.reuse_factor or model_rf, explicit=layer.reuse_factor is not None)
            if quantized and not float_mode and layer.bias is None:
                self._derive_bias_type(node)
            for out in node.outputs:
                self._set(out, *self._output_type(node, out, layer, float_mode, quantized))
        for note in self.notes:
            print(note, file=sys.stderr)
        return ir.passes.PassResult(model, True)

    # --- choices ----------------------------------------------------------------------------
    def _input_type(self, value: ir.Value, float_mode: bool) -> tuple[Precision, str]:
        chosen = self.config.layers.get(value.name)
        if chosen is not None and chosen.precision is not None:  # [layers."<input name>"] precision
            return chosen.precision, "config"
        if not float_mode:
            specs = _quantizers_reached(value)
            if specs is not None and len(specs) == 1:
                spec = specs.pop()
                t = spec.fixed_type()
                if spec.exact:
                    return t, "quant"
                # the multiply form re-rounds: give it the input at 27 bits (one DSP48 port), saturating
                return FixedType(QUANT_INPUT_BITS, t.integer + 2, rounding="RND_CONV", overflow="SAT"), "quant"
        chosen = self._calibrated_or_default(value, float_mode)
        if chosen[1] == "default" and not float_mode and self.quantized_model:
            self.notes.append(f"kiln: note: input {value.name!r} is not quantized by the model; it is read as "
                              f"{chosen[0]} (the model precision); choose its type with [layers.\"{value.name}\"] "
                              "precision in the config")
        return chosen

    def _output_type(self, node, out, layer, float_mode, quantized) -> tuple[Precision, str]:
        if layer.precision is not None:
            return layer.precision, "config"
        if float_mode:
            return self.config.precision, "default"
        if is_quantize(node):
            spec = quant_spec(node)
            if attr(node, "integer_output", 0):  # passes/weight_scale.py moved the scale past its readers
                return fitting_type(spec.q_min - spec.zero_point, spec.q_max - spec.zero_point, 0), "quant"
            return spec.fixed_type(), "quant"
        if quantized:
            types = [precision_of(v) if v is not None and const_array(v) is None else None for v in node.inputs]
            inferred = infer_exact(node, types, lambda v: self._constant_type(node, v))
            if inferred is not None and inferred.width > MAX_INFERRED_WIDTH and inferred.integer < MAX_INFERRED_WIDTH // 2:
                # keep every integer bit (no overflow), drop the lowest fractional ones (rounding)
                inferred = FixedType(MAX_INFERRED_WIDTH, inferred.integer, signed=inferred.signed, rounding="RND")
            if inferred is not None and inferred.width <= MAX_INFERRED_WIDTH:
                return inferred, "inferred"
        return self._calibrated_or_default(out, float_mode)

    def _derive_bias_type(self, node: ir.Node) -> None:
        """In a quantized model, a float (unquantized) bias of a Dense/Conv keeps float32's 24
        significant bits (at least the accumulator's fractional bits), not the model default:
        the quantized graph adds it in float, and a coarser bias would move outputs across the
        next quantizer's rounding ties."""
        if not is_dense_or_conv(node):
            return
        b_in = node.inputs[2] if len(node.inputs) > 2 else None
        if b_in is None or precision_of(b_in) is not None or const_array(b_in) is None:
            return
        x, w = precision_of(node.inputs[0]), self._constant_type(node, node.inputs[1])
        if isinstance(x, FixedType) and isinstance(w, FixedType):
            b = const_array(b_in).astype("float64")
            magnitude = float(np.max(np.abs(b))) if b.size else 0.0
            frac = x.frac + w.frac
            if magnitude > 0:
                frac = max(frac, min(FLOAT_BIAS_SIGNIFICANT_BITS - 1 - math.floor(math.log2(magnitude)), 48))
            set_layer_type(node, "bias", fitting_type(min(float(b.min()), 0.0), max(float(b.max()), 0.0), frac))

    def _warn_if_saturated(self, node: ir.Node) -> None:
        """Constants are written saturated (FixedType.quantize): say so where that changes any."""
        for value in node.inputs:
            array = const_array(value) if value is not None else None
            if array is None or not array.size or not np.issubdtype(array.dtype, np.floating):
                continue
            t, role = self._constant_type(node, value), self._constant_role(node, value)
            if not isinstance(t, FixedType):
                continue
            out = int(np.count_nonzero((array < t.min_value - t.lsb / 2) | (array > t.max_value + t.lsb / 2)))
            if out:
                self.notes.append(f"kiln: warning: layer {node.name!r}: {out} of {array.size} {role} values lie "
                                  f"outside {t} (largest magnitude {float(np.max(np.abs(array))):.4g}) and saturate; "
                                  f"give the layer a wider {role} type ([layers.\"{node.name}\"] {role} = ...) or "
                                  "compile with --calibrate")

    @staticmethod
    def _constant_role(node: ir.Node, value: ir.Value) -> str:
        """The layer type a constant operand takes (EmitContext.weight's default kind)."""
        return "bias" if (is_dense_or_conv(node) and len(node.inputs) > 2 and value is node.inputs[2]) else "weight"

    def _constant_type(self, node: ir.Node, value: ir.Value) -> Precision:
        """A constant operand's type, as the HLS emitter will give it (see EmitContext.weight)."""
        text = layer_type_text(node, self._constant_role(node, value))
        if text:
            return parse_precision(text)
        return precision_of(value) or self.config.precision

    def _calibrated_or_default(self, value: ir.Value, float_mode: bool) -> tuple[Precision, str]:
        stats = self.profile.get(value.name)
        if stats is not None and (self.bits or self.max_error) and not float_mode:
            return self._fitted(stats), "calibrated"
        return self.config.precision, "default"

    def _fitted(self, stats) -> FixedType:
        """The calibrated type of a value with these observed (or, for a constant, actual) min/max."""
        from kiln.calibrate.types import choose_fixed

        if self.max_error:
            # integer bits as for any width; then fractional bits with lsb/2 <= max_error
            integer = choose_fixed(stats, 128).integer
            frac = max(0, math.ceil(-math.log2(2 * self.max_error)))
            chosen = FixedType(integer + frac, integer)
        else:
            chosen = choose_fixed(stats, self.bits)
        # round to nearest and saturate: values beyond the calibration set's range clip
        # instead of wrapping, and rounding does not bias sums by -lsb/2 as truncation does
        return dataclasses.replace(chosen, rounding="RND", overflow="SAT")

    def _fit_constant_types(self, node: ir.Node, layer) -> None:
        """Calibrated designs: a layer's float constants (weights; a Dense/Conv bias apart) get a type
        fitted to their own values, as computed values get one fitted to their observed range, so
        that no weight saturates (a classifier's weights of 163 in the model precision fixed<16,6>,
        range +-32, would). Quantizer-typed constants and types the config sets are kept."""
        ranges: dict[str, tuple[float, float]] = {}
        for value in node.inputs:
            array = const_array(value) if value is not None and precision_of(value) is None else None
            if array is None or not array.size or not np.issubdtype(array.dtype, np.floating):
                continue
            role = self._constant_role(node, value)
            if getattr(layer, role) is not None:
                continue
            lo, hi = ranges.get(role, (0.0, 0.0))
            ranges[role] = (min(lo, float(array.min())), max(hi, float(array.max())))
        for role, (lo, hi) in ranges.items():
            set_layer_type(node, role, self._fitted({"min": lo, "max": hi}))

    @staticmethod
    def _set(value: ir.Value, precision, source: str) -> None:
        if value.dtype is not None and value.dtype.is_integer():
            precision, source = IntType(), "int"  # ids and indices stay integers whatever the model precision
        elif value.dtype == ir.DataType.BOOL:
            precision, source = BoolType(), "bool"  # masks and comparison results stay 0/1
        set_precision(value, precision, source)
