"""HardSigmoid and HardSwish (kiln::activation) against ONNX Runtime, float and fixed<16,6>.

ONNX: HardSigmoid(x) = max(0, min(1, alpha * x + beta)) (defaults alpha 0.2, beta 0.5);
HardSwish(x) = x * max(0, min(1, x / 6 + 1/2)).

Fixed-point bound, fixed<16,6> on input and output (10 fractional bits, lsb = 2^-10, default
truncation): the input is truncated to the lsb (error < 1 lsb), alpha and beta and the
clamped value h are held with 18 fractional bits (error <= 2^-19 each, times |x| <= 8), the
output is truncated to the lsb (< 1 lsb). HardSigmoid's slope is alpha <= 0.5 here, so its
error is < (0.5 + 1) lsb + 2^-16; HardSwish's slope is at most 1 + 3/6 = 1.5 (at x = 3, the
end of the ramp), so its error is < (1.5 + 1) lsb + 2^-15. The tests assert 1.5 lsb + 2^-15
and 2.5 lsb + 2^-15.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import kiln
from examples.op_models import one_op_model

LSB = 2.0 ** -10
CASES = [
    ("HardSigmoid", {}, 1.5 * LSB + 2.0 ** -15),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.25}, 1.5 * LSB + 2.0 ** -15),
    ("HardSwish", {}, 2.5 * LSB + 2.0 ** -15),
]


def _inputs() -> np.ndarray:
    # [-8, 8): both clamps and the ramp, inside fixed<16,6>'s range [-32, 32)
    x = np.random.default_rng(0).uniform(-8, 8, (64, 48)).astype(np.float32)
    x[0, :5] = [-3.0, 3.0, -2.5, 2.5, 0.0]  # the ramp's ends (HardSwish) and HardSigmoid's
    return x


@pytest.mark.parametrize("op, attrs, bound", CASES, ids=["hardsigmoid", "hardsigmoid_attrs", "hardswish"])
def test_hard_activation_matches_onnxruntime(tmp_path, op, attrs, bound):
    model = one_op_model(helper.make_node(op, ["x"], ["y"], name="hard", **attrs), [48], opset=17)
    x = _inputs()
    float_prj = kiln.compile(model, output_dir=tmp_path / "float", precision="float")
    ref = float_prj.reference(x)[0]
    assert ref.min() <= 0.0 and ref.max() >= (1.0 if op == "HardSigmoid" else 7.0)  # both clamps are hit
    np.testing.assert_allclose(float_prj.csim(x), ref, rtol=1e-5, atol=1e-6)
    fixed_prj = kiln.compile(model, output_dir=tmp_path / "fixed", precision="fixed<16,6>")
    err = np.abs(fixed_prj.csim(x) - ref)
    assert err.max() <= bound, (op, float(err.max()) / LSB)
