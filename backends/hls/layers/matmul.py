"""MatMul between two tensors (activation x activation, or a constant on the left or a
batched constant) -> kiln::matmul (kiln_matmul.h). A MatMul with a constant 2-D right
operand never gets here: the Dense pass turns it into kiln.Dense.

ONNX MatMul semantics: 1-D operands are promoted ([K] -> [1, K] on the left, [K, 1] on
the right) and batch axes broadcast as in numpy (up to 4 of them).
"""

from __future__ import annotations

import math

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import static_shape
from kiln.precision import accumulator_for

MAX_BATCH_RANK = 4

CONFIG = """struct {{ id }}_config : kiln::matmul_config {
    static const unsigned n_a = {{ n_a }}, n_b = {{ n_b }}, n_out = {{ n_out }};
    static const unsigned m = {{ m }}, k = {{ k }}, n = {{ n }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned multiplier_limit = {{ mult_limit }};
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
        out = node.outputs[0]
        a_shape, b_shape = static_shape(a), static_shape(b)
        a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
        b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
        m, k, n = a2[-2], a2[-1], b2[-1]
        a_batch, b_batch = tuple(a2[:-2]), tuple(b2[:-2])
        rank = max(len(a_batch), len(b_batch))
        out_batch = tuple(max(x, y) for x, y in zip((1,) * (rank - len(a_batch)) + a_batch,
                                                     (1,) * (rank - len(b_batch)) + b_batch))
        lid = ctx.layer_id(node)
        a_name, a_t, a_prec = ctx.operand(node, a, "in0")
        b_name, b_t, b_prec = ctx.operand(node, b, "in1")
        accum = ctx.layer_precision(node, "accum") or accumulator_for(a_prec, b_prec, k)
        n_mults = math.prod(out_batch) * m * n * k
        rf = ctx.reuse(node, n_mults)
        config = ctx.render(CONFIG, id=lid, n_a=math.prod(a_shape), n_b=math.prod(b_shape),
                            n_out=math.prod(out_batch) * m * n, m=m, k=k, n=n, rf=rf,
                            mult_limit=math.ceil(n_mults / rf),
                            dims=[1] * (MAX_BATCH_RANK - len(out_batch)) + list(out_batch),
                            a_s=_batch_strides(a_batch, out_batch), b_s=_batch_strides(b_batch, out_batch),
                            accum_t=ctx.typedef(f"{lid}_accum_t", accum))
        call = Call("kiln::matmul", (a_t, b_t, ctx.ctype(out), f"{lid}_config"), (a_name, b_name, ctx.var(out)))
        cost = LayerCost(mults=n_mults, fan_in=k, a_bits=bits(a_prec), b_bits=bits(b_prec), acc_bits=bits(accum),
                         out_elems=math.prod(out_batch) * m * n, out_bits=bits(ctx.precision(out)),
                         is_float=ctx.float_mode, reuse_factor=rf, divisible=n_mults)
        return Layer(config, call, self.header, cost)
