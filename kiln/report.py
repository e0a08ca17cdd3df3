"""``kiln report``: per-layer latency/resource table, bar charts and totals of an HLS project.

Reads ``kiln_estimate.json`` (written by ``kiln compile``; every figure an ESTIMATE,
see backends/hls/estimate.py) and, when ``kiln synth`` has run, the Vitis HLS report.
Writes ``report/report.html`` (hls_templates/project/report.html.j2, autoescaped) and PNG bar
charts (latency, DSP, LUT, FF, BRAM18K per layer, the design total against the budget line,
budget fraction x the board, red when over);
``--json`` prints the same data. Resources over budget are highlighted in the HTML.

Profiling (``kiln report PROJECT --data samples.npy``, or the project's ``kiln_profile.json``
from an earlier run or a calibrated compile): per traced value, the observed range of
log2|x| under ONNX Runtime (float) against the range its fixed-point type can hold, from
log2(lsb) to log2(max), in ``report/profile*.png`` (in the spirit of hls4ml's profiling
plots) and a table with each value's headroom and overflow / precision-loss flags.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from kiln.errors import KilnError

ESTIMATE_FILE = "kiln_estimate.json"
PROFILE_PAGE_ROWS = 40     # rows (values) per profiling PNG
FLOAT_MAX = 3.4028234663852886e38
REPORT_TEMPLATE = "report.html.j2"  # hls_templates/project/, rendered with autoescape on
LAYER_COLUMNS = ("name", "op", "reuse", "ii", "latency_cycles", "dsp", "lut", "ff", "bram")
PROFILE_COLUMNS = ("layer", "value", "type", "source", "observed min", "observed max", "type min", "type max",
                   "headroom bits", "% |x| < lsb", "flag")
CHARTS = (("latency_cycles", "latency (cycles)", None), ("dsp", "DSP", "dsp"), ("lut", "LUT", "lut"),
          ("ff", "FF", "ff"), ("bram", "BRAM18K", "bram_18k"))
DEFAULT_BUDGET = 0.7  # projects written before the budget was stored used the default


def load_estimate(project_dir) -> dict:
    path = Path(project_dir) / ESTIMATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KilnError(f"{project_dir} has no {ESTIMATE_FILE}; compile it with `kiln compile` first") from None
    except json.JSONDecodeError as exc:
        raise KilnError(f"{path} is corrupt: {exc}") from None


def _chart(layers: list[dict], key: str, label: str, board_total: float | None, fraction: float, total: float,
           path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{i}: {layer['op']}" for i, layer in enumerate(layers)]
    values = [layer[key] for layer in layers]
    fig, (ax, ax_total) = plt.subplots(1, 2, figsize=(max(8, 0.35 * len(layers) + 4), 4.5),
                                       gridspec_kw={"width_ratios": [max(len(layers), 4), 2]})
    ax.bar(range(len(values)), values, color="#c0504d")
    ax.set_xticks(range(len(values)), names, rotation=90, fontsize=7)
    ax.set_ylabel(f"{label} (estimate)")
    ax.set_title(f"{label} per layer (estimate)")
    limit = fraction * board_total if board_total else None
    over = limit is not None and total > limit
    ax_total.bar([0], [total], color="#d62728" if over else "#4f81bd",
                 label="design total" + (" (OVER budget)" if over else ""))
    if limit is not None:
        ax_total.axhline(limit, color="k", linestyle="--", label=f"budget {fraction:.0%} of board = {limit:,.0f}")
        ax_total.axhline(board_total, color="#999999", linestyle=":", label=f"board {board_total:,.0f}")
        ax_total.set_ylim(0, max(board_total, total) * 1.1)
    ax_total.set_xticks([0], ["total"])
    ax_total.legend(fontsize=7, loc="best")
    ax_total.set_title("total vs budget")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def project_profile(project_dir, data=None, progress=None):
    """The project's profile: with ``data`` (a .npy/.npz path or arrays), ONNX Runtime on the
    project's model.onnx over those samples, saved as ``kiln_profile.json`` in the project;
    without, the saved ``kiln_profile.json``; None if neither."""
    from kiln.calibrate import PROFILE_FILE, load_profile, load_samples, profile
    from kiln.fsutil import read_manifest

    project_dir = Path(project_dir)
    saved = project_dir / PROFILE_FILE
    if data is None:
        return load_profile(saved) if saved.is_file() else None
    manifest = read_manifest(project_dir, "hls")
    model = project_dir / "model.onnx"
    if not model.is_file():
        raise KilnError(f"{project_dir}: model.onnx is missing, so there is no model to profile")
    arrays = load_samples(data, manifest["inputs"])
    prof = profile(model, arrays, input_specs=manifest["inputs"], progress=progress)
    prof.save(saved)
    return prof


def profile_rows(manifest: dict, prof) -> list[dict]:
    """One row per float graph input and per traced layer output: its type (the trace entry's
    "precision", else the project's), where the type came from, the observed range, the
    type's range, headroom bits = log2(type max / observed abs max) and the flags."""
    from kiln.precision import FixedType, FloatType, parse_precision

    default = manifest.get("precision", "float")
    entries = [{**spec, "layer": f"input {spec['name']}"} for spec in manifest.get("inputs", [])
               if prof is not None and spec["name"] in prof]
    entries += manifest.get("trace", [])
    rows = []
    for entry in entries:
        text = entry.get("precision") or default
        try:
            t = parse_precision(text)
        except KilnError:
            t = None
        stats = prof.values.get(entry["name"]) if prof is not None else None
        row = {"layer": entry.get("layer", ""), "value": entry["name"], "precision": str(text),
               "source": entry.get("precision_source") or "-", "profiled": stats is not None and stats.count > 0,
               "observed_min": None, "observed_max": None, "observed_abs_max": None,
               "type_min": None, "type_max": None, "lsb": None, "headroom_bits": None,
               "below_lsb_fraction": None, "overflow": False, "below_lsb": False, "flag": ""}
        if isinstance(t, FixedType):
            row.update(type_min=t.min_value, type_max=t.max_value, lsb=t.lsb)
        elif isinstance(t, FloatType):
            row.update(type_min=-FLOAT_MAX, type_max=FLOAT_MAX)
        if row["profiled"]:
            row.update(observed_min=stats.min, observed_max=stats.max, observed_abs_max=stats.abs_max)
            flags = []
            if isinstance(t, FixedType):
                if stats.abs_max > 0:
                    row["headroom_bits"] = math.log2(t.max_value / stats.abs_max) if t.max_value > 0 else None
                nonzero = sum(stats.hist)
                if nonzero:
                    # histogram bins are floor(log2|x|) and lsb a power of two: exact count
                    below = sum(c for i, c in enumerate(stats.hist) if stats.hist_lo + i < -t.frac)
                    row["below_lsb_fraction"] = below / nonzero
                row["overflow"] = stats.max > t.max_value or stats.min < t.min_value
                row["below_lsb"] = 0 < stats.abs_max < t.lsb
                if row["overflow"]:
                    flags.append(f"OVERFLOW: observed [{stats.min:.4g}, {stats.max:.4g}] exceeds "
                                 f"[{t.min_value:.4g}, {t.max_value:.4g}]")
                if row["below_lsb"]:
                    flags.append(f"PRECISION LOST: |x| <= {stats.abs_max:.3g} < lsb {t.lsb:.3g}, all quantize "
                                 "to 0 or -lsb")
            if stats.abs_max == 0:
                flags.append("all zero on the samples")
            if stats.nonfinite:
                flags.append(f"{stats.nonfinite} inf/NaN elements")
            row["flag"] = "; ".join(flags)
        elif entry["name"] and prof is not None:
            row["flag"] = "not profiled (not a float tensor of model.onnx)"
        rows.append(row)
    return rows


def _short(label: str, width: int = 46) -> str:
    return label if len(label) <= width else label[:width // 2 - 1] + "..." + label[-(width // 2 - 2):]


def _profile_chart(rows: list[dict], prof, path: Path, title: str) -> None:
    """Box plot of log2|x| per value (box 25-75 %, whiskers 0.1-99.9 % of the non-zero |x|,
    tick at the median, dot at max |x|) over its type's band from log2(lsb) to log2(max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    def log2(v):
        return math.log2(v) if v and v > 0 else None

    n = len(rows)
    height = max(3.0, 0.32 * n + 2.0)
    fig, ax = plt.subplots(figsize=(11, height))
    xs = []
    for i, row in enumerate(rows):
        y = n - 1 - i
        if row["lsb"] is not None and row["type_max"] and row["type_max"] > 0:
            lo, hi = math.log2(row["lsb"]), math.log2(row["type_max"])
            ax.barh(y, hi - lo, left=lo, height=0.8, color="#cfe2f3", edgecolor="#9fc5e8", zorder=1)
            xs += [lo, hi]
        stats = prof.values.get(row["value"]) if row["profiled"] else None
        if stats is None or not stats.abs_percentiles:
            if stats is not None:
                ax.text(0.0, y, "all zero", va="center", fontsize=7, color="#555555", zorder=3)
            continue
        q = {k: log2(v) for k, v in stats.abs_percentiles.items()}
        top = log2(stats.abs_max)
        color = "#d62728" if row["overflow"] else "#ff7f0e" if row["below_lsb"] else "#1f4e79"
        ax.plot([q["0.1"], q["99.9"]], [y, y], color=color, lw=1.2, zorder=2)
        ax.barh(y, max(q["75"] - q["25"], 0.05), left=q["25"], height=0.5, color=color, alpha=0.75, zorder=3)
        ax.plot([q["50"], q["50"]], [y - 0.25, y + 0.25], color="white", lw=1.5, zorder=4)
        ax.plot([top], [y], marker="o", ms=3.5, color=color, zorder=4)
        if row["overflow"] and row["type_max"]:
            edge = math.log2(row["type_max"])
            ax.plot([edge, max(top, edge)], [y, y], color="#d62728", lw=3, zorder=5)
            ax.plot([top], [y], marker="x", ms=7, mew=2, color="#d62728", zorder=6)
        xs += [q["0.1"], top]
    ax.set_yticks(range(n), [_short(r["layer"] or r["value"]) for r in reversed(rows)], fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    if xs:
        ax.set_xlim(max(min(xs) - 1, -64), min(max(xs) + 1, 64))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("log2 |x|  (x: value observed on the samples, ONNX Runtime float)")
    ax.grid(axis="x", color="#dddddd", zorder=0)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(n), [r["precision"] + (f" ({r['source']})" if r["source"] != "-" else "")
                                   for r in reversed(rows)], fontsize=7)
    ax.set_title(title, fontsize=10)
    handles = [Patch(color="#cfe2f3", label="type range: log2(lsb) .. log2(max)"),
               Patch(color="#1f4e79", label="|x|: box 25-75 %, whiskers 0.1-99.9 %, dot = max"),
               Patch(color="#d62728", label="beyond the type's max: overflow"),
               Patch(color="#ff7f0e", label="all |x| below lsb")]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _profile_context(project_dir: Path, out: Path, manifest: dict | None, prof, rows: list[dict],
                     problem: str | None) -> dict:
    """The profiling section's data (the PNG pages are drawn here); ``problem``: why a saved profile
    could not be read."""
    if manifest is None:
        return {"state": "no_manifest"}
    for old in out.glob("profile*.png"):  # pages of an earlier profile
        old.unlink(missing_ok=True)
    if prof is None:
        return {"state": "no_profile", "project": str(project_dir), "problem": problem}
    images = []
    pages = [rows[i:i + PROFILE_PAGE_ROWS] for i in range(0, len(rows), PROFILE_PAGE_ROWS)] or [[]]
    for k, page in enumerate(pages):
        name = "profile.png" if k == 0 else f"profile_{k + 1}.png"
        title = (f"observed log2|x| per value on {prof.n_samples} samples vs the type's range"
                 + (f" (page {k + 1} of {len(pages)})" if len(pages) > 1 else ""))
        _profile_chart(page, prof, out / name, title)
        images.append(name)

    def num(v, fmt="{:.4g}"):
        return "-" if v is None else fmt.format(v)

    body = []
    for r in rows:
        cells = (r["layer"], r["value"], r["precision"], r["source"], num(r["observed_min"]), num(r["observed_max"]),
                 num(r["type_min"]), num(r["type_max"]), num(r["headroom_bits"], "{:.2f}"),
                 num(None if r["below_lsb_fraction"] is None else 100 * r["below_lsb_fraction"], "{:.1f}"), r["flag"])
        body.append({"flag": "overflow" if r["overflow"] else "below_lsb" if r["below_lsb"] else "",
                     "cells": [str(c) for c in cells]})
    return {"state": "profile", "n_samples": prof.n_samples, "images": images, "rows": body,
            "n_over": sum(r["overflow"] for r in rows), "n_below": sum(r["below_lsb"] for r in rows),
            "cols": PROFILE_COLUMNS}


def _manifest_or_none(project_dir: Path):
    from kiln.fsutil import read_manifest

    try:
        return read_manifest(project_dir, "hls")
    except KilnError:
        return None


def report_json(project_dir, data=None, progress=None) -> dict:
    """``kiln report --json``: the estimates plus, when there is a profile, its table."""
    project_dir = Path(project_dir)
    result = load_estimate(project_dir)
    prof, problem = _profile_or_problem(project_dir, data, progress)
    manifest = _manifest_or_none(project_dir)
    result["profile"] = None if prof is None or manifest is None else {
        "n_samples": prof.n_samples, "rows": profile_rows(manifest, prof)}
    if problem:
        result["profile_error"] = problem
    return result


def _profile_or_problem(project_dir: Path, data, progress):
    """A corrupt saved profile does not stop the report: its section says what is wrong.
    Problems with ``data`` given on the command line are errors."""
    try:
        return project_profile(project_dir, data, progress), None
    except KilnError as exc:
        if data is not None:
            raise
        return None, str(exc)


def _quantizer_rows(manifest: dict | None) -> list[dict]:
    """How each quantizer of the model reached the hardware (kiln/quant.py): exact ap_fixed
    type, a multiply, or a scale folded into constants."""
    quantizers = (manifest or {}).get("quantizers") or []
    return [{c: str(q[c]) for c in ("kind", "layer", "value", "mapping")} for q in quantizers]


def _budget_context(estimate: dict, fraction: float) -> dict:
    """Totals against the budget (fraction x the board), rows over budget in red with the
    layers that dominate them."""
    total, fit = estimate["total"], estimate.get("fit") or {}
    rows, over = [], []
    for key, label, board_key in CHARTS[1:]:
        board_total = total["budget"].get(board_key) or 0
        limit = fraction * board_total
        is_over = bool(board_total) and total[key] > limit
        top = sorted(estimate["layers"], key=lambda layer: -layer[key])[:3] if is_over else []
        where = ", ".join(f"{layer['name']} ({layer[key]:,})" for layer in top)
        if is_over:
            over.append(label)
        cells = (label, f"{total[key]:,}", f"{limit:,.0f}", f"{board_total:,}",
                 f"{100 * total[key] / limit:.0f}%" if limit else "-", ("OVER budget: " + where) if is_over else "ok")
        rows.append({"over": is_over, "cells": cells})
    return {"over": over, "skipped": fit.get("skipped"), "percent": f"{fraction:.0%}", "rows": rows,
            "head": ("resource", "estimate", f"budget ({fraction:.0%})", "board", "of budget", "")}


def _page_template():
    import jinja2

    root = resources.files("kiln.hls_templates") / "project"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(REPORT_TEMPLATE)


def write_report(project_dir, data=None, progress=None) -> Path:
    """Render report/report.html, the PNG charts and, with a profile (``data`` samples or the
    project's kiln_profile.json), the profiling PNGs and table; returns the HTML path."""
    project_dir = Path(project_dir)
    estimate = load_estimate(project_dir)
    prof, problem = _profile_or_problem(project_dir, data, progress)
    manifest = _manifest_or_none(project_dir)
    out = project_dir / "report"
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise KilnError(f"cannot write {out}: {exc.strerror or exc}") from None
    layers, total = estimate["layers"], estimate["total"]
    fraction = total.get("budget_fraction", DEFAULT_BUDGET)
    images = []
    for key, label, budget_key in CHARTS:
        png = out / f"{key}.png"
        _chart(layers, key, label, total["budget"].get(budget_key) if budget_key else None, fraction,
               total["latency_cycles"] if key == "latency_cycles" else total[key], png)
        images.append(png.name)
    rows_profile = profile_rows(manifest, prof) if manifest is not None and prof is not None else []
    summary = (f"latency {total['latency_cycles']} cycles = {total['latency_ns']:.0f} ns at {total['clock_mhz']:g} MHz, "
               f"II {total['ii']} cycles")
    if "frames_per_s" in total:
        summary += f", io_stream: {total['frames_per_s']:,.0f} frames/s"
    page = _page_template().render(
        project_name=project_dir.name, summary=summary, budget=_budget_context(estimate, fraction),
        layer_cols=LAYER_COLUMNS + (("uram",) if total.get("uram") else ()), layers=layers, images=images, quantizers=_quantizer_rows(manifest),
        stream=estimate if estimate.get("io") == "stream" else None,
        profile=_profile_context(project_dir, out, manifest, prof, rows_profile, problem))
    path = out / "report.html"
    path.write_text(page)
    return path
