"""kiln.Quantize (QONNX Quant/BipolarQuant, Q/DQ pairs, QKeras quantizers) -> a type conversion
(kiln::copy, kiln_common.h) or kiln::quantize (kiln_quantize.h).

A power-of-two scale without zero point is exactly the output's ap_fixed type
(``fixed<bits, bits+e, RND_CONV, SAT>``, see kiln/quant.py): the layer is a conversion
and costs no multiplier. Any other quantizer, and every quantizer of a float design, is
``round(x * (1/scale))`` clamped to the integer range and multiplied back by the scale;
the internal types are chosen here so that the only difference from ONNX Runtime is a
possible one-LSB rounding flip when x/scale lies within ~2^-12 of a tie.
"""

from __future__ import annotations

import math

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import KILN_DOMAIN, attr, size
from kiln.passes.precision import quant_spec
from kiln.precision import FixedType, FloatType
from kiln.quant import ROUNDING, fitting_type

CONFIG = """struct {{ id }}_config {
    static const unsigned n_elem = {{ n }};
    static const bool bipolar = {{ 'true' if bipolar else 'false' }};
    static const unsigned rounding = {{ rounding }};
    static const int q_lo = {{ q_lo }};
    static const int q_hi = {{ q_hi }};
    static constexpr double scale = {{ scale }};
    static constexpr double inv_scale = {{ inv_scale }};
    typedef {{ inv_t }} inv_t;
    typedef {{ scaled_t }} scaled_t;
    typedef {{ q_t }} q_t;
    typedef {{ scale_t }} scale_t;
};
"""
ROUNDING_CODES = {"ROUND": 0, "FLOOR": 1, "ROUND_TO_ZERO": 2}
SIGNIFICANT_BITS = 24  # of 1/scale and of scale in their fixed-point constants


def _internal_types(data, res, spec):
    """(inv_t, scaled_t, q_t, scale_t) of kiln::quantize for a fixed-point design."""
    inv = 1.0 / spec.scale
    inv_t = fitting_type(0.0, inv, SIGNIFICANT_BITS - math.floor(math.log2(inv)))
    data_int = data.integer if isinstance(data, FixedType) else 32
    scaled_t = FixedType(data_int + inv_t.integer + 1 + 16, data_int + inv_t.integer + 1, rounding="TRN",
                         overflow="SAT")
    q_t = FixedType(spec.bits + 3, spec.bits + 3, rounding=ROUNDING[spec.rounding], overflow="SAT")
    res_frac = res.frac if isinstance(res, FixedType) else SIGNIFICANT_BITS
    scale_t = fitting_type(0.0, max(spec.scale, 1.0), res_frac + spec.bits + 3)
    return inv_t, scaled_t, q_t, scale_t


@register
class QuantizeEmitter(LayerEmitter):
    ops = ((KILN_DOMAIN, "Quantize"),)
    header = "kiln_quantize.h"

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        spec = quant_spec(node)
        data, res = ctx.precision(x), ctx.precision(out)
        n = size(out)
        cost = LayerCost(out_elems=n, out_bits=bits(res), is_float=ctx.float_mode, a_bits=bits(data),
                         b_bits=SIGNIFICANT_BITS, acc_bits=bits(res), reuse_factor=ctx.reuse(node))
        if spec.exact and isinstance(res, FixedType) and res == spec.fixed_type():
            call = Call("kiln::copy", (ctx.ctype(x), ctx.ctype(out), n), (ctx.var(x), ctx.var(out)))
            return Layer("", call, "kiln_common.h", cost)
        lid = ctx.layer_id(node)
        if ctx.float_mode or isinstance(res, FloatType):
            inv_t = scaled_t = q_t = scale_t = "float"
        else:
            inv_t, scaled_t, q_t, scale_t = (ctx.typedef(f"{lid}_{k}", t) for k, t in zip(
                ("inv_t", "scaled_t", "q_t", "scale_t"), _internal_types(data, res, spec)))
        out_scale = 1.0 if attr(node, "integer_output", 0) else float(spec.scale)  # integers: q - zero point
        config = ctx.render(CONFIG, id=lid, n=n, bipolar=spec.bipolar, rounding=ROUNDING_CODES[spec.rounding],
                            q_lo=spec.q_min - spec.zero_point, q_hi=spec.q_max - spec.zero_point,
                            scale=repr(out_scale), inv_scale=repr(1.0 / float(spec.scale)),
                            inv_t=inv_t, scaled_t=scaled_t, q_t=q_t, scale_t=scale_t)
        cost.mults = 0 if spec.bipolar else 2 * n
        call = Call("kiln::quantize", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        return Layer(config, call, self.header, cost)
