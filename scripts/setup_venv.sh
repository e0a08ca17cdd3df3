#!/usr/bin/env bash
# Create .venv at the repo root (if missing) and install Kiln with its test, tvm, qkeras and coreml extras.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# torch 2.14.1 + torchvision 0.29.1 (for timm's test zoo) come from the machine's package mirror.
# tvm: the TVM backend for CPU boards (apache-tvm pinned with apache-tvm-ffi 0.1.14.post0).
# coreml: coremltools 9.0 (ML Program packages for Apple boards; predicting needs macOS).
# tensorrt: Polygraphy + ONNX-GraphSurgeon for the TensorRT backend (TensorRT itself comes from NVIDIA).
# qkeras: TensorFlow 2.21 + tf_keras + QKeras 0.9 for QKeras models (about 700 MB).
.venv/bin/python -m pip install --quiet -e ".[test,tvm,qkeras,coreml,tensorrt]"
# torch's CUDA wheel pulls in triton (a GPU kernel compiler Kiln never uses); importing it after
# TensorFlow segfaults (QKeras and Brevitas tests share a pytest worker), so it is removed.
.venv/bin/python -m pip uninstall --quiet -y triton >/dev/null 2>&1 || true
