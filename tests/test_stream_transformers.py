"""URAM weight memories in stream mode (backends/hls/memory.py), and the stream-mode estimates of
the small vision transformers of issue 13 (compile only: the estimate, no C-sim here; the C-sim
agreement is measured by bench/bench_stream.py deit32 / mobilevit)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.backends.hls.estimate import LayerEstimate
from kiln.backends.hls.fit import check_fit
from kiln.backends.hls.memory import place, ramb18_count, uram_count
from kiln.board import get_board
from tests.helpers import run_kiln

N_IN, N_OUT, REUSE = 64, 128, 8192     # one row: every product of the Dense shares one multiplier


def dense_model() -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (N_IN, N_OUT)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, N_OUT).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_uram_and_bram18_counts():
    assert uram_count(4096, 72) == 1 and uram_count(4097, 16) == 2 and uram_count(100, 73) == 2
    assert place(4096, 16, banks=3, uram=True).uram == 3            # one URAM per bank of 4K x 16
    assert place(4096, 16, banks=3, uram=False).bram == 3 * 4        # 1K x 18 RAMB18s
    assert place(4095, 16, uram=True).bram == ramb18_count(4095, 16) == 4   # shallower than a URAM: BRAM
    assert place(63, 16, uram=True).lut == 16                        # LUTRAM: 63 x 16 / 64


@pytest.fixture(scope="module")
def dense_projects(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uram")
    src = tmp / "dense.onnx"
    onnx.save(dense_model(), src)
    return {board: kiln.compile(str(src), board=board, precision="fixed<16,6>", reuse_factor=REUSE, io="stream",
                                output_dir=tmp / board) for board in ("alveo-u250", "zcu102")}


def estimate(project) -> dict:
    return json.loads((project.path / "kiln_estimate.json").read_text())


def test_weights_in_uram_on_alveo_u250_bram_on_zcu102(dense_projects):
    u250, zcu = estimate(dense_projects["alveo-u250"]), estimate(dense_projects["zcu102"])
    fc_u, fc_z = (next(r for r in e["layers"] if r["op"] == "Dense") for e in (u250, zcu))
    assert fc_u["reuse"] == fc_z["reuse"] == REUSE
    # weight + bias (8,320 values) in ceil(8320 / 8192) = 2 banks of 8,192 x 16 bits:
    # URAM 2 x ceil(8192 / 4096) = 4 on alveo-u250; BRAM18K 2 x 8 (1K x 18) = 16 on zcu102 (no URAM)
    assert (fc_u["uram"], fc_u["bram"]) == (4, 0)
    assert (fc_z["uram"], fc_z["bram"]) == (0, 16)
    assert u250["total"]["uram"] == 4 and zcu["total"]["uram"] == 0
    assert u250["total"]["limits"]["uram"] == int(0.7 * 1280) and "uram" not in zcu["total"]["limits"]
    # alveo-u250's m_axi wrapper writes them before the first frame (tests/test_uram_load.py)
    assert u250["uram_weights"]["arrays"] == ["L0_Dense_fc_weight"] and u250["uram_weights"]["loaded"] is True
    assert "uram_weights" not in zcu


def test_bind_storage_pragma_only_where_uram(dense_projects):
    top_u = (dense_projects["alveo-u250"].path / "firmware" / "kiln_top.cpp").read_text()
    top_z = (dense_projects["zcu102"].path / "firmware" / "kiln_top.cpp").read_text()
    assert "#pragma HLS BIND_STORAGE variable = L0_Dense_fc_weight type = ram_2p impl = uram" in top_u
    assert "impl = uram" not in top_z
    assert "L0_Dense_fc_bias type" not in top_u   # 128 values: below one URAM's depth, stays where HLS puts it


def test_uram_budget_spent_then_bram(tmp_path):
    """--budget 0.002: 2 URAM of alveo-u250's 1,280 may be filled; the Dense needs 4, so its weights
    stay in BRAM (16 BRAM18K > 0.002 x 5,376 = 10), and the fit check names BRAM18K, not URAM."""
    src = tmp_path / "dense.onnx"
    onnx.save(dense_model(), src)
    with pytest.raises(kiln.KilnError) as err:
        kiln.compile(str(src), board="alveo-u250", precision="fixed<16,6>", reuse_factor=REUSE, io="stream",
                     budget=0.002, output_dir=tmp_path / "p")
    assert "BRAM18K 16 estimated > 10 (0% of 5,376); dominated by 'fc'" in str(err.value)
    assert "URAM" not in str(err.value)
    assert not (tmp_path / "p").exists()


def test_fit_check_names_uram_when_over():
    rows = [LayerEstimate("big", "Dense", 8192, 8192, 1, 0, 0, 0, 0, [], uram=900),
            LayerEstimate("small", "Dense", 64, 64, 1, 0, 0, 0, 2, [], uram=10)]
    fit = check_fit(rows, {}, get_board("alveo-u250"), 0.7, "with the reuse factors of the test", "auto",
                    auto_fits=lambda keep: False)
    assert [o.resource for o in fit.over] == ["uram"]
    assert "URAM 910 estimated > 896 (70% of 1,280); dominated by 'big' (Dense, R=8192: 900)" in fit.message()
    assert check_fit(rows, {}, get_board("zcu102"), 0.7, "test", "auto", auto_fits=lambda keep: False).over == []


LONG = pytest.mark.skipif(not os.environ.get("KILN_LONG_TESTS"), reason="~20 s more compile: beyond the suite's "
                          "20-minute budget; set KILN_LONG_TESTS=1 to run")


def timm_stream(tmp_path, name: str, size: int, board: str, **export_kwargs):
    from examples.timm_zoo import export, samples

    src = export(name, tmp_path / f"{name}.onnx", size=size, sharpen=True, **export_kwargs)
    p = kiln.compile(str(src), board=board, calibrate=samples(size, 8, seed=7), bits=16, io="stream",
                     output_dir=tmp_path / "p")   # the fit check raises if the estimate is over 70% of the board
    return estimate(p)


def assert_within_budget(total: dict) -> None:
    assert set(total["limits"]) == {"dsp", "lut", "ff", "bram", "uram"}
    assert all(total[k] <= v for k, v in total["limits"].items()), total


def test_mobilevit_xxs_64_stream_fits_alveo_u250(tmp_path):
    """MobileViT-XXS at 64x64 (dynamo export), calibrated 16-bit: within 70% of alveo-u250 in stream mode,
    its buffered attention/LayerNorm arrays partly in URAM; zcu102 is over (LUT, FF, BRAM: README)."""
    est = timm_stream(tmp_path, "mobilevit_xxs", 64, "alveo-u250", dynamo=True)
    total = est["total"]
    assert_within_budget(total)
    assert 0 < total["uram"] <= 896 and total["frames_per_s"] > 10_000
    assert "MultiHeadAttention" in {b["op"] for b in est["buffered"]}
    assert "LayerNormalization" not in {b["op"] for b in est["buffered"]}   # row-streamed (stream_rows.py)


@LONG
def test_deit_tiny_patch16_32_stream_fits_alveo_u250_with_uram(tmp_path):
    """DeiT-tiny (patch 16) at 32x32: 5 tokens; 5.5M weights need URAM: 890 of 896 URAM, BRAM under 3,763.
    (patch 4, 65 tokens, is over: FF of the buffered layers; README.)"""
    total = timm_stream(tmp_path, "deit_tiny_patch16_224", 32, "alveo-u250")["total"]
    assert_within_budget(total)
    assert total["uram"] > 800


def test_cli_warns_that_uram_weights_need_a_load_path(tmp_path):
    """vu13p: URAM but no board wrapper, so no load path (alveo-u250 has one: tests/test_uram_load.py)."""
    src = tmp_path / "dense.onnx"
    onnx.save(dense_model(), src)
    r = run_kiln("compile", src, "--board", "vu13p", "--io", "stream", "--reuse", REUSE, "--precision",
                 "fixed<16,6>", "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    assert ("warning: 1 weight arrays in URAM (4 URAM blocks in all): UltraScale+ URAM has no bitstream "
            "initialisation") in r.stdout + r.stderr
    assert "URAM 4 / 896 (0%)" in r.stdout
