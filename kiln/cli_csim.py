"""``kiln csim``: build and run the C-simulation, compare with ONNX Runtime, count overflows,
trace every layer (the HLS backend's command; kiln/cli.py builds the parser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kiln.cli import _comparison_table, _console, _load_inputs, _save_outputs
from kiln.errors import KilnError


def cmd_csim(args) -> int:
    import time

    import kiln
    from kiln.checks import check_bound_options, comparison_json, gate, print_json
    from kiln.progress import progress

    t0 = time.monotonic()
    check_bound_options(args)
    project = kiln.open_project(args.project)
    if project.backend != "hls":
        raise KilnError(f"{args.project} is a {project.backend} artifact (a CPU board); run it with `kiln run`")
    inputs = _load_inputs(args.input)
    project.check_inputs(inputs)  # a wrong input is an error before the build starts
    console = _console()
    count = not args.no_overflow_check and bool(project.manifest.get("overflow_checks"))
    seconds = {}
    with progress("building C-simulation (g++) ...") as step:
        project.build(overflow=count)  # the variant that runs next (a second build would be wasted)
    seconds["build"] = step.seconds
    with progress("running C-simulation" + (" (counting overflows)" if count else "") + " ...") as step:
        if count:
            outputs, overflow_rows = project.csim_overflow(inputs)
        else:
            outputs = project.csim(inputs, return_all=True)
    seconds["csim"] = step.seconds
    if not args.json:
        console.print(project.run_summary())
    n = outputs[0].shape[0]
    if count and not args.json:
        _print_overflows(overflow_rows, n, console)
    written = _save_outputs(args.output, outputs, project.outputs, quiet=args.json)
    trace_rows = _trace(project, inputs, Path(args.trace), console, quiet=args.json, seconds=seconds) \
        if args.trace else None
    rows = None
    if not args.no_compare:
        with progress("running ONNX Runtime for the comparison ...") as step:
            rows = project.compare(inputs, outputs)
        seconds["compare"] = step.seconds
        if not args.json:
            console.print(_comparison_table(f"C-sim vs ONNX Runtime ({n} samples, {project.manifest['precision']})",
                                            rows))
    code, checks = gate(rows, args)
    if args.json:
        seconds["total"] = time.monotonic() - t0
        print_json({"command": "csim", "project": str(project.path), "samples": n,
                    "precision": project.manifest["precision"], "outputs": comparison_json(rows),
                    "overflows": [_overflow_json(r) for r in overflow_rows] if count else None,
                    "trace": trace_rows, "output_file": written, "checks": checks, "seconds": seconds})
    return code


def _overflow_json(row: dict) -> dict:
    return {k: row[k] for k in ("layer", "op", "value", "precision", "source", "count", "total")}


# a type Kiln chose (not a quantizer's, not the user's): overflowing it is a warning
CHOSEN_TYPE_SOURCES = {"inferred": "inferred", "calibrated": "calibrated", "default": "model default"}


def _print_overflows(rows: list[dict], n_samples: int, console) -> None:
    """Per layer output that saturated or wrapped: how often; a warning where Kiln chose the type."""
    from rich.markup import escape
    from rich.table import Table

    hit = [r for r in rows if r["count"]]
    if not hit:
        console.print(f"overflows: none in {len(rows)} fixed-point layer outputs over {n_samples} samples")
        return
    table = Table(title=f"overflows (saturated or wrapped values, {n_samples} samples)")
    for col in ("layer", "op", "value", "type", "type from", "overflows", "of values"):
        table.add_column(col)
    for r in hit:
        table.add_row(escape(r["layer"]), r["op"], escape(r["value"]), r["precision"], r["source"], str(r["count"]),
                      f"{r['total']} ({100 * r['count'] / max(r['total'], 1):.2f}%)")
    console.print(table)
    for r in hit:
        if r["source"] in CHOSEN_TYPE_SOURCES:
            console.print(f"[yellow]warning:[/] layer {escape(repr(r['layer']))} ({r['op']}) overflowed "
                          f"{r['count']} of {r['total']} values of its {r['precision']} output, a type Kiln chose "
                          f"({CHOSEN_TYPE_SOURCES[r['source']]}); set {escape(_toml_table(r['layer']))} precision "
                          "in a config, or calibrate with more samples", highlight=False)


def _toml_table(layer: str) -> str:
    """``[layers."NAME"]`` as a TOML config spells it (quotes and backslashes escaped)."""
    return "[layers." + json.dumps(layer) + "]"


def _trace(project, inputs, out_dir: Path, console, quiet: bool = False, seconds=None) -> list[dict]:
    """Write every layer's C-sim output and print its error against ONNX Runtime."""
    from rich.markup import escape
    from rich.table import Table

    from kiln.progress import progress

    with progress("building and running the traced C-simulation, and ONNX Runtime ...") as step:
        _, traced = project.csim_trace(inputs)
        rows = project.trace_compare(inputs)
    if seconds is not None:
        seconds["trace"] = step.seconds
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "trace.npz", **{f"{i:03d}": v for i, v in enumerate(traced.values())})
        (out_dir / "trace_index.txt").write_text("\n".join(f"{i:03d}\t{name}" for i, name in enumerate(traced)))
    except OSError as exc:
        raise KilnError(f"cannot write the trace to {out_dir}: {exc.strerror or exc}") from None
    if quiet:
        return rows
    table = Table(title=f"per-layer trace vs ONNX Runtime ({project.manifest['precision']}), written to "
                        f"{escape(str(out_dir))}")
    for col in ("layer", "op", "value", "max abs error", "relative"):
        table.add_column(col)
    for r in rows:
        err = "-" if r["max_abs_error"] is None else f"{r['max_abs_error']:.3e}"
        rel = "-" if r["relative_error"] is None else f"{r['relative_error']:.3e}"
        table.add_row(escape(r["layer"]), r["op"], escape(r["value"]), err, rel)
    console.print(table)
    return rows
