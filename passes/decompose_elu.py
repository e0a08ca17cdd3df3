"""Decompose the ELU family (Elu, Selu, Celu) into element-wise ops the backends have.

ONNX's definitions (x >= 0 on the left branch) rewritten without a select:

* ``Elu(x, alpha)   = Relu(x) + alpha * (Exp(Min(x, 0)) - 1)``
* ``Selu(x, alpha, gamma) = gamma * Elu(x, alpha)`` (defaults alpha 1.67326..., gamma 1.05070...)
* ``Celu(x, alpha)  = Relu(x) + alpha * (Exp(Min(x, 0) / alpha) - 1)``

``Min(x, 0)`` keeps Exp's argument <= 0 so it cannot overflow where the branch is unused.
The new nodes are named ``<node>/<op>`` and the last one takes over the output value (and its
name), so the layer still reads as the user's node in reports. Keras' SELU activation
(hls4ml's ``conv2d_small_mp_keras.onnx``) exports as Selu.

The lowering pipeline decomposes only Celu (``LOWERED``): Elu and Selu are one
``kiln::activation`` layer each in the HLS backend (one exp per element instead of six
layers); the pass still rewrites all three for callers that name them (``ops=``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.annotations import is_op
from kiln.ir_utils import add_initializer, attr, replace_node

DEFAULTS = {"Elu": (1.0, None), "Celu": (1.0, None),
            "Selu": (1.67326319217681884765625, 1.05070102214813232421875)}


LOWERED = ("Celu",)


class DecomposeEluPass(ir.passes.InPlacePass):
    """Elu/Selu/Celu (those in ``ops``) -> Relu, Min, Exp, Sub, Mul, Add (module docstring)."""

    def __init__(self, ops=LOWERED):
        super().__init__()
        self.ops = tuple(ops)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if not is_op(node, *self.ops) or not node.inputs or node.inputs[0] is None:
                continue
            x, out = node.inputs[0], node.outputs[0]
            if x.dtype is None or x.dtype.numpy() not in (np.float32, np.float64, np.float16):
                continue
            dtype = x.dtype.numpy()
            alpha0, gamma0 = DEFAULTS[node.op_type]
            alpha = float(attr(node, "alpha", alpha0))
            gamma = float(attr(node, "gamma", gamma0)) if gamma0 is not None else None
            base = node.name or node.op_type

            def const(hint, v):
                return add_initializer(graph, f"{base}_{hint}", np.array(v, dtype))

            new: list[ir.Node] = []

            def op(op_type, *inputs):
                n = ir.Node("", op_type, list(inputs), name=f"{base}/{op_type.lower()}{len(new)}")
                n.outputs[0].name = f"{base}/{op_type.lower()}{len(new)}_out"
                n.outputs[0].shape, n.outputs[0].type = x.shape, x.type
                new.append(n)
                return n.outputs[0]

            negative = op("Min", x, const("zero", 0.0))
            if node.op_type == "Celu":
                negative = op("Div", negative, const("alpha", alpha))
            tail = op("Mul", op("Sub", op("Exp", negative), const("one", 1.0)), const("alpha_mul", alpha))
            y = op("Add", op("Relu", x), tail)
            if gamma is not None:
                y = op("Mul", y, const("gamma", gamma))
            replace_node(graph, [node], new, [out], [y])
            modified = True
        return ir.passes.PassResult(model, modified)
