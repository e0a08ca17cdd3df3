#!/usr/bin/env bash
# Set up, build the bundled jet-tagging MLP (16-64-32-32-5), compile it for vu13p in
# fixed<16,6>, and run its C-simulation against ONNX Runtime on 256 samples.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
.venv/bin/python examples/make_jet_mlp.py -o examples/jet_mlp.onnx --samples examples/jet_mlp_x.npy
.venv/bin/kiln compile examples/jet_mlp.onnx --board vu13p --precision 'fixed<16,6>' -o build/jet_mlp
.venv/bin/kiln csim build/jet_mlp --input examples/jet_mlp_x.npy --output build/jet_mlp_y.npy
