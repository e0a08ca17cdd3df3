"""Token-streamed kiln.MultiHeadAttention in --io stream (nnet/kiln_stream_attention.h, backends/hls/stream_attention.py).

Stream-mode C-simulation is bit-identical to parallel mode with the same types (the streaming template runs
the io_parallel projections one row at a time and attention_head_row per query row: the same expressions in the
same order). Covered: cross-attention with a constant score bias (two streams), self-attention with a score bias
and no out projection (one stream), a layer of 3 sequences kept buffered (and why), and the estimate's II / memories for a DeiT-tiny
sized layer (65 tokens x 192, 3 heads). The jet tagger's three streamed attentions are checked by
tests/test_stream.py::test_jet_tagger_stream_is_bit_identical; the zoo's tiny ViT below (slow: two ~30 s builds).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from kiln.backends.hls.memory import place

import kiln

torch = pytest.importorskip("torch")

from tests.helpers import long_test
from tests.test_attention import HandCross, TorchMHA, _export, _inputs
from tests.timm_attention import WindowedMerged, windowed_merged
from tests.timm_attention import export as export_windowed

PRECISION = "fixed<16,6>"


def compile_both(src, tmp_path, **kwargs):
    common = dict(board="vu13p", precision=PRECISION, reuse_factor=1, fit_check=False, **kwargs)
    return (kiln.compile(src, output_dir=tmp_path / "par", **common),
            kiln.compile(src, output_dir=tmp_path / "st", io="stream", **common))


def attention_rows(project) -> list[dict]:
    return [r for r in project.manifest["stream"]["layers"] if r["op"] == "MultiHeadAttention"]


def estimate_row(project) -> dict:
    est = json.loads((project.path / "kiln_estimate.json").read_text())
    return next(r for r in est["layers"] if r["op"] == "MultiHeadAttention")


def test_cross_attention_with_score_bias_streams_bit_identical(tmp_path):
    torch.manual_seed(0)
    shapes = [(6, 8), (9, 5)]   # x_q: 6 tokens x 8, x_kv: 9 tokens x 5; score bias [3 heads, 6, 9] + causal mask
    src = _export(HandCross(variant="bias"), shapes, tmp_path / "m.onnx", 17)
    par, st = compile_both(src, tmp_path)
    (row,) = attention_rows(st)
    assert row["mode"] == "streamed" and row["template"] == "kiln::multihead_attention_stream"
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert "kiln::multihead_attention_stream<" in top and "kiln_clone" not in top   # x and mem: a stream each
    xs = _inputs(shapes, n=32)
    assert np.array_equal(par.csim(xs), st.csim(xs))
    # R = 1: R_proj = R_core = 1
    assert estimate_row(st)["ii"] == 9   # one sequence: max(n_kv, n_q) x R_proj


def test_self_attention_bias_merged_streams_bit_identical(tmp_path):
    """One window of 6 tokens, a score bias [1, heads, 6, 6], no out projection (a Hardswish before it): one stream in."""
    torch.manual_seed(0)
    shape = (6, 8)
    src = export_windowed(WindowedMerged(windows=1, tokens=6), shape, tmp_path / "m.onnx")
    par, st = compile_both(str(src), tmp_path)
    (row,) = attention_rows(st)
    assert row["mode"] == "streamed" and row["template"] == "kiln::multihead_attention_merged_self_stream"
    x = np.random.default_rng(2).standard_normal((32, *shape)).astype(np.float32)
    assert np.array_equal(par.csim(x), st.csim(x))
    assert estimate_row(st)["ii"] == 6   # max(n_kv, n_q) x R_proj


def test_several_sequences_stay_buffered_and_say_why(tmp_path):
    module, shape = windowed_merged()   # 3 windows of 4 tokens: sequences = 3
    src = export_windowed(module, shape, tmp_path / "m.onnx")
    st = kiln.compile(str(src), board="vu13p", precision=PRECISION, reuse_factor=1, fit_check=False, io="stream",
                      output_dir=tmp_path / "st")
    (row,) = attention_rows(st)
    assert row["mode"] == "buffered" and row["why"].startswith("3 sequences: ")


def test_deit_sized_attention_estimate(tmp_path):
    """65 tokens x 192, 3 heads of 64 (DeiT-tiny at 32x32, patch 4), R = 65 x 192: R_proj = 192 (the largest
    divisor of 192 x 192 not above R / 65), R_core = 192 (the largest divisor of 3 heads x 65 keys x 64 not above
    R_proj)."""
    torch.manual_seed(0)
    src = _export(TorchMHA(embed_dim=192, num_heads=3), [(65, 192)], tmp_path / "m.onnx", 14)
    common = {"board": "alveo-u250", "precision": PRECISION, "reuse_factor": 65 * 192, "fit_check": False}
    st = kiln.compile(src, output_dir=tmp_path / "st", io="stream", **common)
    par = kiln.compile(src, output_dir=tmp_path / "par", **common)
    row, prow = estimate_row(st), estimate_row(par)
    assert row["reuse"] == 192 and row["ii"] == 65 * 192   # max(n_kv, n_q) x R_proj: ping-pong K/V
    # K, V and the Q buffer: 65 x 3 x 64 words each in 65 banks of R_core = 192 words (one BRAM18K each),
    # twice over (ping-pong between the key and query phases); weights + biases (4 x 192 x 193 values) in
    # ceil(148,224 / 192) = 772 banks of 192 words; the softmax tables' 2, as in io_parallel
    buffers = 3 * place(192, 16, 2 * 65).bram
    assert buffers == 390 and place(192, 16, 772).bram == 772
    assert (row["bram"], row["uram"]) == (772 + 390 + 2, 0)
    # multipliers: 4 x 192 x 192 / 192 for the projections, ceil(3 x 65 x (64 + 64 + 3) / 192) for the core
    # (16 x 18 bits: one DSP each); io_parallel's at R = 12,480: 902 as well
    assert row["dsp"] == 768 + 134 == prow["dsp"]
    # one row of registers instead of Q, K, V and the merged heads of every token
    assert row["ff"] * 10 < prow["ff"]   # measured: FF 60,566 vs 1,035,382
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert "kiln::multihead_attention_self_stream<" in top and ", 192, 192>(" in top


@pytest.mark.slow
@long_test("~25 s (the jet tagger's streamed attentions are checked in CI: tests/test_stream.py)")
def test_tiny_vit_stream_is_bit_identical(tmp_path):
    from examples.zoo import export_model, samples

    src = str(export_model("tiny_vit", tmp_path / "vit.onnx"))
    par, st = compile_both(src, tmp_path)
    assert [r["mode"] for r in attention_rows(st)] == ["streamed", "streamed"]
    x = samples("tiny_vit", 16)
    assert np.array_equal(par.csim(x), st.csim(x))
