"""Stream mode: per-row layers (LayerNorm, Softmax over the last axis; GELU and element-wise math).

Layers that act on each row of the last axis independently stream natively on a flat-order
stream (one packet = one row, ``nnet/kiln_stream_rows.h``), like ``dense_stream``: per packet
the io_parallel kernel runs with a one-row config, so the C-simulation is bit-identical to
io_parallel.

* **row** layers (``kiln::layernorm`` over the last axis only, ``kiln::softmax`` over the last
  axis): one row per read, the kernel pipelined at II = R_row (its PIPELINE II), R_row the
  layer's reuse factor shared over the rows and lowered to a divisor of the row length
  (as stream_plan.row_reuse does for Dense). Flat input only.
* **element** layers (``kiln::gelu``, ``kiln::unary_math``: Erf, Exp, Sqrt, ...): any order; a
  packet of P elements in F cycles on P / F lanes (F divides P), as ``activation_stream``.

Estimate (stream_estimate.estimate_process): II = rows x R_row (element: packets x F); the
layer's io_parallel cost for ONE row (multipliers = the row's products / R_row, FF = one row's
output registers and accumulators, not the tensor's); a lookup table read by L lanes in one
cycle is replicated ceil(L / 2) times (a dual-port ROM serves two reads a cycle: AMD UG573,
block RAM "true dual-port"): GELU P / F lanes, softmax's exp table n / R_row lanes, the
LayerNorm rsqrt table and softmax's reciprocal table one read per row.
"""

from __future__ import annotations

import math
from dataclasses import replace

from kiln.backends.hls.estimate import LayerCost, estimate_layer
from kiln.backends.hls.reuse import divisors
from kiln.ir_utils import attr, static_shape

ROW_TEMPLATES = {"kiln::layernorm": "kiln::layernorm_stream", "kiln::softmax": "kiln::softmax_stream"}
ELEMENT_TEMPLATES = {"kiln::gelu": "kiln::gelu_stream", "kiln::unary_math": "kiln::unary_math_stream"}
ROW_STREAMS = tuple(ROW_TEMPLATES.values())
ELEMENT_STREAMS = tuple(ELEMENT_TEMPLATES.values())
HEADER = "kiln_stream_rows.h"


def _last_axis_only(node) -> bool:
    """The layer's rows are the rows of the last axis (LayerNorm's [axis:] block, Softmax's axis)."""
    shape = static_shape(node.inputs[0])
    if not shape:
        return False
    rank = len(shape)
    if node.op_type == "Softmax":
        opset = node.version or (node.graph.opset_imports.get("", 13) if node.graph is not None else 13)
        axis = attr(node, "axis", -1 if opset >= 13 else 1)
        axis = axis + rank if axis < 0 else axis
        return axis == rank - 1 or (opset < 13 and math.prod(shape[axis:]) == shape[-1])
    axis = attr(node, "axis", -1)
    axis = axis + rank if axis < 0 else axis
    return math.prod(shape[axis:]) == shape[-1]


def row_kind(call, node) -> tuple[str, str] | None:
    """stream_plan's (kind, template) for a per-row layer; None: not one of these templates."""
    if call.template in ELEMENT_TEMPLATES:
        return "any", ELEMENT_TEMPLATES[call.template]
    if call.template in ROW_TEMPLATES:
        if not _last_axis_only(node):
            return "", f"{call.template} over axes other than the last one alone"
        return "flat", ROW_TEMPLATES[call.template]
    return None


def row_factor(proc) -> int:
    """R_row of a row layer: the layer's reuse factor over its rows, lowered to a divisor of the row."""
    src = proc.inputs[0]
    reuse = proc.layer.cost.reuse_factor if proc.layer.cost else 1
    target = max(1, reuse // max(src.n_packets, 1))
    return max(d for d in divisors(src.packet) if d <= target)


def element_fold(proc) -> int:
    """F of an element layer: the largest divisor of the packet not above the reuse factor."""
    reuse = proc.layer.cost.reuse_factor if proc.layer.cost else 1
    return max(d for d in divisors(proc.outputs[0].packet) if d <= max(1, reuse))


def candidates(proc) -> list[int]:
    """The layer-level reuse factors the stream folding may give (ascending)."""
    src = proc.inputs[0]
    if proc.template in ROW_STREAMS:
        return [src.n_packets * d for d in divisors(src.packet)]
    return divisors(proc.outputs[0].packet)


def type_args(proc) -> tuple[str, ...]:
    """The streaming template's arguments after the io_parallel kernel's own."""
    if proc.template in ROW_STREAMS:
        return (str(row_factor(proc)),)
    return (str(proc.inputs[0].packet), str(element_fold(proc)))


def _table_copies(proc, step: int) -> tuple[int, int]:
    """(copies of the main table, of the per-row table) for lanes read in one cycle."""
    lanes = proc.outputs[0].packet // step
    if proc.template == "kiln::softmax_stream":
        return math.ceil(lanes / 2), 1
    if proc.template == "kiln::layernorm_stream":
        return 1, 0
    return math.ceil(lanes / 2), 0


def estimate_row_process(proc, inputs: list):
    """LayerEstimate of a per-row process (module docstring)."""
    from kiln.backends.hls.layers.softmax import EXP_HI_STEPS, EXP_LO_STEPS, EXP_RANGE, INV_TABLE_SIZE

    cost = proc.layer.cost or LayerCost()
    src, dst = proc.inputs[0], proc.outputs[0]
    share = dst.packet / max(dst.size, 1)
    step = row_factor(proc) if proc.template in ROW_STREAMS else element_fold(proc)
    one = replace(cost, mults=math.ceil(cost.mults * share), adds=math.ceil(cost.adds * share), out_elems=dst.packet,
                  reuse_factor=step, table_entries=0)
    row = estimate_layer(proc.layer_name, proc.op, one, inputs)
    bram, lut = row.bram, row.lut
    if cost.table_entries:
        main, per_row = _table_copies(proc, step)
        if proc.template == "kiln::softmax_stream":
            tables = [(EXP_RANGE * EXP_HI_STEPS + EXP_LO_STEPS, main), (INV_TABLE_SIZE, per_row)]
        else:
            tables = [(cost.table_entries, main)]
        for entries, copies in tables:
            t = estimate_layer("", "", LayerCost(table_entries=entries, table_bits=cost.table_bits), [])
            bram, lut = bram + copies * t.bram, lut + copies * t.lut
    return replace(row, ii=src.n_packets * step, bram=bram, lut=lut, latency_cycles=max(row.latency_cycles, 1))


def uses_rows(plan) -> bool:
    return any(p.kind == "native" and p.template in ROW_STREAMS + ELEMENT_STREAMS for p in plan.processes)
