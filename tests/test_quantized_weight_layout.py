"""Quantized weights stay integers through the layout of a Brevitas export and a folded BatchNorm.

Brevitas (and the QONNX model zoo's kwsmlp_w3a3) writes ``Quant(W) -> Transpose -> MatMul ->
BatchNormalization``. Kiln folds the Transpose into the quantized constant (frontend/quantizers.py)
and, when folding the BatchNorm into the weights, scales the per-channel quantizer scales with it
(passes/batchnorm.py), so the weights stay 3-bit integers with one multiply per output
(passes/weight_scale.py) instead of falling back to the default fixed<16,6> weight type; the
integer Dense then packs two products per DSP48 (uint/int products of 8 x 3 bits).

C-sim vs ONNX Runtime: the integer sum is exact; the per-output multiply by the 17-bit
scale and the output type fixed<16,6> (truncation, lsb 2^-10) keep the error within 4 lsb,
except where the input quantizer's 17-bit 1/scale flips a rounding tie (README: "a one-LSB
rounding flip when x/scale lies within ~2^-9 of a tie"): one input step 0.037 times the
largest folded weight. Asserted: every error <= that flip + 4 lsb, and at most 2% of the
outputs beyond 4 lsb (measured: max 0.0192, 1 flip in 512 outputs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import kiln

QONNX = "qonnx.custom_op.general"
N_IN, N_OUT = 16, 8


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (N_OUT, N_IN)).astype(np.float32)  # PyTorch layout (out, in)
    w_scale = rng.uniform(0.1, 0.3, (N_OUT, 1)).astype(np.float32)
    gamma = rng.uniform(-1.5, 1.5, N_OUT).astype(np.float32)  # negative: signs move into the integers
    inits = {"w": w, "w_scale": w_scale, "zero": np.float32(0), "bits3": np.float32(3), "x_scale": np.float32(0.037),
             "bits8": np.float32(8), "gamma": gamma, "beta": rng.normal(0, 0.2, N_OUT).astype(np.float32),
             "mean": rng.normal(0, 0.3, N_OUT).astype(np.float32), "var": rng.uniform(0.5, 2, N_OUT).astype(np.float32)}
    nodes = [
        helper.make_node("Quant", ["x", "x_scale", "zero", "bits8"], ["xq"], domain=QONNX, name="in_quant",
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Quant", ["w", "w_scale", "zero", "bits3"], ["wq"], domain=QONNX, name="w_quant",
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Transpose", ["wq"], ["wt"], name="w_t", perm=[1, 0]),
        helper.make_node("MatMul", ["xq", "wt"], ["mm"], name="fc"),
        helper.make_node("BatchNormalization", ["mm", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "brevitas_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)],
                             ir_version=8)


def test_transposed_and_batchnorm_folded_weights_stay_3bit_integers(tmp_path):
    project = kiln.compile(_model(), output_dir=tmp_path / "prj")
    defines = (project.path / "firmware" / "defines.h").read_text()
    weight_types = [line for line in defines.splitlines() if "weight_t;" in line]
    assert weight_types and all("ap_fixed<3,3>" in line for line in weight_types), weight_types
    x = np.random.default_rng(1).normal(0, 2, (64, N_IN)).astype(np.float32)
    err = np.abs(project.csim(x) - project.reference(x)[0])
    lsb = 2.0 ** -10
    w_eff = np.abs(_folded_weights()).max()
    assert err.max() <= 0.037 * w_eff + 4 * lsb, float(err.max())
    assert np.mean(err > 4 * lsb) <= 0.02, int(np.sum(err > 4 * lsb))


def _folded_weights() -> np.ndarray:
    """Quant(W) * gamma / sqrt(var + eps), as ONNX Runtime computes the layer."""
    inits = {t.name: numpy_helper.to_array(t) for t in _model().graph.initializer}
    s = inits["w_scale"]
    wq = np.clip(np.round(inits["w"] / s), -3, 3) * s
    return wq * (inits["gamma"] / np.sqrt(inits["var"] + 1e-5))[:, None]
