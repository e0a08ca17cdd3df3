"""Gelu (ONNX opset 20, and kiln.Gelu from the fusion pass) -> kiln::gelu (kiln_gelu.h).

``approximate="tanh"`` selects the tanh form. Fixed point uses a 4096-entry table over
[-8, 8): step 1/256, so the table error is below 0.005 (|gelu'| <= 1.13).
"""

from __future__ import annotations

from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, size

CONFIG = """struct {{ id }}_config : kiln::gelu_config {
    static const unsigned n_elem = {{ n }};
    static const unsigned reuse_factor = {{ rf }};
    static const bool use_table = {{ 'true' if use_table else 'false' }};
    static const bool tanh_form = {{ 'true' if tanh_form else 'false' }};
    static const unsigned table_size = 4096;
    static constexpr float table_min = -8.0f;
    static constexpr float table_max = 8.0f;
    typedef {{ table_t }} table_t;
};
"""


def approximation(node) -> str:
    value = attr(node, "approximate", "none")
    return value.decode() if isinstance(value, bytes) else value


@register
class GeluEmitter(LayerEmitter):
    ops = (("", "Gelu"), ("kiln", "Gelu"))
    header = "kiln_gelu.h"

    def check(self, node):
        if approximation(node) not in ("none", "tanh"):
            return f"approximate={approximation(node)!r} is not supported"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        lid = ctx.layer_id(node)
        config = ctx.render(CONFIG, id=lid, n=size(x), rf=ctx.reuse(node), use_table=not ctx.float_mode,
                            tanh_form=approximation(node) == "tanh", table_t=ctx.ctype(out))
        call = Call("kiln::gelu", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        cost = LayerCost(out_elems=size(out), out_bits=bits(ctx.precision(out)), extra_latency=1,
                         table_entries=0 if ctx.float_mode else 4096, is_float=ctx.float_mode,
                         mults=size(out) if ctx.float_mode else 0, reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
