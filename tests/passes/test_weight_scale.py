"""FoldWeightScalePass (passes/weight_scale.py) alone: per-channel weight scales move after the sum."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper

from kiln.ir_utils import KILN_DOMAIN, add_initializer
from kiln.passes.weight_scale import SPECS_KEY, FoldActivationScalePass, FoldWeightScalePass
from kiln.quant import QuantSpec
from tests.passes.graphs import const_of, model, rng_input

rng = np.random.default_rng(4)
SCALES = np.array([0.3, 0.7, 0.11])  # not powers of two
Q = rng.integers(-7, 8, (5, 3)).astype(np.float64)
B = rng.standard_normal(3).astype(np.float32)


def _dense_model(specs):
    m = model([helper.make_node("Relu", ["d"], ["y"], name="relu")], {"d": (4, 3)}, {"y": (4, 3)})
    graph = m.graph
    x = ir.Value(name="x", shape=ir.Shape([4, 5]), type=ir.TensorType(ir.DataType.FLOAT))
    d = graph.inputs.pop(0)
    graph.inputs.append(x)
    w = add_initializer(graph, "W", (Q * SCALES).astype(np.float32))
    w.meta[SPECS_KEY] = specs
    dense = ir.Node(KILN_DOMAIN, "Dense", [x, w, add_initializer(graph, "bias", B)], name="fc", outputs=[d])
    graph.insert_before(graph.node(0), dense)
    return m, dense


def _evaluate(m, x):
    """numpy semantics of Dense -> [Mul] -> Relu as the graph now stands."""
    values = {"x": x}
    for n in m.graph:
        ins = [values[v.name] if v.name in values else const_of(v) for v in n.inputs]
        values[n.outputs[0].name] = {"Dense": lambda a, w, b: a @ w + b, "Mul": np.multiply,
                                     "Relu": lambda a: np.maximum(a, 0)}[n.op_type](*ins)
    return values["y"]


def test_per_channel_scales_fold_into_integer_weights_and_one_mul():
    m, dense = _dense_model([QuantSpec(scale=float(s), bits=4) for s in SCALES])
    x = rng_input((4, 5))
    expected = np.maximum(x @ (Q * SCALES) + B, 0)
    assert FoldWeightScalePass()(m).modified
    assert [n.op_type for n in m.graph] == ["Dense", "Mul", "Relu"]
    np.testing.assert_array_equal(const_of(dense.inputs[1]), Q.astype(np.float32))  # exact integers now
    mul = m.graph.node(1)
    assert mul.name == "fc_output_scale" and mul.outputs[0].name == "d" and dense.outputs[0].name == "fc_unscaled"
    np.testing.assert_allclose(const_of(mul.inputs[1]).reshape(-1), SCALES, rtol=1e-6)
    np.testing.assert_allclose(_evaluate(m, x), expected, rtol=1e-5, atol=1e-5)


def test_power_of_two_scales_are_left_alone():
    m, _ = _dense_model([QuantSpec(scale=0.25, bits=8)])
    assert not FoldWeightScalePass()(m).modified
    assert [n.op_type for n in m.graph] == ["Dense", "Relu"]


def test_activation_fold_without_quantizers_changes_nothing():
    m, _ = _dense_model([QuantSpec(scale=float(s), bits=4) for s in SCALES])
    assert not FoldActivationScalePass()(m).modified
