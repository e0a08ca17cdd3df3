"""``kiln`` command line: compile, csim, run, bench, boards, doctor.

User errors (KilnError) print one message and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kiln.errors import KilnError


def _console():
    """rich console; wide when piped so tables are not cut to 80 columns in logs."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _load_inputs(paths: list[str]):
    from kiln.fsutil import load_array_file

    arrays = []
    for p in paths:
        data = load_array_file(p, "input")
        if isinstance(data, dict):
            return data
        arrays.append(data)
    return arrays


def _comparison_table(title: str, rows) -> "Table":  # noqa: F821 - rich imported lazily
    """Per output: max abs error, error relative to the output scale, argmax agreement."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("output", "max abs error", "relative to output scale", "argmax agreement"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, f"{r.max_abs_error:.3e}", f"{r.relative_error:.3e}",
                      "-" if r.argmax_agreement is None else f"{100 * r.argmax_agreement:.2f}%")
    return table


def cmd_compile(args) -> int:
    import kiln
    from kiln.board import get_board

    board = get_board(args.board)
    if board.kind == "cpu":
        from kiln.backends.tvm.cli import cmd_compile_cpu

        return cmd_compile_cpu(args, board)
    if board.kind == "tensorrt":
        from kiln.backends.tensorrt.cli import cmd_compile_trt

        return cmd_compile_trt(args, board)
    if board.kind == "coreml":
        from kiln.backends.coreml.cli import cmd_compile_coreml

        return cmd_compile_coreml(args, board)
    if args.compress:
        raise KilnError(f"--compress applies to Apple boards (CoreML); {board.name} is a {board.kind} board")
    tvm_only = (args.tune, args.tune_minutes is not None, args.tuning_db, args.tracker, args.key)
    if any(tvm_only) or args.lib_format != "auto":
        raise KilnError(f"--tune/--tune-minutes/--tuning-db/--tracker/--key/--format apply to CPU boards (TVM); {board.name} is an "
                        f"{board.kind} board")
    project = kiln.compile(args.model, board=args.board, output_dir=args.output, precision=args.precision,
                           config=args.config, reuse_factor=args.reuse, fuse=not args.no_fuse, budget=args.budget,
                           calibrate=args.calibrate, bits=args.bits, max_error=args.max_error,
                           fit_check=not args.no_fit_check, io=args.io,
                           target_fps=args.target_fps)
    m = project.manifest
    print(f"wrote {project.path} ({m['board']}, {m['part']}, {m['clock_mhz']} MHz, precision {m['precision']}, "
          f"{m['n_weights']} weights)")
    from kiln.backends.hls.fit import summary_lines
    from kiln.report import load_estimate

    for line in summary_lines(load_estimate(project.path)):
        print(f"  {line}")
    if m.get("io") == "stream":
        from kiln.backends.hls.stream_render import stream_summary

        for line in stream_summary(m["stream"], load_estimate(project.path)):
            print(f"  {line}")
    return 0


def _save_outputs(path, outputs, specs, quiet: bool) -> str | None:
    """``--output``: .npy for one output, .npz keyed by output name for several."""
    if not path:
        return None
    out = Path(path)
    try:
        if len(outputs) == 1:
            np.save(out, outputs[0])
        else:
            np.savez(out, **{spec["name"]: y for spec, y in zip(specs, outputs)})
    except OSError as exc:
        raise KilnError(f"cannot write {out}: {exc.strerror or exc}") from None
    suffix = ".npy" if len(outputs) == 1 else ".npz"  # numpy adds it when missing
    written = str(out) if out.suffix == suffix else str(out) + suffix
    print(f"wrote {written}", file=sys.stderr if quiet else sys.stdout)
    return written


def _cmd_csim(args) -> int:
    from kiln.cli_csim import cmd_csim

    return cmd_csim(args)


def cmd_report(args) -> int:
    from contextlib import nullcontext

    from kiln.checks import print_json
    from kiln.progress import progress
    from kiln.report import load_estimate, report_json, write_report

    data, profiling = None, nullcontext()
    if args.data:  # read and checked before the step starts: a bad file is the only thing on stderr
        from kiln.calibrate import load_samples
        from kiln.fsutil import read_manifest

        data = load_samples(args.data, read_manifest(args.project, "hls")["inputs"])
        profiling = progress(f"profiling the model on {len(data[0])} samples of {args.data} (ONNX Runtime) ...")
    if args.json:
        with profiling:
            result = report_json(args.project, data=data)
        print_json(result)
        return 0
    with profiling:
        path = write_report(args.project, data=data)
    total = load_estimate(args.project)["total"]
    print(f"wrote {path} (estimates: latency {total['latency_cycles']} cycles = {total['latency_ns']:.0f} ns, "
          f"II {total['ii']}, DSP {total['dsp']}, LUT {total['lut']}, FF {total['ff']}, BRAM18K {total['bram']}"
          + (f", URAM {total['uram']}" if total.get("uram") else "") + ")")
    estimate = load_estimate(args.project)
    if estimate.get("io") == "stream":
        print(f"io stream: {total['frames_per_s']:,.0f} frames/s; buffered layers: "
              f"{', '.join(repr(b['layer']) for b in estimate['buffered']) or 'none'}")
    if args.data:
        from kiln.calibrate import PROFILE_FILE

        print(f"profiled {args.data}: wrote {Path(args.project) / PROFILE_FILE} and {path.parent / 'profile.png'}")
    return 0


def cmd_quantize(args) -> int:

    from kiln.calibrate import compare_models, count_qdq_nodes, load_samples, model_input_specs, write_int8_qdq

    specs = model_input_specs(args.model)
    samples = load_samples(args.calibrate, specs)
    from kiln.progress import progress

    console = _console()
    with progress(f"calibrating on {samples[0].shape[0]} samples and quantizing ..."):
        out = write_int8_qdq(args.model, samples, args.output, per_channel=args.per_channel,
                             activation=args.activation)
    counts = count_qdq_nodes(out)
    print(f"wrote {out} (int8 QDQ: {counts['QuantizeLinear']} QuantizeLinear, {counts['DequantizeLinear']} "
          f"DequantizeLinear; weights int8{' per channel' if args.per_channel else ''}, activations "
          f"{args.activation}; calibrated on {samples[0].shape[0]} samples of {args.calibrate})")
    rows = compare_models(args.model, out, samples, specs)
    console.print(_comparison_table(f"int8 QDQ vs float, ONNX Runtime ({samples[0].shape[0]} samples)", rows))
    return 0


def cmd_synth(args) -> int:
    from rich.table import Table

    from kiln.backends.hls.project import HLSProject
    from kiln.synth import comparison_rows, run_vitis

    project = HLSProject.open(args.project)
    run_vitis(project.path)
    top, rows = comparison_rows(project.path)
    table = Table(title=f"Kiln estimate vs Vitis HLS {top.version} csynth ({top.part})")
    for col in ("", "Kiln (estimate)", "Vitis HLS"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    _console().print(table)
    return 0


def cmd_boards(args) -> int:
    from rich.table import Table

    from kiln.board import list_boards

    boards = list_boards()
    if args.json:
        from kiln.checks import print_json

        print_json({"boards": [{"name": b.name, "kind": b.kind, "part": b.part or None,
                                "clock_mhz": b.clock_mhz or None, "resources": b.resources,
                                "target": b.target or None, "family": b.family or None,
                                "description": b.description, "source": b.source} for b in boards]})
        return 0
    table = Table(title="Kiln boards")
    for col in ("board", "kind", "part", "clock MHz", "DSP", "LUT", "FF", "BRAM18K", "description"):
        table.add_column(col)
    for b in boards:
        r = b.resources
        part = b.part or " ".join(str(b.target.get(k, "")) for k in ("mtriple", "mcpu"))
        table.add_row(b.name, b.kind, part, f"{b.clock_mhz:g}" if b.clock_mhz else "-",
                      *(str(r.get(k, "-")) for k in ("dsp", "lut", "ff", "bram_18k")), b.description)
    _console().print(table)
    return 0


def cmd_doctor(args) -> int:
    from kiln.doctor import doctor_json, report

    if args.json:
        from kiln.checks import print_json

        print_json(doctor_json())
    else:
        print(report())
    return 0


def kiln_version() -> str:
    """The installed distribution's version, else the package's own ``kiln.__version__``."""
    import importlib.metadata

    try:
        return importlib.metadata.version("kiln")
    except importlib.metadata.PackageNotFoundError:
        import kiln

        return kiln.__version__


class _UsageError(Exception):
    """argparse's complaint about the command line, reported like every other user error."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


JSON_HELP = "print one JSON object on stdout (progress and messages go to stderr)"


def build_parser() -> argparse.ArgumentParser:
    from kiln.checks import add_check_options

    parser = _ArgumentParser(prog="kiln", description="Deployment compiler: ONNX to FPGA (Vitis HLS) and more")
    parser.add_argument("--version", action="version", version=f"kiln {kiln_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="lower a model and generate the backend project")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--board", default="vu13p", help="target board (see `kiln boards`)")
    c.add_argument("-o", "--output", required=True, help="output project directory")
    c.add_argument("--precision", help="'float' or 'fixed<W,I>' (default fixed<16,6>); TensorRT boards: fp32 "
                   "(default), fp16 or int8")
    c.add_argument("--config", help="kiln.toml with per-layer precision / reuse factors")
    c.add_argument("--reuse", help="'auto' (default: per-layer factors that fit --budget of the board) or an "
                   "integer for every layer")
    c.add_argument("--budget", type=float, help="fraction of the board's DSP, LUT, FF and BRAM the design may use "
                   "(default 0.7); --reuse auto fits it, and a fixed-point design over it is an error")
    c.add_argument("--no-fit-check", action="store_true", help="write a design over --budget anyway (a warning "
                   "names what is over), e.g. to C-simulate its numerics")
    c.add_argument("--io", choices=("parallel", "stream"), help="HLS architecture: 'parallel' (default: arrays, "
                   "one PIPELINE) or 'stream' (layers joined by hls::stream FIFOs under DATAFLOW; layers without "
                   "a streaming template are buffered, and named so)")
    c.add_argument("--target-fps", type=float, metavar="F", help="with --io stream: fold each layer so that the "
                   "pipeline accepts F frames/s (every layer's II <= clock / F) at the least resources; without it "
                   "--io stream takes the fastest folding that fits --budget")
    c.add_argument("--no-fuse", action="store_true", help="compile LayerNorm/GELU patterns op by op (no fusion)")
    c.add_argument("--calibrate", metavar="SAMPLES", help=".npy (one model input) or .npz: profile every tensor "
                   "on these samples and choose each value's fixed-point type from its observed range")
    c.add_argument("--bits", type=int, help="with --calibrate: total width of the calibrated types (default 16)")
    c.add_argument("--max-error", type=float, metavar="E", help="with --calibrate, instead of --bits: fractional "
                   "bits so that rounding a value errs by at most E (widths then differ per value)")
    from kiln.backends.tvm.cli import add_compile_options, add_parsers

    add_compile_options(c)
    from kiln.backends.coreml.cli import add_compile_options as add_coreml_options

    add_coreml_options(c)
    c.set_defaults(func=cmd_compile)
    s = sub.add_parser("csim", help="bit-accurate C simulation, compared with ONNX Runtime")
    s.add_argument("project")
    s.add_argument("--input", action="append", required=True, help=".npy (one per model input, in order) or one .npz")
    s.add_argument("--output", help="write outputs here (.npy, or .npz for several outputs)")
    s.add_argument("--no-compare", action="store_true", help="skip the ONNX Runtime comparison")
    s.add_argument("--no-overflow-check", action="store_true",
                   help="skip counting saturations/wraps per layer (the instrumented build runs each layer twice)")
    s.add_argument("--trace", metavar="DIR", help="write every layer's output to DIR/trace.npz and compare each "
                   "with ONNX Runtime's value of the same tensor")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    add_check_options(s)
    s.set_defaults(func=_cmd_csim)
    r = sub.add_parser("report", help="per-layer latency/resource estimates: HTML + PNG charts, or --json")
    r.add_argument("project")
    r.add_argument("--json", action="store_true", help="print the estimates as JSON")
    r.add_argument("--data", metavar="SAMPLES", help=".npy (one model input) or .npz (one array per input): profile "
                   "model.onnx on these samples (saved as kiln_profile.json) and plot each value's range against "
                   "its type; without it the project's kiln_profile.json is used if there is one")
    r.set_defaults(func=cmd_report)
    q = sub.add_parser("quantize", help="int8 QDQ ONNX model calibrated on samples (ONNX Runtime quantize_static)")
    q.add_argument("model", help="float ONNX file")
    q.add_argument("--calibrate", required=True, metavar="SAMPLES", help=".npy (one model input) or .npz "
                   "(one array per input) of calibration samples, leading axis = samples")
    q.add_argument("-o", "--output", required=True, help="QDQ ONNX file to write")
    q.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales")
    q.add_argument("--activation", choices=("uint8", "int8"), default="uint8", help="activation type (default uint8)")
    q.set_defaults(func=cmd_quantize)
    y = sub.add_parser("synth", help="run Vitis HLS synthesis (needs vitis_hls on PATH) and compare with the estimates")
    y.add_argument("project")
    y.set_defaults(func=cmd_synth)
    b = sub.add_parser("boards", help="list boards and their budgets")
    b.add_argument("--json", action="store_true", help=JSON_HELP)
    b.set_defaults(func=cmd_boards)
    add_parsers(sub)  # run, bench (CPU boards, TVM)
    from kiln.backends.tensorrt.cli import add_parsers as add_tensorrt_parsers

    add_tensorrt_parsers(sub)  # build-engine; run/bench of TensorRT artifacts
    d = sub.add_parser("doctor", help="what toolchains and backends are available")
    d.add_argument("--json", action="store_true", help=JSON_HELP)
    d.set_defaults(func=cmd_doctor)
    return parser


def main(argv=None) -> int:
    """Exit 0 on success, 1 when a --atol/--rtol/--min-agreement bound fails, 2 on a user error
    (one ``kiln: error: ...`` line on stderr; with --json also ``{"error": ...}`` on stdout)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (KilnError, _UsageError) as exc:
        message = str(exc)
        print(f"kiln: error: {message}", file=sys.stderr)
        if "--json" in argv:
            from kiln.checks import print_json

            print_json({"error": message, "exit_code": 2})
        return 2
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kiln boards --json | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
