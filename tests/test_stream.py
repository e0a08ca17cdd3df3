"""--io stream: the dataflow architecture (backends/hls/stream_plan.py, nnet/kiln_stream.h).

Stream-mode C-simulation must be bit-identical to parallel-mode C-simulation with the same
types (the streaming templates do the io_parallel arithmetic in the same order); layers
without a streaming template are buffered, and say so.
"""

from __future__ import annotations

import json
import subprocess
from importlib import resources

import numpy as np
import onnx
import pytest

import kiln
from examples.make_jet_mlp import export, make_samples
from kiln.backends.hls.toolchain import ap_types_dir
from tests.helpers import assert_clean_error, run_kiln

PRECISION = "fixed<16,6>"


def compile_both(src, tmp_path, name, **kwargs):
    common = dict(board="vu13p", precision=PRECISION, reuse_factor=1, fit_check=False, **kwargs)
    par = kiln.compile(src, output_dir=tmp_path / f"{name}_par", **common)
    st = kiln.compile(src, output_dir=tmp_path / f"{name}_st", io="stream", **common)
    return par, st


@pytest.fixture(scope="module")
def jet_mlp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jet")
    return compile_both(str(export(tmp / "jet.onnx")), tmp, "jet")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    from examples.torch_models import exported, random_inputs

    tmp = tmp_path_factory.mktemp("cnn")
    path = tmp / "cnn2d.onnx"
    onnx.save(exported("CNN2d", 17, str(tmp)), path)
    return compile_both(str(path), tmp, "cnn"), random_inputs("CNN2d")[:64]


def modes(project) -> dict:
    return {row["layer"]: row["mode"] for row in project.manifest["stream"]["layers"]}


def test_jet_mlp_stream_is_bit_identical_to_parallel(jet_mlp):
    par, st = jet_mlp
    x = make_samples(200)
    a, b = par.csim(x), st.csim(x)
    assert np.array_equal(a, b)
    assert np.mean(np.argmax(b, 1) == np.argmax(st.reference(x)[0], 1)) >= 0.95
    m = modes(st)
    assert [n for n, mode in m.items() if mode == "buffered"] == []  # the softmax streams (issue 13, stream_rows.py)
    assert sum(mode == "streamed" for mode in m.values()) == 8  # 4 Dense + 3 Relu + Softmax
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in top and "kiln::dense_stream<" in top and "kiln::activation_stream<" in top
    assert "kiln::softmax_stream<" in top
    header = (st.path / "firmware" / "kiln_top.h").read_text()
    assert "kiln::stream<kiln::packet<v0_x_t, 16> > &v0_x" in header
    assert st.manifest["io"] == "stream" and par.manifest["io"] == "parallel"


def test_stream_trace_and_overflow_counts_match_parallel(jet_mlp):
    par, st = jet_mlp
    x = make_samples(16)
    _, trace_par = par.csim_trace(x)
    _, trace_st = st.csim_trace(x)
    assert trace_par.keys() == trace_st.keys()
    for name in trace_par:
        assert np.array_equal(trace_par[name], trace_st[name]), name
    # streamed layers have no shadow copy yet: the (now streamed) softmax is not counted
    _, rows = st.csim_overflow(x)
    assert [r["layer"] for r in rows] == []


def test_cnn_stream_is_bit_identical_with_line_buffers(cnn):
    (par, st), x = cnn
    assert np.array_equal(par.csim(x), st.csim(x))
    m = modes(st)
    for layer in ("/conv1/Conv", "/pool1/MaxPool", "/conv2/Conv", "/pool2/AveragePool", "/fc/Gemm"):
        assert m[layer] == "streamed", layer
    assert {n for n, mode in m.items() if mode == "buffered"} == {"/Flatten"}
    assert st.manifest["stream"]["ports"]["x"] == {"packet": 3, "order": "pixel"}  # one RGB pixel per read
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert top.count("kiln::conv2d_stream<") == 2 and top.count("kiln::pool2d_stream<") == 2


def test_cnn_stream_estimate_uses_less_and_states_frames_per_second(cnn):
    (par, st), _ = cnn
    p = json.loads((par.path / "kiln_estimate.json").read_text())["total"]
    s_all = json.loads((st.path / "kiln_estimate.json").read_text())
    s = s_all["total"]
    assert s_all["io"] == "stream"
    assert s["dsp"] < p["dsp"] and s["lut"] < p["lut"]
    # conv1 reads 16 x 16 pixels, one per cycle at R=1: the slowest process
    assert s["ii"] == 256
    assert s["frames_per_s"] == pytest.approx(200e6 / 256)
    rows = {r["name"]: r for r in s_all["layers"]}
    assert rows["/conv1/Conv"]["ii"] == 256 and rows["/conv2/Conv"]["ii"] == 64
    assert rows["/conv1/Conv"]["dsp"] == 8 * 3 * 9  # one multiplier per weight, shared by the pixels
    fifos = s_all["fifos"]
    assert fifos and all(f["depth"] >= 2 and f["why"] for f in fifos)
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    for f in fifos:  # each FIFO's depth stated in the generated code
        assert f"#pragma HLS STREAM variable = {f['name']} depth = {f['depth']}" in top
    assert [b["layer"] for b in s_all["buffered"]] == ["/Flatten"]


def test_jet_tagger_stream_is_bit_identical(tmp_path):
    from examples.zoo import export_model, samples

    src = str(export_model("jet_tagger", tmp_path / "jt.onnx"))
    par, st = compile_both(src, tmp_path, "jt")
    x = samples("jet_tagger", 32)
    assert np.array_equal(par.csim(x), st.csim(x))
    assert any(mode == "buffered" for mode in modes(st).values())
    # a fork (residual): the shortcut holds what the other branch reads ahead of it (stream_fifo.py):
    # the whole tensor around the buffered attention (it reads every token first), 2 around the
    # token-streamed MLP (one row in, one row out); the long branch's own FIFO 2
    fifos = json.loads((st.path / "kiln_estimate.json").read_text())["fifos"]
    forks = [f for f in fifos if f["why"].startswith("fork")]
    assert len(forks) == 12
    for f in forks:
        assert f["depth"] == (max(2, f["packets"]) if f["consumer"].endswith("/Add") else 2), f


def test_cli_io_stream_names_buffered_layers_and_config_io(tmp_path, jet_mlp):
    model = tmp_path / "jet.onnx"
    export(model)
    result = run_kiln("compile", model, "-o", tmp_path / "s", "--io", "stream", "--reuse", "1", "--no-fit-check")
    assert result.returncode == 0, result.stderr
    assert "io stream: 8 layers streamed, 0 buffered" in result.stdout
    assert "buffered:" not in result.stdout and "frames/s" in result.stdout
    report = run_kiln("report", tmp_path / "s")
    assert report.returncode == 0, report.stderr
    assert "buffered layers: none" in report.stdout
    assert "Dataflow (io_stream)" in (tmp_path / "s" / "report" / "report.html").read_text()
    cfg = tmp_path / "k.toml"
    cfg.write_text('[model]\nio = "stream"\nreuse_factor = 1\n')
    project = kiln.compile(str(model), output_dir=tmp_path / "c", config=str(cfg), fit_check=False)
    assert project.manifest["io"] == "stream"
    cfg.write_text('[model]\nio = "streaming"\n')
    assert_clean_error(run_kiln("compile", model, "-o", tmp_path / "bad", "--config", cfg), "io must be one of",
                       "'streaming'")
    assert not (tmp_path / "bad").exists()


STREAM_MISUSE = r"""
#include "nnet/kiln_stream.h"
int main(int argc, char **argv) {
    kiln::stream<kiln::packet<float, 4> > s("layer3_to_layer4");
    kiln::packet<float, 4> p = {{1, 2, 3, 4}};
    s.write(p);
    if (argv[1][0] == 'e') { s.read(); s.read(); }   // one packet written, two read
    else kiln::check_drained(s);                      // one packet left behind
    return 0;
}
"""


@pytest.mark.parametrize("case,code,needle", [("empty", 5, "read while empty"), ("left", 6, "left with 1 packet")])
def test_csim_names_a_stream_read_empty_or_left_full(tmp_path, case, code, needle):
    src = tmp_path / "misuse.cpp"
    src.write_text(STREAM_MISUSE)
    nnet = resources.files("kiln.hls_templates")
    binary = tmp_path / "misuse"
    subprocess.run(["g++", "-std=c++14", "-w", "-DKILN_CSIM", "-DKILN_FLOAT_ONLY", f"-I{nnet}", f"-I{ap_types_dir()}",
                    str(src), "-o", str(binary)], check=True)
    run = subprocess.run([str(binary), case], capture_output=True, text=True)
    assert run.returncode == code
    assert f"kiln: stream 'layer3_to_layer4' {needle}" in run.stderr


def test_stream_axi_wrapper_matches_stream_top(tmp_path):
    """Zynq boards: the AXI wrapper feeds the stream top from its buffers (KILN_TB_AXI=1)."""
    import os

    model = export(tmp_path / "jet.onnx")
    project = kiln.compile(str(model), board="pynq-z2", output_dir=tmp_path / "z", io="stream")
    binary = project.build()
    x = make_samples(32)
    in_file, outs = tmp_path / "in.bin", []
    x.astype("<f8").tofile(in_file)
    for axi in ("0", "1"):
        out_file = tmp_path / f"out{axi}.bin"
        subprocess.run([str(binary), str(in_file), str(out_file), str(project.path / "weights")], check=True,
                       env={**os.environ, "KILN_TB_AXI": axi}, capture_output=True)
        outs.append(np.fromfile(out_file, "<f8").reshape(len(x), -1))
    np.testing.assert_array_equal(outs[1], outs[0].astype(np.float32))
    assert "kiln::write_tensor<" in (project.path / "firmware" / "kiln_axi.cpp").read_text()
