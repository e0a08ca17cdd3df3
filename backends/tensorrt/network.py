"""engine.onnx: the network TensorRT's ONNX parser will read, and what Kiln checks numerically.

Kiln's ONNX frontend (frontend/onnx_loader.py) pins the batch axis to 1, infers shapes and
constant-folds with onnxscript's optimizer, so the network has static shapes and no shape
arithmetic. No Kiln fusion runs: operators stay standard ONNX in the forms TensorRT's parser
and its own fusions expect (LayerNormalization at opset 17, attention as MatMul-Softmax-MatMul,
which TensorRT fuses into its MHA kernels itself). The result is checked against TensorRT's
ONNX operator table (support.py), then the precision is written into it (precision.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from kiln.backends.tensorrt.precision import check_symmetric_qdq, has_qdq, to_fp16, to_int8
from kiln.backends.tensorrt.support import check_tensorrt_support
from kiln.errors import KilnError
from kiln.frontend import load_model

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class EngineNetwork:
    proto: onnx.ModelProto       # engine.onnx
    loaded: object               # kiln.frontend.LoadedModel (the reference model and the batch axes)
    precision: str
    notes: list[str] = field(default_factory=list)
    kept_fp32: list[str] = field(default_factory=list)     # fp16: op types left in float32
    qdq: dict | None = None                                 # int8: Q/DQ counts and where they came from


def engine_network(model, precision: str = "fp32", samples=None) -> EngineNetwork:
    """Build engine.onnx from an ONNX file or ModelProto; ``samples`` (list of arrays, leading
    axis N, one per input) calibrate ``int8`` when the model has no Q/DQ of its own."""
    if precision not in PRECISIONS:
        raise KilnError(f"--precision {precision!r}: the TensorRT backend takes fp32, fp16 or int8")
    loaded = load_model(model, quantizers=False)  # keep Q/DQ nodes as nodes: TensorRT reads them
    proto = ir.serde.serialize_model(loaded.model)
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto)
    check_tensorrt_support(proto, loaded.source)
    net = EngineNetwork(proto, loaded, precision)
    quantized = has_qdq(proto)
    if quantized and precision != "int8":
        raise KilnError(f"{loaded.source} has QuantizeLinear/DequantizeLinear nodes (an int8 network); compile it "
                        "with --precision int8 (its Q/DQ are kept)")
    if precision == "fp16":
        net.proto, net.kept_fp32 = to_fp16(proto)
        net.notes.append("float16 weights and activations; float32 kept for " + (", ".join(net.kept_fp32) or "none"))
    elif precision == "int8":
        if quantized:
            if samples is not None:
                raise KilnError(f"{loaded.source} already has Q/DQ nodes; --calibrate would re-quantize it: drop "
                                "--calibrate (its scales are kept) or give the float model")
            net.qdq = {**check_symmetric_qdq(proto, loaded.source), "from": "the model's own Q/DQ"}
        else:
            if samples is None:
                raise KilnError("--precision int8 needs --calibrate SAMPLES (.npy/.npz) to place Q/DQ, or a model "
                                "that has QuantizeLinear/DequantizeLinear nodes already")
            names = [v.name for v in proto.graph.input]
            net.proto = to_int8(proto, [np.asarray(x) for x in samples], names)
            net.qdq = {**check_symmetric_qdq(net.proto, loaded.source),
                       "from": f"calibrated by Kiln on {len(samples[0])} samples"}
        net.notes.append(f"int8 Q/DQ ({net.qdq['from']}): {net.qdq['QuantizeLinear']} QuantizeLinear, "
                         f"{net.qdq['DequantizeLinear']} DequantizeLinear")
    onnx.checker.check_model(net.proto)
    return net
