"""ONNX frontend: read, check, fix the batch axis, infer shapes, fold constants.

Exports from ``torch.onnx`` carry Shape/Gather/Concat chains around Reshape and a
symbolic batch axis. We pin the batch axis to 1 (the HLS design computes one sample
per call), run ONNX shape inference, and let onnxscript's constant folder collapse
all shape arithmetic, so later passes see plain static shapes and constant weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxscript.optimizer
from google.protobuf.message import DecodeError
from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass

from kiln.errors import KilnError
from kiln.frontend.fixed_batch import relax_fixed_batch
from kiln.frontend.qonnx_compat import normalise as normalise_qonnx
from kiln.frontend.quantizers import QuantInfo, extract_quantizers, mark_activation_quantizers, reference_model
from kiln.frontend.shape_fill import infer_shapes
from kiln.frontend.validate import (check_axes, check_inferred_sizes, check_norm_params, check_quantizer_params,
                                    check_value_sizes,
                                    tensor_byte_limit, validate_proto)
from kiln.reference import ort_session, ort_smoke_run
from kiln.names import name_layers


@dataclass
class LoadedModel:
    model: ir.Model            # the IR, static shapes, batch axis pinned to 1
    original: onnx.ModelProto  # the ONNX Runtime reference: the user's model (QONNX quantizers as standard ops)
    batch_axis: dict[str, bool]  # per graph input: dim 0 is a batch axis (symbolic or 1)
    source: str                # file name or "<ModelProto>", for messages
    quant: QuantInfo = None    # quantizers found in the model (see frontend/quantizers.py)


def read_onnx(src) -> tuple[onnx.ModelProto, str]:
    """(ModelProto, source label) of an ONNX file or ModelProto; a missing, unparsable or empty file,
    or one that fails ``validate_proto`` (frontend/validate.py), is a KilnError."""
    if isinstance(src, onnx.ModelProto):
        validate_proto(src, "<ModelProto>")
        return src, "<ModelProto>"
    path = Path(src)
    if not path.is_file():
        raise KilnError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise KilnError(f"{path}: not a valid ONNX file (protobuf parse failed: {exc})") from None
    except OSError as exc:
        raise KilnError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    validate_proto(proto, str(path), path.parent)  # before its external data (.onnx.data) is read
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except (OSError, onnx.checker.ValidationError) as exc:  # its external-data file is missing or unreadable
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
        raise KilnError(f"{path}: cannot read the model's external data ({detail})") from None
    if not proto.graph.node and not proto.graph.output:
        raise KilnError(f"{path}: not a valid ONNX file (no graph found; is it truncated or another format?)")
    return proto, str(path)


def _drop_initializer_inputs(proto: onnx.ModelProto) -> None:
    """Older exporters (IR version < 4 style, Brevitas) also list initializers as graph inputs;
    Kiln compiles them as the constants they are."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != len(proto.graph.input):
        del proto.graph.input[:]
        proto.graph.input.extend(inputs)


def _is_static(v: onnx.ValueInfoProto) -> bool:
    tt = v.type.tensor_type if v.type.HasField("tensor_type") else None
    return tt is not None and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim)


def _drop_stale_shapes(proto: onnx.ModelProto) -> None:
    """Shape inference, not the exporter's annotations, decides shapes: value_info entries that
    are not fully static (Brevitas writes symbolic dims such as ``Quant_output_0_dim_0`` where
    inference gives a number) are dropped, and a graph output's symbolic dims (its batch axis
    too: the inputs' pinned batch of 1 decides it) become unknown, so shape inference fills in
    what it computes instead of merging into the less specific declaration. Static entries stay; one that conflicts is refused by
    strict shape inference and the model is inferred again without any value_info."""
    keep = [v for v in proto.graph.value_info if _is_static(v)]
    if len(keep) != len(proto.graph.value_info):
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(keep)
    for out in proto.graph.output:
        if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
            for d in out.type.tensor_type.shape.dim:
                if d.HasField("dim_param"):
                    d.Clear()


def _infer_shapes(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """ONNX shape inference (strict; plus the GroupNormalization outputs it misses, frontend/shape_fill.py);
    a static value_info that conflicts with it is dropped, not trusted."""
    errors = (onnx.shape_inference.InferenceError, onnx.onnx_cpp2py_export.checker.ValidationError)
    try:
        return infer_shapes(proto)
    except errors as exc:
        if not proto.graph.value_info:
            raise KilnError(f"{source}: shape inference failed: {str(exc).strip().splitlines()[0]}") from None
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.graph.value_info[:]
    try:
        return infer_shapes(bare)
    except errors as exc:
        raise KilnError(f"{source}: shape inference failed: {str(exc).strip().splitlines()[0]}") from None


def _pin_batch_axis(proto: onnx.ModelProto, source: str) -> dict[str, bool]:
    initializers = {t.name for t in proto.graph.initializer}
    batch_axis = {}
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        if not inp.type.HasField("tensor_type"):
            raise KilnError(f"{source}: input {inp.name!r} is not a tensor")
        dims = inp.type.tensor_type.shape.dim
        if not inp.type.tensor_type.HasField("shape"):
            raise KilnError(f"{source}: input {inp.name!r} has no shape; export with a static shape")
        if len(dims) == 0:
            batch_axis[inp.name] = False
            continue
        first = dims[0]
        batch_axis[inp.name] = (not first.HasField("dim_value")) or first.dim_value == 1
        if not first.HasField("dim_value"):
            first.Clear()
            first.dim_value = 1
        unknown = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if unknown:
            raise KilnError(f"{source}: input {inp.name!r} has symbolic dimension(s) at axis {unknown}; "
                            "only the batch axis (axis 0) may be symbolic")
    return batch_axis


def _with_layer_names(proto: onnx.ModelProto, copy: bool) -> onnx.ModelProto:
    """Every node named once, here, by ``kiln.names.layer_name`` (unnamed ones ``<op>_<index>``
    in the user's graph), so configs, reports, traces and overflow rows spell layers alike.
    A ModelProto the caller handed in is copied, not renamed in place."""
    nodes = proto.graph.node
    if all(n.name for n in nodes) and len({n.name for n in nodes}) == len(nodes):
        return proto
    if copy:
        named = onnx.ModelProto()
        named.CopyFrom(proto)
        proto = named
    name_layers(proto.graph)
    return proto


def load_onnx(src, quantizers: bool = True) -> LoadedModel:
    """Load an ONNX file or ModelProto into the IR. Every problem is a KilnError.

    ``quantizers=True`` (the HLS backend) turns quantizer nodes into Kiln's annotations
    (frontend/quantizers.py); ``False`` (TVM) keeps Q/DQ nodes as ONNX ops and QONNX
    quantizers as their standard-op expansion. The checks of frontend/validate.py run first,
    and ONNX Runtime must be able to load the reference (csim/run compare with it).
    A model that still makes a library raise while it is read is reported as a KilnError
    naming the file and the exception (the last resort; known classes are checked first).
    """
    original, source = read_onnx(src)
    original = _with_layer_names(original, copy=source == "<ModelProto>")
    try:
        return _load(original, source, quantizers)
    except KilnError:
        raise
    except MemoryError:
        raise KilnError(f"{source}: ran out of memory while loading the model") from None
    except Exception as exc:  # noqa: BLE001 - a malformed model met by onnx/onnx_ir/onnxscript
        detail = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
        raise KilnError(f"{source}: cannot load the model ({type(exc).__name__}: {detail})") from None


def _load(original: onnx.ModelProto, source: str, quantizers: bool) -> LoadedModel:
    original = normalise_qonnx(original, source)
    try:
        onnx.checker.check_model(original)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise KilnError(f"{source}: ONNX checker rejected the model: {first}") from None
    check_quantizer_params(original, source)
    original = relax_fixed_batch(original, source)
    reference = reference_model(original)
    session = ort_session(reference, f"{source}: ONNX Runtime cannot load the model", optimize=False)
    proto, quant = extract_quantizers(original, source) if quantizers else (reference, QuantInfo())
    if proto is original:
        proto = onnx.ModelProto()
        proto.CopyFrom(original)
    _drop_initializer_inputs(proto)
    batch_axis = _pin_batch_axis(proto, source)
    _drop_stale_shapes(proto)
    proto = _infer_shapes(proto, source)
    check_inferred_sizes(proto, source)
    model = ir.serde.deserialize_model(proto)
    # onnx_shape_inference: re-infer each node as its inputs become constant. ONNX's own
    # data propagation does not reach every shape chain (e.g. Reshape-13 fed by
    # Shape->Gather->Unsqueeze->Concat from torch's x.reshape(x.shape[0], -1)), so without it
    # such a Reshape keeps an unknown output shape even after its shape input is folded.
    # should_fold: everything computable at compile time is folded, ConstantOfShape included
    # (onnxscript keeps it by default to keep files small; torch's expand(x.shape[0], ...)
    # builds its target shape with one).
    fold_limit = min(1 << 30, tensor_byte_limit() // 8)  # elements; a folded tensor is held in memory
    onnxscript.optimizer.fold_constants(model, onnx_shape_inference=True, input_size_limit=fold_limit,
                                        output_size_limit=fold_limit, should_fold=lambda node: True)
    check_value_sizes(model, source)
    check_axes(model, source)
    check_norm_params(model, source)
    ort_smoke_run(session, f"{source}: ONNX Runtime refuses to run the model")  # what the checks above miss
    if quant:
        mark_activation_quantizers(model, quant, source)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    RemoveUnusedNodesPass()(model)
    return LoadedModel(model=model, original=reference, batch_axis=batch_axis, source=source, quant=quant)
