"""The transformer zoo (examples/zoo.py) through the HLS backend.

Float C-sim agrees with ONNX Runtime to 1e-4 relative on 256 inputs, with the fusion
passes on and off. In fixed point at the defaults (fixed<16,6> everywhere, softmax and
LayerNorm tables at their default sizes) the jet tagger keeps argmax agreement >= 99%
with float on 1000 inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from examples.zoo import export_model, samples  # noqa: E402
from tests.helpers import argmax_agreement, relative_error  # noqa: E402

import kiln  # noqa: E402

ZOO = ["jet_tagger", "tiny_vit", "text_encoder"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    return {name: export_model(name, d / f"{name}.onnx") for name in ZOO}


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", ZOO)
def test_float_csim_matches_onnxruntime(tmp_path, exported, name, fuse):
    project = kiln.compile(exported[name], output_dir=tmp_path / "p", precision="float", fuse=fuse)
    ops = {n.op_type for n in onnx.load(project.path / "kiln_ir.onnx").graph.node}
    if fuse:
        assert "Sqrt" not in ops and "Erf" not in ops  # decomposed LayerNorm / GELU were fused
    elif name == "text_encoder":  # opset 13: LayerNorm and tanh-GELU stay op by op
        assert {"Sqrt", "Tanh", "Pow"} <= ops
    x = samples(name, 256)
    assert relative_error(project.csim(x), project.reference(x)[0]) <= 1e-4


def test_jet_tagger_fixed_point_argmax(tmp_path, exported):
    project = kiln.compile(exported["jet_tagger"], output_dir=tmp_path / "q", precision="fixed<16,6>")
    x = samples("jet_tagger", 1000, seed=1)
    got, ref = project.csim(x), project.reference(x)[0]
    assert argmax_agreement(got, ref) >= 0.99
    assert np.max(np.abs(got - ref)) <= 0.01  # softmax probabilities; measured 1.5e-3
