"""``kiln report``: per-layer latency/resource table, bar charts and totals of an HLS project.

Reads ``kiln_estimate.json`` (written by ``kiln compile``; every figure an ESTIMATE,
see backends/hls/estimate.py) and, when ``kiln synth`` has run, the Vitis HLS report.
Writes ``report/report.html`` and PNG bar charts (latency, DSP, LUT, BRAM per layer,
with the board budget for the totals); ``--json`` prints the same data.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from kiln.errors import KilnError

ESTIMATE_FILE = "kiln_estimate.json"
CHARTS = (("latency_cycles", "latency (cycles)", None), ("dsp", "DSP", "dsp"), ("lut", "LUT", "lut"),
          ("bram", "BRAM (18 Kb)", "bram_18k"))


def load_estimate(project_dir) -> dict:
    path = Path(project_dir) / ESTIMATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise KilnError(f"{project_dir} has no {ESTIMATE_FILE}; compile it with `kiln compile` first") from None
    except json.JSONDecodeError as exc:
        raise KilnError(f"{path} is corrupt: {exc}") from None


def _chart(layers: list[dict], key: str, label: str, budget: float | None, total: float, path: Path) -> None:
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
    ax_total.bar([0], [total], color="#4f81bd", label="design total")
    if budget:
        ax_total.axhline(budget, color="k", linestyle="--", label=f"board budget {budget:,.0f}")
        ax_total.set_ylim(0, max(budget, total) * 1.1)
    ax_total.set_xticks([0], ["total"])
    ax_total.legend(fontsize=7, loc="lower right")
    ax_total.set_title("total vs board")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(project_dir) -> Path:
    """Render report/report.html and the PNG charts; returns the HTML path."""
    project_dir = Path(project_dir)
    data = load_estimate(project_dir)
    out = project_dir / "report"
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise KilnError(f"cannot write {out}: {exc.strerror or exc}") from None
    layers, total = data["layers"], data["total"]
    images = []
    for key, label, budget_key in CHARTS:
        png = out / f"{key}.png"
        _chart(layers, key, label, total["budget"].get(budget_key) if budget_key else None,
               total["latency_cycles"] if key == "latency_cycles" else total[key], png)
        images.append(png.name)
    cols = ("name", "op", "reuse", "ii", "latency_cycles", "dsp", "lut", "ff", "bram")
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(layer[c]))}</td>" for c in cols) + "</tr>"
                     for layer in layers)
    budget = total["budget"]
    summary = (f"latency {total['latency_cycles']} cycles = {total['latency_ns']:.0f} ns at {total['clock_mhz']:g} MHz, "
               f"II {total['ii']} cycles; DSP {total['dsp']} / {budget.get('dsp')}, LUT {total['lut']} / "
               f"{budget.get('lut')}, FF {total['ff']} / {budget.get('ff')}, BRAM18 {total['bram']} / "
               f"{budget.get('bram_18k')}")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Kiln report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:2px 6px;font-size:12px}} img{{max-width:100%}}</style></head>
<body><h1>Kiln report: {html.escape(project_dir.name)}</h1>
<p><b>All figures are estimates</b> from layer shapes, reuse factors and precision (see Kiln's
backends/hls/estimate.py); run <code>kiln synth</code> for Vitis HLS's own numbers.</p>
<p>{html.escape(summary)}</p>
<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>
{rows}
</table>
{''.join(f'<p><img src="{img}" alt="{img}"></p>' for img in images)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
