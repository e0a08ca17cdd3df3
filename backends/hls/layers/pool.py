"""MaxPool, AveragePool (1-D/2-D) -> kiln::pool2d; GlobalAveragePool -> kiln::global_average_pool.

ceil_mode needs nothing here: the output size comes from shape inference and windows are
clipped to the input. MaxPool's storage_order only affects its Indices output, which is
not supported.
"""

from __future__ import annotations

import math

from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.conv import as_2d, spatial_params
from kiln.ir_utils import attr, static_shape
from kiln.precision import FixedType, sum_type_for

POOL_CONFIG = """struct {{ id }}_config : kiln::pool2d_config {
    static const unsigned n_chan = {{ c }}, in_h = {{ ih }}, in_w = {{ iw }}, out_h = {{ oh }}, out_w = {{ ow }};
    static const unsigned k_h = {{ kh }}, k_w = {{ kw }}, stride_h = {{ sh }}, stride_w = {{ sw }};
    static const unsigned dil_h = {{ dh }}, dil_w = {{ dw }};
    static const unsigned pad_top = {{ pt }}, pad_left = {{ pl }}, pad_bottom = {{ pb }}, pad_right = {{ pr }};
    static const bool is_max = {{ 'true' if is_max else 'false' }};
    static const bool count_include_pad = {{ 'true' if include_pad else 'false' }};
    static const unsigned reuse_factor = {{ rf }};
    typedef {{ accum_t }} accum_t;
};
"""

GAP_CONFIG = """struct {{ id }}_config : kiln::global_average_pool_config {
    static const unsigned n_chan = {{ c }}, n_spatial = {{ n }};
    static const unsigned reuse_factor = {{ rf }};
    static constexpr float inv_count = {{ inv }};
    typedef {{ accum_t }} accum_t;
    typedef {{ scale_t }} scale_t;
};
"""


@register
class PoolEmitter(LayerEmitter):
    ops = (("", "MaxPool"), ("", "AveragePool"))
    keeps_input_type = commutes_with_scale = frozenset({"MaxPool"})
    header = "kiln_pool.h"

    def check(self, node):
        indices = node.outputs[1] if len(node.outputs) > 1 else None
        if indices is not None and (indices.uses() or indices.is_graph_output()):
            return "the Indices output of MaxPool is not supported"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) not in (3, 4):
            return "only 1-D and 2-D pooling is supported"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        xs, ys = static_shape(x), static_shape(out)
        kernel = list(attr(node, "kernel_shape"))
        p = spatial_params(node, list(xs[2:]), kernel)
        is_max = node.op_type == "MaxPool"
        lid = ctx.layer_id(node)
        in_prec = ctx.precision(x)
        accum = in_prec if is_max else sum_type_for(in_prec, math.prod(kernel))
        ih, iw = as_2d(list(xs[2:]), 1)
        oh, ow = as_2d(list(ys[2:]), 1)
        kh, kw = as_2d(kernel, 1)
        sh, sw = as_2d(p["strides"], 1)
        dh, dw = as_2d(p["dilations"], 1)
        pt, pl = as_2d(p["begin"], 0)
        pb, pr = as_2d(p["end"], 0)
        config = ctx.render(POOL_CONFIG, id=lid, c=xs[1], ih=ih, iw=iw, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw,
                            dh=dh, dw=dw, pt=pt, pl=pl, pb=pb, pr=pr, is_max=is_max,
                            include_pad=bool(attr(node, "count_include_pad", 0)), rf=ctx.reuse(node),
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum))
        call = Call("kiln::pool2d", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)),
                    batch=xs[0], strides=(math.prod(xs[1:]), math.prod(ys[1:])))
        cost = LayerCost(adds=math.prod(ys) * math.prod(kernel), fan_in=math.prod(kernel), acc_bits=bits(accum),
                         out_elems=math.prod(ys), out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode,
                         extra_latency=0 if is_max else 8, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)


@register
class GlobalAveragePoolEmitter(LayerEmitter):
    ops = (("", "GlobalAveragePool"),)
    header = "kiln_pool.h"

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        xs = static_shape(x)
        n_spatial = math.prod(xs[2:])
        lid = ctx.layer_id(node)
        in_prec = ctx.precision(x)
        accum = sum_type_for(in_prec, n_spatial)
        scale = FixedType(18, 1, rounding="RND", overflow="SAT") if isinstance(in_prec, FixedType) else in_prec
        config = ctx.render(GAP_CONFIG, id=lid, c=xs[1], n=n_spatial, rf=ctx.reuse(node), inv=c_float(1.0 / n_spatial),
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum), scale_t=ctx.typedef(f"{lid}_scale_t", scale))
        call = Call("kiln::global_average_pool", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"),
                    (ctx.var(x), ctx.var(out)), batch=xs[0], strides=(math.prod(xs[1:]), xs[1]))
        cost = LayerCost(adds=math.prod(xs), fan_in=n_spatial, mults=xs[0] * xs[1], a_bits=bits(accum),
                         b_bits=bits(scale), acc_bits=bits(accum), out_elems=xs[0] * xs[1],
                         out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
