"""The load path of weight arrays in URAM (backends/hls/uram_load.py, issue 13).

UltraScale+ URAM powers up as 0, so on alveo-u250 the stream design's URAM weight arrays have no
initialiser and are written from a packed image through the load mode of kiln_top_axi. The C-sim of
that path (arrays zeroed, image read from weights/kiln_uram_image.bin, loaded, then the samples) must
give exactly (np.array_equal) the outputs of the reference run, which reads those arrays from
weights/*.bin before the first sample as the C-sim did before the load path (``KILN_URAM_FROM_FILES=1``),
and both agree with ONNX Runtime within fixed<16,6> error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest

import kiln
from kiln.backends.hls.context import WeightArray
from kiln.backends.hls.uram_load import build_image, pack, raw_bits
from kiln.errors import KilnError
from kiln.precision import FixedType, FloatType, parse_precision
from tests.helpers import run_kiln
from tests.test_stream_transformers import N_IN, N_OUT, REUSE, dense_model

WEIGHT = "L0_Dense_fc_weight"


def test_bit_patterns_and_packing():
    t = parse_precision("fixed<16,6>")                                   # LSB 2^-10
    bits = raw_bits(np.array([1.0, -1.0, t.lsb, -t.lsb, t.max_value, t.min_value]), t)
    assert bits.tolist() == [0x0400, 0xFC00, 0x0001, 0xFFFF, 0x7FFF, 0x8000]
    assert raw_bits(np.array([1.5]), FixedType(8, 2, signed=False)).tolist() == [0x60]   # ufixed<8,2>: 1.5 x 2^6
    assert raw_bits(np.array([1.0, -2.0]), FloatType()).tolist() == [0x3F800000, 0xC0000000]
    words = pack(np.array([0x0400, 0xFC00, 0x0001, 0xFFFF, 0x7FFF], dtype=np.uint64), 16)
    assert words.tolist() == [0xFFFF0001FC000400, 0x7FFF]                # 4 per word from bit 0; the rest 0
    assert pack(np.array([1, 2, 3], dtype=np.uint64), 20).tolist() == [(3 << 40) | (2 << 20) | 1]   # 3 x 20 bits
    with pytest.raises(KilnError, match="not quantised to fixed<16,6>"):
        raw_bits(np.array([t.lsb / 3]), t)
    with pytest.raises(KilnError, match="wider than the load path's 64-bit word"):
        build_image([WeightArray("w", "w_t", np.zeros(4), FixedType(65, 10))], ["w"])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uram_load")
    src = tmp / "dense.onnx"
    onnx.save(dense_model(), src)
    return kiln.compile(str(src), board="alveo-u250", precision="fixed<16,6>", reuse_factor=REUSE, io="stream",
                        output_dir=tmp / "p")


@pytest.fixture(scope="module")
def samples():
    # float32 values: the AXI wrapper takes float32, the per-sample testbench doubles
    return np.random.default_rng(11).normal(0, 1, (6, N_IN)).astype(np.float32)


def run_binary(binary, project, x, axi: bool, weights_dir=None, from_files: bool = False):
    work = project.path / "csim"
    work.mkdir(exist_ok=True)
    x.astype("<f8").tofile(work / "uram_in.bin")
    r = subprocess.run([str(binary), str(work / "uram_in.bin"), str(work / "uram_out.bin"),
                        str(weights_dir or project.path / "weights")], check=False, capture_output=True, text=True,
                       env={**os.environ, "KILN_TB_AXI": "1" if axi else "0",
                            "KILN_URAM_FROM_FILES": "1" if from_files else "0"})
    return r, (np.fromfile(work / "uram_out.bin", "<f8").reshape(len(x), -1) if r.returncode == 0 else None)


@pytest.fixture(scope="module")
def binary(project):
    return project.build()   # the default C-sim build: URAM arrays start as 0 and go through the load path


def test_layout_in_manifest_and_image(project):
    m = json.loads((project.path / "kiln_manifest.json").read_text())
    load = m["uram_load"]
    assert (load["image"], load["word_bits"], load["byte_order"], load["words"]) == (
        "weights/kiln_uram_image.bin", 64, "little", N_IN * N_OUT // 4)      # 8,192 16-bit weights, 4 per word
    [array] = load["arrays"]
    assert (array["name"], array["precision"], array["size"], array["per_word"], array["offset_words"]) == (
        WEIGHT, "fixed<16,6>", N_IN * N_OUT, 4, 0)
    words = np.fromfile(project.path / load["image"], "<u8")
    assert words.size == load["words"]
    # unpack the image independently and compare with the values the C-sim reads from weights/*.bin
    fields = (words[:, None] >> (np.arange(4, dtype=np.uint64) * np.uint64(16))[None, :]) & np.uint64(0xFFFF)
    signed = fields.reshape(-1).astype(np.int64)
    signed[signed >= 0x8000] -= 0x10000
    values = np.fromfile(project.path / "weights" / f"{WEIGHT}.bin", "<f8")
    assert np.array_equal(signed * 2.0 ** -10, values)
    est = json.loads((project.path / "kiln_estimate.json").read_text())
    assert est["uram_weights"]["arrays"] == [WEIGHT] and est["uram_weights"]["loaded"] is True


def test_generated_sources_carry_the_load_path(project):
    header = (project.path / "firmware" / "weights" / f"{WEIGHT}.h").read_text()
    assert f"static L0_Dense_fc_weight_t {WEIGHT}[{N_IN * N_OUT}];" in header     # no initialiser for synthesis
    assert "= {" not in header
    bias = (project.path / "firmware" / "weights" / "L0_Dense_fc_bias.h").read_text()
    assert "KILN_URAM" not in bias                                                  # not in URAM: as before
    axi = (project.path / "firmware" / "kiln_axi.cpp").read_text()
    assert "#pragma HLS INTERFACE m_axi port = weight_image offset = slave bundle = gmem2 depth = 2048" in axi
    assert "#pragma HLS INTERFACE s_axilite port = load_weights bundle = control" in axi
    assert "if (load_weights) kiln_load_uram_weights(weight_image);" in axi
    tcl = (project.path / "build_prj.tcl").read_text()
    assert 'set tb_args "$root/tb_data/input.bin $root/tb_data/output.bin $root/weights"' in tcl
    # XRT host (no XRT headers here: text checks): the load run before the timed run, image as 4th kernel arg
    host = (project.path / "driver" / "host.cpp").read_text()
    load_at, timed_at = host.index("kernel(in_bo, out_bo, 0u, image_bo, 1u)"), host.index("auto t0")
    assert load_at < timed_at and "kernel(in_bo, out_bo, n, image_bo, 0u)" in host
    assert "kernel.group_id(3)" in host and 'argc > 4 ? argv[4] : "weights/kiln_uram_image.bin"' in host


def test_csim_load_path_equals_static_init(project, binary, samples):
    r_static, y_static = run_binary(binary, project, samples, axi=False, from_files=True)
    assert r_static.returncode == 0, r_static.stderr
    r_load, y_load = run_binary(binary, project, samples, axi=False)
    assert r_load.returncode == 0, r_load.stderr
    r_axi, y_axi = run_binary(binary, project, samples, axi=True)   # kiln_top_axi: load mode, then the samples
    assert r_axi.returncode == 0 and "through kiln_top_axi" in r_axi.stdout, r_axi.stderr
    assert np.array_equal(y_load, y_static) and np.array_equal(y_axi, y_static)
    [ref] = project.reference(samples)
    # fixed<16,6> inputs and weights (LSB 2^-10), 64 products: measured 5.9e-3 on these inputs
    assert np.abs(y_static - ref.reshape(len(samples), -1)).max() < 0.02
    assert project.csim(samples).shape == (len(samples), N_OUT)
    assert np.array_equal(project.csim(samples).reshape(len(samples), -1), y_static.astype(np.float32))


def test_arrays_start_zeroed_and_image_is_required(project, binary, samples, tmp_path):
    zero_dir = tmp_path / "w0"
    shutil.copytree(project.path / "weights", zero_dir)
    (zero_dir / "kiln_uram_image.bin").write_bytes(bytes(8 * N_IN * N_OUT // 4))   # an image of zeros
    r, y = run_binary(binary, project, samples, axi=False, weights_dir=zero_dir)
    assert r.returncode == 0, r.stderr
    bias = np.fromfile(project.path / "weights" / "L0_Dense_fc_bias.bin", "<f8")
    assert np.array_equal(y, np.tile(bias, (len(samples), 1)))     # weights 0: every output is its bias
    (zero_dir / "kiln_uram_image.bin").unlink()
    r, _ = run_binary(binary, project, samples, axi=False, weights_dir=zero_dir)
    assert r.returncode == 3 and "cannot open" in r.stderr and "kiln_uram_image.bin" in r.stderr


def test_compile_output_reports_loaded_not_a_warning(tmp_path):
    src = tmp_path / "dense.onnx"
    onnx.save(dense_model(), src)
    r = run_kiln("compile", src, "--board", "alveo-u250", "--io", "stream", "--reuse", REUSE, "--precision",
                 "fixed<16,6>", "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "warning" not in out
    assert "1 weight arrays in URAM (4 URAM blocks in all), written before the first frame by the load mode" in out


def test_vu13p_has_no_load_path_and_keeps_the_caveat(tmp_path):
    """vu13p has URAM but no board wrapper: the arrays stay const-initialised, loaded: false, no image."""
    src = tmp_path / "dense.onnx"
    onnx.save(dense_model(), src)
    p = kiln.compile(str(src), board="vu13p", precision="fixed<16,6>", reuse_factor=REUSE, io="stream",
                     output_dir=tmp_path / "p")
    est = json.loads((p.path / "kiln_estimate.json").read_text())
    assert est["uram_weights"]["loaded"] is False and "vu13p has no wrapper" in est["uram_weights"]["why"]
    assert "uram_load" not in json.loads((p.path / "kiln_manifest.json").read_text())
    assert not (p.path / "weights" / "kiln_uram_image.bin").exists()
    assert "KILN_URAM" not in (p.path / "firmware" / "weights" / f"{WEIGHT}.h").read_text()


def test_float_weights_load_as_binary32(tmp_path):
    """--precision float: the URAM array's words hold binary32 patterns, 2 per word; the C-sim through
    the load path matches ONNX Runtime to float rounding (64-term sums: < 1e-5)."""
    src = tmp_path / "dense.onnx"
    onnx.save(dense_model(), src)
    p = kiln.compile(str(src), board="alveo-u250", precision="float", reuse_factor=REUSE, io="stream",
                     output_dir=tmp_path / "p")
    [array] = json.loads((p.path / "kiln_manifest.json").read_text())["uram_load"]["arrays"]
    assert (array["element_bits"], array["per_word"], array["words"]) == (32, 2, N_IN * N_OUT // 2)
    words = np.fromfile(p.path / "weights" / "kiln_uram_image.bin", "<u8")
    values = np.fromfile(p.path / "weights" / f"{WEIGHT}.bin", "<f8")    # low word half first: little-endian
    assert np.array_equal(words.view("<f4").astype(np.float64), values) and np.abs(values).max() > 0.1
    x = np.random.default_rng(2).normal(0, 1, (4, N_IN)).astype(np.float32)
    [ref] = p.reference(x)
    assert np.abs(p.csim(x).reshape(4, -1) - ref.reshape(4, -1)).max() < 1e-5
