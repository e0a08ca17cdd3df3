"""Row-streamed LayerNorm, Softmax, GELU and element-wise math in --io stream (backends/hls/stream_rows.py,
nnet/kiln_stream_rows.h): one row of the last axis per packet, the io_parallel kernel per row, so the stream
C-simulation is bit-identical to io_parallel; per-row folding and its estimate (one row's registers)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln

T, D = 5, 8


def toy_model(tokens: int = T, dim: int = D) -> onnx.ModelProto:
    """LayerNorm -> MatMul -> GELU -> Erf -> Softmax over the last axis of [1, tokens, dim]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(1, 0.2, dim).astype(np.float32), "g"),
             numpy_helper.from_array(rng.normal(0, 0.2, dim).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (dim, dim)).astype(np.float32), "w")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["ln", "w"], ["mm"], name="mm"),
             helper.make_node("Gelu", ["mm"], ["ge"], name="gelu"),
             helper.make_node("Erf", ["ge"], ["er"], name="erf"),
             helper.make_node("Softmax", ["er"], ["y"], axis=-1, name="sm")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, dim])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def estimate(project) -> dict:
    return json.loads((project.path / "kiln_estimate.json").read_text())


def test_calibrated_folded_rows_are_bit_identical_to_parallel(tmp_path):
    """Calibrated 16-bit; the stream design folded (R = 10: LayerNorm/Softmax R_row = 2 per row of 8, GELU and Erf
    F = 8 cycles per packet) against io_parallel at R = 1: the same outputs, bit for bit."""
    src = tmp_path / "rows.onnx"
    onnx.save(toy_model(), src)
    rng = np.random.default_rng(1)
    cal, x = rng.normal(0, 1, (32, T, D)).astype(np.float32), rng.normal(0, 1, (16, T, D)).astype(np.float32)
    common = dict(board="vu13p", calibrate=cal, bits=16, fit_check=False)
    par = kiln.compile(str(src), output_dir=tmp_path / "par", reuse_factor=1, **common)
    st = kiln.compile(str(src), output_dir=tmp_path / "st", reuse_factor=10, io="stream", **common)
    assert {r["layer"]: r.get("template") for r in st.manifest["stream"]["layers"]} == {
        "ln": "kiln::layernorm_stream", "mm": "kiln::dense_stream", "gelu": "kiln::gelu_stream",
        "erf": "kiln::unary_math_stream", "sm": "kiln::softmax_stream"}
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert "_config, 2>(v0_x, " in top                       # LayerNorm: R_row = 2
    assert top.count(", 8, 8>(") == 2                         # GELU, Erf: P = 8, F = 8
    assert '#include "nnet/kiln_stream_rows.h"' in (st.path / "firmware" / "parameters.h").read_text()
    a, b = par.csim(x), st.csim(x)
    assert np.array_equal(a, b)
    assert np.max(np.abs(b - st.reference(x)[0])) < 0.02      # and close to ONNX Runtime (16-bit tables)
    rows = {r["name"]: r for r in estimate(st)["layers"]}
    assert rows["ln"]["ii"] == rows["sm"]["ii"] == T * 2 and rows["gelu"]["ii"] == rows["erf"]["ii"] == T * 8


def test_row_estimate_is_one_row_and_folding_replicates_tables(tmp_path):
    """65 tokens x 192 (DeiT-tiny at 32x32, patch 4): a streamed LayerNorm registers one row (192 values), not the
    tensor; GELU's table is replicated per two lanes (dual-port ROM), so folding F cuts its BRAM by F."""
    src = tmp_path / "big.onnx"
    onnx.save(toy_model(65, 192), src)
    common = dict(board="alveo-u250", precision="fixed<16,6>", fit_check=False, io="stream")
    fast = estimate(kiln.compile(str(src), output_dir=tmp_path / "r1", reuse_factor=1, **common))
    slow = estimate(kiln.compile(str(src), output_dir=tmp_path / "r4", reuse_factor=4 * 65, **common))
    f, s = ({r["name"]: r for r in e["layers"]} for e in (fast, slow))
    assert f["ln"]["ii"] == 65 and s["ln"]["ii"] == 65 * 4            # rows x R_row (R_row = 260 / 65)
    assert 192 * 16 <= f["ln"]["ff"] < 65 * 192 * 16 / 4               # one output row registered, not 65
    assert s["ln"]["dsp"] * 4 == f["ln"]["dsp"]                        # the row's multipliers shared 4 ways
    # element layers: F = the largest divisor of the packet <= R: 1, then 192 (one value per cycle)
    assert f["gelu"]["ii"] == 65 and s["gelu"]["ii"] == 65 * 192
    assert f["gelu"]["bram"] == 96 * 4 and s["gelu"]["bram"] == 4     # 192 / 2 copies of 4 BRAM18K, then one
    assert f["gelu"]["ff"] == 192 * 16
    assert not fast["buffered"] and not slow["buffered"]


def test_stream_folding_chooses_row_factors_for_a_rate(tmp_path):
    """--target-fps: the stream folding folds the per-row layers as far as the rate allows (least resources)."""
    src = tmp_path / "big.onnx"
    onnx.save(toy_model(65, 192), src)
    target = 300e6 / (65 * 192)          # II of 65 x 192 cycles: one element per cycle is enough
    st = kiln.compile(str(src), board="alveo-u250", precision="fixed<16,6>", io="stream",
                      target_fps=target, output_dir=tmp_path / "f")
    rows = {r["name"]: r for r in estimate(st)["layers"]}
    for name in ("ln", "gelu", "sm"):
        assert rows[name]["ii"] <= 65 * 192, name
    # GELU: F = 96, two lanes a cycle on the two ports of one table (F = 192 would save nothing more)
    assert rows["gelu"]["ii"] == 65 * 96 and rows["gelu"]["bram"] == 4
    assert rows["ln"]["reuse"] > 65 and rows["sm"]["reuse"] > 65        # R_row > 1


def test_softmax_over_more_than_the_last_axis_stays_buffered(tmp_path):
    """Opset 11's Softmax normalises the flattened [axis:] block (here 5 x 8 values): not one row, so buffered."""
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="sm")], "sm11",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])])
    src = tmp_path / "sm11.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=8), src)
    st = kiln.compile(str(src), board="vu13p", precision="fixed<16,6>", io="stream", output_dir=tmp_path / "s")
    (row,) = st.manifest["stream"]["layers"]
    assert row["mode"] == "buffered" and "other than the last one alone" in row["why"]
