"""Folding of stream designs for a board (backends/hls/stream_fold.py): --budget and --target-fps.

Without a rate the stream folding takes the fastest design that fits the budget; with
``target_fps`` every layer's stream II is <= clock / F; a rate the slowest layer cannot meet is
a user error naming it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import kiln
from examples.make_jet_mlp import export
from kiln.errors import KilnError
from tests.helpers import assert_clean_error, run_kiln

PRECISION = "fixed<16,6>"


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    from examples.torch_models import exported

    tmp = tmp_path_factory.mktemp("cnnfold")
    path = tmp / "cnn2d.onnx"
    onnx.save(exported("CNN2d", 17, str(tmp)), path)
    return path


def estimate(project) -> dict:
    return json.loads((project.path / "kiln_estimate.json").read_text())


def within_budget(est: dict) -> bool:
    total = est["total"]
    return all(total[k] <= v for k, v in total["limits"].items() if v)


@pytest.mark.parametrize("board", ["zcu102", "pynq-z2"])
def test_stream_fold_is_the_fastest_design_within_budget(tmp_path, cnn_path, board):
    p = kiln.compile(str(cnn_path), board=board, precision=PRECISION, io="stream", output_dir=tmp_path / "s")
    est = estimate(p)
    assert within_budget(est)
    ii, clock = est["total"]["ii"], est["total"]["clock_mhz"]
    assert est["total"]["frames_per_s"] == pytest.approx(clock * 1e6 / ii)
    # a faster rate (II one cycle lower) does not fit, or no layer can go faster: the fastest design
    with pytest.raises(KilnError, match="cannot fit|the bottleneck cannot"):
        kiln.compile(str(cnn_path), board=board, precision=PRECISION, io="stream", output_dir=tmp_path / "f",
                     target_fps=clock * 1e6 / (ii - 1))


def test_stream_fold_on_a_large_board_is_the_pixel_rate(tmp_path, cnn_path):
    # zcu102 holds CNN2d at the rate of its 16 x 16 input (one pixel per cycle): conv2, on 8 x 8
    # pixels, is folded by 4 to the same II at a quarter of its multipliers
    est = estimate(kiln.compile(str(cnn_path), board="zcu102", precision=PRECISION, io="stream",
                                output_dir=tmp_path / "s"))
    rows = {r["name"]: r for r in est["layers"]}
    assert est["total"]["ii"] == 256
    assert rows["/conv1/Conv"]["reuse"] == 1 and rows["/conv2/Conv"]["reuse"] == 4
    assert rows["/conv2/Conv"]["ii"] == 256


@pytest.mark.parametrize("board,fps", [("pynq-z2", 20_000), ("zcu102", 100_000), ("vu13p", 500_000)])
def test_target_fps_balances_every_layer_to_the_rate(tmp_path, cnn_path, board, fps):
    p = kiln.compile(str(cnn_path), board=board, precision=PRECISION, io="stream", output_dir=tmp_path / "s",
                     target_fps=fps)
    est = estimate(p)
    clock = est["total"]["clock_mhz"] * 1e6
    assert within_budget(est)
    assert est["total"]["frames_per_s"] >= fps
    assert all(r["ii"] <= clock / fps for r in est["layers"])
    # the least resources: the slowest folded layer is close to the rate, not far above it
    fast = kiln.compile(str(cnn_path), board=board, precision=PRECISION, io="stream", output_dir=tmp_path / "f")
    assert estimate(fast)["total"]["dsp"] >= est["total"]["dsp"]


def test_target_fps_folds_the_jet_mlp_and_keeps_its_numerics(tmp_path):
    src = str(export(tmp_path / "jet.onnx"))
    p = kiln.compile(src, board="pynq-z2", precision=PRECISION, io="stream", output_dir=tmp_path / "s",
                     target_fps=100_000)
    est = estimate(p)
    rows = {r["name"]: r for r in est["layers"]}
    assert est["total"]["ii"] <= 1000 and rows["/0/Gemm"]["reuse"] > 1
    ref = kiln.compile(src, board="vu13p", precision=PRECISION, io="stream", reuse_factor=1, fit_check=False,
                       output_dir=tmp_path / "r")
    from examples.make_jet_mlp import make_samples

    x = make_samples(64)
    assert np.array_equal(p.csim(x), ref.csim(x))  # folding shares multipliers; the sums are the same


def test_target_fps_the_bottleneck_cannot_meet_is_an_error(tmp_path, cnn_path):
    out = tmp_path / "s"
    result = run_kiln("compile", cnn_path, "--board", "pynq-z2", "--io", "stream", "--target-fps", "1e6", "-o", out)
    # 100 MHz / 1e6 = 100 cycles; the 16 x 16 input pixels take 256 cycles in conv1 even at R=1
    assert_clean_error(result, "--target-fps 1e+06", "100 cycles", "'/conv1/Conv' (Conv): II 256 cycles")
    assert not out.exists()


def test_target_fps_needs_stream_mode_and_no_model_reuse(tmp_path, cnn_path):
    result = run_kiln("compile", cnn_path, "--target-fps", "1000", "-o", tmp_path / "a")
    assert_clean_error(result, "--target-fps", "--io stream")
    result = run_kiln("compile", cnn_path, "--io", "stream", "--reuse", "4", "--target-fps", "1000",
                      "-o", tmp_path / "b")
    assert_clean_error(result, "--target-fps", "reuse factor 4")


def test_element_wise_stream_layers_fold_and_stay_bit_identical(tmp_path):
    # activations, the residual Add and squeeze-excite's per-channel Mul take F cycles per packet
    # on P / F units (nnet/kiln_stream.h); element-wise, so the outputs are those of F = 1
    import torch

    from examples.torch_models import export_torch
    from tests.test_stream_cnn import ResidualSE

    torch.manual_seed(3)
    x = np.random.default_rng(5).standard_normal((8, 3, 8, 8)).astype(np.float32)
    src = str(export_torch(ResidualSE(), torch.from_numpy(x[:1]), tmp_path / "rse.onnx"))
    common = dict(board="vu13p", precision=PRECISION, fit_check=False)
    par = kiln.compile(src, output_dir=tmp_path / "par", reuse_factor=1, **common)
    st = kiln.compile(src, output_dir=tmp_path / "st", io="stream", reuse_factor=4, **common)
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert ", 8, 4>(" in top and ", 8, false, 4>(" in top   # binary/activation F=4; per-channel Mul F=4
    rows = {r["name"]: r for r in estimate(st)["layers"]}
    add = next(r for r in rows.values() if r["op"] == "Add")
    assert add["ii"] == 64 * 4   # 8 x 8 pixels of 8 channels, 2 channels per cycle
    assert np.array_equal(par.csim(x), st.csim(x))
