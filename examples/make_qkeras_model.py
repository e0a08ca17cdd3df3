#!/usr/bin/env python
"""Build a small QKeras CNN and convert it to QONNX with Kiln's QKeras frontend.

Network (input 8x8x1 image, NHWC)::

    QActivation(quantized_bits(8,2))                      input: 8-bit, step 2^-5, [-4, 4)
    QConv2D(4, 3x3, kernel/bias quantized_bits(6,0,alpha=1))
    QActivation(quantized_relu(6,2))                      step 2^-4, [0, 4)
    Flatten
    QDense(16, kernel/bias quantized_bits(6,0,alpha=1))
    QActivation(quantized_relu(6,2))
    QDense(5,  kernel/bias quantized_bits(6,0,alpha=1))
    QActivation(quantized_bits(12,4))                     output: 12-bit, step 2^-7, [-16, 16)

``alpha=1`` matters: QDense/QConv2D silently turn a kernel quantizer with ``alpha=None``
into ``alpha="auto_po2"`` (``quantized_bits._set_trainable_parameter``).

Weights are random but sized like trained ones (He-uniform kernels, small biases), so
every quantizer sees values over a good part of its range.  With all weights and
activations on power-of-two grids every product and partial sum is exact in float32,
so Keras and the QONNX graph agree bit for bit.

Usage (from the repo root)::

    python examples/make_qkeras_model.py OUT.onnx [--keras OUT.h5] [--seed 0]

Importable API::

    from examples.make_qkeras_model import build_qkeras_model, make_samples
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

INPUT_SHAPE = (8, 8, 1)
N_CLASSES = 5
SEED = 0


def _import_keras():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # QKeras needs Keras 2 (tf_keras)
    import qkeras
    import tf_keras

    return tf_keras, qkeras


def build_qkeras_model(seed: int = SEED):
    """Return the QKeras model above with deterministic random weights."""
    keras, qk = _import_keras()
    weight_q = "quantized_bits(6,0,alpha=1)"

    inp = keras.Input(INPUT_SHAPE, name="image")
    x = qk.QActivation(qk.quantized_bits(8, 2), name="in_quant")(inp)
    x = qk.QConv2D(4, (3, 3), kernel_quantizer=weight_q, bias_quantizer=weight_q, name="conv")(x)
    x = qk.QActivation(qk.quantized_relu(6, 2), name="conv_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = qk.QDense(16, kernel_quantizer=weight_q, bias_quantizer=weight_q, name="fc1")(x)
    x = qk.QActivation(qk.quantized_relu(6, 2), name="fc1_relu")(x)
    x = qk.QDense(N_CLASSES, kernel_quantizer=weight_q, bias_quantizer=weight_q, name="fc2")(x)
    out = qk.QActivation(qk.quantized_bits(12, 4), name="out_quant")(x)
    model = keras.Model(inp, out, name="qkeras_cnn")
    _set_random_weights(model, seed)
    return model


def _set_random_weights(model, seed: int) -> None:
    """He-uniform kernels (limit sqrt(6 / fan_in)) and N(0, 0.1) biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel, bias = weights
        limit = np.sqrt(6.0 / np.prod(kernel.shape[:-1]))
        layer.set_weights([rng.uniform(-limit, limit, kernel.shape).astype(np.float32),
                           rng.normal(0.0, 0.1, bias.shape).astype(np.float32)])


def make_samples(n: int = 256, seed: int = SEED) -> np.ndarray:
    """``n`` random images, uniform in [-5, 5] (a little beyond the input quantizer's range)."""
    return np.random.default_rng(seed + 1).uniform(-5.0, 5.0, (n, *INPUT_SHAPE)).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="QONNX file to write")
    parser.add_argument("--keras", type=Path, help="also save the Keras model (.h5 or .keras)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--opset", type=int, default=13)
    args = parser.parse_args(argv)

    import onnx

    from kiln.frontend.qkeras_loader import qkeras_to_qonnx

    model = build_qkeras_model(args.seed)
    if args.keras:
        model.save(args.keras)
        print(f"wrote {args.keras}")
    onnx.save(qkeras_to_qonnx(model, opset=args.opset), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
