// Element-wise activations: Relu, LeakyRelu, Sigmoid, Tanh, Clip.
// In float mode (CONFIG_T::use_table == false) Sigmoid/Tanh use <cmath>; in fixed point
// they read a lookup table over [table_min, table_max) filled once (a ROM in hardware).
#ifndef KILN_ACTIVATION_H_
#define KILN_ACTIVATION_H_

#include "kiln_common.h"

namespace kiln {

enum activation_op { ACT_RELU = 0, ACT_LEAKY_RELU = 1, ACT_SIGMOID = 2, ACT_TANH = 3, ACT_CLIP = 4 };

inline float act_exact(unsigned op, float x) {
    if (op == ACT_SIGMOID) return 1.0f / (1.0f + std::exp(-x));
    return std::tanh(x);
}

template <typename CONFIG_T>
typename CONFIG_T::table_t act_table_lookup(float x) {
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
    static bool initialized = false;
    if (!initialized) {
        for (unsigned i = 0; i < CONFIG_T::table_size; i++) {
            float xi = CONFIG_T::table_min + (CONFIG_T::table_max - CONFIG_T::table_min) * (i + 0.5f) / CONFIG_T::table_size;
            table[i] = (typename CONFIG_T::table_t)act_exact(CONFIG_T::op, xi);
        }
        initialized = true;
    }
    int index = (int)((x - CONFIG_T::table_min) * (CONFIG_T::table_size / (CONFIG_T::table_max - CONFIG_T::table_min)));
    if (index < 0) index = 0;
    if (index > (int)CONFIG_T::table_size - 1) index = CONFIG_T::table_size - 1;
    return table[index];
}

template <class data_T, class res_T, typename CONFIG_T>
void activation(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        data_T x = data[i];
        if (CONFIG_T::op == ACT_RELU) {
            res[i] = x > 0 ? (res_T)x : (res_T)0;
        } else if (CONFIG_T::op == ACT_LEAKY_RELU) {
            res[i] = x > 0 ? (res_T)x : (res_T)(x * (typename CONFIG_T::param_t)CONFIG_T::alpha);
        } else if (CONFIG_T::op == ACT_CLIP) {
            // min(max(x, lo), hi) as ONNX defines it: when lo > hi every element becomes hi
            typename CONFIG_T::param_t lo = CONFIG_T::clip_min, hi = CONFIG_T::clip_max;
            res[i] = x > hi || lo > hi ? (res_T)hi : (x < lo ? (res_T)lo : (res_T)x);
        } else if (CONFIG_T::use_table) {
            res[i] = (res_T)act_table_lookup<CONFIG_T>(to_float(x));
        } else {
            res[i] = (res_T)act_exact(CONFIG_T::op, to_float(x));
        }
    }
}

} // namespace kiln

#endif
