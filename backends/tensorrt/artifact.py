"""Write and use a TensorRT artifact directory.

    <output>/kiln_manifest.json  inputs/outputs, board (GPU arch, compute capability), precision
    <output>/model.onnx          the user's model (the ONNX Runtime reference)
    <output>/engine.onnx         the network TensorRT parses (network.py); also kiln_ir.onnx's role
    <output>/build_engine.py     TensorRT Python builder -> model.engine (scripts.py)
    <output>/trtexec.sh          the same with trtexec, with timing flags
    <output>/run_checks.sh       polygraphy lint and engine-vs-ONNX-Runtime comparisons
    <output>/README.txt

Where TensorRT is installed (and an NVIDIA GPU), ``build_engine`` runs build_engine.py, ``run``
runs model.engine through Polygraphy's TrtRunner and ``bench`` times it with trtexec (CUDA
events). Elsewhere ``run`` runs engine.onnx in ONNX Runtime, and says so; ``build_engine`` and
``bench`` are errors that say what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import kiln
from kiln.backends.tensorrt.network import engine_network
from kiln.backends.tensorrt.scripts import write_scripts
from kiln.board import Board, get_board
from kiln.compiled import CompiledModel
from kiln.errors import KilnError
from kiln.fsutil import MANIFEST, check_output_dir, staged_dir
from kiln.reference import compare_outputs

ENGINE = "model.engine"
# what run_checks.sh allows (engine vs ONNX Runtime on engine.onnx; engine vs the float model)
TOLERANCES = {"fp32": (1e-5, 1e-5, 1e-5, 1e-5), "fp16": (1e-3, 1e-2, 1e-2, 5e-2), "int8": (1e-2, 5e-2, 1e-1, 1e-1)}


def tensorrt_status() -> tuple[bool, str]:
    """(usable, description): TensorRT's Python package and an NVIDIA GPU."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, ("TensorRT is not installed (its Python package `tensorrt` is missing; on Jetson it comes "
                       "with JetPack, elsewhere from NVIDIA's wheels)")
    try:
        import tensorrt as trt

        version = trt.__version__
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # noqa: BLE001 - a stub package, a missing CUDA driver, no GPU
        return False, f"TensorRT cannot start here ({str(exc).strip().splitlines()[-1] if str(exc) else type(exc).__name__})"
    return True, f"TensorRT {version}"


def _ports(proto: onnx.ModelProto, batch_axis: dict) -> tuple[list[dict], list[dict]]:
    def spec(v, batch):
        t = v.type.tensor_type
        shape = [int(d.dim_value) for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": v.name, "shape": shape, "size": int(np.prod(shape)) if shape else 1, "dtype": dtype,
                "batch_axis": bool(batch)}

    any_batch = any(batch_axis.values())
    inputs = [spec(v, batch_axis.get(v.name, False)) for v in proto.graph.input]
    outputs = [spec(v, any_batch and len(v.type.tensor_type.shape.dim) > 0
                    and v.type.tensor_type.shape.dim[0].dim_value == 1) for v in proto.graph.output]
    return inputs, outputs


def compile_tensorrt(model, board="jetson-orin", output_dir=None, precision="fp32", calibrate=None):
    """engine.onnx and its build scripts for a TensorRT board; returns a ``TensorRTArtifact``."""
    board = board if isinstance(board, Board) else get_board(board)
    if board.kind != "tensorrt":
        raise KilnError(f"board {board.name!r} is a {board.kind} board; the TensorRT backend needs a TensorRT board")
    precision = precision or "fp32"
    if calibrate is not None and precision != "int8":
        raise KilnError(f"--calibrate places int8 Q/DQ; it needs --precision int8 (got {precision})")
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="kiln-")) / "trt"
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    started = time.perf_counter()
    samples = None
    if calibrate is not None:
        from kiln.calibrate import load_samples, model_input_specs

        samples = load_samples(calibrate, model_input_specs(model))
    net = engine_network(model, precision, samples=samples)
    loaded = net.loaded
    inputs, outputs = _ports(net.proto, loaded.batch_axis)
    name = Path(loaded.source).stem if loaded.source != "<ModelProto>" else (loaded.model.graph.name or "model")
    atol, rtol, fatol, frtol = TOLERANCES[precision]
    tolerance = {"engine_atol": atol, "engine_rtol": rtol, "float_atol": fatol, "float_rtol": frtol,
                 "text": f"engine vs engine.onnx atol {atol:g} rtol {rtol:g}; vs the float model atol {fatol:g} "
                         f"rtol {frtol:g} ({precision})",
                 "vs_float": "fp32: the same numbers" if precision == "fp32" else f"{precision}: a looser bound"}
    manifest = {
        "kiln_version": kiln.__version__, "backend": "tensorrt", "model_name": name, "board": board.name,
        "board_description": board.description, "gpu": board.gpu, "precision": precision, "notes": net.notes,
        "kept_fp32": net.kept_fp32, "qdq": net.qdq, "batch": 1, "engine": ENGINE, "tolerance": tolerance,
        "inputs": inputs, "outputs": outputs,
    }
    with staged_dir(output_dir) as tmp:
        onnx.save(loaded.original, tmp / "model.onnx")
        onnx.save(net.proto, tmp / "engine.onnx")
        write_scripts(tmp, manifest, tolerance)
        manifest["compile_seconds"] = round(time.perf_counter() - started, 3)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return TensorRTArtifact.open(output_dir)


class TensorRTArtifact(CompiledModel):
    backend = "tensorrt"

    @property
    def engine_onnx(self) -> Path:
        return self.path / "engine.onnx"

    @property
    def engine(self) -> Path:
        return self.path / ENGINE

    def build_engine(self) -> Path:
        """Run build_engine.py where TensorRT is usable; KilnError saying what is missing elsewhere."""
        ok, what = tensorrt_status()
        if not ok:
            raise KilnError(f"cannot build {self.engine}: {what}. engine.onnx and the scripts are ready: run "
                            f"build_engine.py or trtexec.sh on the {self.manifest['board']} board")
        result = subprocess.run([sys.executable, str(self.path / "build_engine.py")], capture_output=True, text=True)
        if result.returncode != 0 or not self.engine.is_file():
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise KilnError(f"{what} could not build {self.engine}:\n  " + "\n  ".join(tail))
        return self.engine

    def where(self) -> str:
        """What ``run`` executes: the engine, or engine.onnx in ONNX Runtime."""
        ok, _ = tensorrt_status()
        if ok and self.engine.is_file():
            return "TensorRT engine"
        return "engine.onnx in ONNX Runtime"

    def run(self, inputs, return_all: bool = False):
        arrays = self.check_inputs(inputs)
        if self.where() == "TensorRT engine":
            outputs = self._run_engine(arrays)
        else:
            outputs = run_network(self.engine_onnx, self.inputs, arrays)
        return outputs if return_all or len(outputs) > 1 else outputs[0]

    def _run_engine(self, arrays) -> list[np.ndarray]:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        rows = []
        with TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine)))) as runner:
            for i in range(arrays[0].shape[0]):
                feed = {p["name"]: np.ascontiguousarray(x[i:i + 1]) for p, x in zip(self.inputs, arrays)}
                out = runner.infer(feed)
                rows.append([np.asarray(out[o["name"]]) for o in self.outputs])
        return [np.concatenate([r[k] for r in rows]) for k in range(len(self.outputs))]

    def compare(self, inputs, outputs):
        return compare_outputs(self.outputs, outputs, self.reference(inputs))

    def bench(self, repeat: int = 1000, warmup_ms: int = 500) -> dict:
        """Engine latency from trtexec (CUDA events, no host copies); KilnError without TensorRT/GPU."""
        ok, what = tensorrt_status()
        trtexec = shutil.which("trtexec")
        if not ok or trtexec is None:
            why = what if not ok else "trtexec is not on PATH"
            raise KilnError(f"kiln bench times the TensorRT engine on an NVIDIA GPU: {why}. Nothing was timed; "
                            f"on the board run {self.path / 'trtexec.sh'} (it builds and times the engine)")
        if not self.engine.is_file():
            raise KilnError(f"{self.engine} does not exist yet: run `kiln build-engine {self.path}` first")
        with tempfile.TemporaryDirectory(prefix="kiln-trt-bench-") as tmp:
            times = Path(tmp) / "times.json"
            cmd = [trtexec, f"--loadEngine={self.engine}", f"--warmUp={warmup_ms}", f"--iterations={repeat}",
                   "--noDataTransfers", "--useCudaGraph", f"--exportTimes={times}"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0 or not times.is_file():
                raise KilnError("trtexec failed: " + " ".join((result.stderr or result.stdout).split()[-30:]))
            compute = np.array([t["computeMs"] for t in json.loads(times.read_text())], dtype=np.float64)
        return {"timer": "CUDA events (trtexec GPU compute time)", "runs": int(compute.size),
                "median_ms": float(np.median(compute)), "p10_ms": float(np.percentile(compute, 10)),
                "p90_ms": float(np.percentile(compute, 90)), "mean_ms": float(compute.mean())}


def run_network(path, specs: list[dict], arrays: list[np.ndarray]) -> list[np.ndarray]:
    """engine.onnx (batch 1) in ONNX Runtime's CPU provider, one sample at a time."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rows = []
    for i in range(arrays[0].shape[0]):
        feed = {p["name"]: np.ascontiguousarray(x[i:i + 1]) for p, x in zip(specs, arrays)}
        rows.append(sess.run(names, feed))
    return [np.concatenate([r[k] for r in rows]) for k in range(len(names))]
