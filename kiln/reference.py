"""ONNX Runtime as the reference every Kiln result is compared with."""

from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kiln.errors import KilnError


@dataclass
class OutputComparison:
    name: str
    max_abs_error: float
    scale: float                 # max |reference|
    relative_error: float        # max_abs_error / scale
    argmax_agreement: float | None


def compare_outputs(specs: list[dict], outputs: list[np.ndarray], references: list[np.ndarray]):
    """Per output: max abs error, error relative to the output scale, argmax agreement
    (for (N, classes) outputs) of a backend's outputs against ONNX Runtime's."""
    rows = []
    for spec, got, ref in zip(specs, outputs, references):
        got = np.asarray(got, dtype=np.float64)
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        agree = None
        if got.ndim == 2 and got.shape[1] > 1:
            agree = float(np.mean(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))
        rows.append(OutputComparison(spec["name"], err, scale, err / scale if scale > 0 else err, agree))
    return rows


def sample_shape(spec: dict) -> list[int]:
    """Shape of one sample of a port: without its batch axis when it has one."""
    return spec["shape"][1:] if spec.get("batch_axis") else spec["shape"]


def ort_error(what: str, exc: Exception) -> KilnError:
    """An ONNX Runtime exception as one KilnError line: ``what`` and the last line ORT gave."""
    lines = str(exc).strip().splitlines()
    last = lines[-1] if lines else type(exc).__name__
    # "[ONNXRuntimeError] : 1 : FAIL : /src/.../model.cc:256 onnxruntime::Model::Model(<args>) <reason>": the reason
    last = re.sub(r"^(?:\[ONNXRuntimeError\] : \d+ : \w+ : )?\S+\.(?:cc|cpp|h):\d+ \S*?\([^)]*\)\s*", "", last)
    return KilnError(f"{what}: {last[:300]}")


def ort_session(model, what: str, extra_outputs=(), optimize: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for ``model`` (path or ModelProto), with the named tensors
    ``extra_outputs`` exposed as graph outputs and, ``optimize=False``, the graph run as
    written. A model ORT cannot load is a KilnError starting with ``what``."""
    import onnx

    if extra_outputs:
        proto = onnx.ModelProto()
        proto.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))
        existing = {o.name for o in proto.graph.output}
        for name in extra_outputs:
            if name not in existing:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
                existing.add(name)
        model = proto
    options = ort.SessionOptions()
    options.log_severity_level = 4  # ORT's own log lines would repeat the KilnError
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ort_error(what, exc) from None


def run_onnxruntime(model_path: Path, input_specs: list[dict], output_specs: list[dict],
                    arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Run the model on N samples, one sample per call, returning (N, *sample_shape) arrays."""
    session = ort_session(model_path, f"ONNX Runtime cannot load {model_path} as the reference")
    names = [o.name for o in session.get_outputs()]
    order = [names.index(spec["name"]) for spec in output_specs]
    n = arrays[0].shape[0]
    outs: list[list[np.ndarray]] = [[] for _ in output_specs]
    ort_types = {i.name: i.type for i in session.get_inputs()}
    for s in range(n):
        feed = {}
        for spec, x in zip(input_specs, arrays):
            sample = x[s:s + 1] if spec.get("batch_axis") else x[s]
            feed[spec["name"]] = sample.astype(numpy_type(ort_types.get(spec["name"], "tensor(float)")))
        result = _run_session(session, None, feed, f"ONNX Runtime failed on sample {s} of {model_path}")
        for k, idx in enumerate(order):
            y = np.asarray(result[idx])
            outs[k].append(y[0] if output_specs[k].get("batch_axis") else y)
    return [np.stack(o).astype(np.float64) for o in outs]


def run_onnxruntime_intermediates(model_path: Path, input_specs: list[dict], arrays: list[np.ndarray],
                                  names: list[str]) -> dict[str, np.ndarray]:
    """ONNX Runtime's values of the named tensors (those the model computes), per sample."""
    import onnx

    model = onnx.load(str(model_path))
    produced = {o for node in model.graph.node for o in node.output}
    wanted = [n for n in names if n in produced]
    session = ort_session(model, f"ONNX Runtime cannot load {model_path} for tracing", wanted, optimize=False)
    ort_types = {i.name: i.type for i in session.get_inputs()}
    collected: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    for s in range(arrays[0].shape[0]):
        feed = {spec["name"]: (x[s:s + 1] if spec.get("batch_axis") else x[s]).astype(
            numpy_type(ort_types.get(spec["name"], "tensor(float)"))) for spec, x in zip(input_specs, arrays)}
        values = _run_session(session, wanted, feed, f"ONNX Runtime failed on sample {s} of {model_path}")
        for name, value in zip(wanted, values):
            collected[name].append(np.asarray(value, dtype=np.float64).reshape(-1))
    return {n: np.stack(v) for n, v in collected.items()}


def ort_smoke_run(session: ort.InferenceSession, what: str) -> None:
    """Run ``session`` once on zeros (symbolic dims as 1): a model that ONNX Runtime loads but
    refuses to run (a BatchNormalization whose scale does not match its channels) is a
    KilnError starting with ``what`` here, not later in ``kiln csim``. Only models whose inputs
    are all floating point: zeros are not valid data for every integer input (a divisor)."""
    feed = {}
    floats = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
    for inp in session.get_inputs():
        if inp.type not in floats:
            return
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in inp.shape]
        feed[inp.name] = np.zeros(shape, dtype=floats[inp.type])
    # only outputs numpy can hold: ORT computes a float8/int4/bfloat16 output but its Python binding cannot
    # return it ("No corresponding Numpy type"), which is not a refusal of the model
    names = [o.name for o in session.get_outputs() if o.type in NUMPY_TYPES]
    if names:
        _run_session(session, names, feed, what)


def _run_session(session: ort.InferenceSession, names, feed: dict, what: str) -> list:
    """session.run, with ONNX Runtime's failure (a bad index, a shape it rejects) as a KilnError."""
    try:
        return session.run(names, feed)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ort_error(what, exc) from None


NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
               "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
               "tensor(bool)": np.bool_}


def numpy_type(ort_type: str):
    return NUMPY_TYPES.get(ort_type, np.float32)
