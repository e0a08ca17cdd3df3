"""Fuse decomposed GELU (erf and tanh forms, as torch.onnx writes ``F.gelu`` below opset 20) into one Gelu.

Erf form: ``x * 0.5 * (1 + Erf(x / sqrt 2))``; tanh form:
``x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``. Each is a set of onnxscript
rewrite rules (pattern -> replacement), one per structural variant: the scale on the input
as ``Mul(c)`` or ``Div(1/c)``; ``x^3`` as ``Pow(x, 3)`` or ``x * (x * x)``; and the tail
``0.5 * x * (1 + inner)`` associated three ways. Operand order of Add/Mul is free (the rule
set is commuted). The fused op is the standard ``Gelu`` where the model's opset has it
(>= 20), else ``kiln.Gelu``; it carries ``approximate`` ("none" / "tanh"), is named after
the second op of the form (``<Erf name>_gelu``; tanh form: ``<0.044715 Mul>_gelu`` after
``Pow``, ``<outer cube Mul>_gelu`` after ``x * x``) and its output keeps the name of the
value it replaces.
"""

from __future__ import annotations

import functools
import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from kiln.ir_utils import KILN_DOMAIN
from kiln.passes.rules import apply_rules, is_std, near, scalar

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715


def _scaled(op, x, scale_by: str, name: str):
    """x * c (``Mul``) or x / c (``Div``), c bound to ``name``."""
    return getattr(op, scale_by)(x, pattern.Var(name))


def _scale_ok(c: ir.Value, scale_by: str, factor: float) -> bool:
    value = scalar(c)
    if value is None or (scale_by == "Div" and value == 0.0):
        return False
    return abs((value if scale_by == "Mul" else 1.0 / value) - factor) < 1e-4 * factor


def _tail(op, x, inner, form: str):
    """0.5 * x * (1 + inner): "x_first" (x * (1+inner)) * 0.5, "half_x" (x * 0.5) * (1+inner),
    "half_first" (0.5 * (1+inner)) * x."""
    one_plus = op.Add(inner, pattern.Var("one"))
    half = pattern.Var("half")
    if form == "x_first":
        return op.Mul(op.Mul(x, one_plus), half)
    if form == "half_x":
        return op.Mul(op.Mul(x, half), one_plus)
    return op.Mul(op.Mul(half, one_plus), x)


def _erf_target(scale_by: str, tail: str):
    def target(op, x):
        erf = op.Erf(_scaled(op, x, scale_by, "c_pre"), _outputs=["anchor"])
        return _tail(op, x, erf, tail)
    return target


def _tanh_target(scale_by: str, cube: str, tail: str):
    def target(op, x):
        if cube == "Pow":
            cubed = op.Pow(x, pattern.Var("three"))
            scaled_cube = op.Mul(cubed, pattern.Var("c_cubic"), _outputs=["anchor"])
        else:
            cubed = op.Mul(x, op.Mul(x, x), _outputs=["anchor"])
            scaled_cube = op.Mul(cubed, pattern.Var("c_cubic"))
        tanh = op.Tanh(_scaled(op, op.Add(x, scaled_cube), scale_by, "c_pre"))
        return _tail(op, x, tanh, tail)
    return target


def _check(scale_by: str, factor: float, approximate: str):
    def check(context, c_pre, one, half, three=None, c_cubic=None, **_) -> bool:
        if not _scale_ok(c_pre, scale_by, factor) or scalar(one) != 1.0 or scalar(half) != 0.5:
            return False
        if approximate == "tanh":
            cubic = scalar(c_cubic)
            if cubic is None or abs(cubic - TANH_CUBIC) >= 1e-6 or (three is not None and scalar(three) != 3.0):
                return False
        return True
    return check


def _replacement(approximate: str):
    def rewrite(op, x, anchor, **_):
        graph = anchor.producer().graph
        opset = graph.opset_imports.get("", 13)
        name = anchor.producer().name or "gelu"
        out = ir.Value(name=f"{name}_gelu_out")
        return op.op("Gelu", x, _domain="" if opset >= 20 else KILN_DOMAIN, _name=f"{name}_gelu", _outputs=[out],
                     approximate=approximate)
    return rewrite


TAILS = ("x_first", "half_x", "half_first")


@functools.cache
def gelu_rules() -> pattern.RewriteRuleSet:
    """Every erf- and tanh-form variant, each operand order (commuted)."""
    rules = []
    for scale_by in ("Mul", "Div"):
        for tail in TAILS:
            rules.append(pattern.RewriteRule(_erf_target(scale_by, tail), _replacement("none"),
                                             _check(scale_by, 1.0 / SQRT2, "none")))
            for cube in ("Pow", "Mul"):
                rules.append(pattern.RewriteRule(_tanh_target(scale_by, cube, tail), _replacement("tanh"),
                                                 _check(scale_by, SQRT_2_OVER_PI, "tanh")))
    return pattern.RewriteRuleSet(rules, commute=True)


class FuseGeluPass(ir.passes.InPlacePass):
    """Erf-form and tanh-form GELU subgraphs -> Gelu (kiln.Gelu below opset 20)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not any(is_std(n, "Erf", "Tanh") for n in model.graph):
            return ir.passes.PassResult(model, False)  # (and the rule set is not built)
        # every form ends in a Mul at most three producers below its Erf / Tanh
        count = apply_rules(model, gelu_rules(), lambda n: is_std(n, "Mul") and near(n, {"Erf", "Tanh"}, 3))
        return ir.passes.PassResult(model, count > 0)
