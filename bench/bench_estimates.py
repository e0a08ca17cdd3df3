#!/usr/bin/env python
"""Benchmark: Kiln's latency/resource ESTIMATES for the transformer jet tagger on vu13p.

The hls4ml transformer paper (Jiang et al., "Low latency transformer inference on FPGAs
for physics applications with hls4ml", 2024) reports about 2 microseconds for its jet
tagger (15 particles x 6 features, 3 encoder blocks, 2-head attention) on a VU13P at
200 MHz. This prints Kiln's estimate for the same architecture (examples/zoo.py,
fixed<16,6>) at reuse factors 1, 2 and 4, the ratio to the published figure, and the
automatic reuse factors chosen for pynq-z2. Every Kiln figure is an estimate.

    .venv/bin/python bench/bench_estimates.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import kiln  # noqa: E402
from examples.make_jet_mlp import export as export_mlp  # noqa: E402
from examples.zoo import export_model  # noqa: E402
from kiln.report import load_estimate  # noqa: E402

PAPER_LATENCY_NS = 2000.0


def main() -> int:
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tagger = export_model("jet_tagger", tmp / "jet_tagger.onnx")
        table = Table(title="jet tagger on vu13p @ 200 MHz: Kiln estimate vs the hls4ml paper's ~2 us")
        for col in ("reuse", "latency (cycles)", "latency (ns)", "vs paper", "II", "DSP", "LUT", "FF", "BRAM18"):
            table.add_column(col, justify="right")
        for reuse in (1, 2, 4):
            project = kiln.compile(tagger, board="vu13p", output_dir=tmp / f"r{reuse}", reuse_factor=reuse)
            t = load_estimate(project.path)["total"]
            table.add_row(str(reuse), str(t["latency_cycles"]), f"{t['latency_ns']:.0f}",
                          f"{t['latency_ns'] / PAPER_LATENCY_NS:.2f}x", str(t["ii"]), str(t["dsp"]), str(t["lut"]),
                          str(t["ff"]), str(t["bram"]))
        console.print(table)
        auto = Table(title="--reuse auto on pynq-z2 (220 DSP, budget 0.7)")
        for col in ("model", "reuse factors (multiplier layers)", "latency (ns)", "DSP", "LUT", "fits"):
            auto.add_column(col)
        mlp = export_mlp(tmp / "jet_mlp.onnx")
        for name, path in (("jet MLP 16-64-32-32-5", mlp), ("transformer jet tagger", tagger)):
            project = kiln.compile(path, board="pynq-z2", output_dir=tmp / f"auto_{path.stem}")
            est = load_estimate(project.path)
            t = est["total"]
            factors = sorted({layer["reuse"] for layer in est["layers"] if layer["dsp"] or layer["reuse"] > 1})
            fits = t["dsp"] <= 0.7 * t["budget"]["dsp"] and t["lut"] <= 0.7 * t["budget"]["lut"]
            auto.add_row(name, ", ".join(map(str, factors)), f"{t['latency_ns']:.0f}", f"{t['dsp']} / {t['budget']['dsp']}",
                         f"{t['lut']} / {t['budget']['lut']}", "yes" if fits else "NO")
        console.print(auto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
