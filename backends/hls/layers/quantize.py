"""kiln.Quantize (QONNX Quant/BipolarQuant, Q/DQ pairs, QKeras quantizers) -> a type conversion
(kiln::copy, kiln_common.h) or kiln::quantize (kiln_quantize.h).

A power-of-two scale without zero point is exactly the output's ap_fixed type
(``fixed<bits, bits+e, RND_CONV, SAT>``, see kiln/quant.py): the layer is a conversion
and costs no multiplier. Any other quantizer, and every quantizer of a float design, is
``q = clamp(round(x * inv))`` with ``inv = input_scale / scale`` (input_scale: what its
input holds, a power of two times its scale when a requantizing Mul precedes it,
passes/weight_scale.py ``_requantize``; else 1), followed by ``y = q * scale`` unless it
passes the integers on (``integer_output``).

Cost, honestly: one multiplier per element for ``x * inv`` (none when inv is one power of
two: a shift), one more for ``q * scale`` when it rescales by a non-power-of-two scale, both
shared by ``reuse_factor`` elements (the layer's II). The constants keep 17 significant
bits, so a product of a <= 27-bit value takes one DSP48 (27x18); with that, the only
difference from the quantizer's definition is a one-LSB rounding flip when x/scale lies
within ~2^-9 of a tie.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.annotations import quant_spec
from kiln.errors import KilnError
from kiln.ir_utils import KILN_DOMAIN, attr, const_array, size
from kiln.precision import FixedType, FloatType
from kiln.quant import ROUNDING, fitting_type, po2_exponent

CONFIG = """struct {{ id }}_config : kiln::quantize_config {
    static const unsigned n_elem = {{ n }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned multiplier_limit = {{ mult_limit }};
    static const bool bipolar = {{ 'true' if bipolar else 'false' }};
    static const bool rescale = {{ 'true' if rescale else 'false' }};
    static const kiln::rounding_mode rounding = kiln::rounding_mode::{{ rounding }};
    static const int q_lo = {{ q_lo }};
    static const int q_hi = {{ q_hi }};
    static constexpr double scale = {{ scale }};
    typedef {{ inv_t }} inv_t;
    typedef {{ q_t }} q_t;
    typedef {{ scale_t }} scale_t;
};
"""
# the quantizer rounding -> kiln_quantize.h rounding_mode enumerator
ROUNDING_MODES = {"ROUND": "half_even", "FLOOR": "floor", "ROUND_TO_ZERO": "toward_zero"}
SIGNIFICANT_BITS = 17  # of every 1/scale (the smallest one of a table) and of scale: one 18-bit DSP port
REDUCE_HINT = ("a quantizer's multipliers are shared by its reuse factor ([layers.NAME] reuse_factor, a divisor of "
               "its element count); a power-of-two scale with zero point 0 makes it a plain type conversion")


def _significant_type(lo: float, hi: float) -> tuple[FixedType, int]:
    """(type, significant bits) of a positive constant table [lo, hi]: lo keeps SIGNIFICANT_BITS."""
    frac = SIGNIFICANT_BITS - 1 - math.floor(math.log2(lo))
    t = fitting_type(0.0, hi, frac)
    return t, max(1, math.floor(math.log2(hi)) + 1 + frac)


def _inv(node, spec) -> float:
    """input_scale / scale: what the input is multiplied by before rounding (1/scale, or the
    power of two 2^-k a requantizing Mul left, passes/weight_scale.py ``_requantize``)."""
    s_in = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if s_in is None:
        return 1.0 / spec.scale
    if s_in.size != 1:
        raise KilnError(f"Quantize node {node.name!r}: its input scale must be one value, got shape {s_in.shape}")
    return float(s_in.reshape(-1)[0]) / spec.scale


@register
class QuantizeEmitter(LayerEmitter):
    ops = ((KILN_DOMAIN, "Quantize"),)
    header = "kiln_quantize.h"
    reduce_hint = REDUCE_HINT  # how to make this layer cheaper (for a budget error naming it)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        spec = quant_spec(node)
        data, res = ctx.precision(x), ctx.precision(out)
        n = size(out)
        float_design = ctx.float_mode or isinstance(res, FloatType)
        if (spec.exact and len(node.inputs) == 1 and isinstance(res, FixedType) and res == spec.fixed_type()
                and not float_design):
            cost = LayerCost(out_elems=n, out_bits=bits(res), a_bits=bits(data), acc_bits=bits(res))
            call = Call("kiln::copy", (ctx.ctype(x), ctx.ctype(out), n), (ctx.var(x), ctx.var(out)))
            return Layer("", call, "kiln_common.h", cost)
        lid = ctx.layer_id(node)
        integer_output = bool(attr(node, "integer_output", 0))
        inv = np.array([_inv(node, spec)])
        shift_only = po2_exponent(float(inv[0])) is not None  # x * 2^k: wiring, no multiplier
        rescale = not integer_output
        rescale_mults = rescale and po2_exponent(spec.scale) is None and not spec.bipolar
        q_t = FixedType(spec.bits + 3, spec.bits + 3, rounding=ROUNDING[spec.rounding], overflow="SAT")
        if float_design:
            inv_prec, q_c, scale_c, inv_bits, scale_bits = FloatType(), "float", "float", 32, 32
        else:
            inv_prec, inv_bits = _significant_type(float(inv.min()), float(inv.max()))
            scale_t, scale_bits = _significant_type(spec.scale, spec.scale)
            q_c, scale_c = (ctx.typedef(f"{lid}_{k}", t) for k, t in (("q_t", q_t), ("scale_t", scale_t)))
        inv_name, inv_c, _ = ctx.weight(node, inv, "inv_scale", precision=inv_prec)
        n_inv = 0 if (spec.bipolar or shift_only) else n
        n_rescale = n if rescale_mults else 0
        mults = n_inv + n_rescale
        rf = ctx.reuse(node, n) if mults else 1
        # the product widths: data x inv, then q x scale (a 17-bit constant: one DSP port)
        a_bits = max(bits(data) if n_inv else 0, q_t.width if n_rescale else 0)
        b_bits = max(inv_bits if n_inv else 0, scale_bits if n_rescale else 0)
        cost = LayerCost(mults=mults, a_bits=a_bits or 1, b_bits=b_bits or 1, acc_bits=q_t.width, out_elems=n,
                         out_bits=bits(res), adds=0 if spec.bipolar else 2 * n, is_float=float_design,
                         weight_bits=len(inv) * inv_bits, weight_width=inv_bits, reuse_factor=rf,
                         divisible=n if mults else 0)
        config = ctx.render(CONFIG, id=lid, n=n, rf=rf,
                            mult_limit=max(1, math.ceil(mults / rf)), bipolar=spec.bipolar, rescale=rescale,
                            rounding=ROUNDING_MODES[spec.rounding], q_lo=spec.q_min - spec.zero_point,
                            q_hi=spec.q_max - spec.zero_point, scale=repr(float(spec.scale)),
                            inv_t=inv_c, q_t=q_c, scale_t=scale_c)
        call = Call("kiln::quantize", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"),
                    (ctx.var(x), ctx.var(out), inv_name))
        return Layer(config, call, self.header, cost)
