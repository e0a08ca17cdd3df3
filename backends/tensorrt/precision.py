"""Precision written into the network, as TensorRT 11's strongly typed networks require.

TensorRT 11 dropped the builder's FP16/INT8 flags: every tensor's type comes from the ONNX
itself (its inputs, initializers, Cast and Q/DQ nodes). So Kiln writes the precision there:

- ``to_fp16``: weights become float16 initializers and activations float16, with explicit Cast
  nodes; the ops where accuracy needs fp32 (normalisation statistics, softmax, reductions,
  pow/sqrt/exp/log) keep float32 inputs, outputs and weights, with a Cast on each side. The
  network's inputs and outputs stay float32 (a Cast after each input, before each output), so
  callers feed the same arrays as to the float model.
- ``to_int8``: explicit QuantizeLinear/DequantizeLinear placed by ONNX Runtime's quantize_static
  with TensorRT's placement rules: only in front of Conv/MatMul/Gemm inputs, weights int8
  symmetric per output channel, activations int8 symmetric per tensor (zero point 0, which
  TensorRT requires), biases left in float (TensorRT's DequantizeLinear takes int8, not int32).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.errors import KilnError

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16
KEEP_FP32 = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization", "LpNormalization",
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceProd", "Pow", "Sqrt", "Exp", "Log", "CumSum",
})
# inputs that ONNX types as float32 whatever the data type (Resize's roi and scales)
FLOAT32_ONLY_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def _float_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The float16 network and the op types kept in float32 (see module docstring)."""
    if has_qdq(model):
        raise KilnError("the model has QuantizeLinear/DequantizeLinear nodes (it is an int8 network): compile it "
                        "with --precision int8, or give the float model for --precision fp16")
    types = _float_types(model)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.node[:], graph.initializer[:], graph.value_info[:]
    new_inits: dict[str, onnx.TensorProto] = {}
    produced: dict[str, int] = {}       # tensor -> its type in the new network
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []
    kept: set[str] = set()

    def initializer(name: str, dtype: int) -> str:
        t = inits[name]
        if t.data_type != FP32 or dtype == FP32:
            new_inits.setdefault(name, t)
            return name
        new = name + "__fp16"
        if new not in new_inits:
            new_inits[new] = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), new)
        return new

    def as_type(name: str, dtype: int) -> str:
        if name in inits:
            return initializer(name, dtype)
        if types.get(name) != FP32 or produced.get(name, FP32) == dtype:
            return name
        key = (name, dtype)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if dtype == FP16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [casts[key]], to=dtype, name=f"kiln_cast_{len(casts)}"))
        return casts[key]

    for v in g.input:
        produced[v.name] = v.type.tensor_type.elem_type
    for node in g.node:
        dtype = FP32 if node.op_type in KEEP_FP32 else FP16
        if dtype == FP32 and any(types.get(i) == FP32 for i in node.input):
            kept.add(node.op_type)
        new = onnx.NodeProto()
        new.CopyFrom(node)
        fixed = FLOAT32_ONLY_INPUTS.get(node.op_type, ())
        for k, name in enumerate(node.input):
            if name:
                new.input[k] = as_type(name, FP32 if k in fixed else dtype)
        if node.op_type == "Cast" and helper.get_attribute_value(node.attribute[0]) == FP32:
            new.attribute[0].i = dtype
        for attr in new.attribute:
            if node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FP32:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        nodes.append(new)
        for o in node.output:
            if types.get(o) == FP32:
                produced[o] = dtype
    for v in g.output:
        if produced.get(v.name, FP32) == FP16:  # rename the fp16 tensor, cast it back under the output's name
            inner = v.name + "__fp16"
            for n in nodes:
                n.output[:] = [inner if o == v.name else o for o in n.output]
                n.input[:] = [inner if i == v.name else i for i in n.input]
            nodes.append(helper.make_node("Cast", [inner], [v.name], to=FP32, name=f"kiln_cast_out_{v.name}"))
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits.values())
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out)
    return out, sorted(kept)


def check_symmetric_qdq(model: onnx.ModelProto, source: str) -> dict:
    """Counts of Q/DQ nodes; KilnError naming every node whose zero point is not 0 or whose
    quantized type is not int8 (TensorRT's explicit quantization)."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    bad, counts = [], {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in QDQ_OPS:
            continue
        counts[node.op_type] += 1
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.int8)
        label = node.name or f"{node.op_type}_{i}"
        if zp is None:
            bad.append(f"{label!r} (zero point is not an initializer)")
        elif zp.dtype != np.int8 or np.any(zp != 0):
            bad.append(f"{label!r} (zero point {zp.dtype} {np.unique(zp)[:4].tolist()}; TensorRT needs int8 and 0)")
    if bad:
        raise KilnError(f"{source}: {len(bad)} Q/DQ node(s) are not symmetric int8 as TensorRT requires: "
                        + ", ".join(bad) + "; re-quantize with symmetric int8 activations and weights "
                        "(kiln compile --precision int8 --calibrate SAMPLES on the float model does)")
    return counts


def to_int8(model: onnx.ModelProto, samples: list[np.ndarray], input_names: list[str]) -> onnx.ModelProto:
    """Q/DQ network calibrated (min/max) on ``samples`` (leading axis N; the network has batch 1)."""
    from kiln.calibrate.int8 import _quiet
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(samples[0]):
                return None
            feed = {name: np.ascontiguousarray(x[self.i:self.i + 1]) for name, x in zip(input_names, samples)}
            self.i += 1
            return feed

    with tempfile.TemporaryDirectory(prefix="kiln-trt-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        try:
            _quiet(quantize_static, str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=QUANTIZED_OPS, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "QuantizeBias": False,  # TensorRT's DQ takes int8, not int32
                                           # Q/DQ on inputs only, as TensorRT places them
                                           "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS})
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises many types
            raise KilnError(f"int8 calibration failed (ONNX Runtime quantize_static): {exc}") from None
        return onnx.load(str(dst))
