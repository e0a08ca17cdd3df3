"""Add, Sub, Mul, Div with broadcasting -> kiln::binary (kiln_eltwise.h).

Operands may be tensors or constants (written as weights). Shapes are right-aligned as
in numpy; each operand gets strides over the 6-D padded output shape, 0 where it is
broadcast. In fixed point a division by a constant becomes a multiplication by its
reciprocal (no divider in hardware).
"""

from __future__ import annotations

import numpy as np

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import const_array, size, static_shape

# ONNX op -> the kernel's name in kiln_eltwise.h's `enum class binary_op`
OPS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
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


@register
class BinaryEmitter(LayerEmitter):
    ops = tuple(("", op) for op in OPS)
    header = "kiln_eltwise.h"
    max_rank = MAX_RANK

    def check(self, node):
        shapes = [v.shape for v in (*node.inputs, node.outputs[0])]
        if any(s is not None and len(s) > self.max_rank for s in shapes):
            return f"rank above {self.max_rank}"
        return super().check(node)

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
        multiplies = op in ("Mul", "Div")
        cost = LayerCost(mults=size(out) if multiplies else 0, adds=0 if multiplies else size(out),
                         a_bits=bits(a_prec), b_bits=bits(b_prec), acc_bits=bits(ctx.precision(out)),
                         out_elems=size(out), out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode,
                         reuse_factor=ctx.reuse(node), extra_latency=8 if op == "Div" else 0,
                         divisible=size(out) if multiplies else 0)
        return Layer(config, call, self.header, cost)
