"""kiln.Dense -> kiln::dense (hls_templates/nnet/kiln_dense.h)."""

from __future__ import annotations

import math

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import const_array, size
from kiln.precision import FixedType, accumulator_with_bias

# also the config of the four projections inside kiln.MultiHeadAttention (attention.py)
CONFIG = """struct {{ name }} : kiln::dense_config {
    static const unsigned n_rows = {{ n_rows }};
    static const unsigned n_in = {{ n_in }};
    static const unsigned n_out = {{ n_out }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned block_factor = {{ block }};
    static const unsigned multiplier_limit = {{ mult_limit }};
    typedef {{ accum_t }} accum_t;
    typedef {{ weight_t }} weight_t;
    typedef {{ bias_t }} bias_t;
};
"""


def packs_two_per_dsp(x, w) -> bool:
    """Integer inputs and weights narrow enough for two products per DSP48 (kiln::dense_packed):
    weight <= 9 bits (shifted by 18 it fits the 27-bit port), product <= 18 bits signed."""
    if not (isinstance(x, FixedType) and isinstance(w, FixedType)) or x.frac or w.frac:
        return False
    x_bits = x.width + (0 if x.signed else 1)
    w_bits = w.width + (0 if w.signed else 1)
    return w_bits <= 9 and x_bits + w_bits <= 18


@register
class DenseEmitter(LayerEmitter):
    ops = (("kiln", "Dense"),)
    header = "kiln_dense.h"

    def emit(self, node, ctx) -> Layer:
        x, w_in, b_in = node.inputs
        out = node.outputs[0]
        w, b = const_array(w_in), const_array(b_in)
        n_in, n_out = w.shape
        lid = ctx.layer_id(node)
        w_name, w_t, w_prec = ctx.weight(node, w, "weight", value=w_in)
        b_name, b_t, b_prec = ctx.weight(node, b, "bias", value=b_in)
        accum = ctx.layer_precision(node, "accum") or accumulator_with_bias(ctx.precision(x), w_prec, b_prec, n_in)
        n_rows = size(x) // n_in
        mults = n_rows * n_in * n_out  # R shares each multiplier across weights, then across rows
        rf = ctx.reuse(node, mults)
        packed = not ctx.float_mode and packs_two_per_dsp(ctx.precision(x), w_prec)
        config = ctx.render(CONFIG, name=f"{lid}_config", n_rows=n_rows, n_in=n_in, n_out=n_out, rf=rf,
                            block=math.ceil(n_in * n_out / rf),
                            mult_limit=math.ceil(mults / rf / (2 if packed else 1)),
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum), weight_t=w_t, bias_t=b_t)
        template = "kiln::dense_packed" if packed else "kiln::dense"
        call = Call(template, (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out), w_name, b_name))
        cost = LayerCost(mults=mults, fan_in=n_in, a_bits=bits(ctx.precision(x)),
                         b_bits=bits(w_prec), acc_bits=bits(accum), out_elems=size(out), out_bits=bits(ctx.precision(out)),
                         weight_bits=(w.size + b.size) * bits(w_prec), weight_width=bits(w_prec),
                         is_float=ctx.float_mode, reuse_factor=rf, divisible=mults, packed=packed)
        return Layer(config, call, self.header, cost)
