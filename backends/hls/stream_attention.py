"""Stream mode: kiln.MultiHeadAttention token-streamed (nnet/kiln_stream_attention.h).

The layer reads its x_kv rows one packet each (self-attention, x_q being x_kv: one stream;
cross-attention: a second stream of x_q rows), projects each key/value row on arrival with the
io_parallel projection folded per row (R_proj = attention_row_reuse), keeps K and V in block
RAM, and once every key row is in, computes one output row per query row (the io_parallel
attention_head_row per head, then the out projection) and writes it: one packet per query row.
A constant score bias streams too. A layer of several sequences (Swin's windows, MobileViT's
patch pixels) stays buffered: without ping-pong buffers per sequence its phases would run in
turn, twice the buffered kernel's II at the same multipliers.

Folding (one knob, the layer's io_parallel reuse factor R, which the stream folding,
stream_fold.py, chooses among its valid values like any layer's):

* R_proj = the largest divisor of the projections' per-row weight counts (gcd) not above
  R // n_kv: the io_parallel multipliers shared over one row, as for a streamed Dense
  (stream_plan.row_reuse);
* R_core = the largest divisor of heads x n_kv x gcd(key_dim, value_dim) not above R_proj: the
  core (scores, softmax, weighted values) of one query row on 1 / R_core of its
  multiplications, K and V cyclic-partitioned into banks of R_core words so that each bank
  is read once per cycle (R_core above heads x n_kv folds the dot products themselves).

Estimate (stream_estimate.estimate_process calls estimate_attention; all figures estimates, with
estimate.py's relations, which follow hls4ml's resource model):

* II per frame: the key phase takes R_proj cycles per x_kv row (K and V projections, and Q in
  self-attention, side by side), the query phase a query row every max(R_core, R_proj) =
  R_proj cycles (its pipeline: Q projection in cross-attention, the core, the out projection).
  The phases are two DATAFLOW processes joined by ping-pong buffers, so II = max(n_kv, n_q) x
  R_proj (the slower stage sets the rate: FINN-R, Blott et al., TRETS 11(3) 2018, section 4.2).
* Multipliers: the projections' per-row products / R_proj, plus the core's
  heads x n_kv x (key_dim + value_dim + 3) (dot products, weighted values, scale / exp /
  normalisation) / R_core.
* FF: one row's registers (x row in, Q / K / V / merged-head rows, the n_kv scores and
  probabilities, the output packet) plus the accumulators (estimate.py's rule); no tensor.
* Memories: weights as a streamed Dense's (stream_estimate.weight_row: banks of R_proj words,
  BRAM18K or URAM by memory.place); K and V of one sequence in n_kv x heads x key_dim / R_core
  (value_dim) banks of R_core words, the Q buffer of self-attention in n_q x heads x key_dim /
  R_core banks of R_core words, twice over (ping-pong), placed by memory.place without URAM (the template binds K and V to BRAM: a
  shallow bank is LUTRAM); the softmax tables as io_parallel's.
"""

from __future__ import annotations

import math
from dataclasses import replace

from kiln.backends.hls.estimate import LayerEstimate, estimate_layer
from kiln.backends.hls.memory import place
from kiln.backends.hls.reuse import divisors

from kiln.ir_utils import attr, const_array, runtime_inputs, size, static_shape

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


def shape_of(node) -> dict:
    """Sizes of one attention node: per-sequence rows, dims, heads, per-row weights of each projection."""
    wq, wk = const_array(node.inputs[2]), const_array(node.inputs[4])
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
    ins, outs = runtime_inputs(node), [v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]
    if len(outs) != 1 or len(ins) not in (1, 2) or layer.calls[0].batch != 1:
        return "", "not one output and one or two input tensors"
    s = shape_of(node)
    if s["sequences"] > 1:
        return "", (f"{s['sequences']} sequences: streamed, each sequence's key and query phases would run in turn "
                    "(no ping-pong), twice the buffered kernel's II at the same multipliers")
    last = [(static_shape(v) or [0])[-1] for v in (node.inputs[0], node.inputs[1], outs[0])]
    if last != [s["dim_q"], s["dim_kv"], s["dim_out"]]:
        return "", "rows of x_q / x_kv / the output are not the tensors' last axis"
    return "rows", ATTENTION_TEMPLATES[layer.calls[0].template][1 if len(ins) == 1 else 0]


def attention_folding(reuse: int, node) -> tuple[int, int]:
    """(R_proj, R_core) for the layer's reuse factor (module docstring)."""
    s = shape_of(node)
    target = max(1, reuse // max(s["n_kv"], 1))
    r_proj = max(d for d in divisors(math.gcd(*s["weights"].values())) if d <= target)
    core = s["heads"] * s["n_kv"] * math.gcd(s["key_dim"], s["value_dim"])
    return r_proj, max(d for d in divisors(core) if d <= r_proj)


def attention_call(proc, plan) -> str:
    """The streaming template's call: streams for the arrays, R_proj and R_core as the last template arguments."""
    call = proc.layer.calls[0]
    r_proj, r_core = plan.row_configs[proc.layer_name][2:]
    streams = tuple(s.name for s in proc.inputs + proc.outputs)
    if proc.template in SELF_TEMPLATES:
        type_args = (call.type_args[0], call.type_args[2], call.type_args[3], str(r_proj), str(r_core))
    else:
        type_args = tuple(call.type_args) + (str(r_proj), str(r_core))
    return replace(call, template=proc.template, type_args=type_args, args=streams + call.args[3:]).render()


def estimate_attention(proc, plan, bits_of: dict, uram: bool, weight_row) -> LayerEstimate:
    """The process's LayerEstimate (module docstring); ``weight_row``: stream_estimate.weight_row."""
    cost, node = proc.layer.cost, proc.node
    s = shape_of(node)
    r_proj, r_core = plan.row_configs[proc.layer_name][2:]
    lid = proc.layer.calls[0].type_args[3].removesuffix("_config")
    k_bits = bits_of.get(f"{lid}_k_t", cost.out_bits)
    regs = s["dim_q"] + s["dim_kv"] + 2 * s["hk"] + 2 * s["hv"] + 2 * s["n_kv"] + s["dim_out"]
    proj = weight_row(proc.layer_name, proc.op, replace(
        cost, mults=sum(s["weights"].values()), reuse_factor=r_proj, out_elems=regs, table_entries=0, adds=0,
        extra_latency=0, repeats=1), [p.producer for p in proc.inputs], uram)
    keys = s["heads"] * s["n_kv"]
    core = estimate_layer(proc.layer_name, proc.op, replace(
        cost, mults=keys * (s["key_dim"] + s["value_dim"] + 3), reuse_factor=r_core, out_elems=0, weight_bits=0,
        adds=2 * keys, extra_latency=0, repeats=1), [])
    copies = 2   # ping-pong between the two DATAFLOW phases
    banks = [keys * s["key_dim"] // r_core, keys * s["value_dim"] // r_core]
    if proc.template in SELF_TEMPLATES:
        banks.append(s["n_q"] * s["hk"] // r_core)
    buffers = [place(r_core, k_bits, copies * b) for b in banks]
    proc.layer.weights_in_uram = proj.uram > 0
    return replace(proj, ii=max(s["n_kv"], s["n_q"]) * r_proj,
                   latency_cycles=s["n_kv"] * r_proj + proj.latency_cycles + core.latency_cycles,
                   dsp=proj.dsp + core.dsp, lut=proj.lut + core.lut + sum(b.lut for b in buffers),
                   ff=proj.ff + core.ff, bram=proj.bram + core.bram + sum(b.bram for b in buffers))
