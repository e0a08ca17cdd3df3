"""passes/__init__.py: lowering_passes runs cleanup, fusions, Dense, folds and tidy-up in order."""

from __future__ import annotations

import numpy as np
from onnx import helper

from kiln.passes import FuseAttentionPass, FuseDensePass, FuseGeluPass, FuseLayerNormPass, lowering_passes
from tests.passes.graphs import const, model, ops, rng_input, run
from tests.passes.test_fuse_layernorm import decomposed


def _mlp():
    rng = np.random.default_rng(3)
    return model([helper.make_node("Identity", ["x"], ["i"]), helper.make_node("MatMul", ["i", "w"], ["mm"]),
                  helper.make_node("Add", ["mm", "b"], ["h"]), helper.make_node("Relu", ["h"], ["y"]),
                  helper.make_node("Neg", ["x"], ["unused"])],
                 {"x": (2, 4)}, {"y": (2, 3)}, [const("w", rng.standard_normal((4, 3))), const("b", rng.standard_normal(3))])


def test_pass_order():
    names = [type(p).__name__ for p in lowering_passes().passes]
    assert names == ["RemoveNoOpsPass", "DecomposeEluPass", "FuseLayerNormPass", "FuseGeluPass", "FuseDensePass", "FuseAttentionPass",
                     "FoldBatchNormPass", "FoldWeightScalePass", "FoldActivationScalePass", "RemoveUnusedNodesPass",
                     "TopologicalSortPass"]
    unfused = [type(p) for p in lowering_passes(fuse=False).passes]
    assert FuseDensePass in unfused and not {FuseLayerNormPass, FuseGeluPass, FuseAttentionPass} & set(unfused)


def test_mlp_lowers_to_dense_relu():
    m = _mlp()
    x = rng_input((2, 4))
    ref = run(m, {"x": x})[0]
    lowering_passes()(m)
    assert ops(m) == ["kiln.Dense", "Relu"]  # Identity removed, MatMul+Add fused, the unread Neg dropped
    dense = list(m.graph)[0]
    w, b = (v.const_value.numpy() for v in dense.inputs[1:])
    np.testing.assert_allclose(np.maximum(x @ w + b, 0), ref, rtol=1e-5, atol=1e-6)


def test_fuse_false_keeps_layernorm_decomposed():
    m = decomposed()
    lowering_passes(fuse=False)(m)
    assert "ReduceMean" in ops(m) and not any("LayerNormalization" in o for o in ops(m))
    m = decomposed()
    lowering_passes()(m)
    assert ops(m) == ["kiln.LayerNormalization", "Relu"]
