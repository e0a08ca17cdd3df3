"""Selu, Elu, Softplus, Softsign, ThresholdedRelu (kiln::activation) against ONNX Runtime,
float and fixed<16,6>.

ONNX: Selu(x) = gamma * (x > 0 ? x : alpha * (exp(x) - 1)); Elu the same with gamma = 1;
Softplus(x) = log(1 + exp(x)); Softsign(x) = x / (1 + |x|); ThresholdedRelu(x) = x > alpha ? x : 0.

Fixed-point bound: the inputs lie on fixed<16,6>'s grid (multiples of 2^-10 in [-8, 8)), so
the testbench's conversion is exact; Selu/Elu/Softplus/Softsign are evaluated in float and
truncated to the output lsb (error < 1 lsb = 2^-10, plus float32's rounding of exp/log,
~1e-6 here); ThresholdedRelu compares and copies, so it is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import kiln
from examples.op_models import one_op_model

LSB = 2.0 ** -10
FLOAT_EVAL = 1e-5  # float32 exp/log of values below 10: relative 1e-7, absolute well under this
CASES = [
    ("Selu", {}, LSB + FLOAT_EVAL),
    ("Selu", {"alpha": 2.0, "gamma": 3.0}, LSB + FLOAT_EVAL),
    ("Elu", {}, LSB + FLOAT_EVAL),
    ("Elu", {"alpha": 0.5}, LSB + FLOAT_EVAL),
    ("Softplus", {}, LSB + FLOAT_EVAL),
    ("Softsign", {}, LSB + FLOAT_EVAL),
    ("ThresholdedRelu", {}, 0.0),
    ("ThresholdedRelu", {"alpha": 2.5}, 0.0),
]
IDS = ["selu", "selu_attrs", "elu", "elu_alpha", "softplus", "softsign", "thresholdedrelu", "thresholdedrelu_alpha"]


def _inputs() -> np.ndarray:
    x = np.random.default_rng(0).uniform(-8, 8, (64, 48))
    x = np.round(x / LSB) * LSB  # on the fixed<16,6> grid
    x[0, :6] = [0.0, 1.0, 1.0 + LSB, 2.5, 2.5 + LSB, -LSB]  # thresholds and the kink at 0
    return x.astype(np.float32)


@pytest.mark.parametrize("op, attrs, bound", CASES, ids=IDS)
def test_exp_activation_matches_onnxruntime(tmp_path, op, attrs, bound):
    model = one_op_model(helper.make_node(op, ["x"], ["y"], name="act", **attrs), [48], opset=17)
    x = _inputs()
    float_prj = kiln.compile(model, output_dir=tmp_path / "float", precision="float")
    ref = float_prj.reference(x)[0]
    np.testing.assert_allclose(float_prj.csim(x), ref, rtol=1e-5, atol=1e-6)
    fixed_prj = kiln.compile(model, output_dir=tmp_path / "fixed", precision="fixed<16,6>")
    got = fixed_prj.csim(x)
    err = np.abs(got - ref)
    assert err.max() <= bound, (op, float(err.max()) / LSB)
    if op == "ThresholdedRelu":
        alpha = attrs.get("alpha", 1.0)
        assert got[0, 1 if alpha == 1.0 else 3] == 0.0 and got[0, 2 if alpha == 1.0 else 4] > alpha
