"""The compile pipeline: frontend -> passes -> support check -> precision -> backend."""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx_ir as ir

from kiln.annotations import is_standard, set_reuse_factor
from kiln.backends.hls.context import EmitContext
from kiln.backends.hls.fit import check_fit
from kiln.backends.hls.layers import emitter_for
from kiln.backends.hls.project import HLSProject
from kiln.backends.hls.reuse import choose_reuse
from kiln.backends.hls.writer import emit_layers, write_project
from kiln.board import get_board
from kiln.config import make_config
from kiln.errors import KilnError
from kiln.frontend import load_model
from kiln.ir_utils import static_shape
from kiln.names import layer_name
from kiln.passes import lowering_passes
from kiln.passes.precision import AssignPrecisionPass
from kiln.precision import FloatType

DEFAULT_CALIBRATED_BITS = 16


def load_and_fuse(model_src, pipeline: str):
    """The frontend, then the named pass pipeline of a non-HLS backend ("coreml"): the LoadedModel.

    Quantizers stay ONNX ops (``quantizers=False``), as the TVM, CoreML and TensorRT backends read them."""
    from kiln.passes import coreml_passes

    pipelines = {"coreml": coreml_passes}
    loaded = load_model(model_src, quantizers=False)
    pipelines[pipeline]()(loaded.model)
    return loaded


def check_supported(model: ir.Model, source: str) -> None:
    """All unsupported nodes of the model in one message."""
    problems: dict[str, list[str]] = defaultdict(list)
    for i, node in enumerate(model.graph):
        emitter = emitter_for(node)
        label = f"{'' if is_standard(node) else node.domain + '.'}{node.op_type}"
        if emitter is None:
            problems[f"{label} (operator not supported)"].append(layer_name(node, i))
            continue
        reason = emitter.check(node)
        if reason:
            problems[f"{label} ({reason})"].append(layer_name(node, i))
    for value in model.graph.outputs:
        if value.producer() is None:  # e.g. a Dropout mask the frontend folded to a constant
            problems["graph output computed by no layer (a constant or a graph input)"].append(value.name)
    if problems:
        lines = [f"  {what}: {', '.join(repr(n) for n in names)}" for what, names in sorted(problems.items())]
        raise KilnError(f"{source}: {sum(map(len, problems.values()))} node(s) cannot be compiled for the HLS "
                        "backend:\n" + "\n".join(lines))
    for value in list(model.graph.inputs) + [o for n in model.graph for o in n.outputs if o.uses() or o.is_graph_output()]:
        static_shape(value)


def lower(model_src, precision=None, config=None, reuse_factor=None, fuse=True, budget=None, calibrate=None,
          bits=None, max_error=None, io=None):
    """Frontend and passes: returns (LoadedModel, Config, Profile or None) with the IR ready for a backend.

    ``calibrate``: samples (.npy/.npz path or arrays) to profile every tensor on with ONNX
    Runtime; values then get ``fixed<bits, I>`` with I from the observed range (kiln/calibrate/),
    or with ``max_error`` instead of ``bits``, the fractional bits that round to within it.
    """
    cfg = make_config(precision=precision, config=config, reuse_factor=reuse_factor, budget=budget, io=io)
    if (bits is not None or max_error is not None) and calibrate is None:
        raise KilnError("--bits/--max-error set the calibrated types; give --calibrate samples too")
    if bits is not None and max_error is not None:
        raise KilnError("give either --bits (total width) or --max-error (rounding error), not both")
    if max_error is not None and not 0 < max_error < 1:
        raise KilnError(f"--max-error {max_error} must be between 0 and 1")
    if bits is not None and not 2 <= bits <= 64:
        raise KilnError(f"--bits {bits} must be between 2 and 64")
    loaded = load_model(model_src)
    lowering_passes(fuse=fuse)(loaded.model)
    check_supported(loaded.model, loaded.source)
    observed = None
    if calibrate is not None:
        from kiln.calibrate import load_samples, model_input_specs, profile

        if isinstance(cfg.precision, FloatType):
            raise KilnError("--calibrate chooses fixed-point types; it cannot be combined with --precision float")
        specs = model_input_specs(loaded.original)
        observed = profile(loaded.original, load_samples(calibrate, specs), input_specs=specs)
    AssignPrecisionPass(cfg, profile=observed.values if observed else None,
                        bits=None if max_error else (bits or DEFAULT_CALIBRATED_BITS), max_error=max_error,
                        quantized=bool(loaded.quant))(loaded.model)
    return loaded, cfg, observed


def apply_auto_reuse(model: ir.Model, cfg, board, opset: int) -> None:
    """Set each layer's reuse factor so the estimated DSP, LUT, FF and BRAM fit ``cfg.budget`` of
    the board, as far as reuse can (the fit check reports what is still over)."""
    nodes = list(model.graph)
    layers = emit_layers(model, EmitContext(default_precision=cfg.precision, opset=opset))  # dry run at R=1
    costs = {layer_name(node, i): (node.op_type, layer.cost) for i, (node, layer) in enumerate(zip(nodes, layers))
             if layer.cost is not None}
    fixed = {name for name, layer in cfg.layers.items() if layer.reuse_factor is not None}
    chosen = choose_reuse(costs, board, cfg.budget, fixed)
    for i, node in enumerate(nodes):
        if layer_name(node, i) in chosen:
            set_reuse_factor(node, chosen[layer_name(node, i)])


def apply_stream_folding(model: ir.Model, cfg, board, opset: int, target_fps) -> None:
    """Stream designs: each layer's reuse factor from the stream cost model (stream_fold.py)."""
    from kiln.backends.hls.stream_fold import fold_stream

    nodes = list(model.graph)
    chosen = fold_stream(model, cfg, board, opset, target_fps)
    for i, node in enumerate(nodes):
        if layer_name(node, i) in chosen:
            set_reuse_factor(node, chosen[layer_name(node, i)])


def fit_checker(cfg, board, fit_check: bool, reuse_from_cli: bool, stream_model=None):
    """The writer's ``on_estimate``: every resource against ``cfg.budget`` x the board, whatever
    chose the reuse factors. Over budget: KilnError, or with ``fit_check=False`` a warning on
    stderr. Float designs (functional checks, not sized for a board) are not checked; a note
    says so when they would not fit. ``stream_model``: (model, opset) of a stream design, whose
    advice then asks the stream folding (not io_parallel's --reuse auto) what would fit."""
    fixed = {name for name, layer in cfg.layers.items() if layer.reuse_factor is not None}
    if cfg.reuse_factor == "auto":
        mode, how = "auto", "with the reuse factors --reuse auto chose" + (
            " (stream folding)" if stream_model is not None else "")
    else:
        mode = "model" if reuse_from_cli else "config"
        how = f"at --reuse {cfg.reuse_factor}" if reuse_from_cli else f"at [model] reuse_factor = {cfg.reuse_factor}"
    if fixed:
        how += " and the config's per-layer reuse_factor"

    def on_estimate(estimate, layers):
        costs = {layer.layer_name: layer.cost for layer in layers if layer.cost is not None}
        auto_fits = None
        if stream_model is not None:
            from kiln.backends.hls.stream_fold import stream_auto_fits

            def auto_fits(keep):
                return stream_auto_fits(stream_model[0], cfg, board, stream_model[1], keep)
        result = check_fit(estimate.layers, costs, board, cfg.budget, how, mode, fixed, cfg.reuse_factor, auto_fits)
        is_float = isinstance(cfg.precision, FloatType)
        if result.over and is_float:
            print(f"kiln: note: float precision designs are for functional checks and not sized for a board, so "
                  f"the fit check is skipped ({result.summary()}; budget {cfg.budget:g} of {board.name})",
                  file=sys.stderr)
        elif result.over and fit_check:
            raise KilnError(result.message())
        elif result.over:
            print(f"kiln: warning: --no-fit-check: writing a design that does not fit {cfg.budget:.0%} of "
                  f"{board.name}: {result.summary()} (estimates); it can be C-simulated, not built for the board",
                  file=sys.stderr)
        return result.as_dict(skipped="float design" if is_float else None if fit_check else "--no-fit-check")

    return on_estimate


def compile_model(model, board="vu13p", output_dir=None, precision=None, config=None, reuse_factor=None,
                  fuse=True, budget=None, calibrate=None, bits=None, max_error=None, fit_check=True,
                  io=None, target_fps=None, tune=None, tune_minutes=None, tuning_db=None) -> HLSProject:
    """``fit_check=False``: write a design over ``budget`` x the board anyway (warning on stderr).
    ``io``: "parallel" (default) or "stream" (the config's [model] io otherwise). ``target_fps``:
    stream designs' frame rate to fold for (stream_fold.py)."""
    target = get_board(board)
    if target_fps is not None and target.kind != "fpga":
        raise KilnError(f"--target-fps applies to FPGA boards with --io stream; {board!r} is a {target.kind} board")
    if io is not None and target.kind != "fpga":
        raise KilnError(f"--io applies to FPGA boards (HLS backend); {board!r} is a {target.kind} board")
    if target.kind != "cpu" and (tune or tune_minutes or tuning_db):
        raise KilnError(f"tune/tune_minutes/tuning_db apply to CPU boards (TVM); {board!r} is a {target.kind} board")
    if target.kind == "cpu":  # TVM backend: float32, none of the HLS options
        if precision not in (None, "float") or config is not None or reuse_factor is not None or calibrate is not None:
            raise KilnError(f"precision/config/reuse_factor/calibrate apply to FPGA boards; {board!r} is a CPU board and "
                            "the TVM backend compiles the model in float32")
        from kiln.backends.tvm import compile_tvm

        return compile_tvm(model, board=target, output_dir=output_dir, tune=tune, tune_minutes=tune_minutes,
                           tuning_db=tuning_db)
    if target.kind == "coreml":  # CoreML backend: fp16/fp32 ML Program
        if config is not None or reuse_factor is not None or calibrate is not None:
            raise KilnError(f"config/reuse_factor/calibrate apply to FPGA boards; {board!r} is an Apple board "
                            "(CoreML backend)")
        from kiln.backends.coreml import compile_coreml

        return compile_coreml(model, board=target, output_dir=output_dir,
                              precision="fp32" if precision == "float" else precision)
    if target.kind == "tensorrt":  # engine.onnx + build scripts; precision fp32/fp16/int8 (Q/DQ from calibrate)
        if config is not None or reuse_factor is not None or bits is not None or max_error is not None:
            raise KilnError(f"config/reuse_factor/bits/max_error apply to FPGA boards; {board!r} is a TensorRT board")
        from kiln.backends.tensorrt import compile_tensorrt

        return compile_tensorrt(model, board=target, output_dir=output_dir, precision=precision, calibrate=calibrate)
    if target.kind != "fpga":
        raise KilnError(f"board {board!r} is a {target.kind} target; the HLS backend needs an FPGA board")
    loaded, cfg, observed = lower(model, precision=precision, config=config, reuse_factor=reuse_factor, fuse=fuse,
                                  budget=budget, calibrate=calibrate, bits=bits, max_error=max_error, io=io)
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="kiln-")) / "project"
    opset = loaded.model.opset_imports.get("", 13)
    if target_fps is not None and cfg.io != "stream":
        raise KilnError("--target-fps folds a stream design: add --io stream (or [model] io = \"stream\")")
    if target_fps is not None and cfg.reuse_factor != "auto":
        raise KilnError(f"--target-fps chooses every layer's reuse factor; drop the model-wide reuse factor "
                        f"{cfg.reuse_factor} (per-layer [layers.NAME] reuse_factor values are kept)")
    stream = cfg.io == "stream"
    if target_fps is not None or (cfg.reuse_factor == "auto" and not isinstance(cfg.precision, FloatType)):
        # float designs are for exact functional checks, not sized for a board: R stays 1
        if stream:
            apply_stream_folding(loaded.model, cfg, target, opset, target_fps)
        else:
            apply_auto_reuse(loaded.model, cfg, target, opset)
    ctx = EmitContext(default_precision=cfg.precision, opset=opset, uram_budget=cfg.budget)
    name = Path(loaded.source).stem if loaded.source != "<ModelProto>" else (loaded.model.graph.name or "model")
    path = write_project(loaded.model, loaded.original, loaded.batch_axis, target, ctx, Path(output_dir), name,
                         on_estimate=fit_checker(cfg, target, fit_check, reuse_factor is not None,
                                                 (loaded.model, opset) if stream else None), io=cfg.io)
    if observed is not None:
        from kiln.calibrate import PROFILE_FILE

        observed.save(path / PROFILE_FILE)  # kiln report plots it against the chosen types
    return HLSProject.open(path)
