"""QONNX / FINN / Brevitas export conventions -> a model that the ONNX checker and ONNX Runtime accept.

Files from the QONNX model zoo, Brevitas and FINN are read as published; this pass does
what qonnx's own ``ModelWrapper`` and custom-op registry do when they meet them:

* **Domains.** Brevitas writes its quantizers in domain ``onnx.brevitas``, FINN in
  ``finn.custom_op.general``; qonnx resolves both to ``qonnx.custom_op.general``
  (``qonnx.custom_op.registry._DOMAIN_ALIASES`` and FINN's alias). Nodes of those domains
  are moved there. Exporters often omit the opset import of a custom domain (the ONNX
  checker then refuses the model: "No opset import for domain ..."), or import one domain
  while the nodes use another; every custom domain that a node uses gets an import
  (version 1, qonnx's own default) and imports no node uses are dropped.
* **Channels-last wrappers.** ``qonnx.custom_op.channels_last.{Conv, MaxPool,
  BatchNormalization}`` are the standard op applied to NHWC data (qonnx's
  ``ChannelsLastWrappedOp.execute_node``): the data input (and a Conv's weight) is
  transposed to channels-first, the standard op runs, the output is transposed back. They
  are rewritten into exactly that Transpose -> op -> Transpose chain of standard ops.
* **Integer quantizer parameters.** Older QONNX files (tf2onnx/QKeras era) hold a
  Quant's zero point and bit width as INT64 constants; qonnx executes them with numpy,
  which casts. The QONNX spec types them float32, as ONNX Runtime needs for the reference
  expansion, so constant integer parameters become float32 initializers.
* **Old opsets.** QONNX's reference semantics (frontend/quantizers.py) need opsets 11 and 12
  (Clip with min/max inputs, GreaterOrEqual): quantized models below opset 13 (FINN/Brevitas
  exports at opset 9) are upgraded to 13 with
  ``onnx.version_converter`` with their custom nodes set aside during the conversion.
  Likewise opset < 7 models (PyTorch 0.3 era: Gemm-6 with ``broadcast``, which ONNX
  Runtime no longer implements) are upgraded to opset 7.

Other QONNX/FINN ops (Trunc, MultiThreshold, XnorPopcountMatMul, ...) have no ONNX Runtime
kernel to check them against and no Kiln layer: they are one KilnError listing every such node.
"""

from __future__ import annotations

import onnx
from onnx import helper

from kiln.errors import KilnError

QONNX_DOMAIN = "qonnx.custom_op.general"
DOMAIN_ALIASES = {"onnx.brevitas": QONNX_DOMAIN, "finn.custom_op.general": QONNX_DOMAIN, "finn": QONNX_DOMAIN}
CHANNELS_LAST = "qonnx.custom_op.channels_last"
CHANNELS_LAST_OPS = ("Conv", "MaxPool", "BatchNormalization")
STANDARD = ("", "ai.onnx")
QUANT_MIN_OPSET = 13  # Clip with min/max inputs (11) and GreaterOrEqual (12) in the QONNX reference expansion
ORT_MIN_OPSET = 7     # ONNX Runtime has no kernels for some opset-6 ops (Gemm-6)


def _to_channels_first(ndim: int) -> list[int]:
    perm = list(range(ndim))
    perm.insert(1, perm.pop(-1))
    return perm


def _to_channels_last(ndim: int) -> list[int]:
    perm = list(range(ndim))
    perm.append(perm.pop(1))
    return perm


def _ranks(proto: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value whose shape the file declares (inputs, value_info, initializers)."""
    ranks = {t.name: len(t.dims) for t in proto.graph.initializer}
    for v in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    return ranks


def _unwrap_channels_last(proto: onnx.ModelProto, source: str) -> list[onnx.NodeProto]:
    ranks = _ranks(proto)
    nodes = []
    for node in proto.graph.node:
        if node.domain != CHANNELS_LAST:
            nodes.append(node)
            continue
        if node.op_type not in CHANNELS_LAST_OPS or len(node.output) != 1:
            raise KilnError(f"{source}: {node.domain}.{node.op_type} node {node.name!r} is not a channels-last op "
                            f"qonnx defines ({', '.join(CHANNELS_LAST_OPS)} with one output)")
        ndim = ranks.get(node.input[0]) or ranks.get(node.output[0])
        if ndim is None:
            raise KilnError(f"{source}: {node.domain}.{node.op_type} node {node.name!r}: the rank of its input "
                            f"{node.input[0]!r} is not declared in the file")
        inner = onnx.NodeProto()
        inner.CopyFrom(node)
        inner.domain = ""
        transposed = 2 if node.op_type == "Conv" else 1  # qonnx: the data input, and a Conv's weight
        for i in range(min(transposed, len(node.input))):
            name = f"{node.output[0]}__nchw_in{i}"
            nodes.append(helper.make_node("Transpose", [node.input[i]], [name], perm=_to_channels_first(ndim),
                                          name=f"{node.name}__to_nchw{i}"))
            inner.input[i] = name
        inner.output[0] = f"{node.output[0]}__nchw"
        nodes += [inner, helper.make_node("Transpose", [inner.output[0]], [node.output[0]],
                                          perm=_to_channels_last(ndim), name=f"{node.name}__to_nhwc")]
    return nodes


def _float_quant_params(proto: onnx.ModelProto) -> bool:
    """Integer constant scale / zero point / bit width of Quant nodes -> float32 copies. True if any."""
    inits = {t.name: t for t in proto.graph.initializer}
    changed = False
    for node in proto.graph.node:
        if node.domain != QONNX_DOMAIN or node.op_type not in ("Quant", "BipolarQuant"):
            continue
        for i in range(1, len(node.input)):
            t = inits.get(node.input[i])
            if t is None or t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                continue
            name = f"{t.name}__float"
            if name not in inits:
                array = onnx.numpy_helper.to_array(t).astype("float32")
                inits[name] = onnx.numpy_helper.from_array(array, name)
                proto.graph.initializer.append(inits[name])
            node.input[i] = name
            changed = True
    return changed


def _has_int_quant_params(proto: onnx.ModelProto) -> bool:
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    return any(inits.get(name, onnx.TensorProto.FLOAT) not in floats for n in proto.graph.node
               if n.op_type in ("Quant", "BipolarQuant") and DOMAIN_ALIASES.get(n.domain, n.domain) == QONNX_DOMAIN
               for name in n.input[1:])


def _upgrade_opset(proto: onnx.ModelProto, target: int, source: str) -> onnx.ModelProto:
    """onnx.version_converter on the standard-domain part of the graph (custom nodes are
    swapped for Identity placeholders during the conversion, then put back)."""
    custom = {}
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    for k, node in enumerate(work.graph.node):
        if node.domain not in STANDARD:
            custom[k] = onnx.NodeProto()
            custom[k].CopyFrom(node)
            placeholder = helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)
            work.graph.node[k].CopyFrom(placeholder)
    kept = [o for o in work.opset_import if o.domain not in STANDARD]
    for o in kept:
        work.opset_import.remove(o)
    try:
        converted = onnx.version_converter.convert_version(work, target)
    except Exception as exc:  # noqa: BLE001 - onnx's C++ converter raises RuntimeError/ValidationError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KilnError(f"{source}: the model's ONNX opset must be upgraded to {target} and onnx's version "
                        f"converter failed: {detail}") from None
    by_name = {n.name: n for n in custom.values()}
    restored = set()
    for node in converted.graph.node:
        if node.op_type == "Identity" and node.name in by_name and node.name not in restored:
            node.CopyFrom(by_name[node.name])
            restored.add(node.name)
    if restored != set(by_name) or len(by_name) != len(custom):
        raise KilnError(f"{source}: the model's ONNX opset must be upgraded to {target}; onnx's version converter "
                        "lost track of its custom nodes (are their names unique?)")
    converted.opset_import.extend(kept)
    return converted


def _standard_opset(proto: onnx.ModelProto) -> int | None:
    versions = [o.version for o in proto.opset_import if o.domain in STANDARD]
    return min(versions) if versions else None


def _refuse_other_qonnx_ops(proto: onnx.ModelProto, source: str) -> None:
    other: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if DOMAIN_ALIASES.get(node.domain, node.domain) == QONNX_DOMAIN and node.op_type not in ("Quant", "BipolarQuant"):
            other.setdefault(node.op_type, []).append(node.name)
    if other:
        listed = "; ".join(f"{op}: {', '.join(repr(n) for n in names)}" for op, names in sorted(other.items()))
        raise KilnError(f"{source}: QONNX/FINN op(s) Kiln does not support (only Quant and BipolarQuant): {listed}")


def normalise(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The model with the conventions of the module docstring applied (``proto`` itself when
    none applies; otherwise a copy)."""
    _refuse_other_qonnx_ops(proto, source)
    domains = {n.domain for n in proto.graph.node}
    opset = _standard_opset(proto)
    has_quant = any(n.op_type in ("Quant", "BipolarQuant") and DOMAIN_ALIASES.get(n.domain, n.domain) == QONNX_DOMAIN
                    for n in proto.graph.node)
    imported = {o.domain for o in proto.opset_import}
    custom_used = {DOMAIN_ALIASES.get(d, d) for d in domains if d not in STANDARD} - {CHANNELS_LAST}
    needs = (domains & set(DOMAIN_ALIASES) or CHANNELS_LAST in domains or custom_used - imported
             or (opset is not None and opset < ORT_MIN_OPSET) or (has_quant and opset is not None and opset < QUANT_MIN_OPSET)
             or any(o.domain in DOMAIN_ALIASES for o in proto.opset_import) or _has_int_quant_params(proto))
    if not needs:
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for node in out.graph.node:
        node.domain = DOMAIN_ALIASES.get(node.domain, node.domain)
    if CHANNELS_LAST in domains:
        nodes = _unwrap_channels_last(out, source)
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    _float_quant_params(out)
    used = {n.domain for n in out.graph.node} - set(STANDARD)
    for o in list(out.opset_import):
        if o.domain not in STANDARD and o.domain not in used:
            out.opset_import.remove(o)
    for domain in sorted(used - {o.domain for o in out.opset_import}):
        out.opset_import.append(helper.make_opsetid(domain, 1))
    target = QUANT_MIN_OPSET if has_quant else ORT_MIN_OPSET
    if opset is not None and opset < target:
        out = _upgrade_opset(out, target, source)
    return out
