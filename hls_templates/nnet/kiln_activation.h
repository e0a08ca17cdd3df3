// Element-wise activations: Relu, LeakyRelu, Sigmoid, Tanh, Clip, HardSigmoid, HardSwish,
// Selu, Elu, ThresholdedRelu, Softplus, Softsign.
// Selu(x) = gamma * (x > 0 ? x : alpha * (exp(x) - 1)), Elu the same with gamma = 1,
// Softplus(x) = log(1 + exp(x)), Softsign(x) = x / (1 + |x|): evaluated in float (<cmath>,
// hls_math in synthesis) and converted to the output type, in fixed point as in float.
// ThresholdedRelu(x) = x > alpha ? x : 0 compares in param_t (exact).
// HardSigmoid(x) = max(0, min(1, alpha * x + beta)), HardSwish(x) = x * HardSigmoid(x) with
// alpha = 1/6, beta = 1/2 (ONNX); both computed in param_t (no table).
// In float mode (CONFIG_T::use_table == false) Sigmoid/Tanh use <cmath>; in fixed point
// they read a lookup table over [table_min, table_max) filled once (a ROM in hardware).
#ifndef KILN_ACTIVATION_H_
#define KILN_ACTIVATION_H_

#include "kiln_common.h"

namespace kiln {

// The kernel of a kiln::activation layer; the emitter (activation.py) writes
// `kiln::activation_op::<name>` with these names.
enum class activation_op {
    relu, leaky_relu, sigmoid, tanh, clip, hard_sigmoid, hard_swish, selu, elu, thresholded_relu, softplus, softsign
};

// The contract of kiln::activation: generated configs inherit this and override what they set.
struct activation_config {
    static const unsigned n_elem = 1;
    static const activation_op op = activation_op::relu;
    static const unsigned reuse_factor = 1;
    static const bool use_table = false;    // Sigmoid/Tanh: a table in fixed point, <cmath> in float
    static const unsigned table_size = 1024;
    static constexpr float table_min = -8.0f;
    static constexpr float table_max = 8.0f;
    static constexpr float alpha = 0.01f;   // LeakyRelu; HardSigmoid/HardSwish slope
    static constexpr float beta = 0.5f;     // HardSigmoid/HardSwish offset
    static constexpr float gamma = 1.0f;    // Selu's scale (Elu: 1)
    static constexpr float clip_min = 0.0f;  // Clip
    static constexpr float clip_max = 0.0f;
    typedef float param_t;  // the type alpha and the clip bounds are held in
    typedef float table_t;
};

inline float act_exact(activation_op op, float x) {
    if (op == activation_op::sigmoid) return 1.0f / (1.0f + std::exp(-x));
    return std::tanh(x);
}

// The ops evaluated in float in both modes (exp/log have no cheap exact fixed-point form).
inline bool act_in_float(activation_op op) {
    return op == activation_op::selu || op == activation_op::elu || op == activation_op::softplus ||
           op == activation_op::softsign;
}

template <typename CONFIG_T>
float act_float(float x) {
    switch (CONFIG_T::op) {
        case activation_op::selu:
        case activation_op::elu:
            return CONFIG_T::gamma * (x > 0.0f ? x : CONFIG_T::alpha * (std::exp(x) - 1.0f));
        case activation_op::softplus: return std::log(1.0f + std::exp(x));
        default: return x / (1.0f + std::fabs(x));  // softsign
    }
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
        if (CONFIG_T::op == activation_op::relu) {
            res[i] = x > 0 ? (res_T)x : (res_T)0;
        } else if (CONFIG_T::op == activation_op::leaky_relu) {
            res[i] = x > 0 ? (res_T)x : (res_T)(x * (typename CONFIG_T::param_t)CONFIG_T::alpha);
        } else if (CONFIG_T::op == activation_op::clip) {
            // min(max(x, lo), hi) as ONNX defines it: when lo > hi every element becomes hi
            typename CONFIG_T::param_t lo = CONFIG_T::clip_min, hi = CONFIG_T::clip_max;
            res[i] = x > hi || lo > hi ? (res_T)hi : (x < lo ? (res_T)lo : (res_T)x);
        } else if (CONFIG_T::op == activation_op::hard_sigmoid || CONFIG_T::op == activation_op::hard_swish) {
            typename CONFIG_T::param_t h = x * (typename CONFIG_T::param_t)CONFIG_T::alpha +
                                           (typename CONFIG_T::param_t)CONFIG_T::beta;
            if (h < 0) h = 0;
            if (h > 1) h = 1;
            res[i] = CONFIG_T::op == activation_op::hard_sigmoid ? (res_T)h : (res_T)(x * h);
        } else if (CONFIG_T::op == activation_op::thresholded_relu) {
            res[i] = x > (typename CONFIG_T::param_t)CONFIG_T::alpha ? (res_T)x : (res_T)0;
        } else if (act_in_float(CONFIG_T::op)) {
            res[i] = (res_T)act_float<CONFIG_T>(to_float(x));
        } else if (CONFIG_T::use_table) {
            res[i] = (res_T)act_table_lookup<CONFIG_T>(to_float(x));
        } else {
            res[i] = (res_T)act_exact(CONFIG_T::op, to_float(x));
        }
    }
}

} // namespace kiln

#endif
