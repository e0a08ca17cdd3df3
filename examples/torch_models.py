"""The seven PyTorch models of the spine's suite (tests/test_torch_models.py, tests/test_tvm_models.py,
bench/bench_tvm.py): deterministic weights (seeded init, random BatchNorm statistics, sharpened
classifier heads), exported by torch.onnx (legacy exporter, symbolic batch axis).

Shared here, in one importable place, so that tests and benchmarks do not import test files.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

F = torch.nn.functional

N_SAMPLES = 256


def export_torch(module, example, path: Path, opset: int = 17, input_names=("x",), output_names=("y",),
                 dynamic_batch: bool = True, **export_kwargs) -> Path:
    """torch.onnx.export (legacy exporter) with a symbolic batch axis; extra keyword
    arguments (e.g. ``training=torch.onnx.TrainingMode.PRESERVE``) go to torch.onnx.export."""
    module.eval()
    dynamic = {n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic, dynamo=False,
                          **export_kwargs)
    onnx.checker.check_model(onnx.load(str(path)))
    return Path(path)


def _randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial inference statistics for every BatchNorm (scale in ~[0.6, 1.6])."""
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            with torch.no_grad():
                bn.running_mean.copy_(0.5 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                bn.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                bn.bias.copy_(0.2 * torch.randn(n, generator=generator))


# --- the models ---------------------------------------------------------------------------

class JetMLP(nn.Module):
    """Jet-tagging MLP: Gemm, BatchNorm1d folded after Linear, ReLU, Dropout, Softmax."""

    input_shape = (16,)
    classifier = True

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(32, 5), nn.Softmax(dim=-1))

    def forward(self, x):
        return self.net(x)


class CNN2d(nn.Module):
    """2-D CNN: Conv (padding, stride 2), BN folded after Conv, ReLU, MaxPool, ReLU6 (Clip),
    AveragePool, Flatten, Gemm, Softmax."""

    input_shape = (3, 16, 16)
    classifier = True
    keep_conv_batchnorm = True  # export without torch's own Conv+BN fusion (see exported())

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.act2 = nn.ReLU6()
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(12 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))        # [8, 8, 8]
        x = self.pool2(self.act2(self.conv2(x)))               # [12, 4, 4] -> [12, 2, 2]
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=1)


class CNN1d(nn.Module):
    """1-D CNN: Conv1d (padding; stride 2), BatchNorm1d folded after Conv1d, ReLU, MaxPool1d,
    Hardtanh (Clip), AvgPool1d, Flatten, Gemm, Softmax."""

    input_shape = (4, 32)
    classifier = True
    keep_conv_batchnorm = True  # export without torch's own Conv+BN fusion (see exported())

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(8)
        self.pool1 = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(8, 8, 3, stride=2, padding=1)
        self.act2 = nn.Hardtanh(-2.0, 2.0)
        self.pool2 = nn.AvgPool1d(2)
        self.fc = nn.Linear(8 * 4, 6)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))        # [8, 16]
        x = self.pool2(self.act2(self.conv2(x)))               # [8, 8] -> [8, 4]
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=-1)


class Branches(nn.Module):
    """Two branches concatenated, then Add/Sub/Mul/Div with constants (broadcast over the
    feature axis, and scalars) and between two tensors ([B,24] op [B,1] broadcasting, and
    same shape). Logit output."""

    input_shape = (12,)
    classifier = True

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 16)
        self.b = nn.Linear(12, 8)
        self.gate = nn.Linear(12, 1)
        self.head = nn.Linear(24, 6)
        g = torch.Generator().manual_seed(7)
        self.register_buffer("center", 0.2 * torch.randn(24, generator=g))
        self.register_buffer("spread", 0.75 + torch.rand(24, generator=g))

    def forward(self, x):
        h = torch.cat([F.relu(self.a(x)), torch.tanh(self.b(x))], dim=1)   # Concat -> [B, 24]
        h = (h - self.center) / self.spread                                 # Sub, Div by constants [24]
        h = h * 0.5 + 0.25                                                  # Mul, Add scalar constants
        g = self.gate(x)                                                    # [B, 1]
        h = h - g                                                           # Sub tensor [B,24] - [B,1]
        h = h / (torch.sigmoid(g) + 1.0)                                    # Div tensor by tensor [B,1]
        h = h + h * torch.sigmoid(g)                                        # Mul [B,24]*[B,1], Add same shape
        return self.head(h)


class SeqMix(nn.Module):
    """Sequence model on [B, T=8, F=6]: Linear on a 3-D input (MatMul + Add), Transpose,
    bias-free Linear (MatMul), Softmax over the last axis of a 3-D tensor, Reshape, Gemm."""

    input_shape = (8, 6)
    classifier = True

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 12)
        self.mix = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(12 * 8, 4)

    def forward(self, x):
        h = F.relu(self.proj(x))                    # [B, 8, 12]
        h = h.transpose(1, 2)                       # [B, 12, 8]
        h = torch.softmax(self.mix(h), dim=-1)      # [B, 12, 8]
        h = h.reshape(h.shape[0], -1)               # [B, 96]
        return self.head(h)


class Activations(nn.Module):
    """Regression head: BatchNorm1d directly on the input (cannot be folded), LeakyReLU,
    Sigmoid, torch.clamp (Clip), Tanh. Three real-valued outputs (not a class vector)."""

    input_shape = (10,)
    classifier = False

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm1d(10)
        self.fc1 = nn.Linear(10, 24)
        self.fc2 = nn.Linear(24, 24)
        self.fc3 = nn.Linear(24, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = F.leaky_relu(self.fc1(self.bn_in(x)), 0.1)
        h = torch.sigmoid(self.fc2(h))
        h = torch.tanh(torch.clamp(self.fc3(h), -1.5, 1.5))
        return self.out(h)


class GapNet(nn.Module):
    """Conv (no padding), ReLU, MaxPool, BatchNorm2d after the pooling (cannot be folded),
    Conv, ReLU, AdaptiveAvgPool2d(1) (GlobalAveragePool), Flatten, Gemm. Logit output."""

    input_shape = (2, 10, 10)
    classifier = True

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.bn(self.pool(F.relu(self.conv1(x))))          # [8, 8, 8] -> [8, 4, 4]
        x = self.gap(F.relu(self.conv2(x)))                    # [16, 1, 1]
        return self.fc(torch.flatten(x, 1))


MODELS = {cls.__name__: cls for cls in (JetMLP, CNN2d, CNN1d, Branches, SeqMix, Activations, GapNet)}


# --- exporting ------------------------------------------------------------------------------

def _restore_dropout(proto: onnx.ModelProto, after_op: str = "Relu") -> onnx.ModelProto:
    """Put an inference-mode ONNX Dropout after every ``after_op`` node (where JetMLP has
    nn.Dropout). torch.onnx drops nn.Dropout in eval mode; other exporters (tf2onnx, Keras)
    keep it as Dropout with training_mode absent, which is an identity in ONNX."""
    graph = proto.graph
    ratio_name = "kiln_test_dropout_ratio"
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.2, dtype=np.float32), ratio_name))
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == after_op:
            old = node.output[0]
            node.output[0] = f"{old}_before_dropout"
            nodes.append(helper.make_node("Dropout", [node.output[0], ratio_name], [old],
                                          name=f"{node.name}_dropout"))
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


LOGIT_STD = 3.0


def _sharpen_classifier(module: nn.Module, seed: int) -> None:
    """Scale the last Linear layer so the logits spread like a trained classifier's (std
    LOGIT_STD over random inputs). A freshly initialised model gives near-uniform class
    vectors whose top two entries differ by less than one fixed-point lsb for many inputs,
    which would make argmax agreement a measure of ties rather than of accuracy. (The
    logits stay well inside the +-32 range of fixed<16,6>.)"""
    head = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    captured = []
    hook = head.register_forward_hook(lambda mod, inputs, output: captured.append(output))
    x = torch.randn(512, *module.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        module(x)
        hook.remove()
        scale = LOGIT_STD / float(captured[0].std())
        head.weight.mul_(scale)
        head.bias.mul_(scale)


@functools.cache
def build_model(name: str) -> nn.Module:
    """The model with deterministic weights: seeded init, random BN statistics, and (class-vector
    models) a sharpened head."""
    torch.manual_seed(sum(map(ord, name)))
    module = MODELS[name]()
    _randomize_batchnorm(module, torch.Generator().manual_seed(len(name)))
    if module.classifier:
        _sharpen_classifier(module, seed=len(name) + 100)
    return module.eval()


@functools.cache
def exported(name: str, opset: int, directory: str) -> onnx.ModelProto:
    """The model exported by torch.onnx (legacy exporter, symbolic batch) at ``opset``."""
    module = build_model(name)
    example = torch.randn(2, *module.input_shape)
    kwargs = {}
    if getattr(module, "keep_conv_batchnorm", False):
        # In TrainingMode.EVAL torch.onnx fuses BatchNorm into the preceding Conv itself, so
        # Kiln would never see it. PRESERVE keeps the module's mode (eval: inference-mode BN,
        # no Dropout) but skips that fusion, leaving Conv -> BatchNormalization for Kiln to fold.
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    path = export_torch(module, example, Path(directory) / f"{name}_op{opset}.onnx", opset=opset, **kwargs)
    proto = onnx.load(str(path))
    if name == "JetMLP":
        proto = _restore_dropout(proto)
    return proto


def random_inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(20261122)
    return rng.standard_normal((N_SAMPLES, *MODELS[name].input_shape)).astype(np.float32)
