#!/usr/bin/env python
"""Benchmark: quantized models and calibration, accuracy against their references, in one run.

Not a test (the tests assert the same figures). Run from the repo root::

    .venv/bin/python bench/bench_quantization.py [--skip-qkeras] [--skip-hls4ml] [--keep DIR]

1. Quantized imports. Kiln C-sim on 256 inputs, compared with the model's own reference:
   QKeras ``model.predict`` for the QKeras CNN (examples/make_qkeras_model.py), and ONNX Runtime
   on the quantized graph for the Brevitas QONNX MLP/CNN (examples/brevitas_models.py; power-of-two
   and float scales) and the ORT ``quantize_static`` Q/DQ jet MLP (per-tensor and per-channel).
   Printed per model: how the quantizers were mapped (exact / multiply / folded), max |error| in
   LSBs of the output quantizer, the share of outputs off by more than half an LSB (rounding
   flips), what the instrumented C-sim counted (quantizers clipping, which they are meant to
   do, apart from overflows of types Kiln chose), and the DSP/LUT estimate.
2. Calibration. The transformer jet tagger (examples/zoo.py) and the jet MLP on 1000 samples:
   Kiln's uniform default fixed<16,6> vs ``--calibrate`` 16 bits (types from observed ranges)
   vs ``--calibrate --max-error 2^-10``; for the MLP also hls4ml 1.3 at its uniform
   ap_fixed<16,6> (the peer, measured in the same run). Argmax agreement with float, max |error|,
   overflows on the calibration samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import kiln  # noqa: E402

N = 256


def _lsb(model_path) -> float | None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(model_path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next((n for n in model.graph.node if model.graph.output[0].name in n.output), None)
    if node is None or node.op_type not in ("Quant", "DequantizeLinear") or node.input[1] not in inits:
        return None
    return float(inits[node.input[1]])


def _row(name, project, got, ref, lsb, seconds):
    _, counts = project.csim_overflow(project._bench_x)
    kinds = {}
    for q in project.manifest.get("quantizers", []):
        key = q["mapping"].split(":")[0]
        kinds[key] = kinds.get(key, 0) + 1
    est = (project.path / "kiln_estimate.json")
    import json

    total = json.loads(est.read_text())["total"]
    diff = np.abs(got.astype(np.float64) - ref)
    err = float(np.max(diff))
    return {"model": name, "quantizers": ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "-",
            "max |err| (LSB)": f"{err / lsb:.3f}" if lsb else f"{err:.2e} (abs)",
            "1-LSB flips": f"{100 * np.mean(diff > lsb / 2):.2f}%" if lsb else "-",
            "quantizer saturations": str(sum(c["count"] for c in counts if c["source"] == "quant")),
            "overflows (Kiln's types)": str(sum(c["count"] for c in counts if c["source"] != "quant")),
            "DSP": str(total["dsp"]), "LUT": str(total["lut"]), "compile+csim s": f"{seconds:.1f}"}


def quantized_imports(work: Path, skip_qkeras: bool) -> list[dict]:
    from examples import brevitas_models
    from examples.make_jet_mlp import export as export_jet_mlp
    from kiln.calibrate import write_int8_qdq

    rows = []
    rng = np.random.default_rng(0)
    cases = []
    for name, builder, shape in (("mlp", brevitas_models.brevitas_mlp, (16,)),
                                 ("cnn", brevitas_models.brevitas_cnn, (1, 8, 8))):
        for po2 in (True, False):
            label = f"Brevitas {name.upper()} ({'power-of-two' if po2 else 'float'} scales)"
            path = brevitas_models.export(builder(po2), work / f"brevitas_{name}_{po2}.onnx")
            cases.append((label, path, (rng.standard_normal((N, *shape)) * 1.5).astype(np.float32)))
    jet = export_jet_mlp(work / "jet_mlp.onnx")
    x_jet = rng.standard_normal((N, 16)).astype(np.float32)
    for per_channel in (False, True):
        path = write_int8_qdq(jet, x_jet[:128], work / f"jet_qdq_{per_channel}.onnx", per_channel=per_channel)
        cases.append((f"ORT Q/DQ jet MLP ({'per-channel' if per_channel else 'per-tensor'})", path, x_jet))
    for label, path, x in cases:
        started = time.perf_counter()
        project = kiln.compile(path, output_dir=work / f"prj_{len(rows)}")
        got = project.csim(x)
        seconds = time.perf_counter() - started
        project._bench_x = x
        rows.append(_row(label, project, got, project.reference(x)[0], _lsb(path), seconds))
    if not skip_qkeras:
        from examples.make_qkeras_model import build_qkeras_model, make_samples

        model = build_qkeras_model(seed=0)
        x = make_samples(N, seed=1)
        started = time.perf_counter()
        project = kiln.compile(model, output_dir=work / "prj_qkeras")
        got = project.csim(x)
        seconds = time.perf_counter() - started
        project._bench_x = x
        ref = model.predict(x, verbose=0).astype(np.float64)
        row = _row("QKeras CNN (vs QKeras predict)", project, got, ref, 2.0 ** -7, seconds)
        rows.append(row)
    return rows


def calibration(work: Path, skip_hls4ml: bool) -> list[dict]:
    from examples.make_jet_mlp import build_jet_mlp, export as export_jet_mlp
    from examples.zoo import export_model, samples

    rows = []
    models = [("transformer jet tagger", export_model("jet_tagger", work / "jet_tagger.onnx"),
               samples("jet_tagger", 1000, seed=0)),
              ("jet MLP", export_jet_mlp(work / "jet_mlp_cal.onnx"),
               np.random.default_rng(3).standard_normal((1000, 16)).astype(np.float32))]
    for name, path, x in models:
        for label, kwargs in (("Kiln fixed<16,6> (uniform default)", {"precision": "fixed<16,6>"}),
                              ("Kiln --calibrate, 16 bits", {"calibrate": x, "bits": 16}),
                              ("Kiln --calibrate --max-error 2^-10", {"calibrate": x, "max_error": 2 ** -10})):
            started = time.perf_counter()
            project = kiln.compile(path, output_dir=work / f"cal_{len(rows)}", **kwargs)
            (y,), counts = project.csim_overflow(x)
            seconds = time.perf_counter() - started
            ref = project.reference(x)[0]
            rows.append({"model": name, "types": label,
                         "argmax agreement": f"{100 * np.mean(np.argmax(y, 1) == np.argmax(ref, 1)):.2f}%",
                         "max |err|": f"{np.max(np.abs(y - ref)):.2e}",
                         "overflows": str(sum(c["count"] for c in counts)),
                         "seconds": f"{seconds:.1f}"})
        if name == "jet MLP" and not skip_hls4ml:
            try:
                from bench.bench_compile_csim import hls4ml_compile_and_predict

                started = time.perf_counter()
                y = hls4ml_compile_and_predict(build_jet_mlp(), x, work / "hls4ml").reshape(len(x), -1)
                seconds = time.perf_counter() - started
                rows.append({"model": name, "types": "hls4ml 1.3 ap_fixed<16,6> (uniform)",
                             "argmax agreement": f"{100 * np.mean(np.argmax(y, 1) == np.argmax(ref, 1)):.2f}%",
                             "max |err|": f"{np.max(np.abs(y - ref)):.2e}", "overflows": "not counted",
                             "seconds": f"{seconds:.1f}"})
            except Exception as exc:  # the peer's failure is a row, not a crash
                rows.append({"model": name, "types": "hls4ml 1.3", "argmax agreement": f"failed: {exc}"[:60],
                             "max |err|": "-", "overflows": "-", "seconds": "-"})
    return rows


def _print(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*r.values())
    Console(width=200).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--skip-qkeras", action="store_true")
    parser.add_argument("--skip-hls4ml", action="store_true")
    parser.add_argument("--keep", help="keep the projects in this directory")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kiln-bench-quant-"))
    work.mkdir(parents=True, exist_ok=True)
    _print(f"1. quantized models: Kiln C-sim vs the model's reference ({N} inputs)",
           quantized_imports(work, args.skip_qkeras))
    _print("2. calibration (1000 samples, compared with float ONNX Runtime)", calibration(work, args.skip_hls4ml))
    return 0


if __name__ == "__main__":
    sys.exit(main())
