"""Quantized test models: ONNX Runtime's static int8 Q/DQ of a float model, and hand-written
QONNX MLPs covering the quantizer variants (rounding modes, narrow, unsigned with zero point,
BipolarQuant). Shared by the HLS, CoreML and TensorRT tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def quantize_static_qdq(src, dst, samples, per_channel):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx.load(src).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: samples[i:i + 1]} for i in range(len(samples))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def qonnx_mlp(act_quant: dict, weight_quant: dict, bipolar_weights: bool = False) -> onnx.ModelProto:
    """x[N,8] -> Quant(act) -> MatMul(Quant(W)) + b -> Quant(act) -> y: hand-written QONNX."""
    rng = np.random.default_rng(7)
    domain = "qonnx.custom_op.general"
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def quant(x, out, spec, name):
        if spec.get("bipolar"):
            nodes.append(helper.make_node("BipolarQuant", [x, const(f"{name}_s", spec["scale"])], [out], name=name,
                                          domain=domain))
        else:
            nodes.append(helper.make_node(
                "Quant", [x, const(f"{name}_s", spec["scale"]), const(f"{name}_z", spec.get("zero_point", 0.0)),
                          const(f"{name}_b", spec["bits"])], [out], name=name, domain=domain,
                signed=int(spec.get("signed", 1)), narrow=int(spec.get("narrow", 0)),
                rounding_mode=spec.get("rounding", "ROUND")))

    quant("x", "xq", act_quant, "in_quant")
    const("W", rng.normal(0, 0.4, (8, 6)))
    quant("W", "Wq", {"bipolar": True, "scale": 0.25} if bipolar_weights else weight_quant, "w_quant")
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["mm"], name="matmul"))
    nodes.append(helper.make_node("Add", ["mm", const("b", rng.normal(0, 0.1, 6))], ["pre"], name="bias"))
    quant("pre", "y", act_quant, "out_quant")
    graph = helper.make_graph(nodes, "qonnx_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid(domain, 1)])


QONNX_CASES = {
    "floor_narrow": ({"scale": 2 ** -4, "bits": 8, "narrow": 1, "rounding": "FLOOR"}, {"scale": 2 ** -3, "bits": 4}),
    "round_to_zero": ({"scale": 2 ** -5, "bits": 10, "rounding": "ROUND_TO_ZERO"}, {"scale": 2 ** -3, "bits": 4}),
    "unsigned_zero_point": ({"scale": 0.05, "bits": 6, "signed": 0, "zero_point": 20}, {"scale": 0.1, "bits": 3}),
    "bipolar_weights": ({"scale": 2 ** -4, "bits": 8}, None),
    # a float-scale input read by a Dense with power-of-two weights: the input's scale needs a
    # Mul of its own after the layer (FoldActivationScalePass without a weight-scale Mul to join)
    "float_act_po2_weights": ({"scale": 0.05, "bits": 8}, {"scale": 2 ** -3, "bits": 4}),
    "bipolar_activations": ({"bipolar": True, "scale": 0.5}, {"scale": 2 ** -3, "bits": 4}),
}
