"""Add, Sub, Mul, Div, Mod (fmod=1) with broadcasting -> kiln::binary (kiln_eltwise.h);
Min, Max (variadic: a chain of kiln::binary calls accumulating into the output, each
reading the running result in place); Where -> kiln::select. The comparisons and logic ops
that also run as kiln::binary are in logic.py.

Operands may be tensors or constants (written as weights). Shapes are right-aligned as
in numpy; each operand gets strides over the 6-D padded output shape, 0 where it is
broadcast. In fixed point a division by a constant becomes a multiplication by its
reciprocal (no divider in hardware).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, const_array, size, static_shape
from kiln.precision import IntType

# ONNX op -> the kernel's name in kiln_eltwise.h's `enum class binary_op`
OPS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Min": "min", "Max": "max", "Mod": "mod"}
MAX_RANK = 6

CONFIG = """struct {{ id }}_config : kiln::binary_config {
    static const unsigned n_a = {{ n_a }};
    static const unsigned n_b = {{ n_b }};
    static const unsigned n_out = {{ n_out }};
    static const kiln::binary_op op = kiln::binary_op::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
{% for i in range(6) %}
    static const unsigned d{{ i }} = {{ dims[i] }}, a_s{{ i }} = {{ a_s[i] }}, b_s{{ i }} = {{ b_s[i] }};
{% endfor %}
};
"""
# Where: the binary fields (the op is unused) plus the condition's size and strides
SELECT_CONFIG = CONFIG[:CONFIG.rindex("};")].replace("kiln::binary_config {", "kiln::select_config {") + """\
    static const unsigned n_c = {{ n_c }};
{% for i in range(6) %}
    static const unsigned c_s{{ i }} = {{ c_s[i] }};
{% endfor %}
};
"""



def broadcast_strides(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    """Strides of ``shape`` (row-major) over ``out_shape`` padded to 6-D; 0 on broadcast axes."""
    padded = (1,) * (MAX_RANK - len(shape)) + tuple(shape)
    out = (1,) * (MAX_RANK - len(out_shape)) + tuple(out_shape)
    strides, step = [0] * MAX_RANK, 1
    for axis in reversed(range(MAX_RANK)):
        strides[axis] = step if padded[axis] == out[axis] and out[axis] != 1 else 0
        step *= padded[axis]
    return strides


def pad_dims(shape: tuple[int, ...]) -> list[int]:
    return [1] * (MAX_RANK - len(shape)) + list(shape)


def rank_problem(node, max_rank: int) -> str | None:
    """Why a tensor of ``node`` exceeds the emitter's ``max_rank`` trait, or None."""
    shapes = [v.shape for v in (*node.inputs, node.outputs[0]) if v is not None]
    if any(s is not None and len(s) > max_rank for s in shapes):
        return f"rank above {max_rank}"
    return None


def _cost(node, ctx, out, a_prec, b_prec, multiplies: bool, extra_latency: int = 0) -> LayerCost:
    return LayerCost(mults=size(out) if multiplies else 0, adds=0 if multiplies else size(out),
                     a_bits=bits(a_prec), b_bits=bits(b_prec), acc_bits=bits(ctx.precision(out)),
                     out_elems=size(out), out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode,
                     reuse_factor=ctx.reuse(node), extra_latency=extra_latency,
                     divisible=size(out) if multiplies else 0)


@register
class BinaryEmitter(LayerEmitter):
    ops = tuple(("", op) for op in ("Add", "Sub", "Mul", "Div", "Mod"))
    header = "kiln_eltwise.h"
    max_rank = MAX_RANK

    def check(self, node):
        if node.op_type == "Mod" and not attr(node, "fmod", 0):
            return "fmod=0 (the integer modulo) is not supported; floating-point Mod needs fmod=1"
        return rank_problem(node, self.max_rank) or super().check(node)

    def emit(self, node, ctx) -> Layer:
        a, b = node.inputs
        out = node.outputs[0]
        op = node.op_type
        lid = ctx.layer_id(node)
        b_const, b_value = const_array(b), b  # b_value: the constant as in the IR (its quantized type)
        if op == "Div" and b_const is not None and not ctx.float_mode:
            op, b_const, b_value = "Mul", 1.0 / b_const.astype(np.float64), None
        a_name, a_t, a_prec = ctx.operand(node, a, "in0")
        if b_const is not None:
            b_name, b_t, b_prec = ctx.weight(node, b_const, "in1", value=b_value)
        else:
            b_name, b_t, b_prec = ctx.operand(node, b, "in1")
        out_shape = static_shape(out)
        config = ctx.render(CONFIG, id=lid, n_a=size(a), n_b=size(b), n_out=size(out), op=OPS[op],
                            rf=ctx.reuse(node), dims=pad_dims(out_shape),
                            a_s=broadcast_strides(static_shape(a), out_shape),
                            b_s=broadcast_strides(static_shape(b), out_shape))
        call = Call("kiln::binary", (a_t, b_t, ctx.ctype(out), f"{lid}_config"), (a_name, b_name, ctx.var(out)))
        cost = _cost(node, ctx, out, a_prec, b_prec, op in ("Mul", "Div", "Mod"), 8 if op in ("Div", "Mod") else 0)
        return Layer(config, call, self.header, cost)


@register
class MinMaxEmitter(LayerEmitter):
    """Min/Max of 1..n operands: out = op(in0, in1), then out = op(out, in_k) for k >= 2
    (one input: op(in0, in0), a copy)."""

    ops = (("", "Min"), ("", "Max"))
    header = "kiln_eltwise.h"
    max_rank = MAX_RANK

    def check(self, node):
        return rank_problem(node, self.max_rank) or super().check(node)

    def emit(self, node, ctx) -> Layer:
        out = node.outputs[0]
        lid = ctx.layer_id(node)
        out_shape = static_shape(out)
        operands = list(node.inputs) if len(node.inputs) > 1 else [node.inputs[0]] * 2
        names = [ctx.operand(node, v, f"in{k}") for k, v in enumerate(operands[:len(node.inputs)])]
        names = names if len(node.inputs) > 1 else names * 2
        configs, calls = [], []
        for k in range(1, len(operands)):
            step = f"{lid}_{k}"
            a, (a_name, a_t, _) = (operands[0], names[0]) if k == 1 else (out, (ctx.var(out), ctx.ctype(out), None))
            b, (b_name, b_t, _) = operands[k], names[k]
            configs.append(ctx.render(CONFIG, id=step, n_a=size(a), n_b=size(b), n_out=size(out),
                                      op=OPS[node.op_type], rf=ctx.reuse(node), dims=pad_dims(out_shape),
                                      a_s=broadcast_strides(static_shape(a), out_shape),
                                      b_s=broadcast_strides(static_shape(b), out_shape)))
            calls.append(Call("kiln::binary", (a_t, b_t, ctx.ctype(out), f"{step}_config"),
                              (a_name, b_name, ctx.var(out))))
        cost = _cost(node, ctx, out, names[0][2], names[1][2], False)
        return Layer("".join(configs), tuple(calls), self.header, cost)


@register
class WhereEmitter(LayerEmitter):
    """Where(cond, a, b): a constant condition (written as an int weight) or a bool tensor
    computed at run time (a comparison's mask)."""

    ops = (("", "Where"),)
    header = "kiln_eltwise.h"
    bool_tensors = True
    max_rank = MAX_RANK

    def check(self, node):
        c = node.inputs[0]
        if const_array(c) is None and c.dtype is not None and c.dtype != ir.DataType.BOOL:
            return f"the condition must be bool, not {c.dtype.name.lower()}"
        return rank_problem(node, self.max_rank) or super().check(node)

    def emit(self, node, ctx) -> Layer:
        c, a, b = node.inputs
        out = node.outputs[0]
        lid = ctx.layer_id(node)
        out_shape = static_shape(out)
        if const_array(c) is not None:
            c_name, c_t, _ = ctx.weight(node, const_array(c).astype(np.int64), "cond", precision=IntType())
        else:
            c_name, c_t = ctx.var(c), ctx.ctype(c)
        a_name, a_t, a_prec = ctx.operand(node, a, "in1")
        b_name, b_t, b_prec = ctx.operand(node, b, "in2")
        config = ctx.render(SELECT_CONFIG, id=lid, n_a=size(a), n_b=size(b), n_out=size(out),
                            op="add", rf=ctx.reuse(node), dims=pad_dims(out_shape),
                            a_s=broadcast_strides(static_shape(a), out_shape),
                            b_s=broadcast_strides(static_shape(b), out_shape),
                            n_c=size(c), c_s=broadcast_strides(static_shape(c), out_shape))
        call = Call("kiln::select", (c_t, a_t, b_t, ctx.ctype(out), f"{lid}_config"),
                    (c_name, a_name, b_name, ctx.var(out)))
        return Layer(config, call, self.header, _cost(node, ctx, out, a_prec, b_prec, False))
