"""ONNX shape inference, plus the output shapes it leaves out for shape-preserving operators.

onnx 1.23's shape inference gives GroupNormalization (opset 21) no output type, and with it
everything downstream of it stays unshaped. Such an operator's output has its first input's
type and shape, so ``infer_shapes`` adds that as a value_info and infers again, until every
listed operator's output is typed (one more pass per layer of them, at most one per node);
then the strict inference the loader always ran checks the whole graph.
"""

from __future__ import annotations

import onnx

# operators whose output 0 has the type and shape of input 0, when shape inference misses it
SHAPE_PRESERVING = frozenset({"GroupNormalization"})


def _known_types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    g = proto.graph
    known = {v.name: v.type for v in (*g.input, *g.value_info, *g.output) if v.type.HasField("tensor_type")
             and v.type.tensor_type.HasField("shape")}
    for init in g.initializer:
        known.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return known


def _is_full(t: onnx.TypeProto | None) -> bool:
    return t is not None and all(d.HasField("dim_value") or d.HasField("dim_param") for d in t.tensor_type.shape.dim)


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes`` (strict, with data propagation), with the outputs of
    SHAPE_PRESERVING nodes typed from their inputs where it leaves them out."""
    for _ in range(len(proto.graph.node) + 1):
        # not strict while filling: the nodes after an untyped output would fail "input has no type"
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)
        known = _known_types(proto)
        added = False
        for node in proto.graph.node:
            if node.op_type not in SHAPE_PRESERVING or node.domain not in ("", "ai.onnx") or not node.output:
                continue
            out, src = node.output[0], known.get(node.input[0]) if node.input else None
            if out and not _is_full(known.get(out)) and _is_full(src):
                info = proto.graph.value_info.add()
                info.name = out
                info.type.CopyFrom(src)
                known[out] = src
                added = True
        if not added:
            break
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
