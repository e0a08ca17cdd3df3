// LayerNormalization over the last n_norm values: data viewed as [n_outer][n_norm].
//   y = (x - mean) * rsqrt(var + eps) * scale + bias
// GroupNormalization and InstanceNormalization (groupnorm, below): the same statistics over
// each group of channels, a per-channel scale and bias.
// Float mode computes rsqrt with <cmath>. Fixed point range-reduces the variance,
// var = m * 4^e with m in [0.25, 1), reads rsqrt(m) in (1, 2] from a table and shifts the
// result by e: accurate at any input scale (a table over var directly, as hls4ml's,
// only covers one range of variances).
#ifndef KILN_LAYERNORM_H_
#define KILN_LAYERNORM_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::layernorm: generated configs inherit this and override every field.
struct layernorm_config {
    static const unsigned n_outer = 1, n_norm = 1;
    static const unsigned reuse_factor = 1;
    static const bool use_table = false;
    static const unsigned table_size = 1024;
    static const unsigned max_shift = 1;
    static constexpr float inv_n = 1.0f;
    static constexpr float epsilon = 1e-5f;
    typedef float sum_t;
    typedef float inv_n_t;
    typedef float mean_t;
    typedef float diff_t;
    typedef float sq_sum_t;
    typedef float var_t;
    typedef float rstd_t;
    typedef float norm_t;
    typedef float scale_t;
    typedef float bias_t;
};

// The contract of kiln::groupnorm: the layernorm fields (types, table; n_outer and n_norm
// unused) and the layout [n_outer][n_group][n_chan][n_inner], n_chan channels per group.
struct groupnorm_config : layernorm_config {
    static const unsigned n_group = 1, n_chan = 1, n_inner = 1;
};

template <typename CONFIG_T>
typename CONFIG_T::rstd_t layernorm_rsqrt(typename CONFIG_T::var_t var) {
    if (!CONFIG_T::use_table) return (typename CONFIG_T::rstd_t)(1.0f / std::sqrt(to_float(var)));
    static typename CONFIG_T::rstd_t table[CONFIG_T::table_size];
    static bool initialized = false;
    if (!initialized) {
        for (unsigned i = 0; i < CONFIG_T::table_size; i++)
            table[i] = (typename CONFIG_T::rstd_t)(1.0f / std::sqrt(0.25f + 0.75f * (i + 0.5f) / CONFIG_T::table_size));
        initialized = true;
    }
    typename CONFIG_T::var_t m = var;
    int e = 0;
Reduce:
    for (unsigned k = 0; k < CONFIG_T::max_shift; k++) {
        if (m >= 1) { m = shift_right(m, 2); e++; }
        else if (m < (typename CONFIG_T::var_t)0.25) { m = shift_left(m, 2); e--; }
    }
    int index = (int)((to_float(m) - 0.25f) * (CONFIG_T::table_size / 0.75f));
    if (index < 0) index = 0;
    if (index > (int)CONFIG_T::table_size - 1) index = CONFIG_T::table_size - 1;
    typename CONFIG_T::rstd_t r = table[index];
    return e > 0 ? shift_right(r, e) : shift_left(r, -e);
}

// The statistics of one row of n values (a LayerNorm row, a GroupNorm group): its mean
// (written to `mean`) and 1 / sqrt(var + epsilon), in the config's sum/mean/diff/var types.
template <class data_T, typename CONFIG_T>
typename CONFIG_T::rstd_t row_rstd(const data_T *row, unsigned n, typename CONFIG_T::mean_t &mean) {
    #pragma HLS INLINE
    typename CONFIG_T::sum_t sum = 0;
Sum:
    for (unsigned i = 0; i < n; i++) sum += row[i];
    mean = sum * (typename CONFIG_T::inv_n_t)CONFIG_T::inv_n;
    typename CONFIG_T::sq_sum_t sq = 0;
Variance:
    for (unsigned i = 0; i < n; i++) {
        typename CONFIG_T::diff_t d = row[i] - mean;
        sq += d * d;
    }
    typename CONFIG_T::var_t var = sq * (typename CONFIG_T::inv_n_t)CONFIG_T::inv_n;
    var += (typename CONFIG_T::var_t)CONFIG_T::epsilon;
    return layernorm_rsqrt<CONFIG_T>(var);
}

template <class data_T, class res_T, typename CONFIG_T>
void layernorm(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_norm], res_T res[CONFIG_T::n_outer * CONFIG_T::n_norm],
               const typename CONFIG_T::scale_t scale[CONFIG_T::n_norm], const typename CONFIG_T::bias_t bias[CONFIG_T::n_norm]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = scale complete
    #pragma HLS ARRAY_PARTITION variable = bias complete
Rows:
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
        const unsigned base = o * CONFIG_T::n_norm;
        typename CONFIG_T::mean_t mean;
        const typename CONFIG_T::rstd_t rstd = row_rstd<data_T, CONFIG_T>(data + base, CONFIG_T::n_norm, mean);
    Normalize:
        for (unsigned i = 0; i < CONFIG_T::n_norm; i++) {
            typename CONFIG_T::diff_t d = data[base + i] - mean;
            typename CONFIG_T::norm_t n = d * rstd;
            res[base + i] = (res_T)(n * scale[i] + bias[i]);
        }
    }
}

// GroupNormalization (InstanceNormalization: one channel per group): data viewed as
// [n_outer][n_group][n_chan][n_inner]; mean and variance over each group's n_chan * n_inner
// values (row_rstd: the layernorm types and rsqrt), then channel c = g * n_chan + j scaled by scale[c]
// and shifted by bias[c].
template <class data_T, class res_T, typename CONFIG_T>
void groupnorm(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_group * CONFIG_T::n_chan * CONFIG_T::n_inner],
               res_T res[CONFIG_T::n_outer * CONFIG_T::n_group * CONFIG_T::n_chan * CONFIG_T::n_inner],
               const typename CONFIG_T::scale_t scale[CONFIG_T::n_group * CONFIG_T::n_chan],
               const typename CONFIG_T::bias_t bias[CONFIG_T::n_group * CONFIG_T::n_chan]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    const unsigned n = CONFIG_T::n_chan * CONFIG_T::n_inner;
Groups:
    for (unsigned r = 0; r < CONFIG_T::n_outer * CONFIG_T::n_group; r++) {
        const unsigned base = r * n, c0 = (r % CONFIG_T::n_group) * CONFIG_T::n_chan;
        typename CONFIG_T::mean_t mean;
        const typename CONFIG_T::rstd_t rstd = row_rstd<data_T, CONFIG_T>(data + base, n, mean);
    Normalize:
        for (unsigned i = 0; i < n; i++) {
            const unsigned c = c0 + i / CONFIG_T::n_inner;
            typename CONFIG_T::diff_t d = data[base + i] - mean;
            typename CONFIG_T::norm_t v = d * rstd;
            res[base + i] = (res_T)(v * scale[c] + bias[c]);
        }
    }
}

} // namespace kiln

#endif
