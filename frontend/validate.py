"""Checks on a user's ONNX protobuf before anything trusts it (the frontend runs these first).

A model file is untrusted input: its tensors may declare dims that disagree with their data,
element types that do not exist, external-data files shorter than declared, names that are
not UTF-8, or sizes no machine can hold. numpy, onnx and onnx_ir then fail deep inside with
a traceback, or allocate what the machine does not have. Every such problem here is one
KilnError naming the tensor, node or value and the file:

* ``validate_proto``: every tensor (initializers, sparse initializers, Constant/attribute
  tensors, in subgraphs too) has a known element type, non-negative dims, and exactly the
  data its dims declare (raw_data length, typed-field length, external-data range within
  the file); every declared type is a known one; every string is UTF-8; no initializer or
  graph input is larger than ``tensor_byte_limit()``. Run it before external data is read.
* ``check_value_sizes``: after shape inference, no value of the graph (an intermediate
  such as ConstantOfShape/Expand to 100000 x 100000) is larger than the limit either, so a
  compile is refused before a backend or ``kiln run`` tries to allocate it.

The limit is a quarter of the memory available now, at most 4 GiB; ``KILN_MAX_TENSOR_BYTES``
overrides it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.descriptor import FieldDescriptor

from kiln.annotations import is_op
from kiln.errors import KilnError

LIMIT_ENV = "KILN_MAX_TENSOR_BYTES"
MAX_LIMIT = 4 << 30
DataType = onnx.TensorProto.DataType
KNOWN_TYPES = {v for v in DataType.values() if v != onnx.TensorProto.UNDEFINED}
PACKED_4BIT = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
               if hasattr(onnx.TensorProto, n)}
TWO_PER_ELEMENT = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return MAX_LIMIT * 4


def tensor_byte_limit() -> int:
    """The largest tensor (bytes) a model may declare: min(available memory / 4, 4 GiB), or $KILN_MAX_TENSOR_BYTES."""
    env = os.environ.get(LIMIT_ENV)
    if env:
        try:
            return max(int(env), 1)
        except ValueError:
            raise KilnError(f"{LIMIT_ENV}={env!r} is not a number of bytes") from None
    return max(min(available_memory() // 4, MAX_LIMIT), 1 << 20)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def type_name(elem_type: int) -> str:
    return DataType.Name(elem_type) if elem_type in KNOWN_TYPES else str(elem_type)


def itemsize(elem_type: int) -> float:
    """Bytes per element (0.5 for the packed 4-bit types; strings count as 8)."""
    if elem_type in PACKED_4BIT:
        return 0.5
    if elem_type == onnx.TensorProto.STRING:
        return 8
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def check_size(dims, elem_type: int, what: str, limit: int | None = None, shown=None) -> int:
    """Element count of ``dims``; a KilnError when a dim is negative or the tensor exceeds the limit.
    ``shown``: the dims as the message prints them (symbolic ones by name)."""
    dims = [int(d) for d in dims]
    if any(d < 0 for d in dims):
        raise KilnError(f"{what} has a negative dimension {dims}")
    count = math.prod(dims)
    limit = tensor_byte_limit() if limit is None else limit
    nbytes = math.ceil(count * itemsize(elem_type))
    if nbytes > limit:
        shown = dims if shown is None else "[" + ", ".join(map(str, shown)) + "]"
        raise KilnError(f"{what} is too large: {shown} {type_name(elem_type)} = {_size(nbytes)}, more than the "
                        f"{_size(limit)} Kiln allows on this machine (a quarter of the available memory, at most "
                        f"4 GiB; set {LIMIT_ENV} to change it)")
    return count


def check_tensor(t: onnx.TensorProto, what: str, base_dir: Path | None, limit: int) -> None:
    """A tensor's element type, dims and data agree (see the module docstring)."""
    if t.data_type not in KNOWN_TYPES:
        raise KilnError(f"{what} has an unknown element type {t.data_type}")
    count = check_size(t.dims, t.data_type, what, limit)
    if t.HasField("segment"):
        raise KilnError(f"{what} is a segment of a tensor (TensorProto.segment); Kiln needs whole tensors")
    packed = t.data_type in PACKED_4BIT
    expected_bytes = (count + 1) // 2 if packed else count * int(itemsize(t.data_type))
    if t.data_location == onnx.TensorProto.EXTERNAL:
        _check_external(t, what, base_dir, expected_bytes)
        return
    if t.HasField("raw_data"):
        if t.data_type == onnx.TensorProto.STRING:
            raise KilnError(f"{what}: a STRING tensor cannot hold raw_data")
        if len(t.raw_data) != expected_bytes:
            raise KilnError(f"{what}: raw_data holds {len(t.raw_data)} bytes, its dims {list(t.dims)} "
                            f"{type_name(t.data_type)} need {expected_bytes}")
        return
    field = onnx.helper.tensor_dtype_to_field(t.data_type)
    stray = [f for f in TYPED_FIELDS if f != field and len(getattr(t, f))]
    if stray:
        raise KilnError(f"{what}: {type_name(t.data_type)} data stored in {stray[0]} (it belongs in {field})")
    per = 2 if t.data_type in TWO_PER_ELEMENT else 1
    expected = (count + 1) // 2 if packed else count * per
    if len(getattr(t, field)) != expected:
        raise KilnError(f"{what}: {field} holds {len(getattr(t, field))} values, its dims {list(t.dims)} need "
                        f"{expected}")


def _check_external(t: onnx.TensorProto, what: str, base_dir: Path | None, expected: int) -> None:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", expected))
    except ValueError:
        raise KilnError(f"{what}: external data offset/length are not integers ({info})") from None
    if length != expected or offset < 0:
        raise KilnError(f"{what}: external data declares {length} bytes at offset {offset}, its dims "
                        f"{list(t.dims)} {type_name(t.data_type)} need {expected}")
    if base_dir is None:
        return  # a ModelProto in memory: onnx reads nothing, the checker reports it
    path = Path(base_dir) / location
    if not location or Path(location).is_absolute() or ".." in Path(location).parts:
        raise KilnError(f"{what}: external data location {location!r} must be a relative path beside the model")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise KilnError(f"{what}: cannot read its external data file {location} "
                        f"({exc.strerror or exc})") from None
    if offset + length > size:
        raise KilnError(f"{what}: its external data file {location} holds {size} bytes, the tensor needs "
                        f"{length} at offset {offset}")


def check_type(tp: onnx.TypeProto, what: str, limit: int | None) -> None:
    """A declared type is a known one; with ``limit`` (graph inputs) its static size fits it."""
    which = tp.WhichOneof("value")
    if which == "tensor_type" or which == "sparse_tensor_type":
        tt = getattr(tp, which)
        if tt.elem_type not in KNOWN_TYPES and (tt.elem_type != 0 or limit is not None):
            raise KilnError(f"{what} has an unknown element type {tt.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]  # symbolic: batch 1
        shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            raise KilnError(f"{what} has a negative dimension {shown}")
        if limit is not None and tt.elem_type in KNOWN_TYPES:
            check_size(dims, tt.elem_type, what, limit, shown)
    elif which == "sequence_type":
        check_type(tp.sequence_type.elem_type, what, None)
    elif which == "optional_type":
        check_type(tp.optional_type.elem_type, what, None)
    elif which == "map_type":
        check_type(tp.map_type.value_type, what, None)


def check_strings(message, where: str = "model") -> None:
    """Every string field holds UTF-8 (upb hands back ``bytes`` for one that does not)."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if field.is_repeated else [value]
            for k, item in enumerate(items):
                label = getattr(item, "name", "") if hasattr(item, "name") else ""
                check_strings(item, f"{where}.{field.name}[{label if isinstance(label, str) and label else k}]")
        elif field.type == FieldDescriptor.TYPE_STRING:
            items = value if field.is_repeated else [value]
            for item in items:
                if not isinstance(item, str):
                    raise KilnError(f"{where}.{field.name} is not valid UTF-8 text ({bytes(item)[:40]!r}); "
                                    "ONNX names and strings must be UTF-8")


def _check_graph(graph: onnx.GraphProto, where: str, base_dir: Path | None, limit: int) -> None:
    for t in graph.initializer:
        check_tensor(t, f"{where}initializer {t.name!r}", base_dir, limit)
    for st in graph.sparse_initializer:
        check_tensor(st.values, f"{where}sparse initializer {st.values.name!r}", base_dir, limit)
        check_tensor(st.indices, f"{where}sparse initializer {st.values.name!r} indices", base_dir, limit)
    initializers = {t.name for t in graph.initializer}
    for v in graph.input:
        check_type(v.type, f"{where}graph input {v.name!r}", None if v.name in initializers else limit)
    for kind, values in (("graph output", graph.output), ("value_info", graph.value_info)):
        for v in values:
            check_type(v.type, f"{where}{kind} {v.name!r}", None)
    for node in graph.node:
        label = f"{where}{node.op_type} node {node.name!r}"
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR or a.HasField("t"):
                check_tensor(a.t, f"attribute {a.name!r} of {label}", base_dir, limit)
            for k, t in enumerate(a.tensors):
                check_tensor(t, f"attribute {a.name!r}[{k}] of {label}", base_dir, limit)
            if a.HasField("sparse_tensor"):
                check_tensor(a.sparse_tensor.values, f"attribute {a.name!r} of {label}", base_dir, limit)
            if a.HasField("g"):
                _check_graph(a.g, f"{label} subgraph {a.name!r}: ", base_dir, limit)
            for g in a.graphs:
                _check_graph(g, f"{label} subgraph {a.name!r}: ", base_dir, limit)


def validate_proto(proto: onnx.ModelProto, source: str, base_dir: Path | None = None) -> None:
    """Everything in the module docstring's first list; ``base_dir``: where external data lives."""
    try:
        check_strings(proto)
    except KilnError as exc:
        raise KilnError(f"{source}: {exc}") from None
    limit = tensor_byte_limit()
    try:
        _check_graph(proto.graph, "", base_dir, limit)
        for f in proto.functions:
            for node in f.node:
                for a in node.attribute:
                    if a.HasField("t"):
                        check_tensor(a.t, f"attribute {a.name!r} of {node.op_type} node {node.name!r} in function "
                                     f"{f.name!r}", base_dir, limit)
    except KilnError as exc:
        raise KilnError(f"{source}: {exc}") from None


def check_value_sizes(model, source: str) -> None:
    """No value of an onnx_ir model (static shape known) is larger than the tensor limit."""
    limit = tensor_byte_limit()
    values = list(model.graph.inputs) + [o for node in model.graph for o in node.outputs]
    for v in values:
        if v.shape is None or v.dtype is None:
            continue
        dims = [d for d in v.shape if isinstance(d, int)]
        if len(dims) != len(v.shape):
            continue
        producer = v.producer()
        what = f"tensor {v.name!r}" + (f" (output of {producer.op_type} node {producer.name!r})" if producer else "")
        try:
            check_size(dims, v.dtype.value, what, limit)
        except KilnError as exc:
            raise KilnError(f"{source}: {exc}") from None


def check_inferred_sizes(proto: onnx.ModelProto, source: str) -> None:
    """After ONNX shape inference: no value_info or graph output is larger than the tensor limit."""
    limit = tensor_byte_limit()
    producers = {o: n for n in proto.graph.node for o in n.output}
    for v in list(proto.graph.value_info) + list(proto.graph.output):
        node = producers.get(v.name)
        what = f"tensor {v.name!r}" + (f" (output of {node.op_type} node {node.name!r})" if node else "")
        try:
            check_type(v.type, what, limit)
        except KilnError as exc:
            raise KilnError(f"{source}: {exc}") from None


# ops whose ``axis`` attribute indexes their first input: in [-r, r-1] (Flatten: [-r, r])
AXIS_OPS = {"Softmax", "LogSoftmax", "Hardmax", "Gather", "GatherElements", "Concat", "Split", "LayerNormalization",
            "QuantizeLinear", "DequantizeLinear", "ArgMax", "ArgMin", "TopK", "Flatten"}


def check_axes(model, source: str) -> None:
    """Each ``axis`` attribute of the ops in AXIS_OPS is within its input's rank (ONNX shape
    inference does not check every op's, and the backends index shapes with it)."""
    for node in model.graph:
        if not is_op(node, *AXIS_OPS) or "axis" not in node.attributes:
            continue
        x = node.inputs[0] if node.inputs else None
        if x is None or x.shape is None:
            continue
        attr = node.attributes["axis"]
        if attr.type != ir.AttributeType.INT:
            raise KilnError(f"{source}: {node.op_type} node {node.name!r}: attribute 'axis' must be an integer")
        axis, rank = attr.value, len(x.shape)
        top = rank if node.op_type == "Flatten" else rank - 1
        if not -rank <= axis <= top:
            raise KilnError(f"{source}: {node.op_type} node {node.name!r}: axis {axis} is out of range for its "
                            f"rank-{rank} input {x.name!r} (allowed {-rank}..{top})")


NORM_PARAMS = {"BatchNormalization": ("scale", "B", "input_mean", "input_var"), "InstanceNormalization": ("scale", "B"),
               "GroupNormalization": ("scale", "bias")}


def check_norm_params(model, source: str) -> None:
    """The per-channel parameters of BatchNormalization / InstanceNormalization (and
    GroupNormalization's, per channel or per group) are 1-D with one value per channel of
    axis 1 of the input. ONNX shape inference does not check this; ONNX Runtime refuses it
    only when it runs, and a backend that broadcasts would compute wrong numbers silently."""
    for node in model.graph:
        if not is_op(node, *NORM_PARAMS) or not node.inputs or node.inputs[0] is None:
            continue
        x = node.inputs[0]
        if x.shape is None or len(x.shape) < 2 or not isinstance(x.shape[1], int):
            continue
        channels = x.shape[1]
        allowed = {channels}
        if node.op_type == "GroupNormalization" and "num_groups" in node.attributes:
            groups = node.attributes["num_groups"].value
            if not isinstance(groups, int) or groups <= 0 or channels % groups:  # ONNX: a divisor of the channels
                raise KilnError(f"{source}: GroupNormalization node {node.name!r}: num_groups={groups} does not divide "
                                f"the {channels} channels of its input {x.name!r}")
            allowed.add(groups)
        for name, value in zip(NORM_PARAMS[node.op_type], node.inputs[1:]):
            if value is None or value.shape is None:
                continue
            dims = list(value.shape)
            if len(dims) != 1 or dims[0] not in allowed:
                raise KilnError(f"{source}: {node.op_type} node {node.name!r}: its {name} {value.name!r} has shape "
                                f"{dims}, but its input {x.name!r} of shape {list(x.shape)} has {channels} channel(s) "
                                "on axis 1: the parameters must hold one value per channel (is the model exported "
                                "with the channel axis where ONNX expects it?)")


QONNX_QUANT_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")


def check_quantizer_params(proto: onnx.ModelProto, source: str) -> None:
    """QONNX Quant/BipolarQuant parameters that are constants are finite, and the zero point and
    bit width fit an integer attribute (frontend/quantizers.py turns them into ``kiln.Quantize``
    attributes; a zero point of 1e38 cannot be saved)."""
    consts = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    consts[node.output[0]] = a.t
    for node in proto.graph.node:
        if node.domain not in QONNX_QUANT_DOMAINS or node.op_type not in ("Quant", "BipolarQuant"):
            continue
        for index, what in ((1, "scale"), (2, "zero point"), (3, "bit width")):
            tensor = consts.get(node.input[index]) if index < len(node.input) else None
            if tensor is None:
                continue
            values = np.asarray(onnx.numpy_helper.to_array(tensor), dtype=np.float64)
            if not np.all(np.isfinite(values)):
                raise KilnError(f"{source}: {node.op_type} node {node.name!r}: its {what} is not finite")
            if index > 1 and values.size and np.max(np.abs(values)) >= 2 ** 31:
                raise KilnError(f"{source}: {node.op_type} node {node.name!r}: its {what} {np.max(np.abs(values)):g} "
                                "is out of range")
