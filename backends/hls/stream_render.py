"""Stream mode: the C++ of a StreamPlan (stream_plan.py) for firmware/kiln_top.cpp.

Renders the FIFO declarations (each with its depth and why), one function per buffered
adapter, clone and drain process, the calls of the streaming templates, the trace taps of
``kiln csim --trace`` and the C-simulation's end-of-run check that every FIFO is empty.
"""

from __future__ import annotations

import math
from dataclasses import replace

from kiln.backends.hls.stream_plan import (BINARY_STREAM, CHANNEL_STREAM, COPY_STREAM, DENSE_TEMPLATES, StreamPlan,
                                           packet_fold, row_reuse)
from kiln.backends.hls.stream_attention import ATTENTION_STREAM_TEMPLATES, HEADER as ATTENTION_HEADER, attention_call
from kiln.backends.hls.stream_rows import ELEMENT_STREAMS, HEADER as ROWS_HEADER, ROW_STREAMS, uses_rows
from kiln.backends.hls.stream_rows import type_args as rows_type_args
from kiln.backends.hls.stream_channels import WHOLE_PIXEL, channel_fold_ii, fold_channels
from kiln.names import safe_comment

ROW_CONFIG = """struct {name} : {base} {{
    static const unsigned n_rows = 1;
    static const unsigned reuse_factor = {rf};
    static const unsigned block_factor = {block};
    static const unsigned multiplier_limit = {limit};
}};
"""


def dense_row_config(layer, n_in: int, n_out: int, rows: int) -> tuple[str, str, int]:
    """(struct name, C++, row reuse factor) of a streamed Dense: one row per call, the layer's
    multipliers shared over that row (stream_plan.row_reuse)."""
    base = layer.calls[0].type_args[2]
    name = base.replace("_config", "_row_config") if base.endswith("_config") else base + "_row"
    rf = row_reuse(layer.cost.reuse_factor if layer.cost else 1, n_in, n_out, rows)
    packed = layer.calls[0].template == "kiln::dense_packed"
    limit = math.ceil(n_in * n_out / rf / (2 if packed else 1))
    return name, ROW_CONFIG.format(name=name, base=base, rf=rf, block=math.ceil(n_in * n_out / rf), limit=limit), rf


def _native_call(proc, plan: StreamPlan) -> str:
    if proc.template in ATTENTION_STREAM_TEMPLATES:
        return attention_call(proc, plan)
    call = proc.layer.calls[0]
    src, dst = proc.inputs[0], proc.outputs[0]
    args = (src.name, dst.name) + call.args[2:]
    type_args = call.type_args
    if proc.template in DENSE_TEMPLATES.values():
        type_args = type_args + (plan.row_configs[proc.layer_name][0],)
    elif proc.template in ("kiln::activation_stream", BINARY_STREAM):
        type_args = type_args + (str(src.packet), str(packet_fold(proc)))
    elif proc.template == CHANNEL_STREAM:
        per_channel_a = proc.inputs[0].pixels == 1 and proc.inputs[1].pixels > 1
        type_args = type_args + (str(src.packet), "true" if per_channel_a else "false", str(packet_fold(proc)))
        type_args = type_args + ((str(src.fold),) if src.fold > 1 else ())   # FC (the template's default: 1)
    elif proc.template in WHOLE_PIXEL and (src.fold > 1 or dst.fold > 1):
        type_args = type_args + (str(src.fold), str(dst.fold))
    elif proc.template == COPY_STREAM:
        type_args = type_args + (str(src.packet),)
    elif proc.template in ROW_STREAMS + ELEMENT_STREAMS:
        type_args = type_args + rows_type_args(proc)
    if proc.template in (BINARY_STREAM, CHANNEL_STREAM):
        args = (proc.inputs[0].name, proc.inputs[1].name, dst.name)
    return replace(call, template=proc.template, type_args=type_args, args=args).render()


def _trace_taps(proc) -> list[str]:
    lines = ["#ifdef KILN_TRACE"]
    for s in proc.outputs:
        lines.append(f"    {{ static double kiln_tv[{s.size}]; kiln::stream_values<{s.tensor_args()}>({s.name}, "
                     f"kiln_tv); KILN_TRACE_WRITE(kiln_tv, {s.size}); }}")
    return lines + ["#endif"]


def _params(proc) -> tuple[list[str], list[str]]:
    ins = [f"{s.stype} &kiln_in{i}" for i, s in enumerate(proc.inputs)]
    outs = [f"{s.stype} &kiln_out{i}" for i, s in enumerate(proc.outputs)]
    return ins, outs


def _buffered_function(proc, fname: str) -> str:
    layer = proc.layer
    ins, outs = _params(proc)
    body = [f"// buffered: {safe_comment(proc.layer_name)} ({proc.op}) has no streaming form here "
            f"({safe_comment(proc.reason)}): whole tensors in, the io_parallel kernel, whole tensors out",
            f"static void {fname}({', '.join(ins + outs)}) {{"]
    for i, s in enumerate(proc.inputs):
        body.append(f"    KILN_ACTIVATION {s.ctype} {s.var}[{s.size}];")
        body.append(f"    kiln::read_tensor<{s.tensor_args()}>(kiln_in{i}, {s.var});")
    for s in proc.outputs:
        body.append(f"    KILN_ACTIVATION {s.ctype} {s.var}[{s.size}];")
    for s in proc.inputs + proc.outputs:
        if s.in_uram:   # the estimate put this array in URAM (memory.py): written and read at run time
            body.append(f"    #pragma HLS BIND_STORAGE variable = {s.var} type = ram_2p impl = uram")
    body.append(f"    {layer.call}")
    for t in layer.traced:
        body.append(f"    KILN_TRACE_WRITE({t['var']}, {t['size']});")
    if layer.shadow:
        body.append("#ifdef KILN_COUNT_OVERFLOW")
        body.append("    {")
        for c in layer.shadow["checks"]:
            body.append(f"        static {c['ctype']} {c['var']}[{c['size']}];")
        body.append(f"        {layer.shadow['call']}")
        for c in layer.shadow["checks"]:
            body.append(f"        kiln_count_outside({c['var']}, {c['size']}, {c['lo']}, {c['hi']}, {c['index']});")
        body.append("    }")
        body.append("#endif")
    for i, s in enumerate(proc.outputs):
        body.append(f"    kiln::write_tensor<{s.tensor_args()}>({s.var}, kiln_out{i});")
    return "\n".join(body + ["}", ""])


def _copy_function(proc, fname: str) -> str:
    ins, outs = _params(proc)
    src = proc.inputs[0]
    writes = " ".join(f"kiln_out{i}.write(p);" for i in range(len(proc.outputs)))
    what = "copy each packet to every reader" if proc.outputs else "read and discard (an unused input)"
    return "\n".join([
        f"// {proc.kind}: {safe_comment(proc.layer_name)}: {what}",
        f"static void {fname}({', '.join(ins + outs)}) {{",
        f"    for (unsigned k = 0; k < {src.n_packets}; k++) {{",
        "        #pragma HLS PIPELINE",
        f"        {src.ptype} p = kiln_in0.read();" + (f" {writes}" if writes else ""),
        "    }", "}", ""])


def render_top(plan: StreamPlan, names) -> dict:
    """The pieces kiln_top_stream.cpp.j2 places: functions, FIFO declarations, body lines."""
    functions, body = [], []
    for proc in plan.processes:
        args = ", ".join(s.name for s in proc.inputs + proc.outputs)
        if proc.kind == "native":
            body.append(f"// {proc.layer.comment} (streamed: {proc.template})")
            body.append(_native_call(proc, plan))
            if proc.layer.traced:
                body.extend(_trace_taps(proc))
        else:
            fname = names.make(f"kiln_{proc.kind}", proc.layer_name)
            functions.append(_buffered_function(proc, fname) if proc.kind == "buffered"
                             else _copy_function(proc, fname))
            comment = proc.layer.comment if proc.layer is not None else safe_comment(proc.layer_name)
            body.append(f"// {comment} ({proc.kind})")
            body.append(f"{fname}({args});")
    fifos = [s for s in plan.streams if not s.port]
    return {"functions": functions, "fifos": fifos, "body": body}


def stream_headers(plan: StreamPlan) -> set[str]:
    """The nnet headers of the streaming templates a plan calls."""
    attention = any(p.template in ATTENTION_STREAM_TEMPLATES for p in plan.processes if p.kind == "native")
    return {"kiln_stream.h"} | ({ATTENTION_HEADER} if attention else set()) | ({ROWS_HEADER} if uses_rows(plan) else set())


def stream_design(model, layers: list, ctx) -> StreamPlan:
    """Plan the dataflow of the emitted layers, its pixel streams channel-folded where the stream
    folding asked for it (stream_channels.py). The instrumented C-sim counts overflows of the
    buffered layers (they hold arrays); streamed layers have no shadow copy yet."""
    from kiln.backends.hls.stream_plan import plan_streams
    from kiln.backends.hls.writer import overflow_checks

    plan = plan_streams(model, layers, ctx, dense_row_config)
    target = channel_fold_ii(model)
    if target is not None:
        fold_channels(plan, target)
    for proc in plan.processes:
        if proc.kind == "native":
            proc.layer.shadow = None
    for index, check in enumerate(overflow_checks(layers)):
        check["index"] = index
    return plan


def stream_manifest(plan: StreamPlan) -> dict:
    """The manifest's "stream" entry: how each layer runs and each port's packet order."""
    return {"layers": [{"layer": p.layer_name, "op": p.op, "mode": "streamed" if p.kind == "native" else "buffered",
                        **({"template": p.template} if p.kind == "native" else {"why": p.reason})}
                       for p in plan.processes if p.kind in ("native", "buffered")],
            "buffered": [p.layer_name for p in plan.buffered],
            "ports": {s.value: {"packet": s.packet, "order": "pixel" if s.pixel else "flat"}
                      for s in plan.ports.values()}}


def stream_summary(stream: dict, estimate: dict) -> list[str]:
    """The compile output's lines about a stream design: streamed vs buffered layers, throughput."""
    layers = stream["layers"]
    buffered = [row for row in layers if row["mode"] == "buffered"]
    lines = [f"io stream: {len(layers) - len(buffered)} layers streamed, {len(buffered)} buffered"]
    for row in buffered:
        lines.append(f"  buffered: {row['layer']!r} ({row['op']}): {row['why']}")
    total = estimate.get("total", {})
    if "frames_per_s" in total:
        fifos = estimate.get("fifos", [])
        lines.append(f"throughput {total['frames_per_s']:,.0f} frames/s (clock / II {total['ii']}), "
                     f"{len(fifos)} FIFOs ({sum(f['depth'] for f in fifos):,} packets deep in all; estimates)")
    uram = estimate.get("uram_weights")
    if uram and uram.get("loaded"):
        lines.append(f"{len(uram['arrays'])} weight arrays in URAM ({total.get('uram', 0):,} URAM blocks in all), "
                     f"{uram['why']}")
    elif uram:
        lines.append(f"warning: {len(uram['arrays'])} weight arrays in URAM ({total.get('uram', 0):,} URAM blocks in "
                     f"all): {uram['why']}")
    return lines
