"""GroupNormalization and InstanceNormalization -> kiln::groupnorm (kiln_layernorm.h).

Both normalise each sample's channels in groups: the input [N, C, *spatial] is viewed as
[N][G][C/G][spatial], mean and variance are taken over each group's C/G * spatial values
and every channel gets its own scale and bias. InstanceNormalization is the case G = C.
GroupNormalization's scale and bias are per channel (opset 21; onnx's checker rejects the
deprecated opset 18-20 form, whose scale and bias were per group). The statistics, their
fixed-point types and the rsqrt table are LayerNorm's (layernorm.internal_types: derived
from the input type, nothing overflows).
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.call import Call
from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers.layernorm import NORM_FIELDS, TABLE_SIZE, VAR_FRAC_BITS, internal_types
from kiln.ir_utils import attr, const_array, static_shape

CONFIG = """struct {{ id }}_config : kiln::groupnorm_config {
    static const unsigned n_outer = {{ outer }};
    static const unsigned n_group = {{ groups }}, n_chan = {{ chan }}, n_inner = {{ inner }};
""" + NORM_FIELDS


def groups_of(node) -> int:
    channels = static_shape(node.inputs[0])[1]
    return channels if node.op_type == "InstanceNormalization" else int(attr(node, "num_groups"))


@register
class GroupNormEmitter(LayerEmitter):
    ops = (("", "GroupNormalization"), ("", "InstanceNormalization"))
    header = "kiln_layernorm.h"

    def check(self, node):
        if any(v is None or const_array(v) is None for v in node.inputs[1:3]) or len(node.inputs) < 3:
            return "scale and bias must be constants"
        shape = node.inputs[0].shape
        if shape is not None and len(shape) < 2:
            return "the input needs a channel axis (rank 2 or more)"
        if node.op_type == "GroupNormalization" and shape is not None and isinstance(shape[1], int):
            groups, channels = int(attr(node, "num_groups")), shape[1]
            if groups <= 0 or channels % groups:
                return f"num_groups={groups} does not divide the {channels} channels"
        if shape is not None and isinstance(shape[1], int):
            for role, v in (("scale", node.inputs[1]), ("bias", node.inputs[2])):
                if const_array(v).size != shape[1]:
                    return f"{role} has {const_array(v).size} values; expected one per channel ({shape[1]})"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        channels, groups = shape[1], groups_of(node)
        per_group, inner = channels // groups, math.prod(shape[2:])
        scale, bias = (np.asarray(const_array(v), dtype=np.float64).reshape(-1) for v in node.inputs[1:3])
        n = per_group * inner
        lid = ctx.layer_id(node)
        s_name, s_t, _ = ctx.weight(node, scale, "weight")
        b_name, b_t, _ = ctx.weight(node, bias, "bias")
        internal = internal_types(ctx.precision(x), n)
        types = {k: ctx.typedef(f"{lid}_{k}_t", p) for k, p in internal.items()}
        var_width = 2 * 8 + VAR_FRAC_BITS if ctx.float_mode else internal["var"].width
        config = ctx.render(CONFIG, id=lid, outer=shape[0], groups=groups, chan=per_group, inner=inner,
                            rf=ctx.reuse(node), use_table=not ctx.float_mode, table_size=TABLE_SIZE,
                            max_shift=var_width // 2 + 2, inv_n=c_float(1.0 / n),
                            eps=c_float(attr(node, "epsilon", 1e-5)), t=types, scale_t=s_t, bias_t=b_t)
        call = Call("kiln::groupnorm", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"),
                    (ctx.var(x), ctx.var(out), s_name, b_name))
        rows, total = shape[0] * groups, math.prod(shape)
        cost = LayerCost(mults=3 * total, fan_in=n, a_bits=bits(internal["diff"]), b_bits=bits(internal["rstd"]),
                         acc_bits=bits(internal["sq_sum"]), out_elems=total, out_bits=bits(ctx.precision(out)),
                         adds=2 * total, weight_bits=2 * channels * bits(ctx.default_precision),
                         weight_width=bits(ctx.default_precision), table_entries=0 if ctx.float_mode else TABLE_SIZE,
                         extra_latency=2 * math.ceil(math.log2(n + 1)) + 8 + rows, is_float=ctx.float_mode,
                         reuse_factor=ctx.reuse(node, total), divisible=total)
        return Layer(config, call, self.header, cost)
