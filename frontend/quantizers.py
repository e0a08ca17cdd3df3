"""Quantizer nodes in an ONNX model -> Kiln's quantization annotations.

Recognised (see kiln/quant.py for the arithmetic they share):

* QONNX ``Quant`` / ``BipolarQuant`` (domain ``qonnx.custom_op.general``, as Brevitas,
  FINN and Kiln's own QKeras converter write them);
* ONNX ``QuantizeLinear`` -> ``DequantizeLinear`` pairs on activations and
  ``DequantizeLinear`` on constant integer weights (ONNX Runtime's ``quantize_static``
  QDQ format), per-tensor and per-channel.

This runs on the ModelProto *before* shape inference and constant folding, because
folding would otherwise turn a quantized weight into an anonymous float constant:

* a quantizer whose input is a constant is evaluated here; the result replaces it as an
  initializer and its fixed-point type is recorded (``QuantInfo.weights``);
* an activation quantizer is replaced by a marker node and recorded
  (``QuantInfo.activations``); ``mark_activation_quantizers`` turns the markers into
  ``kiln.Quantize`` nodes once the IR exists. The marker is a ``Neg``: shape inference
  understands it, and onnxscript's constant folder neither folds it (its input is not
  constant) nor looks through it (it does look through ``Identity``, bypassing it).

``reference_model`` rewrites QONNX quantizers into standard ONNX ops (Div, Round, Clip,
Sub, Mul) with identical semantics, so ONNX Runtime can run the quantized graph as the
reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper

from kiln.annotations import QUANT_SPECS, is_op, is_standard, set_precision, set_quant_note
from kiln.errors import KilnError
from kiln.ir_utils import KILN_DOMAIN
from kiln.precision import FixedType
from kiln.quant import QuantSpec, weight_type

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
MARKER_PREFIX = "kiln_quant_marker"
MARKER_OP = "Neg"
INT_TYPES = {  # ONNX integer element type -> (bits, signed)
    onnx.TensorProto.INT8: (8, True), onnx.TensorProto.UINT8: (8, False),
    onnx.TensorProto.INT16: (16, True), onnx.TensorProto.UINT16: (16, False),
    onnx.TensorProto.INT32: (32, True), onnx.TensorProto.UINT32: (32, False),
    onnx.TensorProto.INT4: (4, True), onnx.TensorProto.UINT4: (4, False),
}


@dataclass
class WeightQuant:
    precision: FixedType
    note: str      # how the quantizer reached the hardware (exact / folded), for the report
    node: str      # the quantizer node's name
    specs: list    # its QuantSpec(s), one per distinct scale (passes/weight_scale.py folds those)


@dataclass
class ActivationQuant:
    spec: QuantSpec
    node: str


@dataclass
class QuantInfo:
    weights: dict[str, WeightQuant] = field(default_factory=dict)          # initializer name ->
    activations: dict[str, ActivationQuant] = field(default_factory=dict)  # marker output name ->

    def __bool__(self) -> bool:
        return bool(self.weights or self.activations)


def is_qonnx(node: onnx.NodeProto, op: str) -> bool:
    return node.op_type == op and node.domain in QONNX_DOMAINS


class _Constants:
    """Initializers and Constant-node outputs of a graph, as numpy."""

    def __init__(self, graph: onnx.GraphProto):
        self.values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if is_op(node, "Constant"):
                for a in node.attribute:
                    if a.name == "value":
                        self.values[node.output[0]] = numpy_helper.to_array(a.t)

    def get(self, name: str):
        return self.values.get(name)

    def need(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
        name = node.input[index] if index < len(node.input) else ""
        value = self.values.get(name) if name else None
        if value is None:
            raise KilnError(f"{node.op_type} node {node.name!r}: its {what} must be a constant")
        return value


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _specs(node, scale: np.ndarray, zero_point: np.ndarray, **kw) -> list[QuantSpec]:
    """One QuantSpec per distinct (scale, zero point) of a possibly per-channel quantizer."""
    scale, zero_point = np.broadcast_arrays(np.asarray(scale, np.float64), np.asarray(zero_point, np.float64))
    pairs = sorted(set(zip(scale.reshape(-1).tolist(), zero_point.reshape(-1).tolist())))
    try:
        return [QuantSpec(scale=s, zero_point=int(z), **kw) for s, z in pairs]
    except KilnError as exc:
        raise KilnError(f"{node.op_type} node {node.name!r}: {exc}") from None


def _qonnx_params(node, consts: _Constants) -> tuple[np.ndarray, np.ndarray, dict]:
    """(scale, zero point, QuantSpec keywords) of a QONNX Quant or BipolarQuant node."""
    scale = consts.need(node, 1, "scale")
    if node.op_type == "BipolarQuant":
        return scale, np.zeros(1), {"bipolar": True, "bits": 1}
    zero_point = consts.need(node, 2, "zero point")
    bits = consts.need(node, 3, "bit width")
    if bits.size != 1 or float(bits.reshape(-1)[0]) != int(bits.reshape(-1)[0]):
        raise KilnError(f"Quant node {node.name!r}: bit width must be one integer, got {bits.reshape(-1)[:4]}")
    if np.any(zero_point != np.round(zero_point)):
        raise KilnError(f"Quant node {node.name!r}: non-integer zero point is not supported")
    rounding = _attr(node, "rounding_mode", "ROUND")
    rounding = (rounding.decode() if isinstance(rounding, bytes) else str(rounding)).upper()
    return scale, zero_point, {"bits": int(bits.reshape(-1)[0]), "signed": bool(_attr(node, "signed", 1)),
                               "narrow": bool(_attr(node, "narrow", 0)), "rounding": rounding}


def _dq_params(node, consts: _Constants, int_type: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(scale, zero point, QuantSpec keywords) of a (Quantize|Dequantize)Linear node."""
    if int_type not in INT_TYPES:
        raise KilnError(f"{node.op_type} node {node.name!r}: element type "
                        f"{onnx.TensorProto.DataType.Name(int_type)} is not supported (integer types only)")
    scale = consts.need(node, 1, "scale")
    zero_point = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if zero_point is None:
        raise KilnError(f"{node.op_type} node {node.name!r}: its zero point must be a constant")
    bits, signed = INT_TYPES[int_type]
    return scale, zero_point.astype(np.float64), {"bits": bits, "signed": signed}


def _per_axis(array: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Reshape a 1-D per-axis parameter so it broadcasts along ``axis`` of a rank-``rank`` tensor."""
    if array.size <= 1 or rank == 0:
        return array.reshape(())
    shape = [1] * rank
    shape[axis % rank] = array.size
    return array.reshape(shape)


def extract_quantizers(proto: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, QuantInfo]:
    """Fold constant quantizers and replace activation quantizers by markers (see module doc)."""
    graph = proto.graph
    info = QuantInfo()
    if not any(is_qonnx(n, "Quant") or is_qonnx(n, "BipolarQuant") or
               n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        return proto, info
    consts = _Constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    new_nodes, new_inits = [], []
    paired = set()  # outputs of DequantizeLinear nodes already taken with their QuantizeLinear
    elem_type = {t.name: t.data_type for t in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info):
        elem_type.setdefault(vi.name, vi.type.tensor_type.elem_type)

    absorbed: set[int] = set()  # Transpose nodes folded into the quantized constant they read
    outputs = {o.name for o in graph.output}

    def fold(node, values: np.ndarray, specs: list[QuantSpec]):
        values, name = values.astype(np.float32), node.output[0]
        users = consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == "Transpose" and name not in outputs:
            # Brevitas/PyTorch exports Quant(W) -> Transpose -> MatMul: transpose the quantized values here,
            # or the constant folder makes a new, untyped initializer and the weights fall back to the default type
            perm = _attr(users[0], "perm", None)
            values, name = values.transpose(perm if perm is not None else None), users[0].output[0]
            absorbed.add(id(users[0]))
        precision, note = weight_type(values.astype(np.float64), specs)
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(values), name))
        info.weights[name] = WeightQuant(precision, note, node.name, specs)

    def mark(node, x_name: str, spec: QuantSpec):
        new_nodes.append(helper.make_node(MARKER_OP, [x_name], [node.output[0]],
                                          name=f"{MARKER_PREFIX}_{len(info.activations)}"))
        info.activations[node.output[0]] = ActivationQuant(spec, node.name)

    for node in graph.node:
        if (node.op_type == "DequantizeLinear" and node.output[0] in paired) or id(node) in absorbed:
            continue
        if is_qonnx(node, "Quant") or is_qonnx(node, "BipolarQuant"):
            scale, zero_point, kw = _qonnx_params(node, consts)
            x = consts.get(node.input[0])
            specs = _specs(node, scale, zero_point, **kw)
            if x is not None:
                fold(node, QuantSpec(scale=1.0, **kw).apply(x, scale, zero_point), specs)
                continue
            if len(specs) != 1:
                raise KilnError(f"{node.op_type} node {node.name!r}: per-channel quantization of an activation "
                                "is not supported (only of constant weights)")
            mark(node, node.input[0], specs[0])
        elif is_op(node, "QuantizeLinear"):
            users = consumers.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users) or \
                    any(o.name == node.output[0] for o in graph.output):
                raise KilnError(f"QuantizeLinear node {node.name!r}: its output must feed only DequantizeLinear "
                                "nodes (Kiln takes Q/DQ pairs as quantizers; integer tensors are not supported)")
            zp_name = node.input[2] if len(node.input) > 2 else ""
            int_type = (elem_type.get(zp_name) if zp_name else None) or onnx.TensorProto.UINT8
            scale, zero_point, kw = _dq_params(node, consts, int_type)
            specs = _specs(node, scale, zero_point, **kw)
            if len(specs) != 1:
                raise KilnError(f"QuantizeLinear node {node.name!r}: per-axis quantization of an activation is not "
                                "supported")
            x = consts.get(node.input[0])
            for dq in users:
                d_scale, d_zp, _ = _dq_params(dq, consts, int_type)
                if not (np.allclose(d_scale, scale, rtol=0, atol=0) and np.array_equal(d_zp, zero_point)):
                    raise KilnError(f"DequantizeLinear node {dq.name!r}: scale/zero point differ from its "
                                    f"QuantizeLinear {node.name!r}")
                if x is not None:
                    fold(dq, specs[0].apply(x), specs)
                else:
                    mark(dq, node.input[0], specs[0])
                paired.add(dq.output[0])
        elif is_op(node, "DequantizeLinear"):
            q = consts.get(node.input[0])
            if q is None:
                raise KilnError(f"DequantizeLinear node {node.name!r}: its input must be a constant or come from a "
                                "QuantizeLinear node")
            int_type = elem_type.get(node.input[0]) or onnx.helper.np_dtype_to_tensor_dtype(q.dtype)
            scale, zero_point, kw = _dq_params(node, consts, int_type)
            axis = int(_attr(node, "axis", 1))
            s, z = _per_axis(scale.astype(np.float64), q.ndim, axis), _per_axis(zero_point, q.ndim, axis)
            fold(node, (q.astype(np.float64) - z) * s, _specs(node, scale, zero_point, **kw))
        else:
            new_nodes.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    out.graph.initializer.extend(new_inits)
    used = {name for n in new_nodes for name in n.input} | {o.name for o in out.graph.output}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    inputs = [i for i in out.graph.input if i.name in used or i.name not in consts.values]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    for opset in list(out.opset_import):
        if opset.domain in QONNX_DOMAINS:
            out.opset_import.remove(opset)
    return out, info


def mark_activation_quantizers(model: ir.Model, info: QuantInfo, source: str) -> None:
    """Turn the markers into ``kiln.Quantize`` nodes and tag quantized constants."""
    graph = model.graph
    found = set()
    for node in list(graph):
        out = node.outputs[0] if node.outputs else None
        if node.op_type != MARKER_OP or not node.name.startswith(MARKER_PREFIX) or out.name not in info.activations:
            continue
        q = info.activations[out.name]
        spec = q.spec
        attrs = [ir.AttrFloat32("scale", float(spec.scale)), ir.AttrInt64("zero_point", spec.zero_point),
                 ir.AttrInt64("bits", spec.bits), ir.AttrInt64("signed", int(spec.signed)),
                 ir.AttrInt64("narrow", int(spec.narrow)), ir.AttrString("rounding", spec.rounding),
                 ir.AttrInt64("bipolar", int(spec.bipolar))]
        name = out.name
        out.name = f"{name}__marker"
        new_out = ir.Value(name=name, shape=out.shape, type=out.type)
        quantize = ir.Node(KILN_DOMAIN, "Quantize", [node.inputs[0]], outputs=[new_out], attributes=attrs,
                           name=q.node or name)
        set_quant_note(quantize, spec.mapping())
        ir.convenience.replace_nodes_and_values(graph, node, [node], [quantize], [out], [new_out])
        new_out.name = name  # replace_nodes_and_values hands the old value's name over
        found.add(name)
    missing = sorted(set(info.activations) - found)
    if missing:
        raise KilnError(f"{source}: quantizer(s) {[info.activations[m].node for m in missing]} act on values that "
                        "other nodes compute from constants; Kiln folds quantizers only on initializers")
    model.opset_imports.setdefault(KILN_DOMAIN, 1)

    for value in graph.initializers.values():
        w = info.weights.get(value.name)
        if w is not None:
            set_precision(value, w.precision, "quant")
            set_quant_note(value, w.note)
            value.meta[QUANT_SPECS] = w.specs


def reference_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """QONNX quantizers rewritten into standard ONNX ops with the same semantics, so ONNX
    Runtime can run the quantized graph (models without QONNX nodes are returned as is)."""
    if not any(is_qonnx(n, "Quant") or is_qonnx(n, "BipolarQuant") for n in proto.graph.node):
        return proto
    consts = _Constants(proto.graph)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes = []
    for node in proto.graph.node:
        if not (is_qonnx(node, "Quant") or is_qonnx(node, "BipolarQuant")):
            nodes.append(node)
            continue
        scale, zero_point, kw = _qonnx_params(node, consts)
        p = f"{node.output[0]}__ref"
        x, s = node.input[0], node.input[1]
        if kw.get("bipolar"):
            zero = numpy_helper.from_array(np.zeros((), np.float32), f"{p}_zero")
            one = numpy_helper.from_array(np.ones((), np.float32), f"{p}_one")
            neg = numpy_helper.from_array(-np.ones((), np.float32), f"{p}_neg")
            out.graph.initializer.extend([zero, one, neg])
            nodes += [helper.make_node("GreaterOrEqual", [x, zero.name], [f"{p}_ge"]),
                      helper.make_node("Where", [f"{p}_ge", one.name, neg.name], [f"{p}_sign"]),
                      helper.make_node("Mul", [f"{p}_sign", s], [node.output[0]], name=node.name)]
            continue
        spec = QuantSpec(scale=1.0, bits=kw["bits"], signed=kw["signed"], narrow=kw["narrow"],
                         rounding=kw["rounding"])
        lo = numpy_helper.from_array(np.array(spec.q_min, np.float32), f"{p}_lo")
        hi = numpy_helper.from_array(np.array(spec.q_max, np.float32), f"{p}_hi")
        out.graph.initializer.extend([lo, hi])
        rounding = {"ROUND": [helper.make_node("Round", [f"{p}_t"], [f"{p}_r"])],
                    "FLOOR": [helper.make_node("Floor", [f"{p}_t"], [f"{p}_r"])],
                    "ROUND_TO_ZERO": [helper.make_node("Sign", [f"{p}_t"], [f"{p}_sg"]),
                                      helper.make_node("Abs", [f"{p}_t"], [f"{p}_ab"]),
                                      helper.make_node("Floor", [f"{p}_ab"], [f"{p}_fl"]),
                                      helper.make_node("Mul", [f"{p}_sg", f"{p}_fl"], [f"{p}_r"])]}[spec.rounding]
        nodes += [helper.make_node("Div", [x, s], [f"{p}_d"]),
                  helper.make_node("Add", [f"{p}_d", node.input[2]], [f"{p}_t"]),
                  *rounding,
                  helper.make_node("Clip", [f"{p}_r", lo.name, hi.name], [f"{p}_c"]),
                  helper.make_node("Sub", [f"{p}_c", node.input[2]], [f"{p}_z"]),
                  helper.make_node("Mul", [f"{p}_z", s], [node.output[0]], name=node.name)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    for opset in list(out.opset_import):
        if opset.domain in QONNX_DOMAINS:
            out.opset_import.remove(opset)
    if not any(is_standard(o) for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("", 13))
    if min(o.version for o in out.opset_import if is_standard(o)) < 11:
        raise KilnError("QONNX reference: the model's ONNX opset is below 11 (Clip with inputs and Round need 11)")
    return out
