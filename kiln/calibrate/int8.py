"""int8 QuantizeLinear/DequantizeLinear models calibrated with ONNX Runtime's static quantizer,
and comparisons of two models on the same samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from kiln.calibrate.runner import BATCH_SIZE, Runner, run_model
from kiln.calibrate.samples import load_model, load_samples, model_input_specs, with_symbolic_batch
from kiln.errors import KilnError
from kiln.fsutil import current_umask
from kiln.reference import ort_error


def write_int8_qdq(model_path, arrays, out_path, per_channel: bool = False, activation: str = "uint8",
                   input_specs: list[dict] | None = None, preprocess: bool = True) -> Path:
    """Write an int8 QuantizeLinear/DequantizeLinear ONNX model of ``model_path``, calibrated
    (min/max) on ``arrays`` with ONNX Runtime's ``quantize_static``: QDQ format, weights
    QInt8 (per output channel with ``per_channel``), activations QUInt8 (``activation=
    "uint8"``, asymmetric, the default of ONNX Runtime on x86) or QInt8 (``"int8"``). The
    model is first run through ``quant_pre_process`` (shape inference and graph cleanup),
    skipped if that fails. ``out_path`` is written atomically; returns it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}.get(str(activation).lower())
    if act is None:
        raise KilnError(f"activation type {activation!r}: use 'uint8' or 'int8'")
    model_path = Path(model_path)
    out_path = Path(out_path)
    proto = load_model(model_path)
    specs = with_symbolic_batch(proto, input_specs if input_specs is not None else model_input_specs(proto))
    samples = load_samples(arrays, specs)
    if not out_path.parent.is_dir():
        raise KilnError(f"cannot write {out_path}: directory {out_path.parent} does not exist")
    # calibrate on whole batches where the float model gives the same results that way
    runner = Runner(proto, specs, [], optimize=True, label=str(model_path))
    _, batched, _ = next(runner.chunks(samples, lead=[o.name for o in proto.graph.output]))
    feeds_types = runner.types

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = samples[0].shape[0]
            step = BATCH_SIZE if batched else 1
            self.bounds = iter([(lo, min(n, lo + step)) for lo in range(0, n, step)])

        def get_next(self):
            b = next(self.bounds, None)
            if b is None:
                return None
            lo, hi = b
            return {s["name"]: np.ascontiguousarray(x[lo:hi] if batched or s.get("batch_axis") else x[lo],
                                                    dtype=feeds_types.get(s["name"], np.float32))
                    for s, x in zip(specs, samples)}

    try:
        with tempfile.TemporaryDirectory(prefix=".kiln-qdq-", dir=out_path.resolve().parent) as tmp:
            source = Path(tmp) / "float.onnx"
            import onnx

            onnx.save(proto, str(source))
            if preprocess:
                pre = Path(tmp) / "preprocessed.onnx"
                try:
                    from onnxruntime.quantization.shape_inference import quant_pre_process

                    _quiet(quant_pre_process, str(source), str(pre))
                    if pre.is_file():
                        source = pre
                except Exception:  # optional step: quantize the model as given
                    pass
            staged = Path(tmp) / "qdq.onnx"
            try:
                _quiet(quantize_static, str(source), str(staged), Reader(), quant_format=QuantFormat.QDQ,
                       per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8)
            except KilnError:
                raise
            except Exception as exc:  # the quantizer raises many exception types
                raise ort_error(f"int8 quantization of {model_path} failed", exc) from None
            os.chmod(staged, 0o666 & ~current_umask())
            os.replace(staged, out_path)
    except OSError as exc:
        raise KilnError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return out_path


def _quiet(fn, *args, **kwargs):
    """Run an onnxruntime.quantization call without its logging noise on the console."""
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    finally:
        root.setLevel(level)


def count_qdq_nodes(model) -> dict[str, int]:
    """Number of QuantizeLinear and DequantizeLinear nodes of an ONNX model."""
    proto = load_model(model)
    ops = [n.op_type for n in proto.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def compare_models(reference_model, candidate_model, arrays, input_specs: list[dict] | None = None):
    """Per output of ``reference_model``: max abs error, relative error and argmax agreement
    (for (N, classes) outputs) of ``candidate_model``'s outputs on the same samples
    (``kiln.reference.OutputComparison`` rows)."""
    from kiln.reference import compare_outputs

    ref_proto = load_model(reference_model)
    specs = input_specs if input_specs is not None else model_input_specs(ref_proto)
    samples = load_samples(arrays, with_symbolic_batch(ref_proto, specs))
    ref = run_model(ref_proto, samples, with_symbolic_batch(ref_proto, specs))
    cand_proto = load_model(candidate_model)
    got = run_model(cand_proto, samples, with_symbolic_batch(cand_proto, specs))
    outputs = [{"name": o.name} for o in ref_proto.graph.output]
    return compare_outputs(outputs, got, ref)
