// Softmax over one axis: data viewed as [n_outer][n_axis][n_inner].
// Stable form: exp(x - max) / sum. Float mode uses std::exp and a division; fixed point
// uses an exp table over [-exp_range, 0] (inputs are <= 0 after max subtraction) and a
// reciprocal table over [1, n_axis] (the sum is >= 1 because exp(0) = 1 is in it).
#ifndef KILN_SOFTMAX_H_
#define KILN_SOFTMAX_H_

#include "kiln_common.h"

namespace kiln {

template <typename CONFIG_T>
typename CONFIG_T::exp_table_t softmax_exp_lookup(float neg_x) {
    // neg_x = max - x >= 0
    static typename CONFIG_T::exp_table_t table[CONFIG_T::exp_table_size];
    static bool initialized = false;
    if (!initialized) {
        for (unsigned i = 0; i < CONFIG_T::exp_table_size; i++)
            table[i] = (typename CONFIG_T::exp_table_t)std::exp(-CONFIG_T::exp_range * (i + 0.5f) / CONFIG_T::exp_table_size);
        initialized = true;
    }
    int index = (int)(neg_x * (CONFIG_T::exp_table_size / CONFIG_T::exp_range));
    if (index > (int)CONFIG_T::exp_table_size - 1) index = CONFIG_T::exp_table_size - 1;
    if (index < 0) index = 0;
    return table[index];
}

template <typename CONFIG_T>
typename CONFIG_T::inv_table_t softmax_inv_lookup(float sum) {
    // sum in [1, n_axis]
    static typename CONFIG_T::inv_table_t table[CONFIG_T::inv_table_size];
    static bool initialized = false;
    const float span = CONFIG_T::n_axis > 1 ? (float)(CONFIG_T::n_axis - 1) : 1.0f;
    if (!initialized) {
        for (unsigned i = 0; i < CONFIG_T::inv_table_size; i++)
            table[i] = (typename CONFIG_T::inv_table_t)(1.0f / (1.0f + span * (i + 0.5f) / CONFIG_T::inv_table_size));
        initialized = true;
    }
    int index = (int)((sum - 1.0f) * (CONFIG_T::inv_table_size / span));
    if (index > (int)CONFIG_T::inv_table_size - 1) index = CONFIG_T::inv_table_size - 1;
    if (index < 0) index = 0;
    return table[index];
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
            data_T max_val = data[base];
        Max:
            for (unsigned a = 1; a < CONFIG_T::n_axis; a++) {
                data_T v = data[base + a * CONFIG_T::n_inner];
                if (v > max_val) max_val = v;
            }
            if (CONFIG_T::use_table) {
                typename CONFIG_T::exp_table_t e[CONFIG_T::n_axis];
                #pragma HLS ARRAY_PARTITION variable = e complete
                typename CONFIG_T::sum_t sum = 0;
            Exp:
                for (unsigned a = 0; a < CONFIG_T::n_axis; a++) {
                    e[a] = softmax_exp_lookup<CONFIG_T>(to_float(max_val) - to_float(data[base + a * CONFIG_T::n_inner]));
                    sum += e[a];
                }
                typename CONFIG_T::inv_table_t inv = softmax_inv_lookup<CONFIG_T>(to_float(sum));
            Normalize:
                for (unsigned a = 0; a < CONFIG_T::n_axis; a++) res[base + a * CONFIG_T::n_inner] = (res_T)(e[a] * inv);
            } else {
                float e[CONFIG_T::n_axis];
                float sum = 0;
                for (unsigned a = 0; a < CONFIG_T::n_axis; a++) {
                    e[a] = std::exp(to_float(data[base + a * CONFIG_T::n_inner]) - to_float(max_val));
                    sum += e[a];
                }
                for (unsigned a = 0; a < CONFIG_T::n_axis; a++) res[base + a * CONFIG_T::n_inner] = (res_T)(e[a] / sum);
            }
        }
    }
}

} // namespace kiln

#endif
