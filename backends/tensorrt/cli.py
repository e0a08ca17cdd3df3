"""The TensorRT backend's part of the ``kiln`` command line.

kiln/cli.py hands TensorRT boards to ``cmd_compile_trt`` and calls ``add_parsers`` after the
TVM backend's: it adds ``build-engine`` and routes ``run``/``bench`` of a TensorRT artifact
(manifest backend "tensorrt") here, leaving every other artifact to the TVM commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from kiln.errors import KilnError


def cmd_compile_trt(args, board) -> int:
    from kiln.backends.tensorrt.artifact import compile_tensorrt
    from kiln.progress import progress

    other = [flag for flag, value in (("--config", args.config), ("--reuse", args.reuse), ("--bits", args.bits),
                                      ("--max-error", args.max_error), ("--tune", args.tune)) if value]
    if other:
        raise KilnError(f"{', '.join(other)} do not apply to TensorRT boards; {board.name} takes --precision "
                        "fp32|fp16|int8 and --calibrate SAMPLES (int8)")
    precision = args.precision or "fp32"
    with progress(f"writing the TensorRT network for {board.name} ({precision}) ..."):
        art = compile_tensorrt(args.model, board=board, output_dir=args.output, precision=precision,
                               calibrate=args.calibrate)
    m = art.manifest
    g = m["gpu"]
    print(f"wrote {art.path} ({m['board']}: {g.get('arch')} {g.get('sm')}; precision {m['precision']})")
    for note in m["notes"]:
        print(f"  {note}")
    print("  engine.onnx, build_engine.py, trtexec.sh, run_checks.sh; no engine built (run `kiln build-engine "
          f"{art.path}` where TensorRT and an NVIDIA GPU are)")
    return 0


def _is_tensorrt(path) -> bool:
    try:
        return json.loads((Path(path) / "kiln_manifest.json").read_text()).get("backend") == "tensorrt"
    except (OSError, ValueError):
        return False


def cmd_build_engine(args) -> int:
    from kiln.backends.tensorrt.artifact import TensorRTArtifact
    from kiln.progress import progress

    art = TensorRTArtifact.open(args.artifact)
    with progress(f"building {art.engine.name} with TensorRT ..."):
        path = art.build_engine()
    print(f"wrote {path}")
    return 0


def cmd_run_trt(args) -> int:
    from kiln.backends.tensorrt.artifact import TensorRTArtifact
    from kiln.checks import check_bound_options, comparison_json, gate, print_json
    from kiln.cli import _comparison_table, _console, _load_inputs, _save_outputs
    from kiln.progress import progress

    if getattr(args, "rpc", None) or getattr(args, "tracker", None):
        raise KilnError("--rpc/--tracker are for TVM artifacts; run a TensorRT artifact on the machine with the GPU")
    check_bound_options(args)
    art = TensorRTArtifact.open(args.artifact)
    arrays = art.check_inputs(_load_inputs(args.input))
    where = art.where()
    label = where if where == "TensorRT engine" else f"{where} (no TensorRT here: the engine did not run)"
    with progress(f"running {label} ..."):
        outputs = art.run(arrays, return_all=True)
    written = _save_outputs(args.output, outputs, art.outputs, quiet=args.json)
    rows = None
    if not args.no_compare:
        rows = art.compare(arrays, outputs)
        if not args.json:
            _console().print(_comparison_table(f"{label}, {art.manifest['precision']} vs the model in ONNX Runtime "
                                               f"({outputs[0].shape[0]} samples)", rows))
    code, checks = gate(rows, args)
    if args.json:
        print_json({"command": "run", "artifact": str(art.path), "board": art.manifest["board"], "where": where,
                    "engine_ran": where == "TensorRT engine", "precision": art.manifest["precision"],
                    "samples": int(outputs[0].shape[0]), "outputs": comparison_json(rows), "output_file": written,
                    "checks": checks})
    return code


def cmd_bench_trt(args) -> int:
    from kiln.backends.tensorrt.artifact import TensorRTArtifact
    from kiln.checks import print_json

    art = TensorRTArtifact.open(args.artifact)
    result = art.bench(repeat=args.repeat)
    if args.json:
        print_json({"command": "bench", "artifact": str(art.path), "board": art.manifest["board"], **result})
        return 0
    print(f"{art.manifest['model_name']} engine on this GPU ({result['timer']}, {result['runs']} runs): median "
          f"{result['median_ms']:.4f} ms, p10 {result['p10_ms']:.4f} ms, p90 {result['p90_ms']:.4f} ms")
    return 0


def _route(tensorrt_func, other_func):
    def dispatch(args):
        return (tensorrt_func if _is_tensorrt(args.artifact) else other_func)(args)

    return dispatch


def add_parsers(sub) -> None:
    e = sub.add_parser("build-engine", help="build model.engine of a TensorRT artifact (needs TensorRT + NVIDIA GPU)")
    e.add_argument("artifact", help="directory written by `kiln compile --board <tensorrt board>`")
    e.set_defaults(func=cmd_build_engine)
    for name, func in (("run", cmd_run_trt), ("bench", cmd_bench_trt)):
        parser = sub.choices.get(name)
        if parser is None:
            continue
        parser.set_defaults(func=_route(func, parser.get_default("func")))
    sub.choices["run"].description = ("TVM artifacts: run here or over RPC; TensorRT artifacts: the engine where "
                                      "TensorRT is installed, else engine.onnx in ONNX Runtime")
