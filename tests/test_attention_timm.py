"""timm's attention forms, fused into kiln.MultiHeadAttention, through the HLS backend: C-sim against ONNX Runtime.

The graph-level checks (fused counts, each fused layer against ONNX Runtime) are in
tests/passes/test_attention_models.py; the exports are made the same way (small instances, random weights).
Float: 1e-5 relative to the output scale. Fixed point: the score-bias and merged-heads paths in fixed<16,6>
within a stated bound.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.helpers import long_test, relative_error

import kiln

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from tests.timm_attention import (efficientformer, export, levit, mobilevitv2, pvt, swin, vit_attention,  # noqa: E402
                                  windowed_merged)


def _fused(project) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(project.path / "kiln_ir.onnx").graph.node if n.op_type == "MultiHeadAttention"]


CASES = {
    "vit_sdpa_legacy": (lambda: vit_attention(True), False, 10),
    "vit_sdpa_dynamo": (lambda: vit_attention(True), True, 10),
    "vit_explicit_legacy": (lambda: vit_attention(False), False, 10),
    "vit_explicit_dynamo": (lambda: vit_attention(False), True, 10),
    "efficientformer_bias": (efficientformer, False, 11),      # + score bias
    "levit_bias_merged": (levit, True, 11),                     # + score bias, no out projection
    "pvt_spatial_reduction": (pvt, False, 10),                  # x_kv from the reduced sequence
    "windows_bias_merged": (windowed_merged, False, 11),        # 3 sequences, a bias per sequence, no out projection
}


@pytest.mark.parametrize("name", CASES)
def test_fused_timm_attention_float_csim(tmp_path, name):
    factory, dynamo, n_inputs = CASES[name]
    module, shape = factory()
    path = export(module, shape, tmp_path / "m.onnx", dynamo)
    project = kiln.compile(path, output_dir=tmp_path / "p", precision="float")
    (mha,) = _fused(project)
    assert len(mha.input) == n_inputs
    x = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    got, ref = project.csim(x), project.reference(x)[0]
    assert np.std(ref, axis=0).min() > 0  # the output varies with the input
    assert relative_error(got, ref) <= 1e-5  # measured 1.9e-7 (windows_bias_merged) to 3.6e-7


@pytest.mark.parametrize("name", ["efficientformer_bias", "windows_bias_merged", pytest.param(
    "levit_bias_merged", marks=long_test("~15 s (a score bias like efficientformer_bias and windows_bias_merged, in CI)"))])
def test_fused_biased_attention_fixed_point(tmp_path, name):
    """fixed<16,6> (lsb 2^-10 ~ 1e-3): the input, the weights, the score bias and the output are each rounded
    or truncated once, q/k/v are rounded to P and the scores keep 12 fractional bits, so a few lsb; bound:
    max abs error <= 8e-3 (8 lsb) and never worse than the op-by-op graph in the same precision by more than 1 lsb.
    Measured (200 inputs): efficientformer 4.5e-3 max, 8.6e-4 mean (op by op 5.5e-3); levit 4.8e-3, 1.1e-3 (6.8e-3); windows_bias_merged
    2.4e-3, 5.9e-4 (2.3e-3).
    """
    factory, dynamo, _ = CASES[name]
    module, shape = factory()
    path = export(module, shape, tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(1).standard_normal((200, *shape)).astype(np.float32)
    errors = {}
    for fuse in (True, False):
        project = kiln.compile(path, output_dir=tmp_path / f"p{fuse}", precision="fixed<16,6>", fuse=fuse)
        assert len(_fused(project)) == (1 if fuse else 0)
        errors[fuse] = np.abs(project.csim(x) - project.reference(x)[0])
    assert errors[True].max() <= 8e-3
    assert errors[True].max() <= errors[False].max() + 2 ** -10


@pytest.mark.parametrize("name, factory, fused", [("mobilevitv2_050", mobilevitv2, 0)])
def test_partly_or_unfused_attention_agrees(tmp_path, name, factory, fused):
    """MobileViTv2 (separable attention: a softmax over the tokens of a one-channel score, no Q K^T, so nothing
    fuses): op by op, and the whole model agrees with ONNX Runtime (measured 8.3e-6). Swin, which fused only its
    one-window stage here before the sequences axis, is in test_windowed_attention_float_csim."""
    model, shape = factory()
    path = export(model, shape, tmp_path / "m.onnx")
    project = kiln.compile(path, output_dir=tmp_path / "p", precision="float")
    assert len(_fused(project)) == fused
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    assert relative_error(project.csim(x), project.reference(x)[0]) <= 1e-5


def _windowed(name: str, tmp_path, dynamo: bool):
    """(ONNX path, sample shape) of a model whose attention runs on sequences side by side in the batch axis."""
    if name == "swin":
        model, shape = swin()
        return export(model, shape, tmp_path / "m.onnx", dynamo), shape
    from examples.timm_zoo import export as export_zoo

    return export_zoo("mobilevit_xxs", tmp_path / "m.onnx", dynamo=dynamo), (3, 64, 64)


# model -> (blocks fused, blocks with several sequences): Swin's 4-window stage 0 (its shifted block with a mask per
# window) and one-window stage 1; MobileViT-xxs's 9 transformer blocks on the 4 pixel positions of its 2x2 patches
WINDOWED = {"swin": (4, 2), "mobilevit_xxs": (9, 9)}


@pytest.mark.parametrize("name,dynamo", [
    pytest.param(name, dynamo, id=f"{name}-{'dynamo' if dynamo else 'legacy'}",
                 marks=[long_test("~6 s (the legacy export's float C-sim: tests/test_timm_zoo.py in CI)")]
                 if (name, dynamo) == ("mobilevit_xxs", False) else [])
    for name in WINDOWED for dynamo in (False, True)])
def test_windowed_attention_float_csim(tmp_path, name, dynamo):
    """Every attention block fuses (sequences attribute where the batch axis holds several) and the whole model's
    C-sim agrees with ONNX Runtime: 1e-5 relative to the output scale (measured: Swin 3.0e-7 legacy, 2.5e-7
    dynamo; MobileViT-xxs 2.2e-6)."""
    path, shape = _windowed(name, tmp_path, dynamo)
    project = kiln.compile(path, output_dir=tmp_path / "p", precision="float", fit_check=False)
    fused = _fused(project)
    sequences = [a.i for n in fused for a in n.attribute if a.name == "sequences"]
    assert (len(fused), len(sequences)) == WINDOWED[name] and set(sequences) == {4}
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    got, ref = project.csim(x), project.reference(x)[0]
    assert np.std(ref, axis=0).min() > 0
    assert relative_error(got, ref) <= 1e-5


@pytest.mark.parametrize("name, dynamo, samples, bound", [
    pytest.param("swin", False, 40, 8e-3, marks=long_test("~45 s: two fixed-point compiles; the windowed block in fixed "
                                                         "point stays in CI (test_fused_biased_attention_fixed_point)")),
    pytest.param("swin", True, 40, 8e-3, marks=long_test("~26 s (the dynamo export of the case above)")),
    pytest.param("mobilevit_xxs", False, 16, 1.6e-2, marks=long_test("~54 s (its float case stays in CI)"))])
def test_windowed_attention_fixed_point(tmp_path, name, dynamo, samples, bound):
    """fixed<16,6> (lsb 2^-10): the fused model's max abs error against ONNX Runtime within ``bound`` and never worse
    than the op-by-op graph in the same precision by more than 1 lsb. Measured: Swin (100 inputs, either exporter)
    3.04e-3 max, 9.4e-4 mean (op by op 3.06e-3, 9.1e-4); MobileViT-xxs (50 inputs) 8.44e-3 max, 1.41e-3 mean (op by
    op 8.44e-3, 1.39e-3: its convolutions dominate)."""
    path, shape = _windowed(name, tmp_path, dynamo)
    x = np.random.default_rng(1).standard_normal((samples, *shape)).astype(np.float32)
    errors = {}
    for fuse in (True, False):
        project = kiln.compile(path, output_dir=tmp_path / f"p{fuse}", precision="fixed<16,6>", fuse=fuse,
                               fit_check=False)
        assert len(_fused(project)) == (WINDOWED[name][0] if fuse else 0)
        errors[fuse] = np.abs(project.csim(x) - project.reference(x)[0])
    assert errors[True].max() <= bound
    assert errors[True].max() <= errors[False].max() + 2 ** -10


def test_several_sequences_share_one_kernel_so_the_interval_is_s_times_r(tmp_path):
    """One kernel runs once per sequence (kiln_attention.h): its hardware is one sequence's, its II S x R."""
    from kiln.report import load_estimate

    module, shape = windowed_merged()
    path = export(module, shape, tmp_path / "m.onnx", False)
    project = kiln.compile(path, output_dir=tmp_path / "p", fit_check=False)
    (mha,) = _fused(project)
    sequences = next(a.i for a in mha.attribute if a.name == "sequences")
    (layer,) = [layer for layer in load_estimate(project.path)["layers"] if layer["op"] == "MultiHeadAttention"]
    assert sequences == 3 and layer["ii"] == sequences * layer["reuse"]
