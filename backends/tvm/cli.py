"""The TVM backend's part of the ``kiln`` command line: compile for a CPU board, run, bench.

kiln/cli.py hands CPU boards to ``cmd_compile_cpu`` and adds ``run`` and ``bench`` through
``add_parsers``; everything TVM-specific lives here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.errors import KilnError


def add_compile_options(c: argparse.ArgumentParser) -> None:
    g = c.add_argument_group("CPU boards (TVM backend)")
    g.add_argument("--tune", type=int, metavar="TRIALS",
                   help="tune with MetaSchedule within TRIALS trials (the log is kept in OUTPUT/tuning/)")
    g.add_argument("--tune-minutes", type=float, metavar="M",
                   help="tune for M minutes, the kernels with the largest share of the time first")
    g.add_argument("--tuning-db", metavar="DIR",
                   help="the board's tuning database (default $KILN_TUNING_DB, else ~/.cache/kiln/tvm-db/BOARD/); "
                        "every compile uses its best records, --tune/--tune-minutes add to it")
    g.add_argument("--format", dest="lib_format", default="auto", choices=("auto", "so", "tar"),
                   help="library: .so (linked here; cross boards need their gcc) or .tar of objects "
                        "(the device links it); auto: .so when the toolchain is here")
    _add_remote_options(g, tuning=True)


def _add_remote_options(g, tuning: bool = False) -> None:
    where = "tune on" if tuning else "run on"
    if not tuning:
        g.add_argument("--rpc", metavar="HOST:PORT", help=f"{where} the device behind this TVM RPC server")
    g.add_argument("--tracker", metavar="HOST:PORT", help=f"{where} a device from this TVM RPC tracker (with --key)")
    g.add_argument("--key", help="device key registered with the tracker (e.g. rpi4)")


def add_parsers(sub) -> None:
    from kiln.checks import add_check_options
    from kiln.cli import JSON_HELP

    r = sub.add_parser("run", help="run a compiled CPU-board artifact (TVM) on inputs, compared with ONNX Runtime")
    r.add_argument("artifact", help="directory written by `kiln compile --board <cpu board>`")
    r.add_argument("--input", action="append", required=True, help=".npy (one per model input, in order) or one .npz")
    r.add_argument("--output", help="write outputs here (.npy, or .npz for several outputs)")
    r.add_argument("--no-compare", action="store_true", help="skip the ONNX Runtime comparison")
    r.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_remote_options(r)
    add_check_options(r)
    r.set_defaults(func=cmd_run)
    b = sub.add_parser("bench", help="latency of a CPU-board artifact (TVM), here with ONNX Runtime beside it, "
                       "or on a device over RPC")
    b.add_argument("artifact")
    b.add_argument("--repeat", type=int, default=200, help="timed runs (default 200)")
    b.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    b.add_argument("--input", action="append", help="time this input (first sample) instead of random data")
    b.add_argument("--no-ort", action="store_true", help="do not time ONNX Runtime")
    b.add_argument("--kernels", type=int, nargs="?", const=10, default=None, metavar="N",
                   help="also time each fused kernel alone and list the N (default 10) with the largest "
                        "share of the time (here only)")
    b.add_argument("--json", action="store_true", help=JSON_HELP)
    _add_remote_options(b)
    b.set_defaults(func=cmd_bench)


def _console():
    from kiln.cli import _console as console

    return console()


def _remote(args):
    from kiln.backends.tvm.remote import remote_spec

    return remote_spec(getattr(args, "rpc", None), getattr(args, "tracker", None), getattr(args, "key", None))


def cmd_compile_cpu(args, board) -> int:
    from kiln.backends.tvm.compiler import compile_tvm, elf_header
    from kiln.backends.tvm.remote import parse_address
    from kiln.progress import progress

    hls_only = [flag for flag, value in (("--precision", args.precision not in (None, "float")),
                                         ("--config", args.config), ("--reuse", args.reuse)) if value]
    if hls_only:
        raise KilnError(f"{', '.join(hls_only)} apply to FPGA boards; {board.name} is a CPU board and the TVM "
                        "backend compiles the model in float32")
    tracker = parse_address(args.tracker, "--tracker") if args.tracker else None
    if args.key and not tracker:
        raise KilnError("--key only makes sense with --tracker HOST:PORT")
    if not Path(args.model).is_file():  # before TVM's import and the progress line it would fail under
        raise KilnError(f"{args.model}: no such model file")
    if args.tune or args.tune_minutes is not None:
        budget = f"{args.tune} trials" if args.tune else f"{args.tune_minutes:g} min"
        with progress(f"tuning for {board.name} ({budget}: the rule's other tiles, then MetaSchedule) ...") as step:
            def say(message):
                step.update(f"tuning for {board.name}: {message}")

            art = compile_tvm(args.model, board=board, output_dir=args.output, tune=args.tune, tracker=tracker,
                              key=args.key, lib_format=args.lib_format, progress=say,
                              tune_minutes=args.tune_minutes, tuning_db=args.tuning_db)
    else:
        with progress(f"compiling with TVM for {board.name} ..."):
            art = compile_tvm(args.model, board=board, output_dir=args.output, lib_format=args.lib_format,
                              tuning_db=args.tuning_db)
    m = art.manifest
    lib = m["library"]
    if lib["format"] == "so":
        h = elf_header(art.library.read_bytes()[:64])
        what = f"{lib['arch']} ELF {h['type']}, linked with {lib['linked_with']}"
    else:
        how = board.toolchain.get("install")
        what = (f"{lib['arch']} objects; the device links them (TVM's RPC server and load_module do)"
                + (f"; for a .so here: {how}" if how and args.lib_format == "auto" else ""))
    print(f"wrote {art.path} ({m['board']}: {m['target_summary']}; TVM {m['tvm_version']})")
    print(f"  {lib['file']}: {what}")
    if m.get("tuning"):
        t = m["tuning"]
        kept = (f" ({t['rule_kept']} kept their rule-based schedule, which measured faster)"
                if t.get("rule_kept") else "")
        budget = f"of {t['trials']} trials" if t.get("trials") else f"in {t['seconds']} s"
        print(f"  tuned: {t['measured']} {budget} measured over {t['tasks']} kernels{kept}; "
              f"log in {art.path / 'tuning'}; database {t['database']}")
    if m.get("tuning_db"):
        print(f"  {(m['schedules'] or {}).get('tuned', 0)} kernels use tuned records of {m['tuning_db']}")
    return 0


def cmd_run(args) -> int:
    import time

    from kiln.backends.tvm.artifact import TVMArtifact
    from kiln.checks import check_bound_options, comparison_json, gate, print_json
    from kiln.cli import _comparison_table, _load_inputs, _save_outputs
    from kiln.progress import progress

    from kiln.backends.coreml.cli import coreml_artifact, cmd_run_coreml

    if coreml_artifact(args.artifact):
        return cmd_run_coreml(args)
    t0 = time.monotonic()
    check_bound_options(args)
    art = TVMArtifact.open(args.artifact)
    inputs = _load_inputs(args.input)
    remote = _remote(args)
    where = remote.label if remote else "this machine"
    arrays = art.check_inputs(inputs)
    with progress(f"running on {where} ...") as step:
        outputs = art.run(arrays, remote=remote, return_all=True)
    seconds = {"run": step.seconds}
    written = _save_outputs(args.output, outputs, art.outputs, quiet=args.json)
    rows = None
    if not args.no_compare:
        rows = art.compare(arrays, outputs)
        if not args.json:
            _console().print(_comparison_table(
                f"TVM ({art.manifest['board']}, {where}) vs ONNX Runtime ({outputs[0].shape[0]} samples)", rows))
    code, checks = gate(rows, args)
    if args.json:
        seconds["total"] = time.monotonic() - t0
        print_json({"command": "run", "artifact": str(art.path), "board": art.manifest["board"], "where": where,
                    "samples": int(outputs[0].shape[0]), "outputs": comparison_json(rows), "output_file": written,
                    "checks": checks, "seconds": seconds})
    return code


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.3f} ms"


def bench_table(report, title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("engine", "timer", "median", "p10", "p90", "throughput"):
        table.add_column(col)
    for t in (report.tvm, report.tvm_wall, report.onnxruntime):
        if t is not None:
            table.add_row(t.label, t.method, _fmt_time(t.median), _fmt_time(t.p10), _fmt_time(t.p90),
                          f"{t.throughput:,.0f} /s")
    return table


def bench_json(art, report) -> dict:
    """``kiln bench --json``: per engine median/p10/p90/mean in ms, and the TVM / ONNX Runtime ratios."""
    from kiln.checks import comparison_json

    engines = []
    for key, t in (("tvm", report.tvm), ("tvm_wall", report.tvm_wall), ("onnxruntime", report.onnxruntime)):
        if t is not None:
            engines.append({"engine": key, "label": t.label, "timer": t.method, "runs": len(t.times),
                            "median_ms": t.median * 1e3, "p10_ms": t.p10 * 1e3, "p90_ms": t.p90 * 1e3,
                            "mean_ms": t.mean * 1e3, "throughput_per_s": t.throughput})
    return {"command": "bench", "artifact": str(art.path), "model": art.manifest["model_name"],
            "board": art.manifest["board"], "where": report.where, "batch": 1, "repeat": report.repeat,
            "warmup": report.warmup, "engines": engines, "tvm_over_onnxruntime": report.ratio,
            "tvm_device_timer_over_onnxruntime": report.ratio_device_timer,
            "outputs": comparison_json(report.comparison)}


def _kernel_rows(art, top: int, remote) -> list[dict]:
    import json

    from kiln.backends.tvm.kernels import KERNELS_FILE, time_kernels
    from kiln.backends.tvm.target import runs_here

    if top < 1:
        raise KilnError("--kernels takes a number of kernels >= 1")
    if remote is not None or not runs_here(art.target):
        raise KilnError("--kernels times the kernels on this machine; the artifact is for "
                        f"{art.target['mtriple']} (bench it over RPC without --kernels)")
    table_file = art.path / KERNELS_FILE
    if not table_file.is_file():
        raise KilnError(f"{art.path} has no {KERNELS_FILE} (compiled before Kiln recorded kernels); compile again")
    return time_kernels(str(art.library), json.loads(table_file.read_text()), top=top)


def kernel_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title)
    for col in ("kernel", "schedule", "calls", "per call", "total", "share"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kernel"], r["rule"], str(r["calls"]), _fmt_time(r["ms_per_call"] / 1e3),
                      _fmt_time(r["ms"] / 1e3), f"{100 * r['share']:.1f} %")
    return table


def cmd_bench(args) -> int:
    from kiln.backends.tvm.artifact import TVMArtifact
    from kiln.checks import print_json
    from kiln.cli import _load_inputs
    from kiln.progress import progress

    from kiln.backends.coreml.cli import coreml_artifact, cmd_bench_coreml

    if coreml_artifact(args.artifact):
        return cmd_bench_coreml(args)
    art = TVMArtifact.open(args.artifact)
    remote = _remote(args)
    inputs = _load_inputs(args.input) if args.input else None
    with progress("benchmarking ...") as step:
        report = art.bench(repeat=args.repeat, warmup=args.warmup, inputs=inputs, remote=remote,
                           onnxruntime=not args.no_ort, progress=step.update)
    kernels = _kernel_rows(art, args.kernels, remote) if args.kernels is not None else None
    if args.json:
        out = bench_json(art, report)
        if kernels is not None:
            out["kernels"] = kernels
        print_json(out)
        return 0
    _console().print(bench_table(report, f"Latency of {art.manifest['model_name']} on {report.where} "
                                         f"(batch 1, {report.repeat} runs after {report.warmup} warm-up)"))
    if report.ratio is not None:
        verdict = "TVM slower" if report.ratio > 1 else "TVM faster"
        print(f"TVM / ONNX Runtime median latency: {report.ratio:.2f}x ({verdict}; both timed as Python calls "
              f"with a wall clock); TVM device timer / ONNX Runtime: {report.ratio_device_timer:.2f}x")
    if kernels is not None:
        _console().print(kernel_table(kernels, f"Top {len(kernels)} kernels of {art.manifest['model_name']} "
                                               "(each timed alone, time_evaluator)"))
    for r in report.comparison:
        print(f"output {r.name!r} fetched from {report.where} vs ONNX Runtime: max abs error {r.max_abs_error:.3e}, "
              f"relative {r.relative_error:.3e}")
    return 0
