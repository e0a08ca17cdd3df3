"""AXI-Stream board wrapper of io_stream designs on Zynq boards (kiln_axi.cpp.j2, kiln_pynq.py.j2).

The wrapper's C-simulation (testbench with KILN_TB_AXI=1: the words of the input stream in, the
words of the output stream out) must give, after the generated PYNQ driver's ``unpack``, exactly
the outputs of the unwrapped stream top, with TLAST on the last word of every sample; the
driver's ``pack`` must produce the words that wrapper reads. Alveo keeps its m_axi kernel.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from tests.helpers import stand_in_vitis_hls

DATA = Path(__file__).parent / "data" / "vitis_reports"
C_IN, C_OUT, H, W = 2, 4, 5, 6


def conv_model(path: Path) -> Path:
    """Conv 3x3 (pad 1) + Relu on a 2x5x6 map: input and output both travel in pixel order."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.normal(0, 0.4, (C_OUT, C_IN, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, C_OUT).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "axis_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C_IN, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C_OUT, H, W])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def load_driver(path: Path):
    spec = importlib.util.spec_from_file_location("kiln_pynq_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # numpy only: pynq is imported when a design is opened
    return module


def run_tb(project, values: np.ndarray, axi: bool) -> tuple[np.ndarray, str]:
    binary = project.build()
    in_file, out_file = project.path / "csim" / f"in{int(axi)}.bin", project.path / "csim" / f"out{int(axi)}.bin"
    in_file.parent.mkdir(exist_ok=True)
    values.astype("<f8").tofile(in_file)
    env = {**os.environ, "KILN_TB_AXI": "1" if axi else "0"}
    r = subprocess.run([str(binary), str(in_file), str(out_file), str(project.path / "weights")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return np.fromfile(out_file, "<f8").reshape(len(values), -1), r.stdout


@pytest.fixture(scope="module")
def zynq(tmp_path_factory):
    d = tmp_path_factory.mktemp("axis")
    return kiln.compile(str(conv_model(d / "conv.onnx")), board="pynq-z2", output_dir=d / "z", io="stream",
                        precision="fixed<16,6>")


def test_axis_wrapper_through_driver_pack_unpack_matches_stream_top(zynq):
    ports = zynq.manifest["stream"]["ports"]
    assert ports["x"] == {"packet": C_IN, "order": "pixel"} and ports["y"] == {"packet": C_OUT, "order": "pixel"}
    n, in_size, out_size = 12, C_IN * H * W, C_OUT * H * W
    x = np.random.default_rng(0).normal(0, 1, (n, C_IN, H, W)).astype(np.float32)
    direct, _ = run_tb(zynq, x.reshape(n, -1), axi=False)

    driver = load_driver(zynq.path / "driver" / "kiln_pynq.py")
    assert (driver.IN_SIZE, driver.OUT_SIZE) == (in_size, out_size)
    words = driver.pack(x.reshape(n, -1))
    # pixel order: the channels of one pixel, pixels in raster order (NCHW -> NHWC)
    assert np.array_equal(words, x.reshape(n, C_IN, H * W).transpose(0, 2, 1).reshape(n, -1))
    out_words, stdout = run_tb(zynq, words, axi=True)
    tlast = [int(t) for t in next(l for l in stdout.splitlines() if l.startswith("kiln_axis_tlast")).split()[1:]]
    assert tlast == [(s + 1) * out_size - 1 for s in range(n)]
    y = driver.unpack(out_words)
    assert not np.array_equal(out_words.astype(np.float32), y)  # the reordering is not a no-op here
    assert np.array_equal(y, direct.astype(np.float32))
    ref = zynq.reference(x)[0].reshape(n, -1)
    assert np.max(np.abs(direct - ref)) < 0.05  # fixed<16,6> against ONNX Runtime's float


def test_axis_wrapper_sources_tcl_and_driver_text(zynq):
    axi = (zynq.path / "firmware" / "kiln_axi.cpp").read_text()
    assert "#pragma HLS INTERFACE axis port = in_axis" in axi and "#pragma HLS INTERFACE axis port = out_axis" in axi
    assert "m_axi" not in axi and "#pragma HLS DATAFLOW" in axi
    header = (zynq.path / "firmware" / "kiln_top.h").read_text()
    assert "__has_include(<ap_axi_sdata.h>)" in header and "typedef ap_axiu<32, 0, 0, 0> kiln_axis_word;" in header
    tcl = (zynq.path / "build_prj.tcl").read_text()
    assert "set_top kiln_top_axi" in tcl and "add_files $root/firmware/kiln_axi.cpp" in tcl
    assert "csynth_design" in tcl and "export_design -format ip_catalog" in tcl
    assert "set ::env(KILN_TB_AXI) 1; cosim_design" in tcl
    path = zynq.path / "driver" / "kiln_pynq.py"
    py_compile.compile(str(path), doraise=True)
    text = path.read_text()
    assert "self.dma.sendchannel.transfer(inbuf)" in text and "self.dma.recvchannel.wait()" in text
    assert 'dma_name="axi_dma_0"' in text


def test_alveo_stream_design_keeps_m_axi_kernel(tmp_path):
    project = kiln.compile(str(conv_model(tmp_path / "conv.onnx")), board="alveo-u250", output_dir=tmp_path / "a",
                           io="stream", precision="fixed<16,6>")
    axi = (project.path / "firmware" / "kiln_axi.cpp").read_text()
    assert "#pragma HLS INTERFACE m_axi port = in_data" in axi and "axis port = in_axis" not in axi
    assert "v++ --connectivity.sc" in (project.path / "driver" / "host.cpp").read_text()


def test_synth_of_stream_design(zynq, tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "synth", str(zynq.path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "vitis_hls is not on PATH" in r.stderr
    env = stand_in_vitis_hls(tmp_path, f"""grep -q "set_top kiln_top_axi" build_prj.tcl || exit 1
mkdir -p kiln_prj/solution1/syn/report
cp {DATA / 'zu9eg_stream_csynth.xml'} kiln_prj/solution1/syn/report/kiln_top_axi_csynth.xml
""")
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "synth", str(zynq.path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert "Kiln (estimate)" in r.stdout and "345" in r.stdout  # the wrapper's report, parsed
