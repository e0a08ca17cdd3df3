"""The CoreML backend's part of the ``kiln`` command line: compile for an Apple board, and the
``run`` / ``bench`` of its artifacts (backends/tvm/cli.py hands them over here)."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.errors import KilnError
from kiln.fsutil import MANIFEST


def add_compile_options(c) -> None:
    g = c.add_argument_group("Apple boards (CoreML backend)")
    g.add_argument("--compress", choices=("int8", "palettize4", "palettize6"),
                   help="compress the weights (coremltools.optimize: int8 linear quantization, or 4/6-bit palettes)")


def coreml_artifact(path) -> bool:
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("backend") == "coreml"
    except (OSError, ValueError):
        return False


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def cmd_compile_coreml(args, board) -> int:
    from kiln.backends.coreml.compiler import compile_coreml
    from kiln.progress import progress

    other = [flag for flag, value in (("--config", args.config), ("--reuse", args.reuse), ("--tune", args.tune),
                                      ("--calibrate", args.calibrate), ("--tracker", args.tracker),
                                      ("--format", args.lib_format != "auto")) if value]
    if other:
        raise KilnError(f"{', '.join(other)} do not apply to Apple boards; {board.name} takes --precision fp16|fp32 "
                        "and --compress")
    precision = {"float": "fp32", None: "fp16"}.get(args.precision, args.precision)
    with progress(f"compiling with CoreML for {board.name} ...") as step:
        art = compile_coreml(args.model, board=board, output_dir=args.output, precision=precision,
                             compression=args.compress, progress=step.update)
    m = art.manifest
    pkg = m["package"]
    print(f"wrote {art.path} ({m['board']}: {m['chip']}, {m['deployment_target']}, {m['precision']} compute; "
          f"coremltools {m['coremltools_version']})")
    size = _mb(pkg["package_bytes"])
    if "uncompressed_bytes" in pkg:
        size = f"{_mb(pkg['uncompressed_bytes'])} before --compress {m['compression']}, {size} after"
    ints = ", ".join(f"{n} {op}" for op, n in pkg["integer_weights"].items())
    print(f"  {pkg['file']}: {size}" + (f" (integer weights: {ints})" if ints else ""))
    print(f"  reload check: package reloads, {len(m['outputs'])} output(s) match ONNX in shape and dtype")
    v = m["value_inference_check"]
    if v["verified"]:
        print(f"  numerics (Linux, MIL value inference fp32 vs ONNX Runtime): max relative error "
              f"{v['max_relative_error']:.3e}")
    else:
        ops = ", ".join(f"{op} ({len(nodes)})" for op, nodes in v["unverified_ops"].items())
        print(f"  numerics: unverified on Linux (no value inference in coremltools for: {ops}); "
              "`kiln run` on macOS compares CoreML with ONNX Runtime")
    return 0


def cmd_run_coreml(args) -> int:
    from kiln.backends.coreml.artifact import CoreMLArtifact, require_macos
    from kiln.checks import check_bound_options, comparison_json, gate, print_json
    from kiln.cli import _comparison_table, _console, _load_inputs, _save_outputs

    check_bound_options(args)
    art = CoreMLArtifact.open(args.artifact)
    if getattr(args, "rpc", None) or getattr(args, "tracker", None):
        raise KilnError("--rpc/--tracker are for TVM artifacts; a CoreML package runs on this Mac")
    arrays = art.check_inputs(_load_inputs(args.input))
    require_macos("`kiln run` on a CoreML package")
    outputs = art.run(arrays, return_all=True)
    written = _save_outputs(args.output, outputs, art.outputs, quiet=args.json)
    rows = None if args.no_compare else art.compare(arrays, outputs)
    if rows and not args.json:
        _console().print(_comparison_table(f"CoreML ({art.manifest['board']}, {art.manifest['precision']}) vs "
                                           f"ONNX Runtime ({outputs[0].shape[0]} samples)", rows))
    code, checks = gate(rows, args)
    if args.json:
        print_json({"command": "run", "artifact": str(art.path), "board": art.manifest["board"],
                    "samples": int(outputs[0].shape[0]), "outputs": comparison_json(rows), "output_file": written,
                    "checks": checks})
    return code


def cmd_bench_coreml(args) -> int:
    from kiln.backends.coreml.artifact import CoreMLArtifact, require_macos
    from kiln.checks import print_json
    from kiln.cli import _load_inputs

    art = CoreMLArtifact.open(args.artifact)
    inputs = _load_inputs(args.input) if args.input else None
    require_macos("`kiln bench` on a CoreML package")
    report = art.bench(repeat=args.repeat, warmup=args.warmup, inputs=inputs)
    if args.json:
        print_json({"command": "bench", "artifact": str(art.path), "board": art.manifest["board"],
                    "compute_units": report})
        return 0
    for unit, t in report.items():
        print(f"{unit:12s} median {t['median_s'] * 1e3:.3f} ms  p10 {t['p10_s'] * 1e3:.3f} ms  "
              f"p90 {t['p90_s'] * 1e3:.3f} ms  ({t['runs']} runs, wall clock around predict)")
    return 0
