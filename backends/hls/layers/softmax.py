"""Softmax -> kiln::softmax (kiln_softmax.h).

Opset >= 13 normalises over one axis; older opsets over the flattened [axis:] block,
both expressed as an [outer][axis][inner] view. Fixed point uses exp and reciprocal
tables (sizes and exp range in the config struct): exp(-d) = exp(-hi) * exp(-lo) from a
512-entry and a 64-entry table (d resolved to 1/2048), 1/sum range-reduced to [1, 2) and
read from a 1024-entry table. Max abs error <= 0.01 at logit std 3 (tests assert it).
"""

from __future__ import annotations

import math

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, static_shape
from kiln.precision import FixedType, FloatType, sum_type_for

# The softmax tables (kiln_softmax.h), for kiln::softmax and kiln::multihead_attention alike:
# exp(-d) over [0, EXP_RANGE) as a table at 1/EXP_HI_STEPS times one over a step at
# 1/(EXP_HI_STEPS * EXP_LO_STEPS); 1/m over [1, 2) at 1/INV_TABLE_SIZE.
EXP_RANGE, EXP_HI_STEPS, EXP_LO_STEPS, INV_TABLE_SIZE = 16, 32, 64, 1024
TABLE_ENTRIES = EXP_RANGE * EXP_HI_STEPS + EXP_LO_STEPS + INV_TABLE_SIZE  # for the estimate
TABLE_TYPE = FixedType(18, 1, signed=False, rounding="RND", overflow="SAT")  # exp, 1/sum (they lie in [0, 1])

SOFTMAX_TABLES = f"""    static constexpr float exp_range = {EXP_RANGE}.0f;
    static const unsigned exp_hi_steps = {EXP_HI_STEPS};
    static const unsigned exp_lo_steps = {EXP_LO_STEPS};
    static const unsigned inv_table_size = {INV_TABLE_SIZE};
"""


def table_fields(indent: str = "") -> str:
    """The table sizes as config fields (``indent``: for a nested struct)."""
    return "".join(indent + line + "\n" for line in SOFTMAX_TABLES.splitlines())


CONFIG = """struct {{ id }}_config : kiln::softmax_config {
    static const unsigned n_outer = {{ outer }};
    static const unsigned n_axis = {{ axis }};
    static const unsigned n_inner = {{ inner }};
    static const unsigned reuse_factor = {{ rf }};
    static const bool use_table = {{ 'true' if use_table else 'false' }};
{{ tables }}    static const unsigned max_shift = {{ max_shift }};
    typedef {{ exp_t }} exp_table_t;
    typedef {{ inv_t }} inv_table_t;
    typedef {{ sum_t }} sum_t;
};
"""


@register
class SoftmaxEmitter(LayerEmitter):
    ops = (("", "Softmax"),)
    header = "kiln_softmax.h"

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        rank = len(shape)
        opset = node.version or ctx.opset
        axis = attr(node, "axis", -1 if opset >= 13 else 1)
        axis = axis + rank if axis < 0 else axis
        outer = math.prod(shape[:axis])
        if opset >= 13:
            n_axis, inner = shape[axis], math.prod(shape[axis + 1:])
        else:
            n_axis, inner = math.prod(shape[axis:]), 1
        lid = ctx.layer_id(node)
        if ctx.float_mode:
            exp_t = inv_t = sum_t = FloatType()
        else:
            exp_t = inv_t = TABLE_TYPE
            sum_t = sum_type_for(exp_t, n_axis)
        config = ctx.render(CONFIG, id=lid, outer=outer, axis=n_axis, inner=inner, rf=ctx.reuse(node),
                            max_shift=math.ceil(math.log2(n_axis + 1)) + 1, tables=table_fields(),
                            use_table=not ctx.float_mode, exp_t=ctx.typedef(f"{lid}_exp_t", exp_t),
                            inv_t=ctx.typedef(f"{lid}_inv_t", inv_t), sum_t=ctx.typedef(f"{lid}_sum_t", sum_t))
        call = Call("kiln::softmax", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        rows, log_n = outer * inner, math.ceil(math.log2(n_axis + 1))
        cost = LayerCost(mults=2 * rows * n_axis, fan_in=n_axis, a_bits=bits(exp_t), b_bits=bits(inv_t),
                         acc_bits=bits(sum_t), out_elems=rows * n_axis, out_bits=bits(ctx.precision(out)),
                         adds=rows * n_axis, table_entries=0 if ctx.float_mode else TABLE_ENTRIES,
                         extra_latency=log_n + 6, is_float=ctx.float_mode, reuse_factor=ctx.reuse(node, rows * n_axis),
                         divisible=rows * n_axis)
        return Layer(config, call, self.header, cost)
