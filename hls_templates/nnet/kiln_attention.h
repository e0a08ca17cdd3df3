// Multi-head attention (kiln.MultiHeadAttention), one sample per call:
//   Q = x_q Wq + bq, K = x_kv Wk + bk, V = x_kv Wv + bv          (kiln::dense, [T][heads*dim])
//   per head h and query i: s[j] = scale * Q[i,h,:] . K[j,h,:]     (j over the n_kv keys)
//                                  (+ bias[h][i][j] when CONFIG_T::has_bias)
//                           p = softmax(s)                          (kiln_softmax.h's tables)
//                           O[i,h,:] = sum_j p[j] V[j,h,:]
//   res = O Wo + bo                                                 (heads merged: O is [n_q][heads*value_dim])
//   (multihead_attention_merged: no out projection, res = O)
// multihead_attention_sequences / _merged_sequences: CONFIG_T::sequences independent sequences of
// n_q (n_kv) rows each, side by side in data_q / data_kv / res (Swin's windows, MobileViT's patch
// pixels): the kernel above once per sequence, with the same weights, reuse factor and multipliers;
// the score bias is bias + s * bias_stride (bias_stride 0: shared by all sequences).
// Weights are [n_in][n_out] (kiln.Dense order); head h owns columns h*key_dim .. of Wq/Wk
// (h*value_dim .. of Wv) and rows h*value_dim .. of Wo. CONFIG_T carries the sizes, the
// internal types (derived by the emitter), a dense config per projection and the
// softmax table config. Like every Kiln layer the body is pipelined with II =
// reuse_factor; the core (scores, softmax, weighted values) shares multiplier_limit
// multipliers, the projections have their own (kiln::dense).
#ifndef KILN_ATTENTION_H_
#define KILN_ATTENTION_H_

#include "kiln_common.h"
#include "kiln_dense.h"
#include "kiln_softmax.h"

namespace kiln {

// The contract of kiln::multihead_attention (besides its nested q/k/v/out_proj dense
// configs and its softmax_config, a kiln::softmax_table_config over n_axis = n_kv).
struct multihead_attention_config {
    static const unsigned n_q = 1, n_kv = 1;
    static const unsigned dim_q = 1, dim_kv = 1, dim_out = 1;
    static const unsigned heads = 1, key_dim = 1, value_dim = 1;
    static const unsigned reuse_factor = 1;
    static const unsigned multiplier_limit = 1;
    static const bool use_table = false;
    static constexpr float scale = 1.0f;
    static const bool has_bias = false;
    static const unsigned sequences = 1, bias_stride = 0;
    typedef float bias_t;
    typedef float q_t;
    typedef float k_t;
    typedef float v_t;
    typedef float score_accum_t;
    typedef float scale_t;
    typedef float score_t;
    typedef float prob_t;
    typedef float o_accum_t;
    typedef float o_t;
};

// One attention head for one query row: scores, softmax, weighted sum of the values.
template <typename CONFIG_T>
void attention_head_row(const typename CONFIG_T::q_t q[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::key_dim],
                        const typename CONFIG_T::k_t k[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::key_dim],
                        const typename CONFIG_T::v_t v[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::value_dim],
                        typename CONFIG_T::o_t o[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::value_dim],
                        const typename CONFIG_T::bias_t *bias, unsigned h, unsigned i) {
    #pragma HLS INLINE
    typedef typename CONFIG_T::softmax_config sm_config;
    const unsigned hk = CONFIG_T::heads * CONFIG_T::key_dim, hv = CONFIG_T::heads * CONFIG_T::value_dim;
    const typename CONFIG_T::scale_t scale = CONFIG_T::scale;
    typename CONFIG_T::score_t s[CONFIG_T::n_kv];
    typename CONFIG_T::prob_t p[CONFIG_T::n_kv];
    #pragma HLS ARRAY_PARTITION variable = s complete
    #pragma HLS ARRAY_PARTITION variable = p complete
Scores:
    for (unsigned j = 0; j < CONFIG_T::n_kv; j++) {
        typename CONFIG_T::score_accum_t acc = 0;
    Dot:
        for (unsigned d = 0; d < CONFIG_T::key_dim; d++)
            acc += q[i * hk + h * CONFIG_T::key_dim + d] * k[j * hk + h * CONFIG_T::key_dim + d];
        typename CONFIG_T::score_t sj = (typename CONFIG_T::score_t)(acc * scale);
        if (CONFIG_T::has_bias) sj += (typename CONFIG_T::score_t)bias[(h * CONFIG_T::n_q + i) * CONFIG_T::n_kv + j];
        s[j] = sj;
    }
    softmax_row<typename CONFIG_T::score_t, typename CONFIG_T::prob_t, sm_config>(s, 1, p, 1);
Weighted:
    for (unsigned d = 0; d < CONFIG_T::value_dim; d++) {
        typename CONFIG_T::o_accum_t acc = 0;
    Keys:
        for (unsigned j = 0; j < CONFIG_T::n_kv; j++) acc += p[j] * v[j * hv + h * CONFIG_T::value_dim + d];
        o[i * hv + h * CONFIG_T::value_dim + d] = (typename CONFIG_T::o_t)acc;
    }
}

// Q, K, V projections and every head's attention: o [n_q][heads*value_dim] (heads merged), bias or 0.
template <class q_in_T, class kv_in_T, typename CONFIG_T>
void attention_heads(const q_in_T data_q[CONFIG_T::n_q * CONFIG_T::dim_q],
                         const kv_in_T data_kv[CONFIG_T::n_kv * CONFIG_T::dim_kv],
                         typename CONFIG_T::o_t o[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::value_dim],
                         const typename CONFIG_T::q_proj::weight_t wq[CONFIG_T::q_proj::n_in * CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::q_proj::bias_t bq[CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::k_proj::weight_t wk[CONFIG_T::k_proj::n_in * CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::k_proj::bias_t bk[CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::v_proj::weight_t wv[CONFIG_T::v_proj::n_in * CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::v_proj::bias_t bv[CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE
    typename CONFIG_T::q_t q[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::key_dim];
    typename CONFIG_T::k_t k[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::key_dim];
    typename CONFIG_T::v_t v[CONFIG_T::n_kv * CONFIG_T::heads * CONFIG_T::value_dim];
    #pragma HLS ARRAY_PARTITION variable = q complete
    #pragma HLS ARRAY_PARTITION variable = k complete
    #pragma HLS ARRAY_PARTITION variable = v complete

    dense<q_in_T, typename CONFIG_T::q_t, typename CONFIG_T::q_proj>(data_q, q, wq, bq);
    dense<kv_in_T, typename CONFIG_T::k_t, typename CONFIG_T::k_proj>(data_kv, k, wk, bk);
    dense<kv_in_T, typename CONFIG_T::v_t, typename CONFIG_T::v_proj>(data_kv, v, wv, bv);
Heads:
    for (unsigned h = 0; h < CONFIG_T::heads; h++) {
    Queries:
        for (unsigned i = 0; i < CONFIG_T::n_q; i++) attention_head_row<CONFIG_T>(q, k, v, o, bias, h, i);
    }
}

// The projections, every head's attention and the out projection; ``bias``: the constant score bias
// [heads][n_q][n_kv] added to the scaled scores (CONFIG_T::has_bias), or 0.
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T>
void multihead_attention(const q_in_T data_q[CONFIG_T::n_q * CONFIG_T::dim_q],
                         const kv_in_T data_kv[CONFIG_T::n_kv * CONFIG_T::dim_kv],
                         res_T res[CONFIG_T::n_q * CONFIG_T::dim_out],
                         const typename CONFIG_T::q_proj::weight_t wq[CONFIG_T::q_proj::n_in * CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::q_proj::bias_t bq[CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::k_proj::weight_t wk[CONFIG_T::k_proj::n_in * CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::k_proj::bias_t bk[CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::v_proj::weight_t wv[CONFIG_T::v_proj::n_in * CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::v_proj::bias_t bv[CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::out_proj::weight_t wo[CONFIG_T::out_proj::n_in * CONFIG_T::out_proj::n_out],
                         const typename CONFIG_T::out_proj::bias_t bo[CONFIG_T::out_proj::n_out],
                         const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
    typename CONFIG_T::o_t o[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::value_dim];
    #pragma HLS ARRAY_PARTITION variable = o complete
    attention_heads<q_in_T, kv_in_T, CONFIG_T>(data_q, data_kv, o, wq, bq, wk, bk, wv, bv, bias);
    dense<typename CONFIG_T::o_t, res_T, typename CONFIG_T::out_proj>(o, res, wo, bo);
}

// Without an out projection (dim_out = heads*value_dim): res is the merged heads; bias as above, or 0.
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T>
void multihead_attention_merged(const q_in_T data_q[CONFIG_T::n_q * CONFIG_T::dim_q],
                         const kv_in_T data_kv[CONFIG_T::n_kv * CONFIG_T::dim_kv],
                         res_T res[CONFIG_T::n_q * CONFIG_T::dim_out],
                         const typename CONFIG_T::q_proj::weight_t wq[CONFIG_T::q_proj::n_in * CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::q_proj::bias_t bq[CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::k_proj::weight_t wk[CONFIG_T::k_proj::n_in * CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::k_proj::bias_t bk[CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::v_proj::weight_t wv[CONFIG_T::v_proj::n_in * CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::v_proj::bias_t bv[CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
    typename CONFIG_T::o_t o[CONFIG_T::n_q * CONFIG_T::heads * CONFIG_T::value_dim];
    #pragma HLS ARRAY_PARTITION variable = o complete
    attention_heads<q_in_T, kv_in_T, CONFIG_T>(data_q, data_kv, o, wq, bq, wk, bk, wv, bv, bias);
Merge:
    for (unsigned i = 0; i < CONFIG_T::n_q * CONFIG_T::dim_out; i++) res[i] = (res_T)o[i];
}

// The kernel once per sequence (with an out projection; the score bias when has_bias, else 0).
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T>
void multihead_attention_sequences(const q_in_T data_q[CONFIG_T::sequences * CONFIG_T::n_q * CONFIG_T::dim_q],
                         const kv_in_T data_kv[CONFIG_T::sequences * CONFIG_T::n_kv * CONFIG_T::dim_kv],
                         res_T res[CONFIG_T::sequences * CONFIG_T::n_q * CONFIG_T::dim_out],
                         const typename CONFIG_T::q_proj::weight_t wq[CONFIG_T::q_proj::n_in * CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::q_proj::bias_t bq[CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::k_proj::weight_t wk[CONFIG_T::k_proj::n_in * CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::k_proj::bias_t bk[CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::v_proj::weight_t wv[CONFIG_T::v_proj::n_in * CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::v_proj::bias_t bv[CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::out_proj::weight_t wo[CONFIG_T::out_proj::n_in * CONFIG_T::out_proj::n_out],
                         const typename CONFIG_T::out_proj::bias_t bo[CONFIG_T::out_proj::n_out],
                         const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
Sequences:
    for (unsigned s = 0; s < CONFIG_T::sequences; s++)
        multihead_attention<q_in_T, kv_in_T, res_T, CONFIG_T>(
            data_q + s * CONFIG_T::n_q * CONFIG_T::dim_q, data_kv + s * CONFIG_T::n_kv * CONFIG_T::dim_kv,
            res + s * CONFIG_T::n_q * CONFIG_T::dim_out, wq, bq, wk, bk, wv, bv, wo, bo,
            CONFIG_T::has_bias ? bias + s * CONFIG_T::bias_stride : bias);
}

// The same without an out projection (res: each sequence's merged heads).
template <class q_in_T, class kv_in_T, class res_T, typename CONFIG_T>
void multihead_attention_merged_sequences(
                         const q_in_T data_q[CONFIG_T::sequences * CONFIG_T::n_q * CONFIG_T::dim_q],
                         const kv_in_T data_kv[CONFIG_T::sequences * CONFIG_T::n_kv * CONFIG_T::dim_kv],
                         res_T res[CONFIG_T::sequences * CONFIG_T::n_q * CONFIG_T::dim_out],
                         const typename CONFIG_T::q_proj::weight_t wq[CONFIG_T::q_proj::n_in * CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::q_proj::bias_t bq[CONFIG_T::q_proj::n_out],
                         const typename CONFIG_T::k_proj::weight_t wk[CONFIG_T::k_proj::n_in * CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::k_proj::bias_t bk[CONFIG_T::k_proj::n_out],
                         const typename CONFIG_T::v_proj::weight_t wv[CONFIG_T::v_proj::n_in * CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::v_proj::bias_t bv[CONFIG_T::v_proj::n_out],
                         const typename CONFIG_T::bias_t *bias) {
    #pragma HLS INLINE off
Sequences:
    for (unsigned s = 0; s < CONFIG_T::sequences; s++)
        multihead_attention_merged<q_in_T, kv_in_T, res_T, CONFIG_T>(
            data_q + s * CONFIG_T::n_q * CONFIG_T::dim_q, data_kv + s * CONFIG_T::n_kv * CONFIG_T::dim_kv,
            res + s * CONFIG_T::n_q * CONFIG_T::dim_out, wq, bq, wk, bk, wv, bv,
            CONFIG_T::has_bias ? bias + s * CONFIG_T::bias_stride : bias);
}

} // namespace kiln

#endif
