"""Graph passes on the IR, in the order the compiler runs them."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, TopologicalSortPass

from kiln.passes.batchnorm import FoldBatchNormPass
from kiln.passes.cleanup import RemoveNoOpsPass
from kiln.passes.decompose_elu import DecomposeEluPass
from kiln.passes.dense import FuseDensePass
from kiln.passes.fuse_attention import FuseAttentionPass
from kiln.passes.fuse_gelu import FuseGeluPass
from kiln.passes.fuse_layernorm import FuseLayerNormPass
from kiln.passes.weight_scale import FoldActivationScalePass, FoldWeightScalePass


def lowering_passes(fuse: bool = True) -> ir.passes.PassManager:
    """Cleanup, fusion into kiln layers, then tidy up.

    ``fuse=False`` skips the pattern fusions (LayerNorm, GELU, multi-head attention) so
    the op-by-op graph is compiled as exported; Dense and BatchNorm folding always run
    (every backend layer relies on them). Attention fusion runs after the Dense pass: it
    matches the q/k/v/out projections as kiln.Dense, whatever linear form was exported.
    """
    fusions = [FuseLayerNormPass(), FuseGeluPass()] if fuse else []
    after_dense = [FuseAttentionPass()] if fuse else []
    return ir.passes.PassManager([
        RemoveNoOpsPass(),
        DecomposeEluPass(),
        *fusions,
        FuseDensePass(),
        *after_dense,
        FoldBatchNormPass(),
        FoldWeightScalePass(),
        FoldActivationScalePass(),
        RemoveUnusedNodesPass(),
        TopologicalSortPass(),
    ])


def coreml_passes() -> ir.passes.PassManager:
    """The fusions CoreML has ops for (layer_norm, gelu); Gemm/MatMul map onto linear/matmul."""
    return ir.passes.PassManager([RemoveNoOpsPass(), FuseLayerNormPass(), FuseGeluPass(), RemoveUnusedNodesPass(),
                                  TopologicalSortPass()])


__all__ = ["lowering_passes", "coreml_passes", "DecomposeEluPass", "FoldActivationScalePass", "FoldBatchNormPass", "FoldWeightScalePass", "FuseAttentionPass", "FuseDensePass", "FuseGeluPass",
           "FuseLayerNormPass", "RemoveNoOpsPass"]
