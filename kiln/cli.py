"""``kiln`` command line: compile, csim, run, bench, boards, doctor.

User errors (KilnError) print one message and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kiln.errors import KilnError


def _console():
    """rich console; wide when piped so tables are not cut to 80 columns in logs."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _load_inputs(paths: list[str]):
    arrays = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise KilnError(f"{path}: no such input file")
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise KilnError(f"{path}: not a readable .npy/.npz file ({exc})") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            return {k: data[k] for k in data.files}
        arrays.append(data)
    return arrays


def cmd_compile(args) -> int:
    import kiln
    from kiln.board import get_board

    board = get_board(args.board)
    if board.kind == "cpu":
        from kiln.backends.tvm.cli import cmd_compile_cpu

        return cmd_compile_cpu(args, board)
    if args.tune or args.tracker or args.key or args.lib_format != "auto":
        raise KilnError(f"--tune/--tracker/--key/--format apply to CPU boards (TVM); {board.name} is an "
                        f"{board.kind} board")
    project = kiln.compile(args.model, board=args.board, output_dir=args.output, precision=args.precision,
                           config=args.config, reuse_factor=args.reuse, fuse=not args.no_fuse, budget=args.budget)
    m = project.manifest
    print(f"wrote {project.path} ({m['board']}, {m['part']}, {m['clock_mhz']} MHz, precision {m['precision']}, "
          f"{m['n_weights']} weights)")
    return 0


def cmd_csim(args) -> int:
    from rich.table import Table

    import kiln

    project = kiln.open_project(args.project)
    inputs = _load_inputs(args.input)
    console = _console()
    with console.status("building C-simulation (g++) ..."):
        project.build()
    with console.status("running C-simulation ..."):
        outputs = project.csim(inputs, return_all=True)
    if args.output:
        out = Path(args.output)
        if len(outputs) == 1:
            np.save(out, outputs[0])
        else:
            np.savez(out, **{spec["name"]: y for spec, y in zip(project.outputs, outputs)})
        print(f"wrote {out}")
    if args.trace:
        _trace(project, inputs, Path(args.trace), console)
    if not args.no_compare:
        rows = project.compare(inputs, outputs)
        table = Table(title=f"C-sim vs ONNX Runtime ({outputs[0].shape[0]} samples, {project.manifest['precision']})")
        for col in ("output", "max abs error", "relative to output scale", "argmax agreement"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.name, f"{r.max_abs_error:.3e}", f"{r.relative_error:.3e}",
                          "-" if r.argmax_agreement is None else f"{100 * r.argmax_agreement:.2f}%")
        console.print(table)
    return 0


def _trace(project, inputs, out_dir: Path, console) -> None:
    """Write every layer's C-sim output and print its error against ONNX Runtime."""
    from rich.table import Table

    with console.status("running traced C-simulation ..."):
        _, traced = project.csim_trace(inputs)
        rows = project.trace_compare(inputs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "trace.npz", **{f"{i:03d}": v for i, v in enumerate(traced.values())})
        (out_dir / "trace_index.txt").write_text("\n".join(f"{i:03d}\t{name}" for i, name in enumerate(traced)))
    except OSError as exc:
        raise KilnError(f"cannot write the trace to {out_dir}: {exc.strerror or exc}") from None
    table = Table(title=f"per-layer trace vs ONNX Runtime ({project.manifest['precision']}), written to {out_dir}")
    for col in ("layer", "value", "max abs error", "relative"):
        table.add_column(col)
    for r in rows:
        err = "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.3e}"
        rel = "-" if r["relative_error"] is None else f"{r['relative_error']:.3e}"
        table.add_row(r["layer"], r["value"], err, rel)
    console.print(table)


def cmd_report(args) -> int:
    from kiln.report import load_estimate, write_report

    if args.json:
        print(json.dumps(load_estimate(args.project), indent=2))
        return 0
    path = write_report(args.project)
    total = load_estimate(args.project)["total"]
    print(f"wrote {path} (estimates: latency {total['latency_cycles']} cycles = {total['latency_ns']:.0f} ns, "
          f"II {total['ii']}, DSP {total['dsp']}, LUT {total['lut']}, FF {total['ff']}, BRAM18 {total['bram']})")
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

    table = Table(title="Kiln boards")
    for col in ("board", "kind", "part", "clock MHz", "DSP", "LUT", "FF", "BRAM36", "description"):
        table.add_column(col)
    for b in list_boards():
        r = b.resources
        part = b.part or " ".join(str(b.target.get(k, "")) for k in ("mtriple", "mcpu"))
        table.add_row(b.name, b.kind, part, f"{b.clock_mhz:g}" if b.clock_mhz else "-", *(str(r.get(k, "-")) for k in ("dsp", "lut", "ff", "bram_36k")),
                      b.description)
    _console().print(table)
    return 0


def cmd_doctor(args) -> int:
    from kiln.doctor import report

    print(report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Deployment compiler: ONNX to FPGA (Vitis HLS) and more")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="lower a model and generate the backend project")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--board", default="vu13p", help="target board (see `kiln boards`)")
    c.add_argument("-o", "--output", required=True, help="output project directory")
    c.add_argument("--precision", help="'float' or 'fixed<W,I>' (default fixed<16,6>)")
    c.add_argument("--config", help="kiln.toml with per-layer precision / reuse factors")
    c.add_argument("--reuse", help="'auto' (default: per-layer factors that fit --budget of the board) or an "
                   "integer for every layer")
    c.add_argument("--budget", type=float, help="with --reuse auto: fraction of the board's DSP/LUT (default 0.7)")
    c.add_argument("--no-fuse", action="store_true", help="compile LayerNorm/GELU patterns op by op (no fusion)")
    from kiln.backends.tvm.cli import add_compile_options, add_parsers

    add_compile_options(c)
    c.set_defaults(func=cmd_compile)
    s = sub.add_parser("csim", help="bit-accurate C simulation, compared with ONNX Runtime")
    s.add_argument("project")
    s.add_argument("--input", action="append", required=True, help=".npy (one per model input, in order) or one .npz")
    s.add_argument("--output", help="write outputs here (.npy, or .npz for several outputs)")
    s.add_argument("--no-compare", action="store_true", help="skip the ONNX Runtime comparison")
    s.add_argument("--trace", metavar="DIR", help="write every layer's output to DIR/trace.npz and compare each "
                   "with ONNX Runtime's value of the same tensor")
    s.set_defaults(func=cmd_csim)
    r = sub.add_parser("report", help="per-layer latency/resource estimates: HTML + PNG charts, or --json")
    r.add_argument("project")
    r.add_argument("--json", action="store_true", help="print the estimates as JSON")
    r.set_defaults(func=cmd_report)
    y = sub.add_parser("synth", help="run Vitis HLS synthesis (needs vitis_hls on PATH) and compare with the estimates")
    y.add_argument("project")
    y.set_defaults(func=cmd_synth)
    b = sub.add_parser("boards", help="list boards and their budgets")
    b.set_defaults(func=cmd_boards)
    add_parsers(sub)  # run, bench (CPU boards, TVM)
    d = sub.add_parser("doctor", help="what toolchains and backends are available")
    d.set_defaults(func=cmd_doctor)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KilnError as exc:
        print(f"kiln: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
