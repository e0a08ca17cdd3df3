"""Resize (opset 11+) over the last two axes -> kiln::resize (kiln_resize.h).

Modes: nearest (nearest_mode round_prefer_floor, round_prefer_ceil, floor, ceil) and linear
(bilinear), with the coordinate transformation modes half_pixel, half_pixel_symmetric,
pytorch_half_pixel, align_corners and asymmetric; scales or sizes as constant inputs, the
``axes`` attribute and keep_aspect_ratio_policy (opset 18+). The transformation is evaluated
here for every output row and column, in float32 as ONNX Runtime does (so rounding ties and
floors land on the same side): index tables and weights that the template reads (the ONNX
formula uses the given scale, not out/in, when scales are given).
Axes other than the last two must keep their size. Not supported: cubic, antialias,
tf_crop_and_resize, the opset 10 form, and align_corners with scales that give a fractional
output length (ONNX's reference and ONNX Runtime disagree there).
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.call import Call
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, const_array, static_shape
from kiln.precision import FixedType, FloatType, IntType

MODES = {"nearest": "nearest", "linear": "linear"}
TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
COEFF_FRAC_BITS = 16

CONFIG = """struct {{ id }}_config : kiln::resize_config {
    static const unsigned n_outer = {{ outer }}, in_h = {{ in_h }}, in_w = {{ in_w }}, out_h = {{ out_h }}, out_w = {{ out_w }};
    static const kiln::resize_mode mode = kiln::resize_mode::{{ mode }};
    static const unsigned reuse_factor = {{ rf }};
    typedef {{ coeff_t }} coeff_t;
    typedef {{ accum_t }} accum_t;
};
"""


def _text(node, name, default):
    value = attr(node, name, default)
    return value.decode() if isinstance(value, bytes) else value


def _const(node, i):
    v = node.inputs[i] if len(node.inputs) > i else None
    array = const_array(v) if v is not None else None
    return None if array is None or array.size == 0 else array


def axis_scales(node) -> list[float]:
    """The scale of every axis as the ONNX formula uses it (given scales, or sizes / input)."""
    in_shape, out_shape = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    rank = len(in_shape)
    axes = [a + rank if a < 0 else a for a in attr(node, "axes", list(range(rank)))]
    scales, sizes = _const(node, 2), _const(node, 3)
    result = [o / i for i, o in zip(in_shape, out_shape)]
    if scales is not None:
        for a, s in zip(axes, scales.tolist()):
            result[a] = float(s)
    elif sizes is not None:
        policy = _text(node, "keep_aspect_ratio_policy", "stretch")
        ratios = [int(s) / in_shape[a] for a, s in zip(axes, sizes.tolist())]
        for a, r in zip(axes, ratios):
            result[a] = r if policy == "stretch" else (min(ratios) if policy == "not_larger" else max(ratios))
    return result


def source_coordinates(node, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """x_original of every output position along one axis (ONNX Resize's transformation)."""
    f = np.float32
    x, scale, half = np.arange(n_out, dtype=f), f(scale), f(0.5)
    mode = _text(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "asymmetric":
        return x / scale
    if mode == "align_corners":
        return np.zeros(n_out, f) if n_out == 1 else x * f(n_in - 1) / f(n_out - 1)
    if mode == "pytorch_half_pixel":
        return (x + half) / scale - half if n_out > 1 else np.zeros(n_out, f)
    if mode == "half_pixel_symmetric":
        adjustment = f(n_out) / (scale * f(n_in))
        center = f(n_in) / f(2)
        return center * (f(1) - adjustment) + (x + half) / scale - half
    return (x + half) / scale - half  # half_pixel


def axis_tables(node, n_in: int, n_out: int, scale: float):
    """(i0, i1, w1) along one axis: the two source indices and the weight of the second."""
    xs = source_coordinates(node, n_in, n_out, scale)
    if _text(node, "mode", "nearest") == "nearest":
        how = _text(node, "nearest_mode", "round_prefer_floor")
        frac = xs - np.floor(xs)
        if how == "floor":
            idx = np.floor(xs)
        elif how == "ceil":
            idx = np.ceil(xs)
        elif how == "round_prefer_ceil":
            idx = np.where(frac == 0.5, np.ceil(xs), np.round(xs))
        else:
            idx = np.where(frac == 0.5, np.floor(xs), np.round(xs))
        idx = np.clip(idx, 0, n_in - 1).astype(np.int64)
        return idx, idx, np.zeros(n_out)
    low = np.floor(xs)
    return (np.clip(low, 0, n_in - 1).astype(np.int64), np.clip(low + 1, 0, n_in - 1).astype(np.int64), xs - low)


@register
class ResizeEmitter(LayerEmitter):
    ops = (("", "Resize"),)
    header = "kiln_resize.h"
    integer_tensors = False

    def check(self, node):
        mode = _text(node, "mode", "nearest")
        if mode not in MODES:
            return f"mode {mode!r} is not supported (nearest, linear)"
        transform = _text(node, "coordinate_transformation_mode", "half_pixel")
        if transform not in TRANSFORMS:
            return f"coordinate_transformation_mode {transform!r} is not supported ({', '.join(TRANSFORMS)})"
        if mode == "nearest" and _text(node, "nearest_mode", "round_prefer_floor") not in NEAREST:
            return f"nearest_mode {_text(node, 'nearest_mode', '')!r} is not supported"
        if attr(node, "antialias", 0) and mode != "nearest":
            return "antialias=1 is not supported"
        if len(node.inputs) < 3:
            return "the opset 10 form (scales as the second input) is not supported; export with opset 11 or later"
        if any(v is not None and const_array(v) is None for v in node.inputs[1:]):
            return "roi, scales and sizes must be constants"
        x, out = node.inputs[0].shape, node.outputs[0].shape
        if x is not None and out is not None and all(isinstance(d, int) for d in (*x, *out)):
            scales = axis_scales(node)
            if any(i != o or s != 1.0 for i, o, s in list(zip(x, out, scales))[:-2]):
                return "only the last two axes may be resized"
            if transform == "align_corners" and _const(node, 2) is not None and any(
                    abs(i * s - o) > 1e-6 for i, o, s in zip(x, out, scales)):
                return ("align_corners with a scale whose output length (input * scale) is not a whole number: "
                        "ONNX's reference divides by input * scale - 1, ONNX Runtime by the output length - 1; "
                        "give sizes instead")
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        in_shape, out_shape = static_shape(x), static_shape(out)
        scales = axis_scales(node)
        padded_in, padded_out = (1, 1, *in_shape)[-2:], (1, 1, *out_shape)[-2:]
        padded_scales = [1.0, 1.0, *scales][-2:]
        lid = ctx.layer_id(node)
        mode = MODES[_text(node, "mode", "nearest")]
        if ctx.float_mode:
            coeff, accum = ctx.default_precision, ctx.default_precision
        else:
            coeff = FixedType(COEFF_FRAC_BITS + 2, 2, rounding="RND")
            p = ctx.precision(x)
            accum = p if isinstance(p, FloatType) else FixedType(p.width + COEFF_FRAC_BITS + 1, p.integer + 1)
        args = []
        for axis, name in ((0, "y"), (1, "x")):
            i0, i1, w = axis_tables(node, padded_in[axis], padded_out[axis], padded_scales[axis])
            args.append(ctx.weight(node, i0, f"{name}0", precision=IntType())[0])
            args.append(ctx.weight(node, i1, f"{name}1", precision=IntType())[0])
            args.append(ctx.weight(node, w, f"w{name}", precision=coeff)[0])
        outer = math.prod(in_shape[:-2]) if len(in_shape) > 2 else 1
        config = ctx.render(CONFIG, id=lid, outer=outer, in_h=padded_in[0], in_w=padded_in[1], out_h=padded_out[0],
                            out_w=padded_out[1], mode=mode, rf=ctx.reuse(node),
                            coeff_t=ctx.typedef(f"{lid}_coeff_t", coeff), accum_t=ctx.typedef(f"{lid}_accum_t", accum))
        call = Call("kiln::resize", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out), *args))
        n_out = outer * padded_out[0] * padded_out[1]
        linear = mode == "linear"
        cost = LayerCost(mults=6 * n_out if linear else 0, fan_in=4 if linear else 1, a_bits=bits(ctx.precision(x)),
                         b_bits=bits(coeff), acc_bits=bits(accum), out_elems=n_out, out_bits=bits(ctx.precision(out)),
                         adds=3 * n_out if linear else 0, is_float=ctx.float_mode, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
