"""Board-family host drivers: the AXI wrapper (what PYNQ / XRT drive) computes what the
per-sample top does, and the PYNQ driver / XRT host program are generated for their family."""

from __future__ import annotations

import os
import py_compile
import subprocess

import numpy as np
import pytest

from examples.make_jet_mlp import export, make_samples

import kiln


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export(tmp_path_factory.mktemp("m") / "jet.onnx")


def run_tb(project, x, axi: bool) -> np.ndarray:
    binary = project.build()
    in_file, out_file = project.path / "csim" / "in.bin", project.path / "csim" / "out.bin"
    in_file.parent.mkdir(exist_ok=True)
    x.reshape(len(x), -1).astype("<f8").tofile(in_file)
    env = {**os.environ, "KILN_TB_AXI": "1" if axi else "0"}
    subprocess.run([str(binary), str(in_file), str(out_file), str(project.path / "weights")], check=True, env=env,
                   capture_output=True)
    return np.fromfile(out_file, "<f8").reshape(len(x), -1)


@pytest.mark.parametrize("board,driver", [("pynq-z2", "kiln_pynq.py"), ("alveo-u250", "host.cpp")])
def test_axi_wrapper_matches_top_and_driver_is_generated(tmp_path, model, board, driver):
    project = kiln.compile(model, board=board, output_dir=tmp_path / board)
    x = make_samples(64)
    direct, through_axi = run_tb(project, x, axi=False), run_tb(project, x, axi=True)
    np.testing.assert_array_equal(through_axi, direct.astype(np.float32))  # float32 buffers, same values
    assert np.mean(np.argmax(direct, 1) == np.argmax(project.reference(x)[0], 1)) >= 0.98
    tcl = (project.path / "build_prj.tcl").read_text()
    assert "set_top kiln_top_axi" in tcl and "kiln_axi.cpp" in tcl
    path = project.path / "driver" / driver
    text = path.read_text()
    if driver.endswith(".py"):
        py_compile.compile(str(path), doraise=True)
        assert "IN_SIZE = 16" in text and "OUT_SIZE = 5" in text and "kiln_top_axi_0" in text
    else:
        assert 'xrt::kernel kernel(device, uuid, "kiln_top_axi")' in text and "IN_SIZE = 16" in text
        assert (project.path / "driver" / "Makefile").is_file()


def test_bare_part_has_no_driver(tmp_path, model):
    project = kiln.compile(model, board="vu13p", output_dir=tmp_path / "v", precision="float")
    assert not (project.path / "driver").exists()
    assert "set_top kiln_top\n" in (project.path / "build_prj.tcl").read_text()
