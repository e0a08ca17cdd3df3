"""LayerNormalization (ONNX op, and kiln.LayerNormalization from the fusion pass) -> kiln::layernorm.

Normalises over axes [axis, rank) seen as one row of n_norm values. In fixed point the
intermediate types are derived from the input type so nothing overflows: the mean
keeps the input range, deviations get one more integer bit, squared deviations twice
the bits, the variance 18 fractional bits (below any usual epsilon), and 1/sqrt(var)
comes from a range-reduced table (see kiln_layernorm.h).
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, const_array, static_shape
from kiln.precision import FixedType, FloatType, sum_type_for

# the fields every normalisation config shares (LayerNorm here, GroupNorm/InstanceNorm in groupnorm.py)
NORM_FIELDS = """    static const unsigned reuse_factor = {{ rf }};
    static const bool use_table = {{ 'true' if use_table else 'false' }};
    static const unsigned table_size = {{ table_size }};
    static const unsigned max_shift = {{ max_shift }};
    static constexpr float inv_n = {{ inv_n }};
    static constexpr float epsilon = {{ eps }};
    typedef {{ t.sum }} sum_t;
    typedef {{ t.inv_n }} inv_n_t;
    typedef {{ t.mean }} mean_t;
    typedef {{ t.diff }} diff_t;
    typedef {{ t.sq_sum }} sq_sum_t;
    typedef {{ t.var }} var_t;
    typedef {{ t.rstd }} rstd_t;
    typedef {{ t.norm }} norm_t;
    typedef {{ scale_t }} scale_t;
    typedef {{ bias_t }} bias_t;
};
"""
CONFIG = """struct {{ id }}_config : kiln::layernorm_config {
    static const unsigned n_outer = {{ outer }};
    static const unsigned n_norm = {{ n }};
""" + NORM_FIELDS

TABLE_SIZE = 1024
VAR_FRAC_BITS = 18


def internal_types(in_prec, n: int) -> dict:
    """The intermediate types of a LayerNorm over n values of type in_prec."""
    if isinstance(in_prec, FloatType):
        return {k: in_prec for k in ("sum", "inv_n", "mean", "diff", "sq_sum", "var", "rstd", "norm")}
    growth = math.ceil(math.log2(n + 1))
    diff = FixedType(in_prec.width + 2, in_prec.integer + 1)
    var_int = 2 * diff.integer
    return {
        "sum": sum_type_for(in_prec, n),
        "inv_n": FixedType(18, 1, signed=False, rounding="RND"),
        "mean": FixedType(in_prec.width + 4, in_prec.integer, rounding="RND"),
        "diff": diff,
        "sq_sum": FixedType(2 * diff.width + growth, var_int + growth),
        "var": FixedType(var_int + VAR_FRAC_BITS, var_int, signed=False, rounding="RND"),
        "rstd": FixedType(VAR_FRAC_BITS + 12, 12, signed=False, rounding="RND"),
        "norm": FixedType(in_prec.width + 8, max(in_prec.integer, math.ceil(math.log2(math.sqrt(n) + 1)) + 2),
                          rounding="RND"),
    }


@register
class LayerNormEmitter(LayerEmitter):
    ops = (("", "LayerNormalization"), ("kiln", "LayerNormalization"))
    header = "kiln_layernorm.h"

    def check(self, node):
        if any(o is not None and (o.uses() or o.is_graph_output()) for o in node.outputs[1:]):
            return "the Mean/InvStdDev outputs are not supported"
        if const_array(node.inputs[1]) is None or (len(node.inputs) > 2 and node.inputs[2] is not None
                                                   and const_array(node.inputs[2]) is None):
            return "scale and bias must be constants"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        axis = attr(node, "axis", -1)
        axis = axis + len(shape) if axis < 0 else axis
        n = math.prod(shape[axis:])
        scale = np.broadcast_to(const_array(node.inputs[1]), shape[axis:]).reshape(-1)
        b_in = node.inputs[2] if len(node.inputs) > 2 else None
        bias = np.broadcast_to(const_array(b_in), shape[axis:]).reshape(-1) if b_in is not None else np.zeros(n)
        lid = ctx.layer_id(node)
        s_name, s_t, _ = ctx.weight(node, scale, "weight")
        b_name, b_t, _ = ctx.weight(node, bias, "bias")
        types = {k: ctx.typedef(f"{lid}_{k}_t", p) for k, p in internal_types(ctx.precision(x), n).items()}
        var_width = 2 * 8 + VAR_FRAC_BITS if ctx.float_mode else internal_types(ctx.precision(x), n)["var"].width
        config = ctx.render(CONFIG, id=lid, outer=math.prod(shape[:axis]), n=n, rf=ctx.reuse(node),
                            use_table=not ctx.float_mode, table_size=TABLE_SIZE, max_shift=var_width // 2 + 2,
                            inv_n=c_float(1.0 / n), eps=c_float(attr(node, "epsilon", 1e-5)), t=types,
                            scale_t=s_t, bias_t=b_t)
        call = Call("kiln::layernorm", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out), s_name, b_name))
        rows = math.prod(shape[:axis])
        internal = internal_types(ctx.precision(x), n)
        cost = LayerCost(mults=3 * rows * n, fan_in=n, a_bits=bits(internal["diff"]), b_bits=bits(internal["rstd"]),
                         acc_bits=bits(internal["sq_sum"]), out_elems=rows * n, out_bits=bits(ctx.precision(out)),
                         adds=2 * rows * n, weight_bits=2 * n * bits(ctx.default_precision),
                         weight_width=bits(ctx.default_precision), table_entries=0 if ctx.float_mode else TABLE_SIZE,
                         extra_latency=2 * math.ceil(math.log2(n + 1)) + 8, is_float=ctx.float_mode,
                         reuse_factor=ctx.reuse(node, rows * n), divisible=rows * n)
        return Layer(config, call, self.header, cost)
