"""--io stream for MobileNetV3-style blocks: the squeeze-excite ReduceMean over H, W streamed with
per-channel accumulators (nnet/kiln_stream.h reduce_spatial_stream), and channel-folded pixel
packets (C / F channels per packet, stream_plan.fold_channels) through depthwise and pointwise
convs, pools, activations, squeeze-excite and GlobalAveragePool.

Stream-mode C-sim must be bit-identical to parallel-mode C-sim with the same types.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import kiln
from examples.torch_models import export_torch

PRECISION = "fixed<16,6>"


class MobileBlock(nn.Module):
    """Conv -> HardSwish -> depthwise 3x3 -> ReLU -> squeeze-excite (x.mean((2, 3), keepdim):
    ReduceMean; 1x1 conv, HardSigmoid, Mul) -> 1x1 conv -> MaxPool -> GAP -> Flatten -> Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.se = nn.Conv2d(16, 16, 1)
        self.pw = nn.Conv2d(16, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = nn.functional.hardswish(self.stem(x))
        x = torch.relu(self.dw(x))
        x = x * nn.functional.hardsigmoid(self.se(x.mean((2, 3), keepdim=True)))
        x = self.pool(self.pw(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _model(tmp_path):
    torch.manual_seed(11)
    x = np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32)
    return str(export_torch(MobileBlock(), torch.from_numpy(x[:1]), tmp_path / "mb.onnx")), x


def test_channel_folded_pixel_streams_are_bit_identical(tmp_path, monkeypatch):
    # channel folding forced for a target II of 256 cycles (stream_channels.fold_channels): every
    # pixel stream between conv / pool / GAP / ReduceMean / element-wise layers carries C / F
    # channels per packet, F the largest divisor of C with pixels x F <= 256
    from kiln.backends.hls import stream_render

    src, x = _model(tmp_path)
    common = dict(board="vu13p", precision=PRECISION, reuse_factor=1, fit_check=False)
    par = kiln.compile(src, output_dir=tmp_path / "par", **common)
    monkeypatch.setattr(stream_render, "channel_fold_ii", lambda model: 256)
    st = kiln.compile(src, output_dir=tmp_path / "st", io="stream", **common)
    assert st.manifest["stream"]["buffered"] == []
    fifos = {(f["producer"], f["consumer"]): f for f in json.loads((st.path / "kiln_estimate.json").read_text())["fifos"]}
    by_op = {r["op"]: r["layer"] for r in st.manifest["stream"]["layers"]}
    # 8 x 8 maps of 16 channels: 4 packets of 4 per pixel; the squeeze (one pixel): 16 of 1;
    # the 4 x 4 pooled map of 8 channels: 8 packets of 1; GAP -> Flatten (whole rows): not folded
    assert {f["packet"] for (p, c), f in fifos.items() if p in (by_op["HardSwish"], by_op["Relu"])} == {4}
    assert {f["packet"] for (p, c), f in fifos.items() if p == by_op["ReduceMean"]} == {1}
    assert {f["packet"] for (p, c), f in fifos.items() if p == by_op["MaxPool"]} == {1}
    assert {f["packet"] for (p, c), f in fifos.items() if p == by_op["GlobalAveragePool"]} == {8}
    top = (st.path / "firmware" / "kiln_top.cpp").read_text()
    assert "kiln::channel_binary_stream<" in top and "kiln::reduce_spatial_stream<" in top
    assert next(r for r in st.manifest["stream"]["layers"] if r["op"] == "ReduceMean")["mode"] == "streamed"
    mean = next(r for r in json.loads((st.path / "kiln_estimate.json").read_text())["layers"] if r["op"] == "ReduceMean")
    assert mean["ii"] == 64 * 4   # one pixel per 4 reads over the 8 x 8 map
    b = st.csim(x)
    assert np.array_equal(par.csim(x), b)
    assert np.abs(b - st.reference(x)[0]).max() < 0.05  # fixed<16,6>: 10 fractional bits


def test_mobilenetv3_small_with_a_cifar_size_head_fits_zcu102(tmp_path):
    # timm mobilenetv3_small_050 at 64x64 with num_classes=10 (578,474 weights, 9.3 Mbit at 16
    # bits), calibrated 16-bit: with the streamed ReduceMeans and channel-folded pixel streams the
    # stream folding finds a design within 70% of zcu102 in every resource (measured: II 32,768,
    # 6,104 frames/s; LUT 130,023, FF 129,343, DSP 1,753, BRAM18K 839 with 64 calibration inputs;
    # bench/bench_stream.py)
    from examples.timm_zoo import export, samples

    src = str(export("mobilenetv3_small_050", tmp_path / "mnv3.onnx", size=64, sharpen=True, num_classes=10))
    p = kiln.compile(src, board="zcu102", calibrate=samples(64, 16, seed=7), bits=16, io="stream",
                     output_dir=tmp_path / "z")
    est = json.loads((p.path / "kiln_estimate.json").read_text())
    total = est["total"]
    assert all(total[k] <= v for k, v in total["limits"].items() if v)
    assert est["buffered"] == []
    assert any(f["order"] == "pixel" and f["packet"] < 16 for f in est["fifos"])   # channel-folded
    assert total["frames_per_s"] == pytest.approx(200e6 / total["ii"]) and total["frames_per_s"] > 1000
