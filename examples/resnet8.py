"""ResNet-8 for CIFAR-10 (32x32x3): the MLPerf Tiny image-classification model, as a torch module.

The architecture of MLPerf Tiny's reference (mlcommons/tiny, benchmark/training/image_classification
``keras_model.py``, used by the hls4ml and FINN submissions): Conv 3x3 16 + BN + ReLU, then three
residual stacks of 16, 32 and 64 filters (two Conv 3x3 + BN each; stacks 2 and 3 start with stride 2
and a 1x1 stride-2 projection shortcut), an 8x8 average pool, Flatten, Dense 10, Softmax. Weights
are seeded random (no CIFAR training here), BatchNorm statistics random and non-trivial; the head
is sharpened so that the float argmax is a clear decision.

``python -m examples.resnet8 out.onnx`` writes the ONNX file (torch.onnx legacy exporter, symbolic batch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from examples.torch_models import _randomize_batchnorm, export_torch

SEED = 20261208
INPUT_SHAPE = (3, 32, 32)


class Stack(nn.Module):
    """Two 3x3 convolutions with BN; the shortcut is the input, or a 1x1 projection when the
    stack changes the width or strides."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else None

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet8(nn.Module):
    input_shape = INPUT_SHAPE

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.bn = nn.BatchNorm2d(16)
        self.stacks = nn.Sequential(Stack(16, 16, 1), Stack(16, 32, 2), Stack(32, 64, 2))
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.pool(self.stacks(x))
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=-1)


def build() -> ResNet8:
    torch.manual_seed(SEED)
    model = ResNet8()
    _randomize_batchnorm(model, torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        model.fc.weight.mul_(4.0)  # sharpen the head
    return model.eval()


def samples(n: int, seed: int = 1) -> np.ndarray:
    """CIFAR-like inputs: [n, 3, 32, 32] standard normal (normalised images)."""
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


def export(path) -> Path:
    return export_torch(build(), torch.from_numpy(samples(1)), Path(path))


if __name__ == "__main__":
    print(export(sys.argv[1] if len(sys.argv) > 1 else "resnet8.onnx"))
