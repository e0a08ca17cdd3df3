"""Compile an ONNX model for an Apple board: MIL program -> ML Program package (.mlpackage).

    <output>/model.mlpackage     the CoreML ML Program (fp16 compute by default)
    <output>/kiln_manifest.json  inputs/outputs, board, deployment target, versions, the Linux check
    <output>/model.onnx          the user's model (the ONNX Runtime reference for run)
    <output>/kiln_ir.onnx        the model as lowered (after Kiln's frontend and fusions)

CoreML cannot predict off macOS. What is checked everywhere: the package saves and reloads,
its outputs' shapes and dtypes match ONNX, and the program's numerics by coremltools' value
inference on one sample (fp32), against ONNX Runtime; ops without value inference are listed.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

import kiln
from kiln.backends.coreml.lower import check_supported, mil_name
from kiln.board import Board, get_board
from kiln.errors import KilnError
from kiln.fsutil import check_output_dir, staged_dir, MANIFEST
from kiln.ir_utils import static_shape

PRECISIONS = ("fp16", "fp32")
COMPRESSIONS = ("int8", "palettize4", "palettize6")
COMPRESS_MIN_WEIGHTS = 512  # weights with fewer elements stay as they are


# Frameworks coremltools probes at import for its other converters; the MIL builder needs none
# of them. Importing them all costs ~25 s, and TensorFlow 2.21 beside torch's triton segfaults.
_PROBED = ("tensorflow", "torch", "torchvision", "torchaudio", "executorch", "torchao", "sklearn", "xgboost",
           "transformers")


def require_coremltools():
    import logging

    logging.getLogger("coremltools").setLevel(logging.ERROR)  # "Failed to load libcoremlpython" off macOS
    if "coremltools" not in sys.modules:
        blocked = [m for m in _PROBED if m not in sys.modules]
        for m in blocked:
            sys.modules[m] = None  # import raises ImportError: coremltools disables that converter
        try:
            import coremltools  # noqa: F401
        except ImportError:
            raise KilnError("the CoreML backend needs coremltools: pip install '.[coreml]'") from None
        finally:
            for m in blocked:
                if sys.modules.get(m, 0) is None:
                    del sys.modules[m]
    import coremltools as ct

    return ct


def _ports(model: ir.Model, batch_axis: dict) -> tuple[list[dict], list[dict]]:
    def spec(value, batch):
        shape = [int(d) for d in static_shape(value)]
        dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
        if dtype not in ("float32", "int64", "int32"):
            raise KilnError(f"graph port {value.name!r} has dtype {dtype}; the CoreML backend takes float32 and "
                            "integer (index) tensors")
        return {"name": value.name, "coreml_name": mil_name(value.name), "shape": shape,
                "size": int(np.prod(shape)), "dtype": dtype, "batch_axis": bool(batch)}

    inputs = [spec(v, batch_axis.get(v.name, False)) for v in model.graph.inputs]
    any_batch = any(batch_axis.values())
    outputs = [spec(v, any_batch and len(static_shape(v)) > 0 and static_shape(v)[0] == 1)
               for v in model.graph.outputs]
    return inputs, outputs


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def compress(mlmodel, how: str):
    """coremltools.optimize.coreml on the saved model: int8 linear weights, or 4/6-bit palettes."""
    from coremltools.optimize import coreml as opt

    if how == "int8":
        config = opt.OptimizationConfig(global_config=opt.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", weight_threshold=COMPRESS_MIN_WEIGHTS))
        return opt.linear_quantize_weights(mlmodel, config=config)
    nbits = {"palettize4": 4, "palettize6": 6}[how]
    config = opt.OptimizationConfig(global_config=opt.OpPalettizerConfig(
        mode="kmeans", nbits=nbits, weight_threshold=COMPRESS_MIN_WEIGHTS))
    return opt.palettize_weights(mlmodel, config=config)


def compile_coreml(model, board="iphone-12", output_dir=None, precision: str = "fp16", compression: str | None = None,
                   progress=None):
    """Compile an ONNX file or ModelProto for an Apple board; returns a ``CoreMLArtifact``."""
    from kiln.backends.coreml.artifact import CoreMLArtifact
    from kiln.backends.coreml.ops_quant import integer_weights
    from kiln.backends.coreml.program import build_program
    from kiln.backends.coreml.verify import check_package, value_inference_check

    say = progress or (lambda msg: None)
    board = board if isinstance(board, Board) else get_board(board)
    if board.kind != "coreml":
        raise KilnError(f"board {board.name!r} is a {board.kind} target, not an Apple (CoreML) board")
    precision = precision or "fp16"
    if precision not in PRECISIONS:
        raise KilnError(f"--precision for CoreML boards is fp16 or fp32, not {precision!r}")
    if compression is not None and compression not in COMPRESSIONS:
        raise KilnError(f"--compress must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    ct = require_coremltools()
    target = board.target["deployment_target"]
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="kiln-")) / "artifact"
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    started = time.perf_counter()
    from kiln.driver import load_and_fuse  # the core runs the passes; a backend only reads the IR

    loaded = load_and_fuse(model, "coreml")  # Q/DQ stay ops: DequantizeLinear keeps integer weights
    check_supported(loaded.model, loaded.source)
    inputs, outputs = _ports(loaded.model, loaded.batch_axis)
    from kiln.frontend import is_keras
    from kiln.frontend.onnx_loader import read_onnx

    # the user's file as written: loaded.original has QONNX quantizers expanded to standard ops
    qweights = {} if is_keras(model) else integer_weights(loaded.model, read_onnx(model)[0])
    name = Path(loaded.source).stem if loaded.source != "<ModelProto>" else (loaded.model.graph.name or "model")
    say("building the MIL program")
    try:
        prog = build_program(loaded.model, inputs, outputs, target, qweights)
    except KilnError:
        raise
    except Exception as exc:  # noqa: BLE001 - MIL type inference rejected an op
        raise KilnError(f"{loaded.source}: coremltools could not build the MIL program: {_short(exc)}") from None
    say("numerics by value inference (fp32)")
    numerics = value_inference_check(loaded.model, loaded.original, inputs, outputs, target)
    with staged_dir(output_dir) as tmp:
        say(f"converting to an ML Program ({precision})")
        try:
            mlmodel = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.__dict__[target],
                                 compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                                 compute_units=getattr(ct.ComputeUnit, board.target.get("compute_units", "ALL")),
                                 skip_model_load=sys.platform != "darwin")
        except Exception as exc:  # noqa: BLE001
            raise KilnError(f"{loaded.source}: coremltools could not convert the program: {_short(exc)}") from None
        pkg = tmp / "model.mlpackage"
        mlmodel.save(str(pkg))
        sizes = {"package_bytes": package_bytes(pkg)}
        if compression:
            say(f"compressing weights ({compression})")
            compressed = compress(mlmodel, compression)
            import shutil

            shutil.rmtree(pkg)
            compressed.save(str(pkg))
            sizes = {"uncompressed_bytes": sizes["package_bytes"], "package_bytes": package_bytes(pkg)}
        reload = check_package(pkg, outputs)
        onnx.save(loaded.original, tmp / "model.onnx")
        ir.save(loaded.model, tmp / "kiln_ir.onnx")
        ops = sorted({n.op_type for n in loaded.model.graph})
        manifest = {
            "kiln_version": kiln.__version__, "backend": "coreml", "model_name": name, "board": board.name,
            "chip": board.target.get("chip"), "deployment_target": target,
            "compute_units": board.target.get("compute_units", "ALL"), "precision": precision,
            "compression": compression, "coremltools_version": ct.__version__,
            "package": {"file": pkg.name, **sizes, "integer_weights": _count_constexpr(pkg)},
            "onnx_ops": ops, "reload_check": reload, "value_inference_check": numerics,
            "compile_seconds": round(time.perf_counter() - started, 3), "inputs": inputs, "outputs": outputs,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return CoreMLArtifact.open(output_dir)


def _count_constexpr(pkg: Path) -> dict:
    """constexpr op counts in the saved program (integer / palettized weights kept as such)."""
    import re

    text = "\n".join(p.read_text(errors="ignore") for p in Path(pkg).rglob("*.mil"))
    if not text:  # the program is in model.mlmodel (protobuf): count op type strings there
        text = "\n".join(p.read_bytes().decode("latin-1") for p in Path(pkg).rglob("*.mlmodel"))
    counts = {}
    for op in ("constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"):
        n = len(re.findall(op, text))
        if n:
            counts[op] = n
    return counts


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:400]


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None
