"""Graph passes on the IR, in the order the compiler runs them."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, TopologicalSortPass

from kiln.passes.batchnorm import FoldBatchNormPass
from kiln.passes.cleanup import RemoveNoOpsPass
from kiln.passes.dense import FuseDensePass


def lowering_passes() -> ir.passes.PassManager:
    """Cleanup, fusion into kiln layers, then tidy up."""
    return ir.passes.PassManager([
        RemoveNoOpsPass(),
        FuseDensePass(),
        FoldBatchNormPass(),
        RemoveUnusedNodesPass(),
        TopologicalSortPass(),
    ])


__all__ = ["lowering_passes", "FoldBatchNormPass", "FuseDensePass", "RemoveNoOpsPass"]
