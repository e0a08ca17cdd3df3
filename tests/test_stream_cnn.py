"""--io stream for what CNNs need beyond conv/pool: residual Add of two streams, squeeze-excite's
per-channel Mul, Flatten of a 1x1 map (nnet/kiln_stream.h binary_stream, channel_binary_stream,
copy_stream), and the MLPerf Tiny ResNet-8 (examples/resnet8.py) on zcu102.

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


class ResidualSE(nn.Module):
    """Conv -> ReLU -> [Conv -> ReLU -> Conv] + shortcut (Add of two streams) -> squeeze-excite
    (GlobalAveragePool -> 1x1 Conv -> Sigmoid -> Mul per channel) -> GAP -> Flatten -> Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.c1, self.c2 = nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1)
        self.se = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)
        self.gap = nn.AdaptiveAvgPool2d(1)  # exported as GlobalAveragePool

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.c2(torch.relu(self.c1(x))))
        s = torch.sigmoid(self.se(self.gap(x)))
        x = x * s
        return self.fc(torch.flatten(self.gap(x), 1))


def test_residual_add_squeeze_excite_and_flatten_stream_bit_identical(tmp_path):
    torch.manual_seed(3)
    x = np.random.default_rng(5).standard_normal((24, 3, 8, 8)).astype(np.float32)
    src = str(export_torch(ResidualSE(), torch.from_numpy(x[:1]), tmp_path / "rse.onnx"))
    common = dict(board="vu13p", precision=PRECISION, reuse_factor=1, fit_check=False)
    par = kiln.compile(src, output_dir=tmp_path / "par", **common)
    st = kiln.compile(src, output_dir=tmp_path / "st", io="stream", **common)
    rows = st.manifest["stream"]["layers"]
    modes = {r["op"]: r["mode"] for r in rows}
    templates = {r.get("template") for r in rows}
    assert st.manifest["stream"]["buffered"] == [], rows
    assert {modes["Add"], modes["Mul"], modes["Flatten"]} == {"streamed"}
    assert {"kiln::binary_stream", "kiln::channel_binary_stream", "kiln::copy_stream"} <= templates
    a, b = par.csim(x), st.csim(x)
    assert np.array_equal(a, b)
    assert np.abs(b - st.reference(x)[0]).max() < 0.05  # fixed<16,6>: 10 fractional bits
    est = json.loads((st.path / "kiln_estimate.json").read_text())
    rows = {r["name"]: r for r in est["layers"]}
    add = next(r for r in rows.values() if r["op"] == "Add")
    assert add["ii"] == 64  # one pixel of 8 channels per cycle on an 8 x 8 map


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    from examples.resnet8 import export, samples

    tmp = tmp_path_factory.mktemp("r8")
    return str(export(tmp / "resnet8.onnx")), samples(64, seed=7), tmp


def test_resnet8_stream_fits_zcu102_calibrated_16_bit(resnet8):
    from examples.resnet8 import samples

    src, cal, tmp = resnet8
    p = kiln.compile(src, board="zcu102", calibrate=cal, bits=16, io="stream", output_dir=tmp / "z")
    est = json.loads((p.path / "kiln_estimate.json").read_text())
    total = est["total"]
    assert all(total[k] <= v for k, v in total["limits"].items() if v)   # the fit check passed too
    assert total["frames_per_s"] == pytest.approx(total["clock_mhz"] * 1e6 / total["ii"])
    assert total["frames_per_s"] > 10_000
    assert p.manifest["stream"]["buffered"] == []   # every conv, Add, pool, Flatten and the softmax stream
    x = samples(16, seed=3)
    y, ref = p.csim(x), p.reference(x)[0]
    assert np.mean(y.argmax(1) == ref.argmax(1)) >= 15 / 16  # 256 inputs: bench/bench_stream.py
