"""FuseLayerNormPass (passes/fuse_layernorm.py) alone on hand-built decomposed LayerNorm graphs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from kiln.passes.fuse_layernorm import FuseLayerNormPass
from tests.passes.graphs import attrs, const, const_of, model, node, ops, rng_input, run

SHAPE = (3, 5, 8)
X = rng_input(SHAPE, scale=3.0) + 1.5
GAMMA = np.linspace(0.5, 1.5, 8, dtype=np.float32)
BETA = np.linspace(-0.3, 0.3, 8, dtype=np.float32)


def decomposed(opset=13, tail=2, square="Pow", swap=False, axes=(-1,), eps=1e-5, gamma=GAMMA, beta=BETA):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul gamma][/Add beta]; axes as attribute below opset 18."""
    inits = [const("two", 2.0), const("eps", eps), const("gamma", gamma), const("beta", beta)]
    if opset >= 18:
        inits.append(const("axes", np.array(axes, np.int64)))

    def mean(src, out, name):
        if opset >= 18:
            return helper.make_node("ReduceMean", [src, "axes"], [out], name=name)
        return helper.make_node("ReduceMean", [src], [out], name=name, axes=list(axes))
    nodes = [mean("x", "mu", "/ln/ReduceMean"), helper.make_node("Sub", ["x", "mu"], ["d"], name="/ln/Sub"),
             helper.make_node("Pow", ["d", "two"], ["d2"], name="/ln/Pow") if square == "Pow" else
             helper.make_node("Mul", ["d", "d"], ["d2"], name="/ln/Mul_sq"),
             mean("d2", "var", "/ln/ReduceMean_1"),
             helper.make_node("Add", ["eps", "var"] if swap else ["var", "eps"], ["ve"], name="/ln/Add"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="/ln/Sqrt"),
             helper.make_node("Div", ["d", "sd"], ["n"], name="/ln/Div")]
    last = "n"
    if tail >= 1:
        nodes.append(helper.make_node("Mul", ["gamma", "n"] if swap else ["n", "gamma"], ["g"], name="/ln/Mul"))
        last = "g"
    if tail == 2:
        nodes.append(helper.make_node("Add", ["beta", "g"] if swap else ["g", "beta"], ["b"], name="/ln/Add_1"))
        last = "b"
    nodes.append(helper.make_node("Relu", [last], ["y"], name="relu"))
    return model(nodes, {"x": SHAPE}, {"y": SHAPE}, inits, opset=opset)


def _layernorm(x, gamma, beta, eps, axes):
    mu = x.mean(axis=axes, keepdims=True)
    return np.maximum((x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps) * gamma + beta, 0)


@pytest.mark.parametrize("swap", [False, True], ids=["as_exported", "constants_first"])
@pytest.mark.parametrize("square", ["Pow", "Mul"])
@pytest.mark.parametrize("tail", [2, 1, 0], ids=["affine", "scale_only", "bare"])
def test_below_opset17_fuses_to_kiln_layernorm(tail, square, swap):
    m = decomposed(tail=tail, square=square, swap=swap)
    ref = run(m, {"x": X})[0]
    assert FuseLayerNormPass()(m).modified
    assert ops(m) == ["kiln.LayerNormalization", "Relu"]
    ln = node(m, "LayerNormalization")
    assert ln.name == "/ln/ReduceMean_layernorm" and attrs(ln) == {"axis": -1, "epsilon": pytest.approx(1e-5)}
    x, g, b = ln.inputs
    assert x.name == "x" and (g.name, b.name) == ("/ln/ReduceMean_gamma", "/ln/ReduceMean_beta")
    np.testing.assert_array_equal(const_of(g), GAMMA if tail >= 1 else np.ones(8, np.float32))
    np.testing.assert_array_equal(const_of(b), BETA if tail == 2 else np.zeros(8, np.float32))
    assert ln.outputs[0].name == {2: "b", 1: "g", 0: "n"}[tail]  # the output keeps the replaced value's name
    assert m.opset_imports["kiln"] == 1
    out = _layernorm(X.astype(np.float64), const_of(g), const_of(b), 1e-5, -1)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [17, 18])
def test_opset17_and_later_give_standard_layernorm_that_onnxruntime_runs(opset):
    m = decomposed(opset=opset, axes=(-2, -1), gamma=np.float32(1.25), beta=np.full((5, 8), 0.5, np.float32))
    before = run(m, {"x": X})[0]
    assert FuseLayerNormPass()(m).modified
    assert ops(m) == ["LayerNormalization", "Relu"] and "kiln" not in m.opset_imports
    ln = node(m, "LayerNormalization")
    assert attrs(ln)["axis"] == -2
    np.testing.assert_array_equal(const_of(ln.inputs[1]), np.full((5, 8), 1.25, np.float32))  # scalar gamma broadcast
    np.testing.assert_allclose(run(m, {"x": X})[0], before, rtol=1e-4, atol=1e-5)


def test_leading_axis_is_not_layernorm():
    m = decomposed(axes=(1,))
    assert not FuseLayerNormPass()(m).modified
    assert ops(m)[:2] == ["ReduceMean", "Sub"] and len(ops(m)) == 10


def test_per_row_gamma_stays_outside():
    """A gamma that is not one value per normalised element: the bare form fuses, the Mul and Add stay."""
    m = decomposed(gamma=np.ones((5, 1), np.float32))
    assert FuseLayerNormPass()(m).modified
    assert ops(m) == ["kiln.LayerNormalization", "Mul", "Add", "Relu"]
    ln = node(m, "LayerNormalization")
    assert ln.outputs[0].name == "n" and node(m, "Mul").inputs[0] is ln.outputs[0]
    np.testing.assert_array_equal(const_of(ln.inputs[1]), np.ones(8, np.float32))


def test_intermediate_read_elsewhere_is_left_alone():
    m = decomposed()
    m.graph.outputs.append(node(m, "Sqrt").outputs[0])
    assert not FuseLayerNormPass()(m).modified
    assert "LayerNormalization" not in ops(m)


def test_rule_set_also_runs_under_onnxscripts_own_driver():
    """layernorm_rules() is a plain onnxscript RewriteRuleSet: apply_to_model picks the longest tail too."""
    from kiln.passes.fuse_layernorm import layernorm_rules

    m = decomposed(swap=True)
    assert layernorm_rules().apply_to_model(m) == 1
    assert ops(m) == ["kiln.LayerNormalization", "Relu"] and node(m, "LayerNormalization").outputs[0].name == "b"
