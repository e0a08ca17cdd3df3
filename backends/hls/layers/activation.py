"""Relu, LeakyRelu, Sigmoid, Tanh, Clip, HardSigmoid, HardSwish, Selu, Elu, ThresholdedRelu,
Softplus, Softsign -> kiln::activation (kiln_activation.h).

Sigmoid/Tanh use exact <cmath> in float mode and a 1024-entry table over [-8, 8) in
fixed point. Clip bounds come from inputs (opset >= 11) or attributes (older opsets).
HardSigmoid (alpha, beta attributes, default 0.2 and 0.5) and HardSwish (alpha = 1/6,
beta = 1/2) compute alpha * x + beta in param_t (18 fractional bits) and clamp it to [0, 1].
Selu (alpha, gamma; ONNX defaults 1.6732632, 1.0507010), Elu (alpha, default 1), Softplus
and Softsign are evaluated in float in both modes and converted to the output type (within
one output LSB of the exact value in fixed point); ThresholdedRelu (alpha, default 1) compares
in param_t.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.ir_utils import attr, const_array, size
from kiln.precision import FixedType

# ONNX op -> the kernel's name in kiln_activation.h's `enum class activation_op`
OPS = {"Relu": "relu", "LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Clip": "clip",
       "HardSigmoid": "hard_sigmoid", "HardSwish": "hard_swish", "Selu": "selu", "Elu": "elu",
       "ThresholdedRelu": "thresholded_relu", "Softplus": "softplus", "Softsign": "softsign"}
# (alpha, beta) defaults: LeakyRelu's slope; ONNX's HardSigmoid defaults; HardSwish's fixed constants
SLOPES = {"HardSigmoid": (0.2, 0.5), "HardSwish": (1.0 / 6.0, 0.5), "Elu": (1.0, None), "ThresholdedRelu": (1.0, None),
          "Selu": (1.67326319217681884765625, None)}
SELU_GAMMA = 1.05070102214813232421875  # ONNX's default
# multiplies per element (a DSP48 each at these widths): a constant slope, or the exp of Elu/Selu
MULTS = {"LeakyRelu": 1, "HardSigmoid": 1, "HardSwish": 2, "Selu": 2, "Elu": 1, "Softsign": 1}

CONFIG = """struct {{ id }}_config : kiln::activation_config {
    static const unsigned n_elem = {{ n }};
    static const kiln::activation_op op = kiln::activation_op::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
    static const bool use_table = {{ 'true' if use_table else 'false' }};
    static const unsigned table_size = 1024;
    static constexpr float table_min = -8.0f;
    static constexpr float table_max = 8.0f;
    static constexpr float alpha = {{ alpha }};
{% if beta is not none %}
    static constexpr float beta = {{ beta }};
{% endif %}
{% if gamma is not none %}
    static constexpr float gamma = {{ gamma }};
{% endif %}
    static constexpr float clip_min = {{ clip_min }};
    static constexpr float clip_max = {{ clip_max }};
    typedef {{ param_t }} param_t;
    typedef {{ table_t }} table_t;
};
"""


def _clip_bounds(node) -> tuple[float, float] | None:
    """(min, max) of a Clip: attributes before opset 11, optional constant inputs after."""
    if "min" in node.attributes or "max" in node.attributes:
        return float(attr(node, "min", -np.inf)), float(attr(node, "max", np.inf))
    bounds = []
    for index, default in ((1, -np.inf), (2, np.inf)):
        value = node.inputs[index] if len(node.inputs) > index else None
        array = const_array(value) if value is not None else np.float32(default)
        if array is None:
            return None
        bounds.append(float(array))
    return bounds[0], bounds[1]


@register
class ActivationEmitter(LayerEmitter):
    ops = tuple(("", op) for op in OPS)
    keeps_input_type = commutes_with_scale = frozenset({"Relu"})
    header = "kiln_activation.h"

    def check(self, node):
        if node.op_type == "Clip" and _clip_bounds(node) is None:
            return "Clip bounds must be constants"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x, out = node.inputs[0], node.outputs[0]
        lid = ctx.layer_id(node)
        in_prec = ctx.precision(x)
        lo, hi = _clip_bounds(node) if node.op_type == "Clip" else (0.0, 0.0)
        alpha, beta = SLOPES.get(node.op_type, (0.01, None))
        if node.op_type != "HardSwish":
            alpha = float(attr(node, "alpha", alpha))
        if node.op_type == "HardSigmoid":
            beta = float(attr(node, "beta", beta))
        gamma = float(attr(node, "gamma", SELU_GAMMA)) if node.op_type == "Selu" else None
        if isinstance(in_prec, FixedType):
            lo, hi = max(lo, in_prec.min_value), min(hi, in_prec.max_value)
            param = FixedType(18 + in_prec.integer, max(in_prec.integer, 2), rounding="RND", overflow="SAT")
            param_t = ctx.typedef(f"{lid}_param_t", param)
        else:
            param_t = "float"
        config = ctx.render(CONFIG, id=lid, n=size(x), op=OPS[node.op_type], rf=ctx.reuse(node),
                            use_table=not ctx.float_mode, alpha=c_float(alpha),
                            beta=None if beta is None else c_float(beta),
                            gamma=None if gamma is None else c_float(gamma), clip_min=c_float(lo),
                            clip_max=c_float(hi), param_t=param_t, table_t=ctx.ctype(out))
        call = Call("kiln::activation", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        tabled = node.op_type in ("Sigmoid", "Tanh") and not ctx.float_mode
        cost = LayerCost(out_elems=size(out), out_bits=bits(ctx.precision(out)), extra_latency=1 if tabled else 0,
                         table_entries=1024 if tabled else 0, is_float=ctx.float_mode,
                         mults=size(out) * MULTS.get(node.op_type, 0), a_bits=bits(in_prec), b_bits=18,
                         acc_bits=bits(ctx.precision(out)), reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
