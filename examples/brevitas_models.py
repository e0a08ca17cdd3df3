"""Brevitas-quantized models exported as QONNX (``Quant`` nodes), for Kiln's quantization tests.

``brevitas_mlp``/``brevitas_cnn`` build small networks the way Brevitas users write them:
a quantized input, 4-bit weights, QuantReLU activations and a quantized output.
``po2=True`` uses Brevitas' fixed-point quantizers (power-of-two scales: they map
exactly onto ap_fixed); ``po2=False`` its default float-scale quantizers (Kiln folds or
multiplies those scales; see kiln/quant.py). Weights are random, with a few calibration
passes in training mode so activation scales see realistic ranges.

    python examples/brevitas_models.py OUT_DIR     writes mlp/cnn x po2/float .onnx files
"""

from __future__ import annotations

import sys
from pathlib import Path


def _quantizers(po2: bool) -> dict:
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                                Int8WeightPerTensorFloat, Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)

    if po2:
        return {"act": Int8ActPerTensorFixedPoint, "uact": Uint8ActPerTensorFixedPoint,
                "weight": Int8WeightPerTensorFixedPoint}
    return {"act": Int8ActPerTensorFloat, "uact": Uint8ActPerTensorFloat, "weight": Int8WeightPerTensorFloat}


def _calibrate(model, shape, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(64, *shape, generator=gen))
    model.eval()
    return model


def brevitas_mlp(po2: bool, seed: int = 0):
    """16 -> 32 -> 16 -> 5, 8-bit input/output, 4-bit weights, 6-bit ReLUs."""
    import brevitas.nn as qnn
    import torch

    torch.manual_seed(seed)
    q = _quantizers(po2)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=q["act"], bit_width=8, return_quant_tensor=True),
        qnn.QuantLinear(16, 32, bias=True, weight_quant=q["weight"], weight_bit_width=4),
        qnn.QuantReLU(act_quant=q["uact"], bit_width=6, return_quant_tensor=True),
        qnn.QuantLinear(32, 16, bias=True, weight_quant=q["weight"], weight_bit_width=4),
        qnn.QuantReLU(act_quant=q["uact"], bit_width=6, return_quant_tensor=True),
        qnn.QuantLinear(16, 5, bias=True, weight_quant=q["weight"], weight_bit_width=4),
        qnn.QuantIdentity(act_quant=q["act"], bit_width=8),
    )
    return _calibrate(model, (16,), seed), (1, 16)


def brevitas_cnn(po2: bool, seed: int = 0):
    """1x8x8 image: conv 3x3 (4 ch) -> ReLU -> maxpool 2 -> flatten -> dense 5, all quantized."""
    import brevitas.nn as qnn
    import torch

    torch.manual_seed(seed)
    q = _quantizers(po2)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(act_quant=q["act"], bit_width=8, return_quant_tensor=True),
        qnn.QuantConv2d(1, 4, 3, bias=True, weight_quant=q["weight"], weight_bit_width=4),
        qnn.QuantReLU(act_quant=q["uact"], bit_width=6, return_quant_tensor=True),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        qnn.QuantLinear(36, 5, bias=True, weight_quant=q["weight"], weight_bit_width=4),
        qnn.QuantIdentity(act_quant=q["act"], bit_width=8),
    )
    return _calibrate(model, (1, 8, 8), seed), (1, 1, 8, 8)


def export(model_and_shape, path) -> Path:
    """Export to QONNX (Brevitas' export_qonnx) at ``path``."""
    import torch
    from brevitas.export import export_qonnx

    model, shape = model_and_shape
    export_qonnx(model, torch.randn(*shape), export_path=str(path))
    return Path(path)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "build/brevitas")
    out.mkdir(parents=True, exist_ok=True)
    for name, builder in (("mlp", brevitas_mlp), ("cnn", brevitas_cnn)):
        for po2 in (True, False):
            path = export(builder(po2), out / f"brevitas_{name}_{'po2' if po2 else 'float'}.onnx")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
