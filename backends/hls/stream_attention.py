"""Stream mode: kiln.MultiHeadAttention token-streamed (nnet/kiln_stream_attention.h).

The layer reads its x_kv rows one packet each (self-attention, x_q being x_kv: one stream;
cross-attention: a second stream of x_q rows), projects each key/value row on arrival with the
io_parallel projection folded per row (R_proj = attention_row_reuse), keeps K and V in block
RAM, and once every key row is in, computes one output row per query row (the io_parallel
attention_head_row per head, then the out projection) and writes it: one packet per query row.
Score biases and several sequences (one after the other) are streamed too.

Estimate (stream_estimate.estimate_process calls estimate_attention; all figures estimates):

* R_proj = the largest divisor of the projections' per-row weight counts (gcd) not above
  R // n_kv, R the layer's io_parallel reuse factor (which the stream folding, stream_fold.py,
  chooses among its valid values like any layer's): the io_parallel multipliers shared over one
  row, as for a streamed Dense (stream_plan.row_reuse).
* II per frame = S x (n_kv x R_proj + n_q x C_row), S the sequences, C_row the cycles of one
  query row: heads x 3 n_kv (one key per cycle for the scores, for the softmax's exp and
  normalisation, for the weighted values: the K/V banks below give one key of one head per
  cycle) + R_proj for the out projection + R_proj for the Q projection in cross-attention
  (self-attention computes Q rows in the key phase, in the same R_proj cycles as K and V).
  The two phases run one after the other in one process (no ping-pong K/V buffers), so the
  II is their sum, not their max (FINN-R's cycles per frame, Blott et al., TRETS 11(3) 2018,
  section 4.2, of a process that does both).
* Multipliers: the projections' per-row products / R_proj (as estimate.py, hls4ml's
  resource model), plus the core's key_dim + value_dim + 3 (one score's dot product, one
  key's share of the weighted values, scale / exp / normalisation) at R = 1.
* FF: one row's registers (x row in, Q / K / V / merged-head rows, the n_kv scores and
  probabilities, the output packet) plus the accumulators (estimate.py's rule); no tensor.
* Memories: weights as streamed Dense (stream_estimate.weight_row: banks of R_proj words);
  K, V (and Q in self-attention) of one sequence, cyclic-partitioned into key_dim (value_dim)
  banks of n_kv x heads words, placed by memory.place (BRAM18K; the template binds them to
  BRAM, so never URAM); the softmax tables as io_parallel's.
"""

from __future__ import annotations

import math
from dataclasses import replace

from kiln.backends.hls.estimate import LayerCost, LayerEstimate, estimate_layer
from kiln.backends.hls.memory import place
from kiln.backends.hls.reuse import divisors
from kiln.ir_utils import attr, const_array, size, static_shape

HEADER = "kiln_stream_attention.h"
# io_parallel template -> (cross-attention, self-attention) streaming template
ATTENTION_TEMPLATES = {
    "kiln::multihead_attention": ("kiln::multihead_attention_stream", "kiln::multihead_attention_self_stream"),
    "kiln::multihead_attention_sequences": ("kiln::multihead_attention_stream", "kiln::multihead_attention_self_stream"),
    "kiln::multihead_attention_merged": ("kiln::multihead_attention_merged_stream",
                                         "kiln::multihead_attention_merged_self_stream"),
    "kiln::multihead_attention_merged_sequences": ("kiln::multihead_attention_merged_stream",
                                                   "kiln::multihead_attention_merged_self_stream"),
}
ATTENTION_STREAM_TEMPLATES = {t for pair in ATTENTION_TEMPLATES.values() for t in pair}
SELF_TEMPLATES = {pair[1] for pair in ATTENTION_TEMPLATES.values()}
CORE_PASSES = 3   # passes over the keys per head and query row: scores, softmax, weighted values


def _runtime(node) -> list:
    seen, out = set(), []
    for v in node.inputs:
        if v is not None and const_array(v) is None and id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def shape_of(node) -> dict:
    """Sizes of one attention node: per-sequence rows, dims, heads, per-row weights of each projection."""
    wq, wk, wv = (const_array(node.inputs[i]) for i in (2, 4, 6))
    wo = const_array(node.inputs[8]) if len(node.inputs) > 8 and node.inputs[8] is not None else None
    heads, key_dim = attr(node, "heads"), attr(node, "key_dim")
    value_dim, seqs = attr(node, "value_dim", key_dim), attr(node, "sequences", 1)
    dim_q, dim_kv = wq.shape[0], wk.shape[0]
    hk, hv = heads * key_dim, heads * value_dim
    dim_out = hv if wo is None else wo.shape[1]
    weights = {"q": dim_q * hk, "k": dim_kv * hk, "v": dim_kv * hv, **({"out": hv * dim_out} if wo is not None else {})}
    return {"heads": heads, "key_dim": key_dim, "value_dim": value_dim, "sequences": seqs, "dim_q": dim_q,
            "dim_kv": dim_kv, "dim_out": dim_out, "hk": hk, "hv": hv, "weights": weights, "merged": wo is None,
            "n_q": size(node.inputs[0]) // (dim_q * seqs), "n_kv": size(node.inputs[1]) // (dim_kv * seqs)}


def attention_kind(layer, node) -> tuple[str, str]:
    """("rows", streaming template) when the attention can stream its rows, else ("", why not)."""
    ins, outs = _runtime(node), [v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]
    if len(outs) != 1 or len(ins) not in (1, 2) or layer.calls[0].batch != 1:
        return "", "not one output and one or two input tensors"
    s = shape_of(node)
    last = [(static_shape(v) or [0])[-1] for v in (node.inputs[0], node.inputs[1], outs[0])]
    if last != [s["dim_q"], s["dim_kv"], s["dim_out"]]:
        return "", "rows of x_q / x_kv / the output are not the tensors' last axis"
    return "rows", ATTENTION_TEMPLATES[layer.calls[0].template][1 if len(ins) == 1 else 0]


def attention_row_reuse(reuse: int, node) -> int:
    """R_proj: the io_parallel factor's multipliers shared over one row (module docstring)."""
    s = shape_of(node)
    target = max(1, reuse // max(s["n_kv"], 1))
    return max(d for d in divisors(math.gcd(*s["weights"].values())) if d <= target)


def attention_call(proc, plan) -> str:
    """The streaming template's call: streams for the arrays, R_proj as the last template argument."""
    call = proc.layer.calls[0]
    r_proj = plan.row_configs[proc.layer_name][2]
    streams = tuple(s.name for s in proc.inputs + proc.outputs)
    if proc.template in SELF_TEMPLATES:
        type_args = (call.type_args[0], call.type_args[2], call.type_args[3], str(r_proj))
    else:
        type_args = tuple(call.type_args) + (str(r_proj),)
    return replace(call, template=proc.template, type_args=type_args, args=streams + call.args[3:]).render()


def attention_phases(node, r_proj: int, self_attention: bool) -> tuple[int, int]:
    """(cycles of the key phase, cycles per query row) of one sequence."""
    s = shape_of(node)
    per_row = s["heads"] * CORE_PASSES * s["n_kv"] + (0 if s["merged"] else r_proj) + (0 if self_attention else r_proj)
    return s["n_kv"] * r_proj, per_row


def estimate_attention(proc, plan, bits_of: dict, uram: bool, weight_row) -> LayerEstimate:
    """The process's LayerEstimate (module docstring); ``weight_row``: stream_estimate.weight_row."""
    cost, node = proc.layer.cost, proc.node
    s = shape_of(node)
    r_proj = plan.row_configs[proc.layer_name][2]
    self_attention = proc.template in SELF_TEMPLATES
    lid = proc.layer.calls[0].type_args[3].removesuffix("_config")
    k_bits = bits_of.get(f"{lid}_k_t", cost.out_bits)
    regs = s["dim_q"] + s["dim_kv"] + 2 * s["hk"] + 2 * s["hv"] + 2 * s["n_kv"] + s["dim_out"]
    proj = weight_row(proc.layer_name, proc.op, replace(
        cost, mults=sum(s["weights"].values()), reuse_factor=r_proj, out_elems=regs, table_entries=0, adds=0,
        extra_latency=0, repeats=1), [p.producer for p in proc.inputs], uram)
    core = estimate_layer(proc.layer_name, proc.op, replace(
        cost, mults=s["key_dim"] + s["value_dim"] + 3, reuse_factor=1, out_elems=0, weight_bits=0, adds=2,
        extra_latency=0, repeats=1), [])
    rows = s["n_kv"] * s["heads"]
    buffers = [place(rows, k_bits, s["key_dim"]), place(rows, k_bits, s["value_dim"])]
    if self_attention:
        buffers.append(place(s["n_q"] * s["heads"], k_bits, s["key_dim"]))
    proc.layer.weights_in_uram = proj.uram > 0
    keys, per_row = attention_phases(node, r_proj, self_attention)
    return replace(proj, ii=s["sequences"] * (keys + s["n_q"] * per_row),
                   latency_cycles=keys + per_row + proj.latency_cycles + core.latency_cycles,
                   dsp=proj.dsp + core.dsp, lut=proj.lut + core.lut + sum(b.lut for b in buffers),
                   ff=proj.ff + core.ff, bram=proj.bram + core.bram + sum(b.bram for b in buffers))
