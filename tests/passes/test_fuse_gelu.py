"""FuseGeluPass (passes/fuse_gelu.py) alone on hand-built erf- and tanh-form GELU graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from kiln.passes.fuse_gelu import FuseGeluPass
from tests.passes.graphs import attrs, const, model, node, ops, rng_input, run

X = rng_input((4, 6), scale=2.0)


def _tail(inner: str, form: str, swap: bool) -> list:
    """0.5 * x * (1 + inner) in the three associations; ``swap`` puts constants first."""
    def mul(a, b, out, name):
        return helper.make_node("Mul", [b, a] if swap else [a, b], [out], name=name)
    nodes = [helper.make_node("Add", ["one", inner] if swap else [inner, "one"], ["p1"], name="add1")]
    if form == "x_first":
        return nodes + [mul("x", "p1", "m1", "mul_x"), mul("m1", "half", "y", "mul_half")]
    if form == "half_x":
        return nodes + [mul("x", "half", "m1", "mul_half"), mul("m1", "p1", "y", "mul_x")]
    return nodes + [mul("p1", "half", "m1", "mul_half"), mul("m1", "x", "y", "mul_x")]


def erf_gelu(form="x_first", scale_by="Div", swap=False, opset=13, half=0.5):
    pre = (helper.make_node("Div", ["x", "c"], ["s"], name="pre") if scale_by == "Div" else
           helper.make_node("Mul", ["c", "x"] if swap else ["x", "c"], ["s"], name="pre"))
    c = math.sqrt(2.0) if scale_by == "Div" else 1 / math.sqrt(2.0)
    nodes = [pre, helper.make_node("Erf", ["s"], ["e"], name="erf"), *_tail("e", form, swap)]
    return model(nodes, {"x": X.shape}, {"y": X.shape}, [const("c", c), const("one", 1.0), const("half", half)],
                 opset=opset)


def tanh_gelu(form="half_first", cube="Pow", swap=False, opset=13):
    if cube == "Pow":
        cubed = [helper.make_node("Pow", ["x", "three"], ["x3"], name="cube")]
    else:
        cubed = [helper.make_node("Mul", ["x", "x"], ["x2"], name="square"),
                 helper.make_node("Mul", ["x2", "x"] if swap else ["x", "x2"], ["x3"], name="cube")]
    nodes = [*cubed, helper.make_node("Mul", ["k", "x3"] if swap else ["x3", "k"], ["kx3"], name="cubic"),
             helper.make_node("Add", ["kx3", "x"] if swap else ["x", "kx3"], ["inner"], name="inner"),
             helper.make_node("Mul", ["inner", "c"], ["s"], name="pre"),
             helper.make_node("Tanh", ["s"], ["t"], name="tanh"), *_tail("t", form, swap)]
    inits = [const("three", 3.0), const("k", 0.044715), const("c", math.sqrt(2 / math.pi)), const("one", 1.0),
             const("half", 0.5)]
    return model(nodes, {"x": X.shape}, {"y": X.shape}, inits, opset=opset)


def _gelu(x, approximate):
    from scipy.special import erf
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


@pytest.mark.parametrize("swap", [False, True], ids=["x_first_operands", "constants_first"])
@pytest.mark.parametrize("form", ["x_first", "half_x", "half_first"])
@pytest.mark.parametrize("scale_by", ["Div", "Mul"])
def test_erf_forms_fuse_to_kiln_gelu(scale_by, form, swap):
    m = erf_gelu(form, scale_by, swap)
    ref = run(m, {"x": X})[0]
    assert FuseGeluPass()(m).modified
    assert ops(m) == ["kiln.Gelu"]
    gelu = node(m, "Gelu")
    assert attrs(gelu) == {"approximate": "none"} and gelu.name == "erf_gelu"
    assert [v.name for v in gelu.inputs] == ["x"] and gelu.outputs[0].name == "y" and m.graph.outputs[0] is gelu.outputs[0]
    assert m.opset_imports["kiln"] == 1
    np.testing.assert_allclose(_gelu(X.astype(np.float64), "none"), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("form", ["x_first", "half_first"])
@pytest.mark.parametrize("cube", ["Pow", "Mul"])
def test_tanh_forms_fuse_to_kiln_gelu(cube, form, swap):
    m = tanh_gelu(form, cube, swap)
    ref = run(m, {"x": X})[0]
    assert FuseGeluPass()(m).modified
    assert ops(m) == ["kiln.Gelu"]
    gelu = node(m, "Gelu")
    # named after the form's second op: the 0.044715 Mul after Pow, the outer cube Mul after x*x
    assert attrs(gelu) == {"approximate": "tanh"} and gelu.name == ("cubic_gelu" if cube == "Pow" else "cube_gelu")
    assert gelu.outputs[0].name == "y"
    np.testing.assert_allclose(_gelu(X.astype(np.float64), "tanh"), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [erf_gelu, tanh_gelu], ids=["erf", "tanh"])
def test_opset20_gives_standard_gelu_that_onnxruntime_runs(build):
    m = build(opset=20)
    before = run(m, {"x": X})[0]
    assert FuseGeluPass()(m).modified
    assert ops(m) == ["Gelu"] and "kiln" not in m.opset_imports
    np.testing.assert_allclose(run(m, {"x": X})[0], before, rtol=1e-5, atol=1e-6)


def test_wrong_constant_is_left_alone():
    m = erf_gelu(half=0.6)
    assert not FuseGeluPass()(m).modified
    assert ops(m) == ["Div", "Erf", "Add", "Mul", "Mul"]


def test_intermediate_read_elsewhere_is_left_alone():
    m = erf_gelu()
    m.graph.outputs.append(node(m, "Erf").outputs[0])  # the Erf output is also a model output
    assert not FuseGeluPass()(m).modified
    assert len(list(m.graph)) == 5


def test_graph_without_erf_or_tanh_is_untouched():
    m = model([helper.make_node("Relu", ["x"], ["y"])], {"x": X.shape}, {"y": X.shape})
    assert not FuseGeluPass()(m).modified and ops(m) == ["Relu"]



def test_rule_set_also_runs_under_onnxscripts_own_driver():
    """gelu_rules() is a plain onnxscript RewriteRuleSet: apply_to_model gives the same node as the pass."""
    from kiln.passes.fuse_gelu import gelu_rules

    m = tanh_gelu("x_first", "Mul", swap=True)
    assert gelu_rules().apply_to_model(m) == 1
    gelu = node(m, "Gelu")
    assert ops(m) == ["kiln.Gelu"] and gelu.name == "cube_gelu" and attrs(gelu) == {"approximate": "tanh"}
