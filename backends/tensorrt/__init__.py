"""TensorRT backend (NVIDIA GPUs, Jetson): an engine-ready ONNX network plus the scripts that build it.

    from kiln.backends.tensorrt import compile_tensorrt, open_artifact
    art = compile_tensorrt("model.onnx", board="jetson-orin", output_dir="build/trt", precision="fp16")
    y = art.run(x)        # the engine where TensorRT is installed, else engine.onnx in ONNX Runtime

TensorRT 11 networks are strongly typed: precision lives in the ONNX (float16 types, Cast and
Q/DQ nodes), so engine.onnx is what Kiln guarantees numerically and the engine build only
parses it. TensorRT itself is imported lazily (and only where it is installed).
"""

from __future__ import annotations


def compile_tensorrt(model, board="jetson-orin", output_dir=None, precision="fp32", calibrate=None):
    from kiln.backends.tensorrt.artifact import compile_tensorrt as _compile

    return _compile(model, board=board, output_dir=output_dir, precision=precision, calibrate=calibrate)


def open_artifact(path):
    from kiln.backends.tensorrt.artifact import TensorRTArtifact

    return TensorRTArtifact.open(path)


__all__ = ["compile_tensorrt", "open_artifact"]
