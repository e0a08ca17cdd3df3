"""`kiln synth`: a clear exit 2 without vitis_hls; with it, its csynth report beside the estimates.

The machines here have no Vitis HLS. The second test puts a stand-in ``vitis_hls`` on
PATH that writes a real Vitis HLS 2019.2 report (tests/data/vitis_reports) where Vitis
would, so the command's run/parse/compare path is exercised end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples.make_jet_mlp import export

import kiln
from tests.helpers import stand_in_vitis_hls

DATA = Path(__file__).parent / "data" / "vitis_reports"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return kiln.compile(export(d / "m.onnx"), board="zcu102", output_dir=d / "prj")


def test_without_vitis_hls_exits_2(project, monkeypatch):
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "synth", str(project.path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "vitis_hls is not on PATH" in r.stderr


def test_with_vitis_hls_report_is_parsed_beside_estimates(project, tmp_path):
    env = stand_in_vitis_hls(tmp_path, f"""echo "INFO: [HLS 200-10] Running fake vitis_hls $@"
test -f build_prj.tcl || exit 1
mkdir -p kiln_prj/solution1/syn/report
cp {DATA / 'zu9eg_stream_csynth.xml'} kiln_prj/solution1/syn/report/kiln_top_csynth.xml
""")
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "synth", str(project.path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert "Running fake vitis_hls -f build_prj.tcl -tclargs csim=0 synth=1" in r.stdout  # streamed
    assert "Kiln (estimate)" in r.stdout and "Vitis HLS" in r.stdout
    assert "345" in r.stdout and "209" in r.stdout  # latency and LUTs from the report
