// Token-streamed multi-head attention (kiln.MultiHeadAttention in --io stream).
//
// Rows arrive one per packet in flat order (one token row of dim_q / dim_kv values), the output
// leaves one packet per query row (one sequence: layers with several stay buffered):
//   1. key/value phase: each x_kv row is projected on arrival (the io_parallel projection's
//      kiln::dense with a one-row config, R_PROJ cycles per row) into the K and V buffers
//      (block RAM, cyclic partitioning into banks of R_CORE words: the keys of a query row are
//      read over R_CORE cycles, R_CORE a divisor of heads x n_kv x gcd(key_dim, value_dim); ping-pong buffers
//      between the two phases, DATAFLOW processes). In
//      self-attention (x_q is x_kv: one stream) the Q row of each token is computed on arrival
//      too and kept in a Q buffer (cyclic by key_dim, like K).
//   2. query phase, once all n_kv rows are in: per query row its Q row (cross-attention: the
//      x_q row read now and projected; self-attention: from the Q buffer), per head
//      kiln::attention_head_row (scores, softmax, weighted values: the io_parallel code, with
//      a config of one query row; pipelined with II = R_CORE, its multiplications shared R_CORE
//      ways), then the out projection (one-row dense) or the merged heads, and one packet out.
// Each value is computed by the io_parallel kernel's expressions in the same order with the same
// types (a dense output depends only on its own row; attention_head_row only on its query row),
// so the C-simulation is bit-identical to io_parallel's.
#ifndef KILN_STREAM_ATTENTION_H_
#define KILN_STREAM_ATTENTION_H_

#include "kiln_attention.h"
#include "kiln_stream.h"

namespace kiln {

// A projection's config for one row, its multipliers shared R ways within the row.
template <class P, unsigned R> struct attention_row_proj : P {
    static const unsigned n_rows = 1;
    static const unsigned reuse_factor = R;
    static const unsigned block_factor = (P::n_in * P::n_out + R - 1) / R;
    static const unsigned multiplier_limit = (P::n_in * P::n_out + R - 1) / R;
};

// The attention config for one query row (i = 0): attention_head_row then indexes q, o and the
// score bias by that row alone (the bias row is copied to [heads][n_kv] first).
template <class C> struct attention_one_query : C {
    static const unsigned n_q = 1;
};

// Phase 1: n_kv rows in, K and V rows (and, SELF, Q rows) into the buffers.
template <class kv_in_T, typename CONFIG_T, unsigned R_PROJ, bool SELF>
void attention_stream_keys(stream<packet<kv_in_T, CONFIG_T::dim_kv> > &in_kv, typename CONFIG_T::k_t *k,
                           typename CONFIG_T::v_t *v, typename CONFIG_T::q_t *q,
                           const typename CONFIG_T::q_proj::weight_t *wq, const typename CONFIG_T::q_proj::bias_t *bq,
                           const typename CONFIG_T::k_proj::weight_t *wk, const typename CONFIG_T::k_proj::bias_t *bk,
                           const typename CONFIG_T::v_proj::weight_t *wv, const typename CONFIG_T::v_proj::bias_t *bv) {
    #pragma HLS INLINE off
    const unsigned hk = CONFIG_T::heads * CONFIG_T::key_dim, hv = CONFIG_T::heads * CONFIG_T::value_dim;
KeyRows:
    for (unsigned j = 0; j < CONFIG_T::n_kv; j++) {
        #pragma HLS PIPELINE II = R_PROJ
        packet<kv_in_T, CONFIG_T::dim_kv> x = in_kv.read();
        typename CONFIG_T::k_t kr[hk];
        typename CONFIG_T::v_t vr[hv];
        #pragma HLS ARRAY_PARTITION variable = kr complete
        #pragma HLS ARRAY_PARTITION variable = vr complete
        dense<kv_in_T, typename CONFIG_T::k_t, attention_row_proj<typename CONFIG_T::k_proj, R_PROJ> >(x.data, kr, wk, bk);
        dense<kv_in_T, typename CONFIG_T::v_t, attention_row_proj<typename CONFIG_T::v_proj, R_PROJ> >(x.data, vr, wv, bv);
        for (unsigned c = 0; c < hk; c++) k[j * hk + c] = kr[c];
        for (unsigned c = 0; c < hv; c++) v[j * hv + c] = vr[c];
        if (SELF) {
            typename CONFIG_T::q_t qr[hk];
            #pragma HLS ARRAY_PARTITION variable = qr complete
            dense<kv_in_T, typename CONFIG_T::q_t, attention_row_proj<typename CONFIG_T::q_proj, R_PROJ> >(x.data, qr, wq,
                                                                                                          bq);
            for (unsigned c = 0; c < hk; c++) q[j * hk + c] = qr[c];
        }
    }
}

// Phase 2, one query row: every head's merged output row o [heads * value_dim].
template <typename CONFIG_T>
void attention_stream_row(const typename CONFIG_T::q_t qr[CONFIG_T::heads * CONFIG_T::key_dim],
                          const typename CONFIG_T::k_t *k, const typename CONFIG_T::v_t *v,
                          typename CONFIG_T::o_t o[CONFIG_T::heads * CONFIG_T::value_dim],
                          const typename CONFIG_T::bias_t *bias, unsigned i) {
    #pragma HLS INLINE
    typedef attention_one_query<CONFIG_T> row_config;
    typename CONFIG_T::bias_t bias_row[CONFIG_T::has_bias ? CONFIG_T::heads * CONFIG_T::n_kv : 1];
    if (CONFIG_T::has_bias) {
        for (unsigned h = 0; h < CONFIG_T::heads; h++)
            for (unsigned j = 0; j < CONFIG_T::n_kv; j++)
                bias_row[h * CONFIG_T::n_kv + j] = bias[(h * CONFIG_T::n_q + i) * CONFIG_T::n_kv + j];
    }
Heads:
    for (unsigned h = 0; h < CONFIG_T::heads; h++) attention_head_row<row_config>(qr, k, v, o, bias_row, h, 0);
}

// The query phase's Q row: cross-attention reads and projects the x_q row; self-attention
// takes it from the Q buffer.
template <class q_in_T, typename CONFIG_T, unsigned R_PROJ, bool SELF>
void attention_stream_query(stream<packet<q_in_T, CONFIG_T::dim_q> > &in_q, const typename CONFIG_T::q_t *q,
                            typename CONFIG_T::q_t qr[CONFIG_T::heads * CONFIG_T::key_dim], unsigned i,
                            const typename CONFIG_T::q_proj::weight_t *wq, const typename CONFIG_T::q_proj::bias_t *bq) {
    #pragma HLS INLINE
    const unsigned hk = CONFIG_T::heads * CONFIG_T::key_dim;
    if (SELF) {
        for (unsigned c = 0; c < hk; c++) qr[c] = q[i * hk + c];
    } else {
        packet<q_in_T, CONFIG_T::dim_q> x = in_q.read();
        dense<q_in_T, typename CONFIG_T::q_t, attention_row_proj<typename CONFIG_T::q_proj, R_PROJ> >(x.data, qr, wq, bq);
    }
}

template <typename CONFIG_T, class res_T, unsigned R_PROJ, bool MERGED> struct attention_out_row;

template <typename CONFIG_T, class res_T, unsigned R_PROJ> struct attention_out_row<CONFIG_T, res_T, R_PROJ, false> {
    static void run(const typename CONFIG_T::o_t *o, res_T *res, const void *wo, const void *bo) {
        #pragma HLS INLINE
        dense<typename CONFIG_T::o_t, res_T, attention_row_proj<typename CONFIG_T::out_proj, R_PROJ> >(
            o, res, (const typename CONFIG_T::out_proj::weight_t *)wo, (const typename CONFIG_T::out_proj::bias_t *)bo);
    }
};

template <typename CONFIG_T, class res_T, unsigned R_PROJ> struct attention_out_row<CONFIG_T, res_T, R_PROJ, true> {
    static void run(const typename CONFIG_T::o_t *o, res_T *res, const void *, const void *) {
        #pragma HLS INLINE
        for (unsigned c = 0; c < CONFIG_T::dim_out; c++) res[c] = (res_T)o[c];
    }
};

// Phase 2: a query row every max(R_CORE, R_PROJ) cycles, the core's products on 1 / R_CORE of them; ``bias``:
// the score bias (or 0).
template <class q_in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE, bool SELF, bool MERGED>
void attention_stream_queries(stream<packet<q_in_T, CONFIG_T::dim_q> > &in_q, const typename CONFIG_T::k_t *k,
                              const typename CONFIG_T::v_t *v, const typename CONFIG_T::q_t *q,
                              stream<packet<res_T, CONFIG_T::dim_out> > &out,
                              const typename CONFIG_T::q_proj::weight_t *wq,
                              const typename CONFIG_T::q_proj::bias_t *bq, const void *wo, const void *bo,
                              const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    const unsigned hk = CONFIG_T::heads * CONFIG_T::key_dim;
QueryRows:
    for (unsigned i = 0; i < CONFIG_T::n_q; i++) {
        #pragma HLS PIPELINE II = (R_CORE > R_PROJ ? R_CORE : R_PROJ)
        #pragma HLS ALLOCATION operation instances = mul limit = \
            (CONFIG_T::heads * CONFIG_T::n_kv * (CONFIG_T::key_dim + CONFIG_T::value_dim + 3) + R_CORE - 1) / R_CORE
        typename CONFIG_T::q_t qr[hk];
        typename CONFIG_T::o_t o[CONFIG_T::heads * CONFIG_T::value_dim];
        #pragma HLS ARRAY_PARTITION variable = qr complete
        #pragma HLS ARRAY_PARTITION variable = o complete
        attention_stream_query<q_in_T, CONFIG_T, R_PROJ, SELF>(in_q, q, qr, i, wq, bq);
        attention_stream_row<CONFIG_T>(qr, k, v, o, bias, i);
        packet<res_T, CONFIG_T::dim_out> y;
        attention_out_row<CONFIG_T, res_T, R_PROJ, MERGED>::run(o, y.data, wo, bo);
        out.write(y);
    }
}

// The K, V (and, SELF, Q) buffers of one sequence: R_CORE divides heads x n_kv x gcd(key_dim, value_dim), K and V in banks of R_CORE words
// (each read once per cycle of a query row), Q likewise; block RAM.
#define KILN_ATTENTION_BUFFERS                                                                                        \
    typename CONFIG_T::k_t k[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::key_dim];                                  \
    typename CONFIG_T::v_t v[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::value_dim];                                \
    typename CONFIG_T::q_t q[SELF ? CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::key_dim : 1];                        \
    _Pragma("HLS ARRAY_PARTITION variable = k cyclic factor = CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::key_dim / R_CORE") \
    _Pragma("HLS ARRAY_PARTITION variable = v cyclic factor = CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::value_dim / R_CORE") \
    _Pragma("HLS ARRAY_PARTITION variable = q cyclic factor = CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::key_dim / R_CORE") \
    _Pragma("HLS BIND_STORAGE variable = k type = ram_2p impl = bram")                                              \
    _Pragma("HLS BIND_STORAGE variable = v type = ram_2p impl = bram")

// The key phase and the query phase are two DATAFLOW processes, the buffers between them ping-pong (PIPO): the
// keys of frame t + 1 arrive while frame t's queries run. One sequence (layers with several are buffered:
// stream_attention.py). SELF: in_q is in_kv (one stream: passed twice, only in_kv is read).
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE, bool SELF,
          bool MERGED>
void attention_stream_body(stream<packet<q_in_T, CONFIG_T::dim_q> > &in_q,
                           stream<packet<kv_in_T, CONFIG_T::dim_kv> > &in_kv,
                           stream<packet<res_T, CONFIG_T::dim_out> > &out,
                           const typename CONFIG_T::q_proj::weight_t *wq, const typename CONFIG_T::q_proj::bias_t *bq,
                           const typename CONFIG_T::k_proj::weight_t *wk, const typename CONFIG_T::k_proj::bias_t *bk,
                           const typename CONFIG_T::v_proj::weight_t *wv, const typename CONFIG_T::v_proj::bias_t *bv,
                           const void *wo, const void *bo, const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    #pragma HLS DATAFLOW
    KILN_ATTENTION_BUFFERS
    attention_stream_keys<kv_in_T, CONFIG_T, R_PROJ, SELF>(in_kv, k, v, q, wq, bq, wk, bk, wv, bv);
    attention_stream_queries<q_in_T, res_T, CONFIG_T, R_PROJ, R_CORE, SELF, MERGED>(in_q, k, v, q, out, wq, bq, wo, bo,
                                                                                     bias);
}
#undef KILN_ATTENTION_BUFFERS

// x_q and x_kv two streams (cross-attention), with an out projection.
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE>
void multihead_attention_stream(stream<packet<q_in_T, CONFIG_T::dim_q> > &in_q,
                                stream<packet<kv_in_T, CONFIG_T::dim_kv> > &in_kv,
                                stream<packet<res_T, CONFIG_T::dim_out> > &out,
                                const typename CONFIG_T::q_proj::weight_t *wq, const typename CONFIG_T::q_proj::bias_t *bq,
                                const typename CONFIG_T::k_proj::weight_t *wk, const typename CONFIG_T::k_proj::bias_t *bk,
                                const typename CONFIG_T::v_proj::weight_t *wv, const typename CONFIG_T::v_proj::bias_t *bv,
                                const typename CONFIG_T::out_proj::weight_t *wo,
                                const typename CONFIG_T::out_proj::bias_t *bo, const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    attention_stream_body<q_in_T, kv_in_T, res_T, CONFIG_T, R_PROJ, R_CORE, false, false>(in_q, in_kv, out, wq, bq, wk, bk, wv,
                                                                                  bv, wo, bo, bias);
}

// Self-attention (x_q is x_kv): one stream, with an out projection.
template <class in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE>
void multihead_attention_self_stream(stream<packet<in_T, CONFIG_T::dim_kv> > &in,
                                     stream<packet<res_T, CONFIG_T::dim_out> > &out,
                                     const typename CONFIG_T::q_proj::weight_t *wq,
                                     const typename CONFIG_T::q_proj::bias_t *bq,
                                     const typename CONFIG_T::k_proj::weight_t *wk,
                                     const typename CONFIG_T::k_proj::bias_t *bk,
                                     const typename CONFIG_T::v_proj::weight_t *wv,
                                     const typename CONFIG_T::v_proj::bias_t *bv,
                                     const typename CONFIG_T::out_proj::weight_t *wo,
                                     const typename CONFIG_T::out_proj::bias_t *bo,
                                     const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    attention_stream_body<in_T, in_T, res_T, CONFIG_T, R_PROJ, R_CORE, true, false>(in, in, out, wq, bq, wk, bk, wv, bv, wo, bo,
                                                                            bias);
}

// Without an out projection (the merged heads out), cross- and self-attention.
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE>
void multihead_attention_merged_stream(stream<packet<q_in_T, CONFIG_T::dim_q> > &in_q,
                                       stream<packet<kv_in_T, CONFIG_T::dim_kv> > &in_kv,
                                       stream<packet<res_T, CONFIG_T::dim_out> > &out,
                                       const typename CONFIG_T::q_proj::weight_t *wq,
                                       const typename CONFIG_T::q_proj::bias_t *bq,
                                       const typename CONFIG_T::k_proj::weight_t *wk,
                                       const typename CONFIG_T::k_proj::bias_t *bk,
                                       const typename CONFIG_T::v_proj::weight_t *wv,
                                       const typename CONFIG_T::v_proj::bias_t *bv,
                                       const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    attention_stream_body<q_in_T, kv_in_T, res_T, CONFIG_T, R_PROJ, R_CORE, false, true>(in_q, in_kv, out, wq, bq, wk, bk, wv,
                                                                                 bv, 0, 0, bias);
}

template <class in_T, class res_T, typename CONFIG_T, unsigned R_PROJ, unsigned R_CORE>
void multihead_attention_merged_self_stream(stream<packet<in_T, CONFIG_T::dim_kv> > &in,
                                            stream<packet<res_T, CONFIG_T::dim_out> > &out,
                                            const typename CONFIG_T::q_proj::weight_t *wq,
                                            const typename CONFIG_T::q_proj::bias_t *bq,
                                            const typename CONFIG_T::k_proj::weight_t *wk,
                                            const typename CONFIG_T::k_proj::bias_t *bk,
                                            const typename CONFIG_T::v_proj::weight_t *wv,
                                            const typename CONFIG_T::v_proj::bias_t *bv,
                                            const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    attention_stream_body<in_T, in_T, res_T, CONFIG_T, R_PROJ, R_CORE, true, true>(in, in, out, wq, bq, wk, bk, wv, bv, 0, 0,
                                                                           bias);
}

} // namespace kiln

#endif
