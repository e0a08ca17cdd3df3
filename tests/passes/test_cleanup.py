"""RemoveNoOpsPass (passes/cleanup.py) alone: Identity / inference Dropout removal."""

from __future__ import annotations

import numpy as np
from onnx import helper

from kiln.passes.cleanup import RemoveNoOpsPass
from tests.passes.graphs import const, model, ops, rng_input, run

X = rng_input((2, 4))


def test_inner_identity_and_dropout_are_removed_and_onnxruntime_agrees():
    m = model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
               helper.make_node("Dropout", ["b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["y"])],
              {"x": (2, 4)}, {"y": (2, 4)})
    before = run(m, {"x": X})[0]
    assert RemoveNoOpsPass()(m).modified
    assert ops(m) == ["Relu", "Sigmoid"]
    np.testing.assert_array_equal(run(m, {"x": X})[0], before)


def test_graph_output_keeps_its_name():
    m = model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["y"])],
              {"x": (2, 4)}, {"y": (2, 4)})
    RemoveNoOpsPass()(m)
    assert ops(m) == ["Relu"] and m.graph.outputs[0].name == "y" and m.graph.outputs[0].producer().op_type == "Relu"


def test_input_to_output_passthrough_stays_as_identity():
    m = model([helper.make_node("Dropout", ["x"], ["y"])], {"x": (2, 4)}, {"y": (2, 4)})
    assert RemoveNoOpsPass()(m).modified
    assert ops(m) == ["Identity"] and not list(m.graph)[0].attributes
    np.testing.assert_array_equal(run(m, {"x": X})[0], X)


def test_training_dropout_is_kept():
    m = model([helper.make_node("Dropout", ["x", "ratio", "train"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
              {"x": (2, 4)}, {"y": (2, 4)}, [const("ratio", 0.5), const("train", np.array(True))])
    assert not RemoveNoOpsPass()(m).modified
    assert ops(m) == ["Dropout", "Relu"]


def test_dropout_with_a_read_mask_is_kept():
    nodes = [helper.make_node("Dropout", ["x"], ["a", "mask"]), helper.make_node("Relu", ["a"], ["y"]),
             helper.make_node("Cast", ["mask"], ["m"], to=1)]
    m = model(nodes, {"x": (2, 4)}, {"y": (2, 4), "m": (2, 4)})
    assert not RemoveNoOpsPass()(m).modified
    assert ops(m) == ["Dropout", "Relu", "Cast"]
