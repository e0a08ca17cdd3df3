"""Fuse decomposed LayerNorm (as torch.onnx writes ``nn.LayerNorm`` below opset 17) into one LayerNormalization.

``ReduceMean -> Sub -> Pow(2) (or Mul(d, d)) -> ReduceMean -> Add(eps) -> Sqrt -> Div``,
optionally followed by ``Mul(gamma)`` and then ``Add(beta)`` with constant gamma/beta of one
element or one per normalised element. Three onnxscript rewrite rules (affine, scale only,
bare), operand order of Add/Mul free (the rule set is commuted). The longest tail wins: a
shorter rule refuses a match that the next op would extend, as the rewriter visits the
Div before the Mul and Add.

Conditions: ReduceMean over trailing axes (attribute or constant input) with keepdims=1,
the same axes list on both, a scalar eps. The result is the standard
``LayerNormalization(x, gamma, beta; axis, epsilon)`` where the model's opset has it (>= 17),
else the same op in the ``kiln`` domain; gamma/beta become initializers
``<first ReduceMean>_gamma`` / ``_beta`` (ones / zeros when absent), the node is named
``<first ReduceMean>_layernorm``, and its output keeps the name of the value it replaces.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from kiln.annotations import is_op
from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, const_array, single_consumer
from kiln.passes.rules import apply_rules, is_std, near, scalar


def reduce_axes(node: ir.Node) -> list[int] | None:
    """The axes of a keepdims=1 ReduceMean (attribute, or constant second input), else None."""
    axes = attr(node, "axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        array = const_array(node.inputs[1])
        axes = None if array is None else array.reshape(-1).tolist()
    if axes is None or attr(node, "keepdims", 1) != 1:
        return None
    return list(axes)


def _target(square: str, tail: int):
    """tail: 0 bare, 1 with Mul(gamma), 2 with Mul(gamma) and Add(beta)."""
    def target(op, x):
        mean = op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])
        dev = op.Sub(x, mean)
        sq = op.Pow(dev, pattern.Var("two")) if square == "Pow" else op.Mul(dev, dev)
        var = op.ReduceMean(sq, _allow_other_inputs=True, _outputs=["var"])
        out = op.Div(dev, op.Sqrt(op.Add(var, pattern.Var("eps"))), _outputs=["normed"])
        if tail >= 1:
            out = op.Mul(out, pattern.Var("gamma"), _outputs=["scaled"])
        if tail == 2:
            out = op.Add(out, pattern.Var("beta"))
        return out
    return target


def _norm_shape(x: ir.Value, mean: ir.Value) -> list[int] | None:
    """The shape of the normalised (trailing) axes, else None."""
    axes = reduce_axes(mean.producer())
    if axes is None or x.shape is None:
        return None
    rank = len(x.shape)
    norm_axes = sorted(a + rank if a < 0 else a for a in axes)
    if norm_axes != list(range(rank - len(norm_axes), rank)):
        return None  # LayerNormalization normalises trailing axes only
    return [x.shape[a] for a in norm_axes]


def _affine(value: ir.Value, op: str, norm_shape: list[int]) -> np.ndarray | None:
    """The constant of the only reader of ``value`` if it is ``op`` with a size-1 or full-size constant."""
    user = single_consumer(value)
    if not is_op(user, op):
        return None
    a, b = user.inputs[0], user.inputs[1]
    other = b if a is value else a if b is value else None
    c = const_array(other)
    return c if c is not None and c.size in (1, int(np.prod(norm_shape))) else None


def _check(tail: int):
    def check(context, x, mean, var, eps, normed, two=None, gamma=None, beta=None, scaled=None, **_) -> bool:
        norm_shape = _norm_shape(x, mean)
        if norm_shape is None or reduce_axes(var.producer()) != reduce_axes(mean.producer()):
            return False
        if (two is not None and scalar(two) != 2.0) or scalar(eps) is None:
            return False
        for c in (gamma, beta)[:tail]:
            array = const_array(c)
            if array is None or array.size not in (1, int(np.prod(norm_shape))):
                return False
        # the longest tail wins: refuse when the next Mul / Add would extend the match
        if tail == 0:
            return _affine(normed, "Mul", norm_shape) is None
        if tail == 1:
            return _affine(scaled, "Add", norm_shape) is None
        return True
    return check


def _rewrite(op, x, mean, eps, gamma=None, beta=None, **_):
    graph = mean.producer().graph
    opset = graph.opset_imports.get("", 13)
    norm_shape = _norm_shape(x, mean)
    rank = len(x.shape)
    name = mean.producer().name or "layernorm"
    arrays = []
    for c, default in ((gamma, np.ones), (beta, np.zeros)):
        array = default(norm_shape, np.float32) if c is None else np.broadcast_to(const_array(c), norm_shape)
        arrays.append(np.ascontiguousarray(array.astype(np.float32)))
    g_val = add_initializer(graph, f"{name}_gamma", arrays[0])
    b_val = add_initializer(graph, f"{name}_beta", arrays[1])
    return op.op("LayerNormalization", x, g_val, b_val, _domain="" if opset >= 17 else KILN_DOMAIN,
                 _name=f"{name}_layernorm", _outputs=[ir.Value(name=f"{name}_ln_out")],
                 axis=ir.AttrInt64("axis", rank - len(norm_shape) - rank),
                 epsilon=ir.AttrFloat32("epsilon", scalar(eps)))


@functools.cache
def layernorm_rules() -> pattern.RewriteRuleSet:
    """Affine, scale-only and bare forms (longest first), Pow or Mul square, each operand order."""
    rules = [pattern.RewriteRule(_target(square, tail), _rewrite, _check(tail))
             for tail in (2, 1, 0) for square in ("Pow", "Mul")]
    return pattern.RewriteRuleSet(rules, commute=True)


class FuseLayerNormPass(ir.passes.InPlacePass):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul gamma][/Add beta] -> LayerNormalization."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        # every form ends in a Div / Mul / Add at most three producers below the Sqrt
        count = apply_rules(model, layernorm_rules(), lambda n: is_std(n, "Div", "Mul", "Add") and near(n, {"Sqrt"}, 3))
        return ir.passes.PassResult(model, count > 0)
