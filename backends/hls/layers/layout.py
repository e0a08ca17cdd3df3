"""Data movement and per-channel affine layers (kiln_layout.h, kiln_common.h).

* Reshape, Flatten, Squeeze, Unsqueeze, Identity, inference Dropout: the flat row-major
  array does not change, so they are copies (with type conversion). The cleanup pass
  removes most of them; what is left (a graph input copied to a graph output) is a copy.
* Transpose and Slice: one strided walk over the input (``strided_copy``).
* Concat: one ``concat_part`` call per input.
* Split: one ``strided_copy`` per used output, each starting at its part's offset along the axis.
* BatchNormalization that the fold pass could not merge: ``scale_shift``.
"""

from __future__ import annotations

import math

from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers.eltwise import MAX_RANK, pad_dims
from kiln.errors import KilnError
from kiln.ir_utils import attr, bn_scale_shift, const_array, is_inference_dropout, size, static_shape

STRIDED_CONFIG = """struct {{ id }}_config : kiln::strided_copy_config {
    static const unsigned n_in = {{ n_in }}, n_out = {{ n_out }};
    static const int offset = {{ offset }};
    static const unsigned reuse_factor = {{ rf }};
{% for i in range(6) %}
    static const unsigned d{{ i }} = {{ dims[i] }};
    static const int s{{ i }} = {{ strides[i] }};
{% endfor %}
};
"""


def row_major_strides(shape) -> list[int]:
    return [math.prod(shape[i + 1:]) for i in range(len(shape))]


def strided_copy_call(node, ctx, x, out, offset: int, strides: list[int], lid: str) -> tuple[str, Call]:
    """The config and call of one kiln::strided_copy reading ``x`` at offset + sum(i_k * strides[k])
    for each element of ``out`` (strides given per output axis); ``lid``: the config's prefix."""
    out_shape = static_shape(out)
    config = ctx.render(STRIDED_CONFIG, id=lid, n_in=size(x), n_out=size(out), offset=offset, rf=ctx.reuse(node),
                        dims=pad_dims(tuple(out_shape)), strides=[0] * (MAX_RANK - len(out_shape)) + list(strides))
    call = Call("kiln::strided_copy", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
    return config, call


def strided_copy(node, ctx, x, out, offset: int, strides: list[int]) -> Layer:
    """The kiln::strided_copy layer of a one-output node (see ``strided_copy_call``)."""
    config, call = strided_copy_call(node, ctx, x, out, offset, strides, ctx.layer_id(node))
    return Layer(config, call, "kiln_layout.h")

CONCAT_CONFIG = """struct {{ id }} : kiln::concat_part_config {
    static const unsigned n_outer = {{ outer }}, in_inner = {{ in_inner }}, out_inner = {{ out_inner }}, offset = {{ offset }};
};
"""

SCALE_SHIFT_CONFIG = """struct {{ id }}_config : kiln::scale_shift_config {
    static const unsigned n_outer = {{ outer }}, n_chan = {{ chan }}, n_inner = {{ inner }};
    static const unsigned reuse_factor = {{ rf }};
    typedef {{ scale_t }} scale_t;
    typedef {{ shift_t }} shift_t;
};
"""


@register
class CopyEmitter(LayerEmitter):
    ops = tuple(("", op) for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"))
    keeps_input_type = commutes_with_scale = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
    header = "kiln_common.h"
    integer_tensors = True

    def check(self, node):
        if node.op_type == "Dropout":
            mask = node.outputs[1] if len(node.outputs) > 1 else None
            if mask is not None and (mask.uses() or mask.is_graph_output()):
                return "the mask output of Dropout is not supported"
            if not is_inference_dropout(node):
                return "training mode with a non-zero ratio (random) is not supported"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        call = Call("kiln::copy", (ctx.ctype(x), ctx.ctype(out), size(out)), (ctx.var(x), ctx.var(out)))
        return Layer("", call, self.header)


@register
class TransposeEmitter(LayerEmitter):
    ops = (("", "Transpose"),)
    header = "kiln_layout.h"
    integer_tensors = True
    keeps_input_type = commutes_with_scale = True
    max_rank = MAX_RANK

    def check(self, node):
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) > self.max_rank:
            return f"rank above {self.max_rank}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        in_shape = static_shape(x)
        rank = len(in_shape)
        perm = list(attr(node, "perm", list(reversed(range(rank)))))
        in_strides = row_major_strides(in_shape)
        return strided_copy(node, ctx, x, out, 0, [in_strides[p] for p in perm])


@register
class ConcatEmitter(LayerEmitter):
    ops = (("", "Concat"),)
    header = "kiln_layout.h"
    integer_tensors = True

    def emit(self, node, ctx) -> Layer:
        out = node.outputs[0]
        out_shape = static_shape(out)
        axis = attr(node, "axis")
        axis = axis + len(out_shape) if axis < 0 else axis
        outer, inner = math.prod(out_shape[:axis]), math.prod(out_shape[axis + 1:])
        lid = ctx.layer_id(node)
        configs, calls, offset = [], [], 0
        for i, value in enumerate(node.inputs):
            part = static_shape(value)[axis] * inner
            name, ctype, _ = ctx.operand(node, value, f"in{i}")
            configs.append(ctx.render(CONCAT_CONFIG, id=f"{lid}_part{i}_config", outer=outer, in_inner=part,
                                      out_inner=out_shape[axis] * inner, offset=offset))
            calls.append(Call("kiln::concat_part", (ctype, ctx.ctype(out), f"{lid}_part{i}_config"), (name, ctx.var(out))))
            offset += part
        return Layer("".join(configs), tuple(calls), self.header)


@register
class BatchNormEmitter(LayerEmitter):
    ops = (("", "BatchNormalization"),)
    header = "kiln_layout.h"

    def check(self, node):
        if attr(node, "training_mode", 0):
            return "training_mode=1 is not supported"
        if bn_scale_shift(node) is None:
            return "BatchNormalization parameters must be constants"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        scale, shift = bn_scale_shift(node)
        lid = ctx.layer_id(node)
        s_name, s_t, _ = ctx.weight(node, scale, "weight")
        b_name, b_t, _ = ctx.weight(node, shift, "bias")
        config = ctx.render(SCALE_SHIFT_CONFIG, id=lid, outer=shape[0], chan=shape[1] if len(shape) > 1 else 1,
                            inner=math.prod(shape[2:]), rf=ctx.reuse(node), scale_t=s_t, shift_t=b_t)
        call = Call("kiln::scale_shift", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out), s_name, b_name))
        return Layer(config, call, self.header)


@register
class SliceEmitter(LayerEmitter):
    ops = (("", "Slice"),)
    header = "kiln_layout.h"
    integer_tensors = True
    keeps_input_type = True
    max_rank = MAX_RANK

    def check(self, node):
        if any(v is not None and const_array(v) is None for v in node.inputs[1:]):
            return "starts/ends/axes/steps must be constants"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) > self.max_rank:
            return f"rank above {self.max_rank}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        rank = len(shape)
        params = [const_array(v) if v is not None else None for v in list(node.inputs[1:]) + [None] * 4][:4]
        starts, ends = params[0].tolist(), params[1].tolist()
        axes = params[2].tolist() if params[2] is not None else list(range(len(starts)))
        steps = params[3].tolist() if params[3] is not None else [1] * len(starts)
        begin, step = [0] * rank, [1] * rank
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = a + rank if a < 0 else a
            begin[a] = slice(s, e, st).indices(shape[a])[0]
            step[a] = st
        in_strides = row_major_strides(shape)
        return strided_copy(node, ctx, x, out, sum(b * s for b, s in zip(begin, in_strides)),
                            [s * st for s, st in zip(in_strides, step)])


@register
class SplitEmitter(LayerEmitter):
    """Split along any axis: the split sizes (opset 13+ input, opset < 13 attribute, opset 18
    ``num_outputs``, or equal parts) are read from the inferred output shapes, so every form
    gives the same walk: output k copies the input slab starting at the sum of the sizes before it."""

    ops = (("", "Split"),)
    keeps_input_type = True  # each part is a copy of the input's values
    header = "kiln_layout.h"
    integer_tensors = True

    def check(self, node):
        if len(node.inputs) > 1 and node.inputs[1] is not None and const_array(node.inputs[1]) is None:
            return "the split sizes must be a constant"
        if node.inputs[0].shape is not None and len(node.inputs[0].shape) > MAX_RANK:
            return f"rank above {MAX_RANK}"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x = node.inputs[0]
        shape = static_shape(x)
        axis = attr(node, "axis", 0)
        axis = axis + len(shape) if axis < 0 else axis
        in_strides = row_major_strides(shape)
        lid = ctx.layer_id(node)
        configs, calls, start = [], [], 0
        for k, out in enumerate(node.outputs):
            part = static_shape(out)[axis]
            if out.uses() or out.is_graph_output():
                config, call = strided_copy_call(node, ctx, x, out, start * in_strides[axis], in_strides,
                                                 f"{lid}_out{k}")
                configs.append(config)
                calls.append(call)
            start += part
        if start != shape[axis]:
            raise KilnError(f"Split {node.name!r}: output sizes along axis {axis} sum to {start}, "
                            f"the input has {shape[axis]}")
        return Layer("".join(configs), tuple(calls), self.header)
