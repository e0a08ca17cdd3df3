"""GroupNormalization / InstanceNormalization through the HLS backend vs ONNX Runtime.

Float: 1e-5 relative to the output scale. Fixed point (fixed<16,6> everywhere: 10
fractional bits, lsb 2^-10 ~ 1e-3; the LayerNorm statistics types and range-reduced rsqrt
table of kiln_layernorm.h), for an output y = z * scale + bias with z the normalised value:

* the 1024-entry rsqrt table over m in [0.25, 1) read at bin midpoints: relative error at
  most half a bin times |d log(m^-1/2) / dm| = (0.75 / 2048) / (2 * 0.25) = 7.3e-4, so
  7.3e-4 * |z * scale|;
* scale and bias held in fixed<16,6> (truncated: up to 1 lsb each): 1e-3 * (|z| + 1);
* the input truncated to 1 lsb: 1e-3 * |scale| / std (std >= 1 here);
* the output truncated: 1 lsb = 1e-3 (the mean/variance types carry 4 and 18 more
  fractional bits; their rounding is far below these terms).

With |scale| <= 1.5 and |z| <= 4.5 (the largest normalised value of these inputs) that
sums to 7.3e-4 * 6.75 + 1e-3 * 5.5 + 1.5e-3 + 1e-3 = 0.013: the test asserts max abs error
<= 0.015 and mean abs error <= 0.004 (a typical |z| ~ 0.8: ~4e-3 worst case at that z).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import kiln

C, H, W = 6, 5, 4


def norm_model(op: str, opset: int, groups: int | None = None):
    rng = np.random.default_rng(1)
    n_param = C
    scale = rng.uniform(0.5, 1.5, n_param).astype(np.float32) * np.where(np.arange(n_param) % 2, -1, 1)
    bias = rng.uniform(-0.5, 0.5, n_param).astype(np.float32)
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [n_param], scale.astype(np.float32)),
             helper.make_tensor("b", TensorProto.FLOAT, [n_param], bias)]
    kwargs = {"num_groups": groups} if op == "GroupNormalization" else {}
    node = helper.make_node(op, ["x", "s", "b"], ["y"], name="norm", epsilon=1e-5, **kwargs)
    # ONNX's shape inference gives GroupNormalization (a function op) no output shape, and
    # the frontend pins only the inputs' batch axis: its output is declared with batch 1
    batch = 1 if op == "GroupNormalization" else "N"
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, C, H, W])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def inputs(std: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, C, H, W)) * std + rng.standard_normal((8, C, 1, 1)) * std
    return x.astype(np.float32)


@pytest.mark.parametrize("op, opset, groups", [("InstanceNormalization", 17, None), ("GroupNormalization", 21, 2),
                                               ("GroupNormalization", 21, 3), ("GroupNormalization", 21, 1)])
def test_float_matches_onnxruntime(tmp_path, op, opset, groups):
    project = kiln.compile(norm_model(op, opset, groups), output_dir=tmp_path / "p", precision="float")
    x = inputs(2.0)
    got, ref = project.csim(x), project.reference(x)[0]
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("op, groups", [("InstanceNormalization", None), ("GroupNormalization", 2)])
def test_fixed_point_error_bound(tmp_path, op, groups):
    project = kiln.compile(norm_model(op, 21, groups), output_dir=tmp_path / "p", precision="fixed<16,6>")
    for std in (1.0, 3.0):
        x = inputs(std, seed=int(std))
        err = np.abs(project.csim(x) - project.reference(x)[0])
        assert err.max() <= 0.015
        assert err.mean() <= 0.004


def test_groups_that_do_not_divide_the_channels_are_refused(tmp_path):
    with pytest.raises(kiln.KilnError, match="num_groups=4 does not divide the 6 channels"):
        kiln.compile(norm_model("GroupNormalization", 21, 4), output_dir=tmp_path / "p", precision="float")
    assert not (tmp_path / "p").exists()
