#!/usr/bin/env python
"""Benchmark: the timm zoo (examples/timm_zoo.py, random weights) through Kiln's HLS backend in float.

Not a test (tests/test_timm_zoo.py asserts the agreement). Run from the repo root::

    .venv/bin/python bench/bench_timm_zoo.py [--size 224] [--exporters legacy,dynamo] [names ...]

For each model and exporter: the exported ONNX's node count, ``kiln.compile(..., precision="float")``
wall time, the g++ build of the C-sim, the C-sim run on 8 standard-normal inputs (wall time and
peak memory of the simulation process, ``HLSProject.last_run``), and the max error against ONNX
Runtime relative to the output scale. Prints a Markdown table (the README's). A model Kiln cannot
compile yet gets a row saying which operator it lacks. ``--size`` overrides each model's CI size
(64, efficientformer 224).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from examples.timm_zoo import ZOO, export, samples  # noqa: E402

import kiln  # noqa: E402
from kiln.errors import KilnError  # noqa: E402

N_SAMPLES = 8


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / max(float(np.max(np.abs(ref))), 1e-12)


def unsupported_ops(message: str) -> str:
    """'Split, InstanceNormalization' from check_supported's message."""
    ops = re.findall(r"^\s+([\w.]+) \(operator not supported\)", message, re.M)
    return ", ".join(dict.fromkeys(ops)) or message.splitlines()[0][:80]


def bench_one(name: str, exporter: str, size: int, work: Path) -> dict:
    row = {"model": name, "exporter": exporter, "size": size}
    path = export(name, work / f"{name}_{exporter}.onnx", size=size, dynamo=exporter == "dynamo")
    row["ops"] = len(onnx.load(str(path), load_external_data=False).graph.node)
    t = time.perf_counter()
    try:
        project = kiln.compile(path, output_dir=work / f"{name}_{exporter}", precision="float")
    except KilnError as e:
        row["missing"] = unsupported_ops(str(e))
        return row
    row["compile_s"] = time.perf_counter() - t
    t = time.perf_counter()
    project.build()
    row["build_s"] = time.perf_counter() - t
    x = samples(size, N_SAMPLES)
    got = project.csim(x)
    row["csim_s"], row["peak_mb"] = project.last_run["seconds"], project.last_run["peak_rss_mb"]
    row["rel_err"] = relative_error(got, project.reference(x)[0])
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | exporter | input | ONNX nodes | compile (s) | g++ build (s) | C-sim 8 inputs (s) | "
             "C-sim peak memory (MB) | max error / output scale |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['model']} | {r['exporter']} | {r['size']}x{r['size']} | {r['ops']} |"
        if "missing" in r:
            lines.append(f"{head} not yet: {r['missing']} | | | | |")
        else:
            lines.append(f"{head} {r['compile_s']:.1f} | {r['build_s']:.1f} | {r['csim_s']:.2f} | "
                         f"{r['peak_mb']:.0f} | {r['rel_err']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ZOO))
    parser.add_argument("--size", type=int, help="input height = width (default: each model's CI size)")
    parser.add_argument("--exporters", default="legacy,dynamo", help="comma-separated: legacy, dynamo")
    parser.add_argument("--keep", help="write exports and projects here instead of a temporary folder")
    args = parser.parse_args(argv)
    exporters = args.exporters.split(",")
    if not set(exporters) <= {"legacy", "dynamo"} or not set(args.names) <= set(ZOO):
        parser.error(f"exporters are legacy, dynamo; models are {', '.join(ZOO)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        for name in args.names:
            for exporter in exporters:
                size = args.size or ZOO[name].size
                print(f"... {name} ({exporter}, {size}x{size})", file=sys.stderr, flush=True)
                rows.append(bench_one(name, exporter, size, work))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
