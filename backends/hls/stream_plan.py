"""Stream mode (``--io stream``): the layer graph as a dataflow of processes joined by FIFOs.

Takes the layers the emitters produced for io_parallel (writer.emit_layers) and decides, per
layer, how it runs in the dataflow:

* **native**: a streaming template of ``nnet/kiln_stream.h`` (Dense folded by its reuse
  factor, one row per read; element-wise activations, one packet per cycle; Conv, MaxPool /
  AveragePool with a line buffer, GlobalAveragePool with per-channel accumulators; one pixel
  per read); LayerNorm / Softmax over the last axis, GELU and element-wise math one row
  (packet) per read (stream_rows.py, ``nnet/kiln_stream_rows.h``).
* **buffered**: any other layer, or one whose input arrives in an order its template does not
  read: an adapter reads the whole tensor into a local array, calls the io_parallel kernel
  and writes its outputs to their streams. The compile output, the manifest and the report
  name these layers as "buffered".

Each tensor is one stream of packets (``kiln::packet<T, P>``) in *flat* order (row-major,
P = the last axis) or *pixel* order (P = channels, pixels in raster order: what a line buffer
reads). A tensor read by several layers goes through a clone process, one stream per reader.
FIFO depths come from the producer/consumer rates (stream_estimate.fifo_depth).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from kiln.backends.hls.reuse import divisors
from kiln.backends.hls.stream_attention import (ATTENTION_STREAM_TEMPLATES, ATTENTION_TEMPLATES, attention_folding,
                                                attention_kind)
from kiln.backends.hls.stream_rows import row_kind
from kiln.ir_utils import runtime_inputs, size, static_shape

PIXEL_TEMPLATES = {"kiln::conv2d": "kiln::conv2d_stream", "kiln::pool2d": "kiln::pool2d_stream",
                   "kiln::global_average_pool": "kiln::global_average_pool_stream",
                   "kiln::reduce": "kiln::reduce_spatial_stream"}
# per-channel accumulators over every pixel, one packet out (GlobalAveragePool, squeeze-excite's ReduceMean)
ACCUMULATE_TEMPLATES = ("kiln::global_average_pool_stream", "kiln::reduce_spatial_stream")
SPATIAL_REDUCE_OPS = ("ReduceMean", "ReduceSum")
DENSE_TEMPLATES = {"kiln::dense": "kiln::dense_stream", "kiln::dense_packed": "kiln::dense_packed_stream"}
ELEMENTWISE_TEMPLATES = {"kiln::activation": "kiln::activation_stream"}
BINARY_STREAM, CHANNEL_STREAM, COPY_STREAM = "kiln::binary_stream", "kiln::channel_binary_stream", "kiln::copy_stream"
PACKET_TEMPLATES = ("kiln::activation_stream", BINARY_STREAM, CHANNEL_STREAM, COPY_STREAM)  # one packet per F cycles
FOLDED_PACKET_TEMPLATES = ("kiln::activation_stream", BINARY_STREAM, CHANNEL_STREAM)  # F = packet_fold (copy: 1)
STREAMED_BINARY_OPS = {"Add", "Sub", "Mul", "Min", "Max"}
OUTPUT = "output"   # the consumer of a graph output: the top's output port


@dataclass
class Stream:
    """One FIFO: a tensor (or one reader's copy of it) from a producer to a consumer."""

    name: str           # C identifier (the port's own name for top-level inputs/outputs)
    var: str            # the value's variable (parallel mode's array)
    value: str          # the model's name of the value (manifest only)
    ctype: str          # element type
    size: int           # elements per sample
    packet: int         # elements per packet
    pixel: bool         # pixel order (else flat)
    producer: str       # layer name, "input" or "clone NAME"
    consumer: str       # layer name, "output", "clone NAME" or "drain NAME"
    port: bool = False  # a top-level argument
    depth: int = 2
    depth_reason: str = ""
    fold: int = 1       # pixel order: packets per pixel (C / fold channels each; stream_channels.py)

    @property
    def channels(self) -> int:
        """Elements of one pixel (pixel order) or of one row (flat)."""
        return self.packet * self.fold

    @property
    def pixels(self) -> int:
        return self.size // self.channels
    in_uram: bool = False  # a buffered layer's array of this tensor is in URAM (stream_estimate, memory.py)

    @property
    def n_packets(self) -> int:
        return self.size // self.packet

    @property
    def ptype(self) -> str:
        return f"kiln::packet<{self.ctype}, {self.packet}>"

    @property
    def stype(self) -> str:
        return f"kiln::stream<{self.ptype} >"

    def tensor_args(self) -> str:
        """Template arguments of write_tensor/read_tensor/stream_values."""
        fold = f", {self.fold}" if self.fold > 1 else ""   # the templates' default: 1
        return f"{self.ctype}, {self.size}, {self.packet}, {'true' if self.pixel else 'false'}{fold}"


@dataclass
class Process:
    """One DATAFLOW process of the top function, in call order."""

    kind: str                    # "native", "buffered", "clone", "drain"
    layer_name: str              # the layer (clones: the value they copy)
    op: str
    inputs: list = field(default_factory=list)    # Streams read
    outputs: list = field(default_factory=list)   # Streams written
    layer: object = None         # the writer's Layer (native, buffered)
    node: object = None          # its IR node
    template: str = ""           # native: the streaming template
    reason: str = ""             # buffered: why not native


@dataclass
class StreamPlan:
    processes: list
    streams: list                # every stream, ports included
    ports: dict                  # value var -> its port Stream
    row_configs: dict = field(default_factory=dict)  # layer name -> extra config struct (dense rows)

    @property
    def buffered(self) -> list[Process]:
        return [p for p in self.processes if p.kind == "buffered"]


def _used_outputs(node: ir.Node) -> list[ir.Value]:
    return [v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]


def _can_pixel(value: ir.Value) -> bool:
    shape = static_shape(value)
    return len(shape) >= 3 and shape[0] == 1


def _per_channel(value: ir.Value, out: ir.Value) -> bool:
    """[1, C, 1, ...] against a [1, C, H, ...] output: one value per channel."""
    vs, os_ = static_shape(value), static_shape(out)
    return (len(vs) == len(os_) >= 3 and vs[:2] == os_[:2] and all(d == 1 for d in vs[2:])
            and any(d != 1 for d in os_[2:]))


def _binary_kind(node: ir.Node) -> tuple[str, str]:
    """Add/Sub/Mul/Min/Max of two tensors: "same" (equal shapes: one packet of each per cycle)
    or "channel" (one operand per channel, squeeze-excite's scale)."""
    ins, outs = runtime_inputs(node), _used_outputs(node)
    if node.op_type not in STREAMED_BINARY_OPS or len(node.inputs) != 2 or len(ins) != 2 or len(outs) != 1:
        return "", "a binary op with a constant operand, the same tensor twice, or not Add/Sub/Mul/Min/Max"
    a, b = ins
    out = outs[0]
    if static_shape(a) == static_shape(b) == static_shape(out):
        return "same", BINARY_STREAM
    if _can_pixel(out) and (_per_channel(a, out) and static_shape(b) == static_shape(out)
                            or _per_channel(b, out) and static_shape(a) == static_shape(out)):
        return "channel", CHANNEL_STREAM
    return "", "a broadcast other than one value per channel of a [1, C, ...] tensor"


def _spatial_reduce(node: ir.Node) -> bool:
    """ReduceMean/ReduceSum over all axes after N, C (keepdims): per-channel sums of a pixel stream."""
    from kiln.backends.hls.layers.math import reduce_axes

    rank = len(static_shape(node.inputs[0]))
    return node.op_type in SPATIAL_REDUCE_OPS and reduce_axes(node, rank) == list(range(2, rank))


def _native_kind(layer, node: ir.Node) -> tuple[str, str]:
    """("pixel" | "flat" | "any" | "same" | "channel" | "copy", streaming template) where the
    layer has a streaming template, else ("", why not)."""
    if len(layer.calls) != 1:
        return "", "several kernel calls"
    call = layer.calls[0]
    if call.template in ATTENTION_TEMPLATES:   # token rows in, one row out per query (stream_attention.py)
        return attention_kind(layer, node)
    if call.template == "kiln::binary" and call.batch == 1:
        return _binary_kind(node)
    if call.template == "kiln::copy" and call.batch == 1 and len(runtime_inputs(node)) == 1:
        return "copy", COPY_STREAM
    rows = row_kind(call, node)   # LayerNorm / Softmax over the last axis, GELU, element-wise math
    if rows is not None and call.batch == 1 and len(runtime_inputs(node)) == 1 and len(_used_outputs(node)) == 1:
        return rows
    if call.template not in {**PIXEL_TEMPLATES, **DENSE_TEMPLATES, **ELEMENTWISE_TEMPLATES}:
        return "", f"no streaming template for {call.template} yet"
    ins, outs = runtime_inputs(node), _used_outputs(node)
    if len(ins) != 1 or len(outs) != 1:
        return "", "not one input and one output tensor"
    if call.batch != 1:
        return "", "a fixed batch axis above 1"
    if call.template in PIXEL_TEMPLATES:
        if not (_can_pixel(ins[0]) and _can_pixel(outs[0])):
            return "", "not a [1, C, ...] tensor"
        if call.template == "kiln::reduce" and not _spatial_reduce(node):
            return "", "a reduction other than ReduceMean/ReduceSum over every spatial axis (keepdims)"
        return "pixel", PIXEL_TEMPLATES[call.template]
    if call.template in DENSE_TEMPLATES:
        return "flat", DENSE_TEMPLATES[call.template]
    if call.template in ELEMENTWISE_TEMPLATES:
        return "any", ELEMENTWISE_TEMPLATES[call.template]
    return "", f"no streaming template for {call.template} yet"


def plan_streams(model: ir.Model, layers: list, ctx, row_config) -> StreamPlan:
    """``row_config(layer, n_in, n_out, rows)``: the per-row config struct of a streamed Dense
    (stream_render.dense_row_config), returned as (struct name, C++ text)."""
    nodes = list(model.graph)
    kinds = {id(n): _native_kind(layer, n) for n, layer in zip(nodes, layers)}
    consumers: dict[int, list] = {}
    for node in nodes:
        for v in runtime_inputs(node):
            consumers.setdefault(id(v), []).append(node)

    prefers: dict[int, bool] = {}

    def prefers_pixel(value: ir.Value) -> bool:
        """A value whose order its producer may choose: pixel if a reader streams pixels."""
        if id(value) not in prefers:
            want = False
            for user in consumers.get(id(value), []):
                kind = kinds[id(user)][0]
                outs = _used_outputs(user)
                if kind in ("pixel", "channel") or (kind in ("any", "same") and outs and prefers_pixel(outs[0])):
                    want = True
            prefers[id(value)] = want and _can_pixel(value)
        return prefers[id(value)]

    pixel: dict[int, bool] = {}
    for value in model.graph.inputs:
        pixel[id(value)] = prefers_pixel(value)
    mode: dict[int, str] = {}
    for node in nodes:
        kind = kinds[id(node)][0]
        ins, outs = runtime_inputs(node), _used_outputs(node)
        native = (kind == "any" and len(ins) == 1) or (kind == "pixel" and pixel[id(ins[0])]) or (
            kind == "flat" and not pixel[id(ins[0])]) or (
            kind == "same" and pixel[id(ins[0])] == pixel[id(ins[1])]) or (
            kind == "channel" and pixel[id(ins[0])] and pixel[id(ins[1])]) or (
            kind == "copy" and _same_packets(ins[0], pixel[id(ins[0])], outs[0])) or (
            kind == "rows" and not any(pixel[id(v)] for v in ins))
        mode[id(node)] = "native" if native else "buffered"
        for v in outs:
            if native:
                pixel[id(v)] = {"pixel": True, "flat": False, "any": pixel[id(ins[0])], "same": pixel[id(ins[0])],
                                "channel": True, "copy": False, "rows": False}[kind]
            else:
                pixel[id(v)] = prefers_pixel(v)

    names = {id(n): layer.layer_name for n, layer in zip(nodes, layers)}
    plan = StreamPlan([], [], {})

    def new_stream(value, name, producer, consumer, port=False) -> Stream:
        shape = static_shape(value)
        packet = shape[1] if pixel[id(value)] else (shape[-1] if shape else 1)
        s = Stream(name, ctx.var(value), value.name or "", ctx.ctype(value), size(value), max(packet, 1),
                   pixel[id(value)], producer, consumer, port)
        plan.streams.append(s)
        return s

    # the stream each (reader, value) reads and each (producer, value) writes
    reads: dict[tuple[int, int], Stream] = {}
    writes: dict[int, Stream] = {}
    out_ports = {id(v) for v in model.graph.outputs}

    def connect(value, producer_name):
        users = consumers.get(id(value), [])
        readers = [names[id(u)] for u in users] + ([OUTPUT] if id(value) in out_ports else [])
        is_input = producer_name == "input"
        var = ctx.var(value)
        if len(readers) == 1 and not (is_input and readers == [OUTPUT]):
            s = new_stream(value, var if (is_input or readers == [OUTPUT]) else ctx.names.make(f"{var}_s"),
                           producer_name, readers[0], port=is_input or readers == [OUTPUT])
            if is_input or readers == [OUTPUT]:
                plan.ports[var] = s
            writes[id(value)] = s
            for u in users:
                reads[(id(u), id(value))] = s
            return
        # a fork (or a drain of an unread input): the producer writes one stream, a clone copies it
        clone = f"{'clone' if readers else 'drain'} {value.name or var}"
        src = new_stream(value, var if is_input else ctx.names.make(f"{var}_s"), producer_name, clone, port=is_input)
        if is_input:
            plan.ports[var] = src
        writes[id(value)] = src
        copies = []
        for u in users:
            s = new_stream(value, ctx.names.make(f"{var}_s"), clone, names[id(u)])
            reads[(id(u), id(value))] = s
            copies.append(s)
        if id(value) in out_ports:
            s = new_stream(value, var, clone, OUTPUT, port=True)
            plan.ports[var] = s
            copies.append(s)
        clones.append(Process("clone" if copies else "drain", clone, "Clone", [src], copies))

    clones: list[Process] = []
    for value in model.graph.inputs:
        connect(value, "input")
    plan.processes.extend(clones)
    for node, layer in zip(nodes, layers):
        clones.clear()
        ins, outs = runtime_inputs(node), _used_outputs(node)
        for v in outs:
            connect(v, names[id(node)])
        proc = Process(mode[id(node)], names[id(node)], node.op_type, [reads[(id(node), id(v))] for v in ins],
                       [writes[id(v)] for v in outs], layer, node)
        if proc.kind == "native":
            proc.template = kinds[id(node)][1]
            if proc.template in DENSE_TEMPLATES.values():
                n_in, n_out = proc.inputs[0].packet, proc.outputs[0].packet
                rows = proc.inputs[0].n_packets
                plan.row_configs[proc.layer_name] = row_config(layer, n_in, n_out, rows)
            elif proc.template in ATTENTION_STREAM_TEMPLATES:   # no struct: R_proj is a template argument
                plan.row_configs[proc.layer_name] = ("", "", *attention_folding(layer.cost.reuse_factor, node))
        else:
            proc.reason = kinds[id(node)][1] or "its input arrives in an order its template does not read"
        plan.processes.append(proc)
        plan.processes.extend(clones)
    return plan


def _same_packets(value: ir.Value, is_pixel: bool, out: ir.Value) -> bool:
    """A copy streams packet for packet when its input, in its order, is the ONNX order (flat, or
    a single pixel) cut into packets of the output's last axis (its flat order). A Flatten of a
    map of several pixels would need a transposing buffer (or the next Dense's weights permuted
    to pixel order, as hls4ml does): buffered here."""
    shape, out_shape = static_shape(value), static_shape(out)
    in_packet = shape[1] if is_pixel else (shape[-1] if shape else 1)
    one_pixel = is_pixel and size(value) == in_packet
    return (not is_pixel or one_pixel) and bool(out_shape) and out_shape[-1] == in_packet


def row_reuse(reuse: int, n_in: int, n_out: int, rows: int) -> int:
    """A streamed Dense's reuse factor per row: the layer's multipliers (rows * n_in * n_out / R)
    shared over one row, lowered to a divisor of n_in * n_out."""
    target = max(1, reuse // max(rows, 1))
    return max(d for d in divisors(n_in * n_out) if d <= target)


def packet_fold(proc) -> int:
    """F of a packet template: a packet of P elements in F cycles on P / F units, F the largest
    divisor of P not above the layer's reuse factor (the stream folding picks divisors) over the
    stream's channel fold (the reuse factor counts cycles per pixel: a pixel of C channels in
    FC packets of C / FC takes R / FC cycles per packet)."""
    if proc.template not in FOLDED_PACKET_TEMPLATES or proc.layer is None or proc.layer.cost is None:
        return 1
    target = max(1, proc.layer.cost.reuse_factor // proc.outputs[0].fold)
    return max(d for d in divisors(proc.outputs[0].packet) if d <= target)
