"""Element-wise math, reductions and Gather (kiln_math.h).

* Erf, Sqrt, Exp, Reciprocal, Neg, Abs, Pow (constant scalar exponent): what unfused
  LayerNorm/GELU exports contain; Sin, Cos (positional encodings); evaluated in float (the fusion passes turn the usual
  patterns into table-based layers for fixed point).
* ReduceMean, ReduceSum, ReduceSumSquare, ReduceL1, ReduceL2, ReduceMax, ReduceMin,
  ReduceProd over any axes (attribute before opset 18 (13 for ReduceSum), input after).
  Fixed point: sums grow by log2(count) integer bits (squares: the product type), max/min
  keep the input type, the product accumulates in float (its range has no useful bound).
* CumSum along a constant axis (exclusive, reverse); the running sum grows by
  log2(axis length) integer bits in fixed point.
* Gather along any axis with constant or run-time indices (token embeddings: a
  constant table indexed by int ids; one token: a tensor indexed by a constant).
"""

from __future__ import annotations

import math


from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers.eltwise import MAX_RANK, pad_dims
from kiln.backends.hls.layers.layout import row_major_strides
from kiln.ir_utils import attr, const_array, size, static_shape
from kiln.precision import FixedType, FloatType, IntType, accumulator_for, sum_type_for

# ONNX op -> the kernel's name in kiln_math.h's `enum class math_op`
MATH_OPS = {"Erf": "erf", "Sqrt": "sqrt", "Exp": "exp", "Reciprocal": "reciprocal", "Pow": "pow", "Neg": "neg",
            "Abs": "abs", "Sin": "sin", "Cos": "cos"}

MATH_CONFIG = """struct {{ id }}_config : kiln::unary_math_config {
    static const unsigned n_elem = {{ n }};
    static const kiln::math_op op = kiln::math_op::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
    static constexpr float exponent = {{ exponent }};
};
"""

# ONNX op -> the kernel's name in kiln_math.h's `enum class reduce_op`
REDUCE_OPS = {"ReduceMean": "sum", "ReduceSum": "sum", "ReduceSumSquare": "sum_square", "ReduceL1": "l1",
              "ReduceL2": "l2", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}

REDUCE_CONFIG = """struct {{ id }}_config : kiln::reduce_config {
    static const unsigned n_in = {{ n_in }}, n_out = {{ n_out }};
    static const kiln::reduce_op op = kiln::reduce_op::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
    static constexpr float scale = {{ scale }};
{% for i in range(6) %}
    static const unsigned d{{ i }} = {{ dims[i] }}, o_s{{ i }} = {{ o_s[i] }};
{% endfor %}
    typedef {{ accum_t }} accum_t;
    typedef {{ scale_t }} scale_t;
};
"""

CUMSUM_CONFIG = """struct {{ id }}_config : kiln::cumsum_config {
    static const unsigned n_outer = {{ outer }}, n_axis = {{ axis }}, n_inner = {{ inner }};
    static const bool exclusive = {{ exclusive }}, reverse = {{ reverse }};
    static const unsigned reuse_factor = {{ rf }};
    typedef {{ accum_t }} accum_t;
};
"""

GATHER_CONFIG = """struct {{ id }}_config : kiln::gather_config {
    static const unsigned n_outer = {{ outer }}, n_axis = {{ axis }}, n_inner = {{ inner }}, n_idx = {{ n_idx }};
    static const unsigned reuse_factor = {{ rf }};
};
"""

@register
class UnaryMathEmitter(LayerEmitter):
    ops = tuple(("", op) for op in MATH_OPS)
    header = "kiln_math.h"

    def check(self, node):
        if node.op_type == "Pow":
            e = const_array(node.inputs[1])
            if e is None or e.size != 1:
                return "Pow needs a constant scalar exponent"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        lid = ctx.layer_id(node)
        exponent = float(const_array(node.inputs[1]).reshape(-1)[0]) if node.op_type == "Pow" else 1.0
        config = ctx.render(MATH_CONFIG, id=lid, n=size(x), op=MATH_OPS[node.op_type], rf=ctx.reuse(node),
                            exponent=c_float(exponent))
        call = Call("kiln::unary_math", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        cost = LayerCost(mults=size(out), a_bits=bits(ctx.precision(x)), b_bits=bits(ctx.precision(x)),
                         acc_bits=bits(ctx.precision(out)), out_elems=size(out), out_bits=bits(ctx.precision(out)),
                         is_float=True, extra_latency=10, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)


def reduce_axes(node, rank: int) -> list[int] | None:
    """Reduced axes (sorted, non-negative), or None when they are not constant."""
    axes = attr(node, "axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        array = const_array(node.inputs[1])
        if array is None:
            return None
        axes = array.reshape(-1).tolist()
    if axes is None or len(axes) == 0:
        if attr(node, "noop_with_empty_axes", 0):
            return []
        axes = list(range(rank))
    return sorted(a + rank if a < 0 else a for a in axes)


def reduce_accumulator(op: str, x, count: int):
    """The type that holds the running reduction of ``count`` values of type ``x`` without overflow."""
    if op in ("ReduceMax", "ReduceMin"):
        return x
    if op == "ReduceProd":
        return FloatType()
    if op in ("ReduceSumSquare", "ReduceL2"):
        return accumulator_for(x, x, count)
    return sum_type_for(x, count)


@register
class ReduceEmitter(LayerEmitter):
    ops = tuple(("", op) for op in REDUCE_OPS)
    header = "kiln_math.h"
    max_rank = MAX_RANK
    keeps_input_type = frozenset({"ReduceMax", "ReduceMin"})  # they pick one of the input's values

    def check(self, node):
        shape = node.inputs[0].shape
        if shape is not None and len(shape) > self.max_rank:
            return f"rank above {self.max_rank}"
        if reduce_axes(node, len(shape) if shape is not None else 0) is None:
            return "axes must be constant"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        axes = reduce_axes(node, len(shape))
        kept = [d if i not in axes else 1 for i, d in enumerate(shape)]
        kept_strides = row_major_strides(kept)
        o_s = [0 if i in axes else kept_strides[i] for i in range(len(shape))]
        count = math.prod(shape[a] for a in axes) if axes else 1
        lid = ctx.layer_id(node)
        in_prec = ctx.precision(x)
        accum = reduce_accumulator(node.op_type, in_prec, count)
        scale = 1.0 / count if node.op_type == "ReduceMean" else 1.0
        scale_prec = (FixedType(18, 2, rounding="RND") if isinstance(accum, FixedType) else FloatType())
        config = ctx.render(REDUCE_CONFIG, id=lid, n_in=size(x), n_out=size(out), op=REDUCE_OPS[node.op_type],
                            rf=ctx.reuse(node),
                            scale=c_float(scale), dims=pad_dims(tuple(shape)),
                            o_s=[0] * (MAX_RANK - len(shape)) + o_s,
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum),
                            scale_t=ctx.typedef(f"{lid}_scale_t", scale_prec))
        call = Call("kiln::reduce", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        cost = LayerCost(adds=size(x), fan_in=count, mults=size(out), a_bits=bits(accum), b_bits=bits(scale_prec),
                         acc_bits=bits(accum), out_elems=size(out), out_bits=bits(ctx.precision(out)),
                         is_float=ctx.float_mode, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)


@register
class CumSumEmitter(LayerEmitter):
    ops = (("", "CumSum"),)
    header = "kiln_math.h"

    def check(self, node):
        axis = const_array(node.inputs[1])
        if axis is None or axis.size != 1:
            return "the axis must be a constant scalar"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        shape = static_shape(x)
        axis = int(const_array(node.inputs[1]).reshape(-1)[0])
        axis = axis + len(shape) if axis < 0 else axis
        lid = ctx.layer_id(node)
        accum = sum_type_for(ctx.precision(x), shape[axis])
        config = ctx.render(CUMSUM_CONFIG, id=lid, outer=math.prod(shape[:axis]), axis=shape[axis],
                            inner=math.prod(shape[axis + 1:]), rf=ctx.reuse(node),
                            exclusive="true" if attr(node, "exclusive", 0) else "false",
                            reverse="true" if attr(node, "reverse", 0) else "false",
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum))
        call = Call("kiln::cumsum", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        cost = LayerCost(adds=size(x), fan_in=shape[axis], out_elems=size(out), out_bits=bits(ctx.precision(out)),
                         acc_bits=bits(accum), is_float=ctx.float_mode, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)


@register
class GatherEmitter(LayerEmitter):
    ops = (("", "Gather"),)
    keeps_input_type = True
    header = "kiln_math.h"
    integer_tensors = True  # int ids/indices; the data is only moved

    def check(self, node):
        if const_array(node.inputs[0]) is not None and const_array(node.inputs[1]) is not None:
            return "constant Gather should have been folded"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        data, indices = node.inputs
        out = node.outputs[0]
        shape = static_shape(data)
        axis = attr(node, "axis", 0)
        axis = axis + len(shape) if axis < 0 else axis
        lid = ctx.layer_id(node)
        d_name, d_t, _ = ctx.operand(node, data, "table")
        idx = const_array(indices)
        if idx is not None:
            i_name, i_t, _ = ctx.weight(node, idx, "indices", precision=IntType())
        else:
            i_name, i_t = ctx.var(indices), ctx.ctype(indices)
        config = ctx.render(GATHER_CONFIG, id=lid, outer=math.prod(shape[:axis]), axis=shape[axis],
                            inner=math.prod(shape[axis + 1:]), n_idx=max(1, size(indices)), rf=ctx.reuse(node))
        call = Call("kiln::gather", (d_t, i_t, ctx.ctype(out), f"{lid}_config"), (d_name, i_name, ctx.var(out)))
        return Layer(config, call, self.header)
