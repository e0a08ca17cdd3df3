"""Conv (1-D and 2-D, stride, padding incl. auto_pad, dilation, groups) -> kiln::conv2d.

A 1-D convolution is a 2-D one with height 1. A batch dimension above 1 (it can only
come from a model with a fixed batch) is a loop of calls over the samples.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, const_array, static_shape
from kiln.precision import accumulator_with_bias

CONFIG = """struct {{ id }}_config : kiln::conv2d_config {
    static const unsigned n_chan = {{ c }}, in_h = {{ ih }}, in_w = {{ iw }};
    static const unsigned n_filt = {{ f }}, out_h = {{ oh }}, out_w = {{ ow }};
    static const unsigned k_h = {{ kh }}, k_w = {{ kw }};
    static const unsigned stride_h = {{ sh }}, stride_w = {{ sw }};
    static const unsigned dil_h = {{ dh }}, dil_w = {{ dw }};
    static const unsigned pad_top = {{ pt }}, pad_left = {{ pl }}, pad_bottom = {{ pb }}, pad_right = {{ pr }};
    static const unsigned groups = {{ groups }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned block_factor = {{ block }};
    static const unsigned multiplier_limit = {{ block }};
    typedef {{ accum_t }} accum_t;
    typedef {{ weight_t }} weight_t;
    typedef {{ bias_t }} bias_t;
};
"""


def spatial_params(node, in_spatial: list[int], kernel: list[int]) -> dict:
    """strides, dilations and (begin, end) pads per spatial axis, resolving auto_pad."""
    n = len(in_spatial)
    strides = list(attr(node, "strides", [1] * n))
    dilations = list(attr(node, "dilations", [1] * n))
    pads = list(attr(node, "pads", [0] * (2 * n)))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for i in range(n):
            out = math.ceil(in_spatial[i] / strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i], 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + n] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    return {"strides": strides, "dilations": dilations, "begin": pads[:n], "end": pads[n:]}


def as_2d(values: list[int], fill: int) -> list[int]:
    """Spatial list of a 1-D or 2-D op as (h, w)."""
    return [fill] + list(values) if len(values) == 1 else list(values)


@register
class ConvEmitter(LayerEmitter):
    ops = (("", "Conv"),)
    header = "kiln_conv.h"

    def check(self, node):
        if const_array(node.inputs[1]) is None:
            return "Conv weights must be constant"
        if len(node.inputs) > 2 and node.inputs[2] is not None and const_array(node.inputs[2]) is None:
            return "Conv bias must be constant"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) not in (3, 4):
            return "only 1-D and 2-D convolutions are supported"
        if node.inputs[0].shape is not None and const_array(node.inputs[1]).ndim != len(node.inputs[0].shape):
            return "the weight's rank differs from the input's"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        w = const_array(node.inputs[1])
        b_in = node.inputs[2] if len(node.inputs) > 2 else None
        b = const_array(b_in) if b_in is not None else np.zeros(w.shape[0], np.float32)
        xs, ys = static_shape(x), static_shape(out)
        kernel = list(w.shape[2:])
        p = spatial_params(node, list(xs[2:]), kernel)
        ih, iw = as_2d(list(xs[2:]), 1)
        oh, ow = as_2d(list(ys[2:]), 1)
        kh, kw = as_2d(kernel, 1)
        sh, sw = as_2d(p["strides"], 1)
        dh, dw = as_2d(p["dilations"], 1)
        pt, pl = as_2d(p["begin"], 0)
        pb, pr = as_2d(p["end"], 0)
        lid = ctx.layer_id(node)
        w_name, w_t, w_prec = ctx.weight(node, w, "weight", value=node.inputs[1])
        b_name, b_t, b_prec = ctx.weight(node, b, "bias", value=b_in)
        fan_in = int(np.prod(w.shape[1:]))
        n_mults = w.size
        rf = ctx.reuse(node, n_mults)
        accum = ctx.layer_precision(node, "accum") or accumulator_with_bias(ctx.precision(x), w_prec, b_prec, fan_in)
        config = ctx.render(CONFIG, id=lid, c=xs[1], ih=ih, iw=iw, f=ys[1], oh=oh, ow=ow, kh=kh, kw=kw, sh=sh,
                            sw=sw, dh=dh, dw=dw, pt=pt, pl=pl, pb=pb, pr=pr, groups=attr(node, "group", 1), rf=rf,
                            block=math.ceil(n_mults / rf), accum_t=ctx.typedef(f"{lid}_accum_t", accum),
                            weight_t=w_t, bias_t=b_t)
        n_batch = xs[0]
        call = Call("kiln::conv2d", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"),
                    (ctx.var(x), ctx.var(out), w_name, b_name), batch=n_batch,
                    strides=(math.prod(xs[1:]), math.prod(ys[1:])))
        cost = LayerCost(mults=n_mults * oh * ow * n_batch, fan_in=fan_in, a_bits=bits(ctx.precision(x)),
                         b_bits=bits(w_prec), acc_bits=bits(accum), out_elems=math.prod(ys),
                         out_bits=bits(ctx.precision(out)), weight_bits=(w.size + b.size) * bits(w_prec),
                         weight_width=bits(w_prec), is_float=ctx.float_mode, reuse_factor=rf, divisible=n_mults)
        return Layer(config, call, self.header, cost)
