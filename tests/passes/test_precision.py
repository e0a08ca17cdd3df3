"""AssignPrecisionPass (passes/precision.py) alone: config types win over the model default."""

from __future__ import annotations

import pytest
from onnx import helper

from kiln.config import make_config
from kiln.errors import KilnError
from kiln.passes.precision import AssignPrecisionPass, precision_of, source_of
from kiln.precision import FixedType, FloatType
from tests.passes.graphs import model


def _chain():
    return model([helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Sigmoid", ["a"], ["y"], name="sig")],
                 {"x": (2, 3)}, {"y": (2, 3)})


def test_default_and_config_types():
    m = _chain()
    cfg = make_config(precision="fixed<16,6>", config={"layers": {"sig": {"precision": "fixed<18,8>"}}})
    AssignPrecisionPass(cfg)(m)
    x, a, y = m.graph.inputs[0], m.graph.node(0).outputs[0], m.graph.outputs[0]
    assert (precision_of(x), source_of(x)) == (FixedType(16, 6), "default")
    assert (precision_of(a), source_of(a)) == (FixedType(16, 6), "default")
    assert (precision_of(y), source_of(y)) == (FixedType(18, 8), "config")
    assert y.metadata_props["kiln.precision"] == str(FixedType(18, 8))  # the text kiln_ir.onnx keeps
    assert m.graph.node(0).metadata_props["kiln.reuse_factor"] == "1"


def test_float_mode_types_every_value_float():
    m = _chain()
    AssignPrecisionPass(make_config(precision="float"))(m)
    assert all(isinstance(precision_of(v), FloatType) for v in (m.graph.inputs[0], *m.graph.node(0).outputs, m.graph.outputs[0]))


def test_unknown_layer_in_config_is_a_user_error():
    with pytest.raises(KilnError, match="not in the model"):
        AssignPrecisionPass(make_config(config={"layers": {"nope": {"precision": "fixed<8,3>"}}}))(_chain())
