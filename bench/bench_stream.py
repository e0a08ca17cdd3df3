"""Stream-mode (--io stream) figures for the MLPerf Tiny ResNet-8 (examples/resnet8.py), calibrated
16-bit, folded for each board by the stream folding (backends/hls/stream_fold.py): estimated frames/s,
resources against 70% of the board, and the C-sim argmax agreement with float (ONNX Runtime) on
N inputs (default 256; the test suite uses 16). All Kiln figures are estimates (no synthesis here).

Published MLPerf Tiny results of hls4ml and FINN (quantized, synthesised, measured on the board):
Borras et al., "Open-source FPGA-ML codesign for the MLPerf Tiny Benchmark", arXiv:2206.11791
(2022; MLPerf Tiny v0.7, Pynq-Z2 and Arty A7-100T): latencies as low as 20 us and energies as low
as 30 uJ per inference across its tasks (abstract). The per-task image-classification rows of that
paper were not in the stored corpus searched here; they are not quoted.

    python bench/bench_stream.py [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kiln
from examples.resnet8 import export, samples

PUBLISHED = ("hls4ml / FINN, MLPerf Tiny v0.7 (Borras et al., arXiv:2206.11791): latencies as low as 20 us, "
             "energies as low as 30 uJ per inference (best task; Pynq-Z2, Arty A7-100T)")


def main(n: int = 256) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    src = str(export(tmp / "resnet8.onnx"))
    cal = samples(64, seed=7)
    x = samples(n, seed=3)
    for board in ("zcu102", "pynq-z2"):
        try:
            p = kiln.compile(src, board=board, calibrate=cal, bits=16, io="stream", output_dir=tmp / board)
        except kiln.KilnError as err:
            print(f"ResNet-8 {board}: does not fit (estimate): {str(err).splitlines()[1].strip()}")
            continue
        total = json.loads((p.path / "kiln_estimate.json").read_text())["total"]
        t = time.time()
        y, ref = p.csim(x), p.reference(x)[0]
        agree = np.mean(y.argmax(1) == ref.argmax(1))
        print(f"ResNet-8 {board} stream 16-bit: II {total['ii']:,} cycles, {total['frames_per_s']:,.0f} frames/s "
              f"at {total['clock_mhz']:g} MHz, latency {total['latency_ns'] / 1e3:,.1f} us; DSP {total['dsp']:,}, "
              f"LUT {total['lut']:,}, FF {total['ff']:,}, BRAM18K {total['bram']:,} (estimates); argmax agreement "
              f"{agree:.2%} on {n} inputs (C-sim {time.time() - t:.0f} s)")
    print(PUBLISHED)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 256)
