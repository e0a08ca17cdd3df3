"""Depthwise and grouped Conv (kiln::conv2d with groups) at real channel counts against ONNX
Runtime: depthwise 3x3 over 32 channels, 3x3 with groups=4 over 64 channels, and ConvNeXt's
depthwise 7x7 over 96 channels, all at 16x16, in float and fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import kiln

RNG = np.random.default_rng(13)
# (channels, kernel, groups)
CONVS = [(32, 3, 32), (64, 3, 4), (96, 7, 96)]


def grouped_conv_model():
    nodes, ins, outs, inits = [], [], [], []
    for k, (c, ks, g) in enumerate(CONVS):
        w = (RNG.standard_normal((c, c // g, ks, ks)) / np.sqrt(c // g * ks * ks)).astype(np.float32)
        inits += [nh.from_array(w, f"w{k}"), nh.from_array((0.1 * RNG.standard_normal(c)).astype(np.float32), f"b{k}")]
        nodes.append(h.make_node("Conv", [f"x{k}", f"w{k}", f"b{k}"], [f"y{k}"], group=g, pads=[ks // 2] * 4))
        ins.append(h.make_tensor_value_info(f"x{k}", T.FLOAT, ["N", c, 16, 16]))
        outs.append(h.make_tensor_value_info(f"y{k}", T.FLOAT, ["N", c, 16, 16]))
    return h.make_model(h.make_graph(nodes, "g", ins, outs, inits), opset_imports=[h.make_opsetid("", 17)],
                        ir_version=10)


@pytest.mark.parametrize("precision", ["float", "fixed<20,6>"])
def test_grouped_convs_match_onnxruntime(tmp_path, precision):
    """fixed<20,6> (14 fractional bits, truncation; |x| < 4, weights |w| < 2): inputs and weights
    are off by < 1 LSB, so each product by < (|x| + |w|) LSB < 6 LSB; the accumulator is exact;
    with at most 49 (7x7) or 144 (16 channels x 3x3) terms and the bias (< 1 LSB) and output
    truncation (< 1 LSB), the error is < (6 * 144 + 2) LSB."""
    x = [np.clip(RNG.standard_normal((2, c, 16, 16)), -3.9, 3.9).astype(np.float32) for c, _, _ in CONVS]
    project = kiln.compile(grouped_conv_model(), output_dir=tmp_path / "p", precision=precision)
    got, ref = project.csim(x, return_all=True), project.reference(x)
    for conv, y, r in zip(CONVS, got, ref):
        if precision == "float":
            np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-5, err_msg=str(conv))
        else:
            err = np.abs(y.astype(np.float64) - r)
            assert 0 < err.max() < (6 * 144 + 2) * 2.0 ** -14, (conv, float(err.max()))
