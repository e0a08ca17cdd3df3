"""Comparisons, logic ops and Cast: the bool masks of exported graphs (kiln_eltwise.h, kiln_logic.h).

* Equal, Less, Greater, LessOrEqual, GreaterOrEqual -> kiln::binary with a comparison op, and
  And, Or, Xor -> kiln::binary with a logic op: numpy broadcasting as for Add; the result is a
  C++ ``bool`` tensor. Operands are compared exactly in their own types: in a fixed-point
  design that is the quantized value, so an input within one LSB of a threshold may compare
  differently from the float reference (the test states this bound).
* Not -> kiln::unary_logic ``logical_not``; Cast -> kiln::unary_logic: to bool ``x != 0``, from
  float/fixed to an integer type ``truncate`` (toward zero, as ONNX Runtime's static_cast),
  otherwise ``convert`` (the value in the output's type: bool to float, float to fixed, int to float).

Comparisons whose operands are all constants never get here: the loader's constant folding
(onnxscript.optimizer.fold_constants) computes them at compile time.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.backends.hls.call import Call
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers.eltwise import CONFIG, MAX_RANK, rank_problem, broadcast_strides, pad_dims
from kiln.ir_utils import size, static_shape

# ONNX op -> the kernel's name in kiln_eltwise.h's `enum class binary_op`
COMPARE_OPS = {"Equal": "equal", "Less": "less", "Greater": "greater", "LessOrEqual": "less_equal",
               "GreaterOrEqual": "greater_equal"}
LOGIC_OPS = {"And": "logical_and", "Or": "logical_or", "Xor": "logical_xor"}
BINARY_OPS = {**COMPARE_OPS, **LOGIC_OPS}

# the node -> the kernel's name in kiln_logic.h's `enum class logic_op` (cast_kind chooses)
UNARY_KINDS = {"Not": "logical_not", "Cast to bool": "to_bool", "Cast float to int": "truncate", "Cast": "convert"}

UNARY_CONFIG = """struct {{ id }}_config : kiln::unary_logic_config {
    static const unsigned n_elem = {{ n }};
    static const kiln::logic_op op = kiln::logic_op::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
};
"""

# Cast targets: float32/float64 (C++ float or the design's fixed type), the integers held as
# C++ int (ids), bool. Narrower floats (float16, bfloat16, float8, float4) round differently
# from a C++ float, and 2/4-bit integers and strings have no C++ tensor type here.
CAST_REAL = {ir.DataType.FLOAT, ir.DataType.DOUBLE}
CAST_INT = {ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
            ir.DataType.UINT8, ir.DataType.UINT16}
CAST_TYPES = CAST_REAL | CAST_INT | {ir.DataType.BOOL}


def _dtype_problem(value, allowed, what: str) -> str | None:
    if value is not None and value.dtype is not None and value.dtype not in allowed:
        return f"{what} of type {value.dtype.name.lower()} is not supported"
    return None


@register
class CompareLogicEmitter(LayerEmitter):
    """Equal/Less/Greater/LessOrEqual/GreaterOrEqual (float, fixed, integer or bool operands)
    and And/Or/Xor (bool operands), broadcasting, into a bool tensor."""

    ops = tuple(("", op) for op in BINARY_OPS)
    header = "kiln_eltwise.h"
    integer_tensors = True  # integer operands (ids) compare exactly; nothing is computed on them
    bool_tensors = True
    max_rank = MAX_RANK

    def check(self, node):
        if (problem := rank_problem(node, self.max_rank)) is not None:
            return problem
        if node.op_type in LOGIC_OPS:
            for v in node.inputs:
                if (p := _dtype_problem(v, {ir.DataType.BOOL}, "an operand")) is not None:
                    return p + f"; {node.op_type} takes bool tensors"
        for v in node.inputs:
            if v is not None and v.dtype is not None and v.dtype in (ir.DataType.UINT32, ir.DataType.UINT64):
                return f"{v.dtype.name.lower()} operands are not supported (integers are held as C++ int)"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        a, b = node.inputs
        out = node.outputs[0]
        lid = ctx.layer_id(node)
        a_name, a_t, a_prec = ctx.operand(node, a, "in0")
        b_name, b_t, b_prec = ctx.operand(node, b, "in1")
        out_shape = static_shape(out)
        config = ctx.render(CONFIG, id=lid, n_a=size(a), n_b=size(b), n_out=size(out), op=BINARY_OPS[node.op_type],
                            rf=ctx.reuse(node), dims=pad_dims(out_shape),
                            a_s=broadcast_strides(static_shape(a), out_shape),
                            b_s=broadcast_strides(static_shape(b), out_shape))
        call = Call("kiln::binary", (a_t, b_t, ctx.ctype(out), f"{lid}_config"), (a_name, b_name, ctx.var(out)))
        cost = LayerCost(adds=size(out), a_bits=bits(a_prec), b_bits=bits(b_prec), acc_bits=1, out_elems=size(out),
                         out_bits=1, is_float=ctx.float_mode, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)


def cast_kind(node) -> str:
    """The kiln::logic_op of a Not or Cast node."""
    if node.op_type == "Not":
        return UNARY_KINDS["Not"]
    src, dst = node.inputs[0].dtype, node.outputs[0].dtype
    if dst == ir.DataType.BOOL:
        return UNARY_KINDS["Cast to bool"]
    if dst in CAST_INT and src is not None and src.is_floating_point():
        return UNARY_KINDS["Cast float to int"]
    return UNARY_KINDS["Cast"]


@register
class NotCastEmitter(LayerEmitter):
    """Not (bool) and Cast between float, fixed, integer and bool tensors."""

    ops = (("", "Not"), ("", "Cast"))
    header = "kiln_logic.h"
    integer_tensors = True
    bool_tensors = True

    def check(self, node):
        x, out = node.inputs[0], node.outputs[0]
        if node.op_type == "Not":
            problem = _dtype_problem(x, {ir.DataType.BOOL}, "the input")
            return problem + "; Not takes a bool tensor" if problem else super().check(node)
        for value, what in ((x, "the input"), (out, "the target")):
            if (p := _dtype_problem(value, CAST_TYPES, what)) is not None:
                return (p + "; Cast supports float32/float64, bool and integer types up to 64 bits held as C++ int "
                        "(not float16/bfloat16/float8/4-bit types, strings, uint32/uint64)")
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        lid = ctx.layer_id(node)
        x_name, x_t, x_prec = ctx.operand(node, x, "in0")
        config = ctx.render(UNARY_CONFIG, id=lid, n=size(x), op=cast_kind(node), rf=ctx.reuse(node))
        call = Call("kiln::unary_logic", (x_t, ctx.ctype(out), f"{lid}_config"), (x_name, ctx.var(out)))
        cost = LayerCost(out_elems=size(out), out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode,
                         reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
