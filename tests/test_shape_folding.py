"""Shape-computing subgraphs of real exports fold to constants during lowering.

timm's DeiT-tiny (examples/timm_zoo.py, 64x64, random weights) exported by the legacy
TorchScript exporter computes its reshapes' shapes at run time (Shape -> Gather -> Unsqueeze ->
Concat -> Reshape, 13 Shape nodes) and its class-token expansion through ConstantOfShape ->
Equal -> Where -> Expand; the dynamo exporter writes static shapes. After lowering (the
frontend pins the batch axis to 1 and onnxscript's constant folder runs), neither export has
a Shape, ConstantOfShape, Size, Range, Equal or Where node left: no such layer reaches the backend.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import onnx
import pytest

from kiln.driver import lower

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from timm_zoo import export  # noqa: E402

SHAPE_OPS = {"Shape", "ConstantOfShape", "Size", "Range", "Equal", "Where"}


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_no_shape_layer_survives_lowering(tmp_path, dynamo):
    pytest.importorskip("timm")
    path = export("deit_tiny_patch16_224", tmp_path / "deit.onnx", dynamo=dynamo)
    exported = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    if not dynamo:  # the premise: the legacy export does compute shapes at run time
        assert exported["Shape"] >= 10 and exported["ConstantOfShape"] >= 1, exported
    loaded, _, _ = lower(str(path), precision="float")
    lowered = collections.Counter(n.op_type for n in loaded.model.graph)
    assert not SHAPE_OPS & set(lowered), {op: lowered[op] for op in SHAPE_OPS if lowered[op]}
    assert lowered["Reshape"] <= 1  # 25 in the legacy export: the fusion passes absorb all but one
