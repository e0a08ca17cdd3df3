"""passes/rules.py: apply_rules rewrites only at the nodes ``where`` accepts, first rule first."""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnxscript.rewriter import pattern

from kiln.passes.rules import apply_rules, is_std, near
from tests.passes.graphs import model, ops, rng_input, run


def _relu_relu():
    return model([helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["b"], name="r2"),
                  helper.make_node("Neg", ["b"], ["c"], name="neg"), helper.make_node("Relu", ["c"], ["d"], name="r3"),
                  helper.make_node("Relu", ["d"], ["y"], name="r4")], {"x": (2, 3)}, {"y": (2, 3)})


RULES = pattern.RewriteRuleSet([pattern.RewriteRule(lambda op, x: op.Relu(op.Relu(x)), lambda op, x: op.Relu(x))])


def test_rewrites_every_match_and_onnxruntime_agrees():
    m = _relu_relu()
    x = rng_input((2, 3))
    before = run(m, {"x": x})[0]
    assert apply_rules(m, RULES, lambda n: True) == 2
    assert ops(m) == ["Relu", "Neg", "Relu"] and m.graph.outputs[0].name == "y"
    assert all(not n.metadata_props for n in m.graph)  # no rule-name tags on the new nodes
    np.testing.assert_array_equal(run(m, {"x": x})[0], before)


def test_where_limits_the_anchors():
    m = _relu_relu()
    assert apply_rules(m, RULES, lambda n: n.name == "r4") == 1
    assert [n.name for n in m.graph][:3] == ["r1", "r2", "neg"] and len(m.graph) == 4


def test_near_and_is_std():
    m = _relu_relu()
    r4 = list(m.graph)[-1]
    assert near(r4, {"Neg"}, 2) and not near(r4, {"Neg"}, 1) and not near(r4, {"Sqrt"}, 4)
    assert is_std(r4, "Relu", "Tanh") and not is_std(r4, "Tanh") and not is_std(None, "Relu")
