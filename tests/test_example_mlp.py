"""The bundled example (jet-tagging MLP 16-64-32-32-5) end to end, CLI and API."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from examples.make_jet_mlp import export, make_samples
from tests.helpers import argmax_agreement, relative_error

import kiln


@pytest.fixture(scope="module")
def jet(tmp_path_factory):
    d = tmp_path_factory.mktemp("jet")
    path = export(d / "jet_mlp.onnx", opset=17)
    x = make_samples(256)
    return path, x


def test_float_csim_matches_onnxruntime(jet, tmp_path):
    path, x = jet
    project = kiln.compile(path, output_dir=tmp_path / "f", precision="float")
    assert relative_error(project.csim(x), project.reference(x)[0]) <= 1e-5


def test_fixed_csim_weights_from_files_equal_synthesis_headers(jet, tmp_path):
    """C-sim reads weights from .bin files; the headers Vitis HLS compiles must hold the same values."""
    path, x = jet
    project = kiln.compile(path, output_dir=tmp_path / "q", precision="fixed<16,6>")
    from_files = project.csim(x)
    from_headers = project.csim(x, weights="headers")
    np.testing.assert_array_equal(from_files, from_headers)
    ref = project.reference(x)[0]
    # fixed<16,6>: 10 fractional bits, weights rounded to 2^-10, 16-bit activations
    assert argmax_agreement(from_files, ref) >= 0.99
    assert np.max(np.abs(from_files - ref)) <= 0.01


def test_cli_compile_and_csim_writes_outputs(jet, tmp_path):
    path, x = jet
    np.save(tmp_path / "x.npy", x)
    prj = tmp_path / "prj"
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "compile", str(path), "--board", "pynq-z2",
                        "--precision", "float", "-o", str(prj)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "csim", str(prj), "--input", str(tmp_path / "x.npy"),
                        "--output", str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "argmax agreement" in r.stdout and "100.00%" in r.stdout
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (256, 5)
    assert relative_error(y, kiln.open_project(prj).reference(x)[0]) <= 1e-5
    tcl = (prj / "build_prj.tcl").read_text()
    assert "xc7z020clg400-1" in tcl and "create_clock -period 10.000" in tcl
    assert "csynth_design" in tcl and "cosim_design" in tcl and "export_design" in tcl
