"""MatMul between two tensors (activation x activation, or a constant on the left or a
batched constant) -> kiln::matmul (kiln_matmul.h). A MatMul with a constant 2-D right
operand never gets here: the Dense pass turns it into kiln.Dense.

ONNX MatMul semantics: 1-D operands are promoted ([K] -> [1, K] on the left, [K, 1] on
the right) and batch axes broadcast as in numpy (up to 4 of them).

Einsum: the two-operand equations that are a batched matrix product (attention's
``bhid,bhjd->bhij``, ``bhij,bhjd->bhid``, ``bnc,bmc->bnm``, ``...ij,...jk->...ik``): the same
leading batch letters in both operands and the output, one contracted letter, one free
letter per operand, the output ending in (a's free letter, b's free letter). An operand
whose last two axes are the other way round is read transposed (``transpose_a/b``); other
equations are refused.
"""

from __future__ import annotations

import math

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, size, static_shape
from kiln.precision import accumulator_for

MAX_BATCH_RANK = 4

CONFIG = """struct {{ id }}_config : kiln::matmul_config {
    static const unsigned n_a = {{ n_a }}, n_b = {{ n_b }}, n_out = {{ n_out }};
    static const unsigned m = {{ m }}, k = {{ k }}, n = {{ n }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned multiplier_limit = {{ mult_limit }};
    static const bool transpose_a = {{ "true" if t_a else "false" }}, transpose_b = {{ "true" if t_b else "false" }};
{% for i in range(4) %}
    static const unsigned d{{ i }} = {{ dims[i] }}, a_s{{ i }} = {{ a_s[i] }}, b_s{{ i }} = {{ b_s[i] }};
{% endfor %}
    typedef {{ accum_t }} accum_t;
};
"""


def _batch_strides(batch: tuple[int, ...], out_batch: tuple[int, ...]) -> list[int]:
    padded = (1,) * (MAX_BATCH_RANK - len(batch)) + batch
    out = (1,) * (MAX_BATCH_RANK - len(out_batch)) + out_batch
    strides, step = [0] * MAX_BATCH_RANK, 1
    for axis in reversed(range(MAX_BATCH_RANK)):
        strides[axis] = step if padded[axis] == out[axis] and out[axis] != 1 else 0
        step *= padded[axis]
    return strides


@register
class MatMulEmitter(LayerEmitter):
    ops = (("", "MatMul"),)
    header = "kiln_matmul.h"

    def check(self, node):
        shapes = [v.shape for v in node.inputs]
        if any(s is not None and len(s) > MAX_BATCH_RANK + 2 for s in shapes):
            return f"more than {MAX_BATCH_RANK} batch axes"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        a, b = node.inputs
        a_shape, b_shape = static_shape(a), static_shape(b)
        a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
        b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
        return matmul_layer(node, ctx, (tuple(a2[:-2]), a2[-2], a2[-1]), (tuple(b2[:-2]), b2[-1]), False, False)


def matmul_layer(node, ctx, a_dims, b_dims, t_a: bool, t_b: bool) -> Layer:
    """kiln::matmul of the node's two inputs: ``a_dims`` (batch, m, k), ``b_dims`` (batch, n);
    ``t_a``/``t_b``: the operand is stored with its last two axes swapped."""
    a, b = node.inputs
    out = node.outputs[0]
    (a_batch, m, k), (b_batch, n) = a_dims, b_dims
    rank = max(len(a_batch), len(b_batch))
    out_batch = tuple(max(x, y) for x, y in zip((1,) * (rank - len(a_batch)) + a_batch,
                                                 (1,) * (rank - len(b_batch)) + b_batch))
    lid = ctx.layer_id(node)
    a_name, a_t, a_prec = ctx.operand(node, a, "in0")
    b_name, b_t, b_prec = ctx.operand(node, b, "in1")
    accum = ctx.layer_precision(node, "accum") or accumulator_for(a_prec, b_prec, k)
    n_mults = math.prod(out_batch) * m * n * k
    rf = ctx.reuse(node, n_mults)
    config = ctx.render(CONFIG, id=lid, n_a=size(a), n_b=size(b),
                        n_out=math.prod(out_batch) * m * n, m=m, k=k, n=n, rf=rf,
                        mult_limit=math.ceil(n_mults / rf), t_a=t_a, t_b=t_b,
                        dims=[1] * (MAX_BATCH_RANK - len(out_batch)) + list(out_batch),
                        a_s=_batch_strides(a_batch, out_batch), b_s=_batch_strides(b_batch, out_batch),
                        accum_t=ctx.typedef(f"{lid}_accum_t", accum))
    call = Call("kiln::matmul", (a_t, b_t, ctx.ctype(out), f"{lid}_config"), (a_name, b_name, ctx.var(out)))
    cost = LayerCost(mults=n_mults, fan_in=k, a_bits=bits(a_prec), b_bits=bits(b_prec), acc_bits=bits(accum),
                     out_elems=math.prod(out_batch) * m * n, out_bits=bits(ctx.precision(out)),
                     is_float=ctx.float_mode, reuse_factor=rf, divisible=n_mults)
    return Layer(config, call, "kiln_matmul.h", cost)


def einsum_as_matmul(equation: str, ranks: tuple[int, int]):
    """(batch letter count, transpose_a, transpose_b) of an Einsum that is a batched matmul,
    or a string saying why it is not."""
    eq = equation.replace(" ", "")
    if "->" not in eq:
        return "an equation without an explicit output ('->') is not supported"
    ins, outs = eq.split("->")
    terms = ins.split(",")
    if len(terms) != 2:
        return f"{len(terms)} operands: only two-operand (matrix product) equations are supported"
    if "..." in eq:  # the same batch axes in every term, named by letters no equation uses
        n_ell = {r - (len(t) - 3) for t, r in zip(terms, ranks)}
        if not all("..." in t for t in (*terms, outs)) or len(n_ell) != 1 or min(n_ell) < 0:
            return f"{equation!r}: '...' must stand for the same batch axes in every term"
        letters = "".join(chr(0x100 + i) for i in range(n_ell.pop()))
        terms, outs = [t.replace("...", letters) for t in terms], outs.replace("...", letters)
    ta, tb = terms
    if len(ta) < 2 or len(tb) < 2 or len(outs) < 2 or len(ta) != len(tb) or len(outs) != len(ta):
        return f"{equation!r} is not a batched matrix product of equal-rank operands"
    batch = outs[:-2]
    if ta[:-2] != batch or tb[:-2] != batch or len(set(outs)) != len(outs):
        return f"{equation!r}: the operands and the output must share the same leading batch axes"
    m, n = outs[-2], outs[-1]
    k = set(ta[-2:]) & set(tb[-2:])
    if len(k) != 1 or set(ta[-2:]) != {m, *k} or set(tb[-2:]) != {n, *k} or m == n:
        return f"{equation!r} is not a matrix product over one contracted axis"
    (k,) = k
    return len(batch), ta[-2:] == k + m, tb[-2:] == n + k


@register
class EinsumEmitter(LayerEmitter):
    ops = (("", "Einsum"),)
    header = "kiln_matmul.h"

    def check(self, node):
        shapes = [v.shape for v in node.inputs]
        if any(s is None for s in shapes):
            return "operand shapes must be known"
        form = einsum_as_matmul(attr(node, "equation", ""), tuple(len(s) for s in shapes))
        if isinstance(form, str):
            return form
        if form[0] > MAX_BATCH_RANK:
            return f"more than {MAX_BATCH_RANK} batch axes"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        a_shape, b_shape = (static_shape(v) for v in node.inputs)
        n_batch, t_a, t_b = einsum_as_matmul(attr(node, "equation"), (len(a_shape), len(b_shape)))
        m, k = (a_shape[-1], a_shape[-2]) if t_a else (a_shape[-2], a_shape[-1])
        n = b_shape[-2] if t_b else b_shape[-1]
        return matmul_layer(node, ctx, (tuple(a_shape[:n_batch]), m, k), (tuple(b_shape[:n_batch]), n), t_a, t_b)
