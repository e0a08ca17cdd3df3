"""kiln.MultiHeadAttention (from passes/fuse_attention.py) -> kiln::multihead_attention (kiln_attention.h).

Inputs ``x_q [.., Tq, E_q], x_kv [.., Tk, E_kv], Wq, bq, Wk, bk, Wv, bv, Wo, bo`` (weights
[in, out], constants; Wo and bo empty when the layer has no out projection:
kiln::multihead_attention_merged writes the merged heads) and an optional constant score bias broadcastable to [heads, Tq, Tk]
(added to the scaled scores before the softmax); attributes ``heads, key_dim, value_dim, scale``; output [.., Tq, dim].
With ``sequences`` S > 1 the inputs hold S sequences of Tq (Tk) rows: kiln::multihead_attention_sequences
(or _merged_sequences) runs the same kernel once per sequence (the same weights, reuse factor, types and
multipliers; latency S times one sequence's), the score bias [heads, Tq, Tk] shared or [S, heads, Tq, Tk].
The four projections are kiln::dense calls (one nested config each); per head and query
the template computes the scaled scores, a softmax over the keys with kiln_softmax.h's
exp and reciprocal tables, and the probability-weighted sum of the values.

Fixed-point types (derived here; model precision P = fixed<W,I> on x and the output):

* projection accumulators: ``accumulator_for`` by fan-in, as kiln.Dense (the layer's
  ``accum`` override applies to all four);
* q, k, v: P with round-to-nearest (they feed products, where truncation would bias
  every score the same way);
* score accumulator: ``accumulator_for(q, k, key_dim)``; the scale is an unsigned
  18-significant-bit constant; scaled scores keep the accumulator's integer bits less
  the scale's exponent (no overflow possible) and max(F, 12) fractional bits (the exp
  tables resolve 1/2048); with a score bias (stored like a Dense bias), one integer bit more
  than the wider of the scaled scores and the bias;
* exp / reciprocal tables and their sum: the same types as the Softmax layer;
* probabilities: ufixed<18,1> (they lie in [0, 1]);
* weighted values: ``accumulator_for(prob, v, Tk)``, stored with one more integer bit and
  two more fractional bits than v (a convex combination of v stays in v's range; the
  extra integer bit absorbs the probabilities' table error summing above 1).

Float precision makes every internal type ``float`` (std::exp and a division in the
softmax), for exact structural checks against ONNX Runtime.

Reuse factor R: the body is pipelined with II = R like every layer; R must divide each
projection's weight count (their kiln::dense partitioning), the core gets ceil(n / R)
multipliers. The estimate (LayerCost) counts all of it, so ``--reuse auto`` can trade the
layer's R against the rest of the design.
"""

from __future__ import annotations

import math

import numpy as np

from kiln.backends.hls.context import c_float
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.call import Call
from kiln.backends.hls.layers.base import Layer, LayerEmitter, register
from kiln.backends.hls.layers import softmax
from kiln.backends.hls.layers.dense import CONFIG as DENSE_CONFIG
from kiln.errors import KilnError
from kiln.ir_utils import attr, const_array, size
from kiln.precision import FixedType, FloatType, accumulator_for, sum_type_for


CONFIG = """struct {{ id }}_config : kiln::multihead_attention_config {
    static const unsigned n_q = {{ n_q }}, n_kv = {{ n_kv }};
    static const unsigned dim_q = {{ dim_q }}, dim_kv = {{ dim_kv }}, dim_out = {{ dim_out }};
    static const unsigned heads = {{ heads }}, key_dim = {{ key_dim }}, value_dim = {{ value_dim }};
    static const unsigned reuse_factor = {{ rf }};
    static const unsigned multiplier_limit = {{ mult_limit }};
    static const bool use_table = {{ 'true' if use_table else 'false' }};
    static constexpr float scale = {{ scale }};
    static const bool has_bias = {{ 'true' if has_bias else 'false' }};
{% if sequences > 1 %}    static const unsigned sequences = {{ sequences }}, bias_stride = {{ bias_stride }};
{% endif %}    typedef {{ t.q }} q_t;
    typedef {{ t.k }} k_t;
    typedef {{ t.v }} v_t;
    typedef {{ t.score_accum }} score_accum_t;
    typedef {{ t.scale }} scale_t;
    typedef {{ t.score }} score_t;
{% if has_bias %}    typedef {{ bias_t }} bias_t;
{% endif %}    typedef {{ t.prob }} prob_t;
    typedef {{ t.o_accum }} o_accum_t;
    typedef {{ t.o }} o_t;
{{ q_proj }}{{ k_proj }}{{ v_proj }}{{ out_proj }}    struct softmax_config : kiln::softmax_table_config {
        static const unsigned n_axis = {{ n_kv }};
        static const bool use_table = {{ 'true' if use_table else 'false' }};
{{ tables }}        static const unsigned max_shift = {{ max_shift }};
        typedef {{ t.exp }} exp_table_t;
        typedef {{ t.inv }} inv_table_t;
        typedef {{ t.sum }} sum_t;
    };
};
"""

PROB_TYPE = FixedType(18, 1, signed=False, rounding="RND")
SCORE_FRAC_BITS = 12


def _rounded(p):
    return p if isinstance(p, FloatType) else FixedType(p.width, p.integer, p.signed, "RND", p.overflow)


def internal_types(x_prec, out_prec, key_dim: int, n_kv: int, scale: float, bias_max: float = 0.0) -> dict:
    """The intermediate types of the attention core (projection accumulators are separate); ``bias_max``:
    max |bias| of the additive score bias (its integer bits widen the scores)."""
    if isinstance(out_prec, FloatType) or isinstance(x_prec, FloatType):
        f = FloatType()
        return {k: f for k in ("q", "k", "v", "score_accum", "scale", "score", "prob", "o_accum", "o", "exp",
                               "inv", "sum")}
    q = k = v = _rounded(out_prec)
    score_accum = accumulator_for(q, k, key_dim)
    exponent = math.floor(math.log2(scale)) + 1  # scale < 2^exponent
    scale_t = FixedType(18 + max(0, -exponent), max(0, exponent), signed=False, rounding="RND")
    score_int = max(2, score_accum.integer + exponent)
    if bias_max > 0:  # scaled scores + bias: one more bit than the wider of the two
        score_int = max(score_int, math.floor(math.log2(bias_max)) + 2) + 1
    score_frac = max(q.frac, SCORE_FRAC_BITS)
    o_accum = accumulator_for(PROB_TYPE, v, n_kv)
    return {
        "q": q, "k": k, "v": v, "score_accum": score_accum, "scale": scale_t,
        "score": FixedType(score_int + score_frac, score_int, rounding="RND"),
        "prob": PROB_TYPE, "o_accum": o_accum, "o": FixedType(v.width + 3, v.integer + 1, rounding="RND"),
        "exp": softmax.TABLE_TYPE, "inv": softmax.TABLE_TYPE, "sum": sum_type_for(softmax.TABLE_TYPE, n_kv),
    }


@register
class MultiHeadAttentionEmitter(LayerEmitter):
    ops = (("kiln", "MultiHeadAttention"),)
    header = "kiln_attention.h"

    def check(self, node):
        if len(node.inputs) not in (10, 11) or any(v is None for v in node.inputs[:8]) or \
                (node.inputs[8] is None) != (node.inputs[9] is None) or (len(node.inputs) > 10 and node.inputs[10] is None):
            return "expects x_q, x_kv, the q/k/v weights/biases, Wo and bo (or neither) and an optional score bias"
        if any(const_array(v) is None for v in node.inputs[2:] if v is not None):
            return "projection weights, biases and the score bias must be constants"
        scale = attr(node, "scale")
        if scale is not None and not (0 < scale < float("inf")):
            return "the score scale must be a positive number"
        return super().check(node)

    def emit(self, node, ctx) -> Layer:
        x_q, x_kv = node.inputs[:2]
        wq, bq, wk, bk, wv, bv, wo, bo = (const_array(v) for v in node.inputs[2:10])  # wo, bo None: no out projection
        score_bias = const_array(node.inputs[10]) if len(node.inputs) > 10 else None
        out = node.outputs[0]
        heads, key_dim, sequences = attr(node, "heads"), attr(node, "key_dim"), attr(node, "sequences", 1)
        value_dim = attr(node, "value_dim", key_dim)
        scale = float(attr(node, "scale", 1.0 / math.sqrt(key_dim)))
        hk, hv = heads * key_dim, heads * value_dim
        dim_q, dim_kv, dim_out = wq.shape[0], wk.shape[0], hv if wo is None else wo.shape[1]
        n_q, n_kv = size(x_q) // (dim_q * sequences), size(x_kv) // (dim_kv * sequences)  # tokens per sequence
        if (wq.shape[1], wk.shape[1], wv.shape, hv if wo is None else wo.shape[0], size(out),
                size(x_q), size(x_kv)) != (hk, hk, (dim_kv, hv), hv, sequences * n_q * dim_out,
                                           sequences * n_q * dim_q, sequences * n_kv * dim_kv):
            raise KilnError(f"layer {node.name!r} (MultiHeadAttention): weight shapes do not match heads={heads}, "
                            f"key_dim={key_dim}, value_dim={value_dim}, sequences={sequences}")
        bias_stride = 0  # elements between two sequences' score biases (0: shared)
        if score_bias is not None:
            per_sequence = score_bias.ndim == 4
            want = [sequences, heads, n_q, n_kv] if per_sequence else [heads, n_q, n_kv]
            try:
                score_bias = np.broadcast_to(score_bias, want)
            except ValueError:
                raise KilnError(f"layer {node.name!r} (MultiHeadAttention): score bias of shape "
                                f"{list(score_bias.shape)} does not broadcast to "
                                f"[{'sequences, ' if per_sequence else ''}heads, Tq, Tk] = {want}") from None
            bias_stride = heads * n_q * n_kv if per_sequence else 0
        lid = ctx.layer_id(node)
        # The body is pipelined with II = R. R must divide each projection's multiplications
        # (rows x weights: each multiplier is shared by R of them, across rows once R exceeds
        # the weight count; a model-wide R that does not divide is lowered by ctx.reuse, a
        # per-layer one is an error); the weightless core takes ceil(n / R) multipliers.
        sizes = {"q": dim_q * hk, "k": dim_kv * hk, "v": dim_kv * hv, "out": hv * dim_out}  # weights per projection
        rows = {"q": n_q, "k": n_kv, "v": n_kv, "out": n_q}
        if wo is None:
            del sizes["out"], rows["out"]
        divisible = math.gcd(*(rows[k] * v for k, v in sizes.items()))
        try:
            rf = ctx.reuse(node, divisible)
        except KilnError:
            raise KilnError(f"layer {node.name!r} (MultiHeadAttention): reuse_factor "
                            f"{node.metadata_props.get('kiln.reuse_factor')} must divide the multiplications of each "
                            f"projection ({', '.join(f'{k} {rows[k] * v}' for k, v in sizes.items())}); valid values: "
                            f"{[d for d in range(1, divisible + 1) if divisible % d == 0]}") from None
        x_q_prec, x_kv_prec, out_prec = ctx.precision(x_q), ctx.precision(x_kv), ctx.precision(out)
        accum_override = ctx.layer_precision(node, "accum")
        names, projs = {}, {"out_proj": ""}
        bias_t, bias_name, bias_max = None, None, 0.0
        if score_bias is not None:  # stored like a Dense bias; its range after rounding sizes the scores
            bias_name, bias_t, bias_prec = ctx.weight(node, np.ascontiguousarray(score_bias), "sb", kind="bias")
            bias_max = float(np.max(np.abs(bias_prec.quantize(score_bias.reshape(-1).astype(np.float64)))))
        types = internal_types(x_q_prec, out_prec, key_dim, n_kv, scale, bias_max)
        for role, w, b, x_prec, rows_ in (("q", wq, bq, x_q_prec, n_q), ("k", wk, bk, x_kv_prec, n_kv),
                                          ("v", wv, bv, x_kv_prec, n_kv), ("out", wo, bo, types["o"], n_q)):
            if w is None:
                continue
            w_name, w_t, w_prec = ctx.weight(node, w, f"w{role[0]}", kind="weight")
            b_name, b_t, _ = ctx.weight(node, b, f"b{role[0]}", kind="bias")
            names[role] = (w_name, b_name)
            n_in, n_out = w.shape
            accum = accum_override or accumulator_for(x_prec, w_prec, n_in)
            projs[f"{role}_proj"] = ctx.render(DENSE_CONFIG, name=f"{role}_proj", n_rows=rows_, n_in=n_in, n_out=n_out,
                                               rf=rf, block=math.ceil(n_in * n_out / rf),
                                               mult_limit=math.ceil(rows_ * n_in * n_out / rf),
                                               accum_t=ctx.typedef(f"{lid}_{role}_accum_t", accum),
                                               weight_t=w_t, bias_t=b_t)
        typedefs = {k: ctx.typedef(f"{lid}_{k}_t", p) for k, p in types.items()}
        core_mults = heads * n_q * n_kv * (key_dim + value_dim)  # Q K^T and P V
        config = ctx.render(CONFIG, id=lid, n_q=n_q, n_kv=n_kv, dim_q=dim_q, dim_kv=dim_kv, dim_out=dim_out,
                            heads=heads, key_dim=key_dim, value_dim=value_dim, rf=rf, sequences=sequences,
                            bias_stride=bias_stride,
                            mult_limit=math.ceil(core_mults / rf), use_table=not ctx.float_mode,
                            scale=c_float(scale), has_bias=score_bias is not None, bias_t=bias_t, t=typedefs, tables=softmax.table_fields("    "), max_shift=math.ceil(math.log2(n_kv + 1)) + 1,
                            **projs)
        weights = tuple(name for pair in names.values() for name in pair)
        if sequences > 1:  # the per-sequence kernel in a loop over the sequences (kiln_attention.h)
            function = "kiln::multihead_attention_merged_sequences" if wo is None else \
                "kiln::multihead_attention_sequences"
            weights = (*weights, bias_name or "0")
        else:
            function = "kiln::multihead_attention_merged" if wo is None else "kiln::multihead_attention"
            weights = (*weights, bias_name or "0")
        call = Call(function, (ctx.ctype(x_q), ctx.ctype(x_kv), ctx.ctype(out), f"{lid}_config"),
                    (ctx.var(x_q), ctx.var(x_kv), ctx.var(out), *weights))
        # Estimate inputs: the four projections, Q K^T and P V, and per score a scale product,
        # an exp (two table values multiplied) and a normalisation. The stages run one after
        # the other, so all their adder trees add to the latency; the q/k/v/merged buffers
        # are registered like the output (io_parallel). Several sequences: one kernel (the multipliers and
        # buffers of one sequence) run once per sequence, so its latency is S times that of one.
        scores = heads * n_q * n_kv
        stages = [max(dim_q, dim_kv), key_dim, n_kv, n_kv] + ([hv] if wo is not None else [])  # proj, QK^T, sm, PV, out
        depth = [math.ceil(math.log2(max(f, 1))) for f in stages]
        w_bits = bits(w_prec)
        n_weights = sum(a.size for a in (wq, bq, wk, bk, wv, bv, wo, bo, score_bias) if a is not None)
        extra = sum(depth) - max(depth) + 6 + 2 * len(stages)  # one sequence's cycles beyond the multiply schedule
        proj_mults = n_q * (sizes["q"] + sizes.get("out", 0)) + n_kv * (sizes["k"] + sizes["v"])
        cost = LayerCost(mults=proj_mults + core_mults + 3 * scores, fan_in=max(stages),
                         a_bits=max(bits(x_q_prec), bits(types["q"])), b_bits=max(w_bits, bits(types["prob"])),
                         acc_bits=max(bits(types["score_accum"]), bits(types["o_accum"])),
                         out_elems=sequences * n_q * dim_out + n_q * hk + n_kv * (hk + hv) + n_q * hv,
                         out_bits=bits(out_prec),
                         weight_bits=n_weights * w_bits, weight_width=w_bits,
                         table_entries=0 if ctx.float_mode else softmax.TABLE_ENTRIES, adds=2 * scores,
                         extra_latency=extra + (sequences - 1) * (rf + 2 + max(depth) + extra), is_float=ctx.float_mode,
                         reuse_factor=rf, divisible=divisible, repeats=sequences)
        return Layer(config, call, self.header, cost)
