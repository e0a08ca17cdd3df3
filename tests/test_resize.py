"""Resize through the HLS backend vs ONNX Runtime, in the forms exporters write.

One model, x [N, 2, 5, 6], seven Resize nodes side by side: nearest asymmetric + floor
(torch's legacy nearest upsample), nearest half_pixel + round_prefer_floor, nearest
align_corners + round_prefer_ceil, linear half_pixel (bilinear, align_corners=False),
linear align_corners, linear pytorch_half_pixel downsampling by sizes, and an opset 18
``axes`` + keep_aspect_ratio_policy resize.

Float: 1e-5 relative to the output scale. fixed<16,6> (10 fractional bits, truncating):
nearest copies an input value, within 1 lsb = 2^-10; linear is a convex blend of four inputs
(input truncation 2^-10), with weights rounded to 16 fractional bits (four of them, each off
by 2^-17 at most, times |x| <= 16: 4.9e-4) and the output truncated (2^-10): 2.5e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import kiln

SHAPE = [2, 5, 6]
CASES = {  # output -> (attributes, scales or None, sizes or None, output shape)
    "near_floor": ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
                   [1, 1, 2, 2], None, [2, 10, 12]),
    "near_half": ({"mode": "nearest"}, [1, 1, 1.5, 0.5], None, [2, 7, 3]),
    "near_corners": ({"mode": "nearest", "coordinate_transformation_mode": "align_corners",
                      "nearest_mode": "round_prefer_ceil"}, None, [1, 2, 9, 4], [2, 9, 4]),
    "lin_half": ({"mode": "linear"}, [1, 1, 2, 2], None, [2, 10, 12]),
    "lin_corners": ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 8, 11],
                    [2, 8, 11]),
    "lin_torch": ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [1, 2, 3, 1],
                  [2, 3, 1]),
    "lin_axes": ({"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, None, [7, 9],
                 [2, 7, 8]),
}


def resize_model():
    nodes, inits = [], [helper.make_tensor("roi", TensorProto.FLOAT, [0], [])]
    for name, (attrs, scales, sizes, _) in CASES.items():
        inputs = ["x", "roi", "", ""]
        if scales is not None:
            inits.append(helper.make_tensor(f"{name}_scales", TensorProto.FLOAT, [len(scales)], scales))
            inputs[2] = f"{name}_scales"
        else:
            inits.append(helper.make_tensor(f"{name}_sizes", TensorProto.INT64, [len(sizes)], sizes))
            inputs[3] = f"{name}_sizes"
        nodes.append(helper.make_node("Resize", inputs, [name], name=f"resize_{name}", **attrs))
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, *c[3]]) for k, c in CASES.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *SHAPE])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


@pytest.mark.parametrize("precision", ["float", "fixed<16,6>"])
def test_resize_matches_onnxruntime(tmp_path, precision):
    project = kiln.compile(resize_model(), output_dir=tmp_path / "p", precision=precision)
    x = (np.random.default_rng(0).standard_normal((1, *SHAPE)) * 4).astype(np.float32)
    got, ref = project.csim(x, return_all=True), project.reference(x)
    for name, g, r in zip(CASES, got, ref):
        assert g.shape == r.shape == (1, *CASES[name][3]), name
        err = np.max(np.abs(g - r))
        if precision == "float":
            assert err <= 1e-5 * np.max(np.abs(r)), name
        else:
            assert err <= (2.0 ** -10 if name.startswith("near") else 2.5e-3), name


def test_resizing_the_channel_axis_is_refused(tmp_path):
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 2, 1, 1])
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="resize_c", mode="nearest")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *SHAPE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 6])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=r"Resize \(only the last two axes may be resized\): 'resize_c'"):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
    assert not (tmp_path / "p").exists()
