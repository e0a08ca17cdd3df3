"""``kiln synth``: run Vitis HLS on a generated project and set its report beside the estimates.

Runs ``vitis_hls -f build_prj.tcl`` in the project (csim off, csynth on), streams its
output, then parses ``kiln_prj/solution1/syn/report/*_csynth.xml``
(backends/hls/vitis_report.py). Without ``vitis_hls`` on PATH it says so (exit 2).
The top is the one build_prj.tcl sets: ``kiln_top`` for a bare part, ``kiln_top_axi`` on
Zynq/Alveo boards (for a Zynq stream design, the AXI-Stream wrapper of kiln_axi.cpp), whose
report (``kiln_top_axi_csynth.xml``) is then the one compared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kiln.backends.hls.toolchain import vitis_hls
from kiln.backends.hls.vitis_report import SynthReport, find_reports
from kiln.errors import KilnError
from kiln.report import load_estimate


def run_vitis(project_dir: Path, extra_args: list[str] | None = None) -> None:
    tool = vitis_hls()
    if tool is None:
        raise KilnError("vitis_hls is not on PATH: install AMD Vitis HLS and source its settings64.sh; "
                        "`kiln report` shows Kiln's estimates without it")
    cmd = [tool, "-f", "build_prj.tcl", "-tclargs", "csim=0", "synth=1", *(extra_args or [])]
    proc = subprocess.Popen(cmd, cwd=project_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
    if proc.wait() != 0:
        raise KilnError(f"vitis_hls exited with code {proc.returncode}; see {project_dir / 'vitis_hls.log'}")


def comparison_rows(project_dir: Path) -> tuple[SynthReport, list[tuple[str, str, str]]]:
    """(top report, rows of (quantity, Kiln estimate, Vitis HLS))."""
    top, _ = find_reports(project_dir)
    total = load_estimate(project_dir)["total"]
    res = top.resources
    rows = [
        ("latency (cycles)", str(total["latency_cycles"]), str(top.latency_worst)),
        ("latency (ns)", f"{total['latency_ns']:.0f}", f"{top.latency_ns:.0f}" if top.latency_ns is not None else "-"),
        ("II (cycles)", str(total["ii"]), str(top.interval_max)),
        ("DSP", str(total["dsp"]), str(res.get("dsp", "-"))),
        ("LUT", str(total["lut"]), str(res.get("lut", "-"))),
        ("FF", str(total["ff"]), str(res.get("ff", "-"))),
        ("BRAM18", str(total["bram"]), str(res.get("bram_18k", "-"))),
    ] + ([("URAM", str(total["uram"]), str(res.get("uram", "-")))] if total.get("uram") or res.get("uram") else [])
    return top, rows
