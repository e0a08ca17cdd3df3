"""`kiln csim --trace`: every layer's output, compared with ONNX Runtime's intermediate values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from examples.make_jet_mlp import export, make_samples

import kiln


def test_trace_float_matches_onnxruntime_layer_by_layer(tmp_path):
    path = export(tmp_path / "jet.onnx", opset=17)
    project = kiln.compile(path, output_dir=tmp_path / "f", precision="float")
    x = make_samples(32)
    outputs, traced = project.csim_trace(x)
    np.testing.assert_array_equal(outputs[0], project.csim(x))  # tracing does not change results
    rows = project.trace_compare(x)
    assert [r["op"] for r in rows] == ["Dense", "Relu", "Dense", "Relu", "Dense", "Relu", "Dense", "Softmax"]
    assert [r["layer"] for r in rows][:2] == ["/0/Gemm", "/1/Relu"]  # the node names, as in a config
    assert all(r["relative_error"] is not None and r["relative_error"] <= 1e-5 for r in rows)
    assert all(v.shape[0] == 32 for v in traced.values())


def test_trace_cli_fixed_point(tmp_path):
    path = export(tmp_path / "jet.onnx", opset=17)
    project = kiln.compile(path, output_dir=tmp_path / "q", precision="fixed<10,4>")
    x = make_samples(32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "csim", str(project.path), "--input", str(tmp_path / "x.npy"),
                        "--trace", str(tmp_path / "trace")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "per-layer trace" in r.stdout
    saved = np.load(tmp_path / "trace" / "trace.npz")
    assert len(saved.files) == 8
    rows = project.trace_compare(x)
    # 6 fractional bits: every layer departs from float, none by more than a few lsb-weighted sums
    assert all(0 < r["max_abs_error"] <= 0.25 for r in rows)
    assert rows[-1]["max_abs_error"] == project.compare(x)[0].max_abs_error
