"""CoreML backend: ONNX -> MIL -> .mlpackage. On Linux the package is reloaded and its outputs'
shapes/dtypes compared with ONNX; the program's numerics come from coremltools' value inference
on a sample (fp32) against ONNX Runtime. Predictions need macOS (skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

if importlib.util.find_spec("coremltools") is None:
    pytest.skip("coremltools is not installed (pip install '.[coreml]')", allow_module_level=True)

from kiln.backends.coreml import compile_coreml  # noqa: E402
from tests.helpers import assert_clean_error, long_test, run_kiln  # noqa: E402

TOL = 1e-5


def _check(art, verified=True):
    m = art.manifest
    assert (art.path / "model.mlpackage").is_dir() and (art.path / "model.onnx").is_file()
    assert (art.path / "kiln_ir.onnx").is_file()
    assert m["reload_check"]["reloaded"]
    assert [o["shape"] for o in m["reload_check"]["outputs"]] == [o["shape"] for o in m["outputs"]]
    v = m["value_inference_check"]
    assert v["verified"] is verified, v
    if verified:
        assert v["max_relative_error"] <= TOL, v
        assert not v["unverified_ops"]
    else:
        assert v["unverified_ops"] and all(not r["checked"] for r in v["outputs"])
    return m


def test_jet_mlp_cli(tmp_path):
    from examples.make_jet_mlp import export

    model = export(tmp_path / "jet_mlp.onnx")
    r = run_kiln("compile", model, "--board", "iphone-12", "-o", tmp_path / "ios", "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    assert "max relative error" in r.stdout
    from kiln.backends.coreml.artifact import CoreMLArtifact

    m = _check(CoreMLArtifact.open(tmp_path / "ios"))
    assert m["deployment_target"] == "iOS16" and m["precision"] == "fp32"
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.float32))
    for cmd in (["run", tmp_path / "ios", "--input", tmp_path / "x.npy"], ["bench", tmp_path / "ios"]):
        r = run_kiln(*cmd)
        if sys.platform != "darwin":
            assert_clean_error(r, "only on macOS")


@pytest.mark.parametrize("name,verified", [("jet_tagger", True), ("text_encoder", True), ("tiny_vit", False)])
def test_transformer_zoo(name, verified, tmp_path):
    from examples import zoo

    path = zoo.export_model(name, tmp_path / f"{name}.onnx")
    art = compile_coreml(path, board="iphone-12", output_dir=tmp_path / "ios", precision="fp32")
    m = _check(art, verified)
    if not verified:
        assert list(m["value_inference_check"]["unverified_ops"]) == ["Conv"]
    assert {"LayerNormalization", "Softmax"} <= set(m["onnx_ops"])


TIMM = ["convnext_atto", "mobilenetv3_small_050", "deit_tiny_patch16_224", "poolformer_s12", "levit_128s",
        "mobilevit_xxs", "mixer_s16_224", "efficientformer_l1"]  # the whole timm zoo (examples/timm_zoo.py)


# behind KILN_LONG_TESTS (suite budget): MLP-Mixer's ops are DeiT's, EfficientFormer-L1's are
# PoolFormer's and DeiT's; deit and poolformer stay in CI here
SLOW_TIMM = {"mixer_s16_224": "~7 s (18 M weights)", "efficientformer_l1": "~6 s (a 224x224 model)"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=long_test(SLOW_TIMM[n])) if n in SLOW_TIMM else n for n in TIMM])
def test_timm_zoo_compiles(name, tmp_path):
    pytest.importorskip("timm")
    from examples.timm_zoo import ZOO, export

    path = export(name, tmp_path / f"{name}.onnx", size=ZOO[name].size)
    art = compile_coreml(path, board="iphone-12", output_dir=tmp_path / "ios")
    m = _check(art, verified=False)  # a Conv stem: coremltools has no value inference for conv
    assert "Conv" in m["value_inference_check"]["unverified_ops"]
    assert m["precision"] == "fp16"


def _qdq_model(tmp_path):
    from examples.make_jet_mlp import export
    from examples.quantized_models import quantize_static_qdq as _quantize_static

    float_model = export(tmp_path / "jet_mlp.onnx")
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    return float_model, _quantize_static(float_model, tmp_path / "jet_qdq.onnx", x, per_channel=True)


def test_qdq_weights_stay_integer(tmp_path):
    float_model, qdq = _qdq_model(tmp_path)
    fp16 = compile_coreml(float_model, output_dir=tmp_path / "fp16")
    art = compile_coreml(qdq, output_dir=tmp_path / "q")  # fp16 compute, like the float package
    m = _check(art)
    assert m["package"]["integer_weights"].get("constexpr_affine_dequantize", 0) >= 1
    # 4 int8 weight matrices (3.6k weights) vs fp16: the weight blob is smaller
    def weight_bytes(a):
        return sum(f.stat().st_size for f in (a.path / "model.mlpackage").rglob("weight.bin"))

    # the weight blob: int8 + scales vs fp16 (the whole package also holds the activations' Q/DQ ops)
    sizes = (weight_bytes(art), weight_bytes(fp16), m["package"]["package_bytes"],
             fp16.manifest["package"]["package_bytes"])
    print("weight.bin bytes: Q/DQ int8", sizes[0], "float fp16", sizes[1], "; packages", sizes[2], sizes[3])
    assert sizes[0] < sizes[1], sizes


def test_qonnx_weights_stay_integer(tmp_path):
    from examples.quantized_models import QONNX_CASES, qonnx_mlp as _qonnx_mlp

    path = tmp_path / "qonnx.onnx"
    onnx.save(_qonnx_mlp(*QONNX_CASES["float_act_po2_weights"]), path)
    art = compile_coreml(path, output_dir=tmp_path / "q", precision="fp32")
    m = _check(art)
    assert m["package"]["integer_weights"].get("constexpr_affine_dequantize", 0) >= 1


@pytest.mark.parametrize("how", ["int8", "palettize6"])
def test_compress_reports_sizes(how, tmp_path):
    from examples import zoo

    path = zoo.export_model("jet_tagger", tmp_path / "jet_tagger.onnx")
    r = run_kiln("compile", path, "--board", "iphone-12", "-o", tmp_path / "ios", "--compress", how)
    assert r.returncode == 0, r.stderr
    from kiln.backends.coreml.artifact import CoreMLArtifact

    pkg = CoreMLArtifact.open(tmp_path / "ios").manifest["package"]
    assert pkg["package_bytes"] < pkg["uncompressed_bytes"], pkg
    assert "before --compress" in r.stdout


def test_unsupported_ops_listed_at_once(tmp_path):
    nodes = [helper.make_node("Cos", ["x"], ["a"], name="cos1"), helper.make_node("Sin", ["a"], ["b"], name="sin1"),
             helper.make_node("Cos", ["b"], ["y"], name="cos2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = run_kiln("compile", path, "--board", "iphone-12", "-o", tmp_path / "ios")
    assert_clean_error(r, "3 node(s)", "'cos1'", "'cos2'", "'sin1'")
    assert not (tmp_path / "ios").exists()


@pytest.mark.skipif(sys.platform != "darwin", reason="CoreML predicts only on macOS")
def test_predictions_match_onnxruntime_on_macos(tmp_path):
    from examples.make_jet_mlp import export

    art = compile_coreml(export(tmp_path / "m.onnx"), output_dir=tmp_path / "ios")
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    assert max(r.relative_error for r in art.compare(x)) < 1e-2  # fp16 compute
