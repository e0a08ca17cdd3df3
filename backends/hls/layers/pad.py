"""Outputs larger than their input: Pad and Tile -> kiln::pad (kiln_pad.h); Expand -> a
strided copy with stride 0 along the broadcast axes (kiln_layout.h).

* Pad: constant, reflect, edge and wrap modes; the pads (and axes, opset 18+) as constant
  inputs (opset 11+) or the ``pads`` attribute (older opsets); the constant value from its
  input or the ``value`` attribute. Negative pads crop.
* Tile: the wrap mode with no leading pad (output index i reads i mod n along each axis).
* Expand: numpy broadcasting of the input to the output shape.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers.eltwise import MAX_RANK, broadcast_strides, pad_dims
from kiln.backends.hls.layers.layout import strided_copy
from kiln.backends.hls.context import c_float
from kiln.ir_utils import attr, const_array, size, static_shape

MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}

CONFIG = """struct {{ id }}_config : kiln::pad_config {
    static const unsigned n_in = {{ n_in }}, n_out = {{ n_out }};
    static const kiln::pad_mode mode = kiln::pad_mode::{{ mode }};
    static const unsigned reuse_factor = {{ rf }};
    static constexpr float value = {{ value }};
{% for i in range(6) %}
    static const unsigned d{{ i }} = {{ dims[i] }};
    static const int n{{ i }} = {{ in_dims[i] }}, b{{ i }} = {{ begin[i] }};
{% endfor %}
};
"""


def _input(node, i):
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i] is not None else None


def leading_pads(node, rank: int) -> list[int]:
    """The pads before each axis of a Pad node (attribute or constant input, with optional axes)."""
    pads_in = _input(node, 1)
    pads = list(attr(node, "pads", [])) if pads_in is None else const_array(pads_in).astype(np.int64).tolist()
    axes_in = _input(node, 3)
    axes = const_array(axes_in).astype(np.int64).tolist() if axes_in is not None else list(range(rank))
    begin = [0] * rank
    for a, p in zip(axes, pads[:len(axes)]):
        begin[a + rank if a < 0 else a] = int(p)
    return begin


def pad_layer(node, ctx, mode: str, begin: list[int], value: float) -> Layer:
    x, out = node.inputs[0], node.outputs[0]
    in_shape = static_shape(x)
    lead = MAX_RANK - len(in_shape)
    config = ctx.render(CONFIG, id=ctx.layer_id(node), n_in=size(x), n_out=size(out), mode=MODES[mode],
                        rf=ctx.reuse(node), value=c_float(value), dims=pad_dims(tuple(static_shape(out))),
                        in_dims=[1] * lead + list(in_shape), begin=[0] * lead + list(begin))
    call = Call("kiln::pad", (ctx.ctype(x), ctx.ctype(out), f"{ctx.layer_id(node)}_config"), (ctx.var(x), ctx.var(out)))
    return Layer(config, call, "kiln_pad.h")


@register
class PadEmitter(LayerEmitter):
    ops = (("", "Pad"),)
    header = "kiln_pad.h"
    integer_tensors = True

    def check(self, node):
        mode = attr(node, "mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in MODES:
            return f"mode {mode!r} is not supported (constant, reflect, edge, wrap)"
        if any(v is not None and const_array(v) is None for v in node.inputs[1:]):
            return "pads, constant_value and axes must be constants"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) > MAX_RANK:
            return f"rank above {MAX_RANK}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        mode = attr(node, "mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        value_in = _input(node, 2)
        value = float(const_array(value_in).reshape(-1)[0]) if value_in is not None and const_array(
            value_in).size else float(attr(node, "value", 0.0))
        return pad_layer(node, ctx, mode, leading_pads(node, len(static_shape(node.inputs[0]))), value)


@register
class TileEmitter(LayerEmitter):
    ops = (("", "Tile"),)
    header = "kiln_pad.h"
    integer_tensors = True

    def check(self, node):
        if const_array(node.inputs[1]) is None:
            return "repeats must be a constant"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) > MAX_RANK:
            return f"rank above {MAX_RANK}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        return pad_layer(node, ctx, "wrap", [0] * len(static_shape(node.inputs[0])), 0.0)


@register
class ExpandEmitter(LayerEmitter):
    ops = (("", "Expand"),)
    header = "kiln_layout.h"
    integer_tensors = True

    def check(self, node):
        if const_array(node.inputs[1]) is None:
            return "the shape must be a constant"
        if node.outputs[0].shape is not None and len(node.outputs[0].shape) > MAX_RANK:
            return f"rank above {MAX_RANK}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        out_shape = static_shape(out)
        strides = broadcast_strides(static_shape(x), out_shape)[MAX_RANK - len(out_shape):]
        return strided_copy(node, ctx, x, out, 0, strides)
