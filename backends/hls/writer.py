"""Write the HLS project for a lowered IR model.

Walks the graph in topological order, asks each node's emitter for its config struct
and call, and renders the project files from Jinja2 templates:

    firmware/kiln_top.{h,cpp}, defines.h, parameters.h, nnet/*.h, weights/*.h
    weights/*.bin      (doubles; C-sim reads these at start-up instead of compiling the
                        headers: g++ takes ~4 ms per ap_fixed initialiser, and chokes on
                        huge lists, hls4ml's known failure past ~1M weights)
    tb/kiln_tb.cpp, tb_data/input.bin
    Makefile           (g++ C-sim)      build_prj.tcl (Vitis HLS csim/csynth/cosim/export)
    kiln_manifest.json, model.onnx (the user's model), kiln_ir.onnx (the lowered IR)

Everything is written into a temporary sibling directory first and moved into place
only when complete, so a failed compile never leaves a half-written project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import onnx
import onnx_ir as ir

import kiln
from kiln.annotations import quant_note, reuse_factor, source_of
from kiln.backends.hls.call import render_calls
from kiln.backends.hls.context import EmitContext
from kiln.backends.hls.estimate import LayerCost, ModelEstimate, estimate_layer
from kiln.backends.hls.layers import emitter_for
from kiln.backends.hls.memory import URAM_DEPTH
from kiln.backends.hls.stream_estimate import estimate_stream, type_widths
from kiln.backends.hls.stream_render import render_top, stream_design, stream_headers, stream_manifest
from kiln.backends.hls.toolchain import ap_types_dir
from kiln.backends.hls.uram_load import build_image, has_load_path, manifest_entry, mark_loaded, write_image
from kiln.board import Board
from kiln.fsutil import MANIFEST, staged_dir
from kiln.ir_utils import size, static_shape
from kiln.names import layer_name, safe_comment
from kiln.precision import FixedType

ESTIMATE = "kiln_estimate.json"


@dataclass
class Port:
    name: str       # model's name (manifest only, never in C++)
    var: str
    ctype: str
    size: int
    shape: list
    is_input: bool
    index: int
    offset: int = 0
    batch_axis: bool = False
    dtype: str = "float32"
    precision: str = ""         # the port's type as text, and where it came from (passes/precision.py)
    precision_source: str = ""


def _templates() -> jinja2.Environment:
    root = resources.files("kiln.hls_templates") / "project"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["safe_comment"] = safe_comment
    return env


def _format_values(values: np.ndarray, is_float: bool) -> str:
    if is_float:
        return ", ".join(f"{v:.9g}" for v in values.astype(np.float32).tolist())
    return ", ".join(repr(v) for v in values.tolist())


def emit_layers(model: ir.Model, ctx: EmitContext) -> list:
    layers = []
    for i, node in enumerate(model.graph):
        emitter = emitter_for(node)
        first_weight = len(ctx.weights)
        layer = emitter.emit(node, ctx)
        layer.weights = [(w.name, w.values.size) for w in ctx.weights[first_weight:]]
        layer.comment = safe_comment(f"{node.op_type} {node.name}")
        layer.layer_name = layer_name(node, i)  # the name in manifest, report, trace and overflow rows
        layer.op = node.op_type
        # what `kiln csim --trace` dumps after this layer: its used outputs
        layer.traced = [{"name": v.name, "var": ctx.var(v), "size": size(v), "shape": list(static_shape(v)),
                         "precision": str(ctx.precision(v)), "precision_source": source_of(v) or "default"}
                        for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]
        layer.shadow = _overflow_shadow(node, layer, ctx)
        layers.append(layer)
    for index, check in enumerate(overflow_checks(layers)):
        check["index"] = index
    return layers


def overflow_checks(layers: list) -> list[dict]:
    """The layer outputs the instrumented C-sim checks, in the order of their counters."""
    return [c for layer in layers if layer.shadow for c in layer.shadow["checks"]]


WIDE_EXTRA_BITS = 33  # integer bits a layer's shadow output has beyond its real one


def _overflow_shadow(node: ir.Node, layer, ctx: EmitContext) -> dict | None:
    """The instrumented C-sim's second call of a fixed-point layer (``make OVERFLOW=1``).

    The layer runs again writing into "wide" copies of its outputs: the same fractional
    bits and rounding, 33 more integer bits, wrap-around. A wide value outside the real
    output type's range is a value the real output saturated or wrapped: one overflow.
    """
    outs = [v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]
    if not outs or not layer.calls or not all(isinstance(ctx.precision(v), FixedType) for v in outs):
        return None
    wide_names, checks = {}, []
    for value in outs:
        t = ctx.precision(value)
        var, ctype = ctx.var(value), ctx.ctype(value)
        extra = WIDE_EXTRA_BITS + (0 if t.signed else 1)  # signed: values below an unsigned type's 0 count
        wide = FixedType(min(t.width + extra, 1024), t.integer + extra, signed=True, rounding=t.rounding)
        wide_t = ctx.typedef(f"{var}_wide_t", wide)
        wide_names.update({var: f"{var}_wide", ctype: wide_t})
        checks.append({"var": f"{var}_wide", "ctype": wide_t, "size": size(value), "value": value.name,
                       "layer": layer.layer_name, "op": node.op_type, "precision": str(t),
                       "source": source_of(value) or "default",
                       "lo": c_double(-t.max_value if t.overflow == "SAT_SYM" else t.min_value),
                       "hi": c_double(t.max_value)})
    return {"call": render_calls(c.renamed(wide_names) for c in layer.calls), "checks": checks}


def c_double(value: float) -> str:
    return f"{float(value):.17g}"


def estimate_model(model: ir.Model, layers: list, board: Board) -> ModelEstimate:
    """Per-layer estimates (see estimate.py) with each layer's producers for the critical path."""
    nodes = list(model.graph)
    names = {id(node): layer_name(node, i) for i, node in enumerate(nodes)}
    rows = []
    for node, layer in zip(nodes, layers):
        producers = [names[id(v.producer())] for v in node.inputs if v is not None and v.producer() is not None]
        cost = layer.cost if layer.cost is not None else LayerCost(
            reuse_factor=reuse_factor(node))
        rows.append(estimate_layer(names[id(node)], node.op_type, cost, producers))
    return ModelEstimate(rows, board.clock_mhz, board_budget(board))


def uram_weight_arrays(layers: list) -> list[str]:
    """Weight arrays bound to URAM in stream mode: those of >= 4,096 values (one URAM's depth;
    biases stay) of the layers whose weight memory the estimate put in URAM (memory.py)."""
    return [name for layer in layers if layer.weights_in_uram for name, n in layer.weights if n >= URAM_DEPTH]


def board_budget(board: Board) -> dict:
    """The board's resources as the estimates count them (BRAM in BRAM18K)."""
    budget = {k: board.resources.get(k, 0) for k in ("dsp", "lut", "ff", "bram_36k")}
    budget["bram_18k"] = 2 * budget.pop("bram_36k")
    if board.resources.get("uram"):
        budget["uram"] = board.resources["uram"]
    return budget


def write_project(model: ir.Model, original: onnx.ModelProto, batch_axis: dict[str, bool], board: Board,
                  ctx: EmitContext, output_dir: Path, model_name: str, on_estimate=None, io: str = "parallel") -> Path:
    """``on_estimate(estimate, layers)``: the fit check, run before anything is written; it may
    raise, and what it returns is stored in the estimate and the manifest ("fit").
    ``io``: "parallel" (arrays, one PIPELINE) or "stream" (FIFOs under DATAFLOW, stream_plan.py)."""
    graph = model.graph
    ports: list[Port] = []
    offset = 0
    for i, value in enumerate(graph.inputs):
        dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
        ports.append(Port(value.name, ctx.var(value), ctx.ctype(value), size(value), list(static_shape(value)),
                          True, i, offset, batch_axis.get(value.name, False), dtype, str(ctx.precision(value)),
                          source_of(value) or "default"))
        offset += size(value)
    in_total = offset
    any_batch = any(batch_axis.values())
    offset = 0
    for i, value in enumerate(graph.outputs):
        shape = list(static_shape(value))
        ports.append(Port(value.name, ctx.var(value), ctx.ctype(value), size(value), shape, False, i, offset,
                          any_batch and len(shape) > 0 and shape[0] == 1))
        offset += size(value)
    layers = emit_layers(model, ctx)
    plan = stream_design(model, layers, ctx) if io == "stream" else None
    checks = overflow_checks(layers)
    estimate = estimate_model(model, layers, board) if plan is None else estimate_stream(
        plan, board.clock_mhz, board_budget(board), type_widths(ctx.typedefs),
        ctx.uram_budget * board.resources.get("uram", 0))
    uram_weights = uram_weight_arrays(layers) if plan is not None else []
    if plan is not None:
        estimate.uram_weights = uram_weights
    # URAM weights get a load path where the board's wrapper carries one (uram_load.py)
    uram_load = uram_weights if has_load_path(board.family) else []
    image, image_layout = build_image(ctx.weights, uram_load)
    if on_estimate is not None:
        estimate.fit = on_estimate(estimate, layers) or {}
    port_vars = {p.var for p in ports}
    intermediates = []
    for node in graph:
        for out in node.outputs:
            if out.uses() or out.is_graph_output():
                var = ctx.var(out)
                if var not in port_vars:
                    intermediates.append({"var": var, "ctype": ctx.ctype(out), "size": size(out)})
    headers = sorted({layer.header for layer in layers} | {"kiln_common.h"} | (stream_headers(plan) if plan else set()))
    configs = [layer.config for layer in layers if layer.config] + (
        [rc[1] for rc in plan.row_configs.values() if rc[1]] if plan else [])
    n_weights = sum(w.values.size for w in ctx.weights)
    env = _templates()
    common = {"version": kiln.__version__, "ports": ports, "inputs": [p for p in ports if p.is_input],
              "outputs": [p for p in ports if not p.is_input], "weights": [
                  {"name": w.name, "ctype": w.ctype, "size": w.values.size} for w in ctx.weights],
              "model_name": safe_comment(model_name), "stream_ports": plan.ports if plan else {},
              # Zynq boards drive a stream design over AXI-Stream (kiln_axi.cpp.j2); Alveo keeps m_axi
              "axis": plan is not None and board.family == "zynq",
              "uram_load": image_layout, "uram_words": len(image)}

    output_dir = Path(output_dir)
    with staged_dir(output_dir) as tmp:
        fw = tmp / "firmware"
        for sub in ("firmware/nnet", "firmware/weights", "weights", "tb", "tb_data"):
            (tmp / sub).mkdir(parents=True)
        nnet = resources.files("kiln.hls_templates") / "nnet"
        for header in nnet.iterdir():
            if header.name.endswith(".h"):
                (fw / "nnet" / header.name).write_text(header.read_text())
        (fw / "kiln_top.h").write_text(env.get_template("kiln_top.h.j2").render(**common))
        # designs without fixed-point types (float mode) leave out the ap_types headers:
        # parsing them is most of a small C-sim build's g++ time
        float_only = all(cpp in ("float", "int", "bool") for cpp in ctx.typedefs.values())
        (fw / "defines.h").write_text(env.get_template("defines.h.j2").render(
            typedefs=sorted(ctx.typedefs.items()), float_only=float_only, **common))
        (fw / "parameters.h").write_text(env.get_template("parameters.h.j2").render(
            headers=headers, configs=configs, **common))
        if plan is None:
            top = env.get_template("kiln_top.cpp.j2").render(intermediates=intermediates, layers=layers,
                                                            n_checks=len(checks), **common)
        else:
            top = env.get_template("kiln_top_stream.cpp.j2").render(stream=render_top(plan, ctx.names),
                                                                   n_checks=len(checks), uram_weights=uram_weights,
                                                                   **common)
        (fw / "kiln_top.cpp").write_text(top)
        weight_tpl = env.get_template("weight.h.j2")
        for w in ctx.weights:
            is_float = w.precision.cpp() == "float"
            values = _format_values(w.values, is_float)
            (fw / "weights" / f"{w.name}.h").write_text(weight_tpl.render(
                version=kiln.__version__, w={"name": w.name, "ctype": w.ctype, "size": w.values.size,
                                             "precision": str(w.precision), "uram": w.name in uram_load},
                values=values))
            stored = w.values.astype(np.float32).astype(np.float64) if is_float else w.values
            stored.astype("<f8").tofile(tmp / "weights" / f"{w.name}.bin")
        if uram_load:
            write_image(tmp, image)
        axi = board.family in ("zynq", "alveo")
        out_total = sum(p.size for p in ports if not p.is_input)
        (tmp / "tb" / "kiln_tb.cpp").write_text(env.get_template("kiln_tb.cpp.j2").render(
            in_total=in_total, out_total=out_total, axi=axi, **common))
        if axi:
            _write_axi_driver(env, tmp, board, in_total, out_total, common)
        rng = np.random.default_rng(0)
        rng.standard_normal(in_total).astype("<f8").tofile(tmp / "tb_data" / "input.bin")
        (tmp / "Makefile").write_text(env.get_template("Makefile.j2").render(
            ap_types=str(ap_types_dir()), axi=axi, **common))
        (tmp / "build_prj.tcl").write_text(env.get_template("build_prj.tcl.j2").render(
            board=board.name, part=board.part, clock_mhz=board.clock_mhz, axi=axi, family=board.family,
            period_ns=f"{board.clock_period_ns:.3f}", **common))
        onnx.save(original, tmp / "model.onnx")
        ir.save(model, tmp / "kiln_ir.onnx")
        manifest = {
            "kiln_version": kiln.__version__, "backend": "hls", "model_name": model_name,
            "board": board.name, "part": board.part, "clock_mhz": board.clock_mhz,
            "precision": str(ctx.default_precision), "n_weights": int(n_weights), "io": io,
            "ops_per_sample": int(sum(l.cost.mults + l.cost.adds + l.cost.out_elems for l in layers if l.cost)),
            "trace": [{**t, "layer": layer.layer_name, "op": layer.op} for layer in layers for t in layer.traced],
            "overflow_checks": [{k: c[k] for k in ("index", "layer", "op", "value", "precision", "source")}
                                for c in checks],
            "inputs": [_port_json(p) for p in ports if p.is_input],
            "outputs": [_port_json(p) for p in ports if not p.is_input],
        }
        manifest["quantizers"] = _quantizers(model)
        if plan is not None:
            manifest["stream"] = stream_manifest(plan)
        if uram_load:
            manifest["uram_load"] = manifest_entry(image_layout, len(image))
        if estimate.fit:
            manifest["fit"] = estimate.fit
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        estimate_json = estimate.as_dict()
        (tmp / ESTIMATE).write_text(json.dumps(mark_loaded(estimate_json, bool(uram_load), board.name), indent=2))
    return output_dir


def _write_axi_driver(env, root: Path, board: Board, in_total: int, out_total: int, common: dict) -> None:
    """AXI wrapper top (m_axi buffers + AXI-Lite control) and the host-side driver of the board
    family: a PYNQ Python driver for Zynq boards, an XRT host program for Alveo cards."""
    args = dict(in_total=in_total, out_total=out_total, board=board.name, family=board.family, **common)
    (root / "firmware" / "kiln_axi.cpp").write_text(env.get_template("kiln_axi.cpp.j2").render(**args))
    (root / "driver").mkdir()
    if board.family == "zynq":
        names = {"input_names": repr([p.name for p in common["inputs"]]),
                 "output_names": repr([p.name for p in common["outputs"]])}
        (root / "driver" / "kiln_pynq.py").write_text(env.get_template("kiln_pynq.py.j2").render(**args, **names))
    else:
        (root / "driver" / "host.cpp").write_text(env.get_template("xrt_host.cpp.j2").render(**args))
        (root / "driver" / "Makefile").write_text(env.get_template("xrt_Makefile.j2").render(**args))


def _quantizers(model: ir.Model) -> list[dict]:
    """Each quantizer and how it reached the hardware (the frontend's ``kiln.quant`` notes)."""
    rows = []
    for node in model.graph:
        if quant_note(node) is not None:
            rows.append({"kind": "activation", "layer": node.name, "value": node.outputs[0].name,
                         "mapping": quant_note(node)})
    for value in model.graph.initializers.values():
        if quant_note(value) is not None and value.uses():
            users = sorted({user.name for user, _ in value.uses()})
            rows.append({"kind": "weights", "layer": ", ".join(users), "value": value.name,
                         "mapping": quant_note(value)})
    return rows


def _port_json(p: Port) -> dict:
    port = {"name": p.name, "shape": p.shape, "size": p.size, "dtype": p.dtype, "batch_axis": p.batch_axis}
    if p.precision:
        port.update(precision=p.precision, precision_source=p.precision_source)
    return port
