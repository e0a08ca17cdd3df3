"""FoldBatchNormPass (passes/batchnorm.py) alone: inference BatchNormalization folded into Conv / kiln.Dense."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import helper

from kiln.ir_utils import KILN_DOMAIN, add_initializer
from kiln.passes.batchnorm import FoldBatchNormPass, bn_scale_shift
from tests.passes.graphs import const, const_of, model, node, ops, rng_input, run

rng = np.random.default_rng(1)
W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
BN = [const("g", rng.uniform(0.5, 2, 3)), const("be", rng.standard_normal(3)), const("mu", rng.standard_normal(3)),
      const("var", rng.uniform(0.5, 2, 3))]
X = rng_input((1, 2, 6, 6))


def _conv_bn(with_bias: bool, between: str | None = None):
    conv_in = ["x", "w", "b"] if with_bias else ["x", "w"]
    nodes = [helper.make_node("Conv", conv_in, ["c"], name="conv", pads=[1, 1, 1, 1])]
    src = "c"
    if between:
        nodes.append(helper.make_node(between, ["c"], ["r"]))
        src = "r"
    nodes.append(helper.make_node("BatchNormalization", [src, "g", "be", "mu", "var"], ["y"], name="bn", epsilon=1e-3))
    return model(nodes, {"x": X.shape}, {"y": (1, 3, 6, 6)}, [const("w", W), const("b", rng.standard_normal(3)), *BN])


def test_conv_then_bn_folds_and_onnxruntime_agrees():
    for with_bias in (True, False):
        m = _conv_bn(with_bias)
        before = run(m, {"x": X})[0]
        assert FoldBatchNormPass()(m).modified
        assert ops(m) == ["Conv"]
        conv = node(m, "Conv")
        assert conv.outputs[0].name == "y" and [v.name for v in conv.inputs[1:]] == ["conv_W_bn", "conv_b_bn"]
        np.testing.assert_allclose(run(m, {"x": X})[0], before, rtol=1e-5, atol=1e-5)


def test_bn_after_another_op_stays():
    m = _conv_bn(True, between="Relu")
    assert not FoldBatchNormPass()(m).modified
    assert ops(m) == ["Conv", "Relu", "BatchNormalization"]


def test_dense_then_bn_scales_columns():
    """kiln.Dense is not runnable by ONNX Runtime: compare with numpy x @ W + b then the BN affine."""
    m = model([helper.make_node("BatchNormalization", ["d", "g", "be", "mu", "var"], ["y"], name="bn")],
              {"d": (4, 3)}, {"y": (4, 3)}, BN)
    graph = m.graph
    x = ir.Value(name="x", shape=ir.Shape([4, 5]), type=ir.TensorType(ir.DataType.FLOAT))
    graph.inputs.insert(0, x)
    w, b = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    d = graph.inputs.pop(1)
    dense = ir.Node(KILN_DOMAIN, "Dense", [x, add_initializer(graph, "W", w), add_initializer(graph, "bias", b)],
                    name="fc", outputs=[d])
    graph.insert_before(node(m, "BatchNormalization"), dense)
    scale, shift = bn_scale_shift(node(m, "BatchNormalization"))
    assert FoldBatchNormPass()(m).modified
    assert [n.op_type for n in graph] == ["Dense"]
    xs = rng_input((4, 5))
    expected = (xs @ w + b) * scale + shift
    got = xs @ const_of(dense.inputs[1]) + const_of(dense.inputs[2])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert dense.outputs[0].name == "y"
