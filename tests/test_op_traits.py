"""Operator traits: declared on the HLS emitters, read by the passes through kiln.op_traits."""

import subprocess
import sys

import pytest

from kiln.backends.hls.layers import REGISTRY
from kiln.op_traits import OpTraits, WITHOUT_EMITTER, ops_with, traits

# the sets passes/precision.py (SAME_AS_INPUT) and passes/weight_scale.py (SCALE_COMMUTES) spelled
# out before the traits moved to the emitters: the derived sets must be exactly these
OLD_SAME_AS_INPUT = {"Relu", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
                     "Identity", "Slice", "Split", "Gather", "ReduceMax", "ReduceMin", "DepthToSpace", "SpaceToDepth"}
OLD_SCALE_COMMUTES = {"Relu", "MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
                      "Identity"}


def test_derived_sets_equal_the_old_literal_sets():
    assert ops_with("keeps_input_type") == OLD_SAME_AS_INPUT
    assert ops_with("commutes_with_scale") == OLD_SCALE_COMMUTES
    assert ops_with("keeps_input_type", "kiln") == set() and ops_with("commutes_with_scale", "kiln") == set()


def test_traits_come_from_the_emitters():
    for (domain, op), emitter in REGISTRY.items():
        assert traits(op, domain) == emitter.traits(op), (domain, op)
    assert traits("Relu", "ai.onnx") == traits("Relu") == OpTraits(keeps_input_type=True, commutes_with_scale=True)
    assert traits("Sigmoid") == OpTraits() and traits("Dropout") == OpTraits()  # same emitters, not the trait
    assert traits("Add").max_rank == 6 and traits("Relu").max_rank is None
    assert traits("NoSuchOp") == OpTraits()
    # the ops declared without an emitter are exactly those no emitter handles
    assert not {op for _, ops in WITHOUT_EMITTER for op in ops} & {op for _, op in REGISTRY}


def test_an_emitter_cannot_claim_traits_of_ops_it_does_not_handle():
    from kiln.backends.hls.layers.base import LayerEmitter, register

    class Wrong(LayerEmitter):
        ops = (("", "Relu"),)
        keeps_input_type = frozenset({"Sigmoid"})

    with pytest.raises(TypeError, match="Sigmoid"):
        register(Wrong)


def test_passes_see_the_traits_without_importing_a_backend():
    """A fresh interpreter that imports only the passes: traits load lazily on first use."""
    code = ("import sys; import kiln.passes.precision, kiln.passes.weight_scale; "
            "assert not any(m.startswith('kiln.backends') for m in sys.modules), 'imported a backend'; "
            "from kiln.op_traits import traits; assert traits('Transpose').keeps_input_type; "
            "assert 'kiln.backends.hls.layers' in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
