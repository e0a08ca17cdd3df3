// Softmax over one axis: data viewed as [n_outer][n_axis][n_inner].
// Stable form: exp(x - max) / sum. Float mode uses std::exp and a division; fixed point
// uses two-level exp tables over [-exp_range, 0] (inputs are <= 0 after max subtraction)
// and a range-reduced reciprocal table (the sum is >= 1 because exp(0) = 1 is in it).
#ifndef KILN_SOFTMAX_H_
#define KILN_SOFTMAX_H_

#include "kiln_common.h"

namespace kiln {

// The contract of the softmax tables (kiln::softmax, and kiln::multihead_attention's
// nested softmax_config); the sizes are rendered by backends/hls/layers/softmax.py
// (SOFTMAX_TABLES), the one place they are defined.
struct softmax_table_config {
    static const bool use_table = false;  // fixed point: the tables; float: std::exp and a division
    static constexpr float exp_range = 16.0f;
    static const unsigned exp_hi_steps = 32;
    static const unsigned exp_lo_steps = 64;
    static const unsigned inv_table_size = 1024;
    static const unsigned max_shift = 1;  // halvings that bring the sum into [1, 2)
    typedef float exp_table_t;
    typedef float inv_table_t;
    typedef float sum_t;
};

// The contract of kiln::softmax.
struct softmax_config : softmax_table_config {
    static const unsigned n_outer = 1, n_axis = 1, n_inner = 1;
    static const unsigned reuse_factor = 1;
};

// exp(-d) for d >= 0 as exp(-hi) * exp(-lo): hi = d rounded down to 1/exp_hi_steps (a
// table over [0, exp_range)), lo = the rest (a table over one step at 1/exp_lo_steps of it).
// Two small tables give the accuracy of one table exp_lo_steps times larger.
template <typename CONFIG_T>
typename CONFIG_T::exp_table_t softmax_exp_lookup(float d) {
    const unsigned n_hi = (unsigned)(CONFIG_T::exp_range * CONFIG_T::exp_hi_steps);
    static typename CONFIG_T::exp_table_t hi_table[(unsigned)(CONFIG_T::exp_range * CONFIG_T::exp_hi_steps)];
    static typename CONFIG_T::exp_table_t lo_table[CONFIG_T::exp_lo_steps];
    static bool initialized = false;
    if (!initialized) {
        for (unsigned i = 0; i < n_hi; i++) hi_table[i] = (typename CONFIG_T::exp_table_t)std::exp(-(float)i / CONFIG_T::exp_hi_steps);
        for (unsigned j = 0; j < CONFIG_T::exp_lo_steps; j++)
            lo_table[j] = (typename CONFIG_T::exp_table_t)std::exp(-(j + 0.5f) / (CONFIG_T::exp_hi_steps * CONFIG_T::exp_lo_steps));
        initialized = true;
    }
    if (d >= CONFIG_T::exp_range) return 0;
    const float scaled = d * CONFIG_T::exp_hi_steps;
    int hi = (int)scaled;
    int lo = (int)((scaled - hi) * CONFIG_T::exp_lo_steps);
    if (hi > (int)n_hi - 1) hi = n_hi - 1;
    if (lo > (int)CONFIG_T::exp_lo_steps - 1) lo = CONFIG_T::exp_lo_steps - 1;
    return (typename CONFIG_T::exp_table_t)(hi_table[hi] * lo_table[lo]);
}

// 1/sum for sum >= 1: sum = m * 2^e with m in [1, 2), 1/m from a table, shifted back by e.
template <typename CONFIG_T>
typename CONFIG_T::inv_table_t softmax_inv_lookup(typename CONFIG_T::sum_t sum) {
    static typename CONFIG_T::inv_table_t table[CONFIG_T::inv_table_size];
    static bool initialized = false;
    if (!initialized) {
        for (unsigned i = 0; i < CONFIG_T::inv_table_size; i++)
            table[i] = (typename CONFIG_T::inv_table_t)(1.0f / (1.0f + (i + 0.5f) / CONFIG_T::inv_table_size));
        initialized = true;
    }
    typename CONFIG_T::sum_t m = sum;
    int e = 0;
Normalize:
    for (unsigned k = 0; k < CONFIG_T::max_shift; k++) {
        if (m >= 2) { m = shift_right(m, 1); e++; }
    }
    int index = (int)((to_float(m) - 1.0f) * CONFIG_T::inv_table_size);
    if (index < 0) index = 0;
    if (index > (int)CONFIG_T::inv_table_size - 1) index = CONFIG_T::inv_table_size - 1;
    return shift_right(table[index], e);
}

// The one softmax row: res[a * res_stride] = softmax(data[a * stride]) over CONFIG_T::n_axis
// values (kiln::softmax walks them along an axis, kiln::multihead_attention over the keys).
// Stable form: every exp is of (x - max) <= 0.
template <class data_T, class res_T, typename CONFIG_T>
void softmax_row(const data_T *data, unsigned stride, res_T *res, unsigned res_stride) {
    #pragma HLS INLINE
    data_T max_val = data[0];
Max:
    for (unsigned a = 1; a < CONFIG_T::n_axis; a++) {
        data_T v = data[a * stride];
        if (v > max_val) max_val = v;
    }
    if (CONFIG_T::use_table) {
        typename CONFIG_T::exp_table_t e[CONFIG_T::n_axis];
        #pragma HLS ARRAY_PARTITION variable = e complete
        typename CONFIG_T::sum_t sum = 0;
    Exp:
        for (unsigned a = 0; a < CONFIG_T::n_axis; a++) {
            e[a] = softmax_exp_lookup<CONFIG_T>(to_float(max_val) - to_float(data[a * stride]));
            sum += e[a];
        }
        typename CONFIG_T::inv_table_t inv = softmax_inv_lookup<CONFIG_T>(sum);
    Normalize:
        for (unsigned a = 0; a < CONFIG_T::n_axis; a++) res[a * res_stride] = (res_T)(e[a] * inv);
    } else {
        float e[CONFIG_T::n_axis];
        float sum = 0;
        for (unsigned a = 0; a < CONFIG_T::n_axis; a++) {
            e[a] = std::exp(to_float(data[a * stride]) - to_float(max_val));
            sum += e[a];
        }
        for (unsigned a = 0; a < CONFIG_T::n_axis; a++) res[a * res_stride] = (res_T)(e[a] / sum);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void softmax(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_axis * CONFIG_T::n_inner],
             res_T res[CONFIG_T::n_outer * CONFIG_T::n_axis * CONFIG_T::n_inner]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
Outer:
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
    Inner:
        for (unsigned in = 0; in < CONFIG_T::n_inner; in++) {
            const unsigned base = o * CONFIG_T::n_axis * CONFIG_T::n_inner + in;
            softmax_row<data_T, res_T, CONFIG_T>(data + base, CONFIG_T::n_inner, res + base, CONFIG_T::n_inner);
        }
    }
}

} // namespace kiln

#endif
