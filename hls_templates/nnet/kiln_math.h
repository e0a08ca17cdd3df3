// Element-wise math that appears in unfused exports (decomposed LayerNorm and GELU):
// Erf, Sqrt, Exp, Reciprocal, Pow with a constant exponent; Sin, Cos. Evaluated in float (hls_math
// provides these for synthesis); the fusion passes replace the usual patterns by
// LayerNormalization / Gelu layers with fixed-point tables.
// Also CumSum, the reductions (walk the input, accumulate into the output by strides that are 0
// on reduced axes) and Gather (rows of a table by index).
#ifndef KILN_MATH_H_
#define KILN_MATH_H_

#include "kiln_common.h"

namespace kiln {

// The kernel of a kiln::unary_math layer; the emitter (math.py) writes `kiln::math_op::<name>`.
enum class math_op { erf, sqrt, exp, reciprocal, pow, neg, abs, sin, cos };
// The kernel of a kiln::reduce layer (ReduceMean is sum with scale = 1/count; ReduceL2 is
// sqrt(sum_square)); the emitter writes `kiln::reduce_op::<name>`.
enum class reduce_op { sum, sum_square, l1, l2, max, min, prod };

// The contracts of the math templates: generated configs inherit these and override every field.
struct unary_math_config {
    static const unsigned n_elem = 1;
    static const math_op op = math_op::exp;
    static const unsigned reuse_factor = 1;
    static constexpr float exponent = 1.0f;  // Pow's constant exponent
};
struct reduce_config {
    static const unsigned n_in = 1, n_out = 1;
    static const reduce_op op = reduce_op::sum;
    static const unsigned reuse_factor = 1;
    static constexpr float scale = 1.0f;  // 1 / (reduced count) for ReduceMean
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = 1;  // input shape, leading 1s
    static const unsigned o_s0 = 0, o_s1 = 0, o_s2 = 0, o_s3 = 0, o_s4 = 0, o_s5 = 0;  // output strides (0: reduced)
    typedef float accum_t;  // holds the sum (of squares/magnitudes), the product, or the max/min itself
    typedef float scale_t;
};
struct cumsum_config {
    static const unsigned n_outer = 1, n_axis = 1, n_inner = 1;  // the input viewed as [outer][axis][inner]
    static const bool exclusive = false, reverse = false;
    static const unsigned reuse_factor = 1;
    typedef float accum_t;  // the running sum of up to n_axis values
};
struct gather_config {
    static const unsigned n_outer = 1, n_axis = 1, n_inner = 1, n_idx = 1;
    static const unsigned reuse_factor = 1;
};

template <class data_T, class res_T, typename CONFIG_T>
void unary_math(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        const float x = to_float(data[i]);
        float y;
        switch (CONFIG_T::op) {
        case math_op::erf: y = std::erf(x); break;
        case math_op::sqrt: y = std::sqrt(x); break;
        case math_op::exp: y = std::exp(x); break;
        case math_op::reciprocal: y = 1.0f / x; break;
        case math_op::neg: y = -x; break;
        case math_op::abs: y = std::fabs(x); break;
        case math_op::sin: y = std::sin(x); break;
        case math_op::cos: y = std::cos(x); break;
        default: y = CONFIG_T::exponent == 2.0f ? x * x : (CONFIG_T::exponent == 3.0f ? x * x * x : std::pow(x, CONFIG_T::exponent));
        }
        res[i] = (res_T)y;
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void reduce(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    typedef typename CONFIG_T::accum_t acc_T;
    const bool extremum = CONFIG_T::op == reduce_op::max || CONFIG_T::op == reduce_op::min;
    acc_T acc[CONFIG_T::n_out];
    bool seen[CONFIG_T::n_out];  // max/min: the first value of each output starts it
    #pragma HLS ARRAY_PARTITION variable = acc complete
    #pragma HLS ARRAY_PARTITION variable = seen complete
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        acc[j] = CONFIG_T::op == reduce_op::prod ? 1 : 0;
        seen[j] = false;
    }
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        const int j = walk_offset<CONFIG_T>(i, CONFIG_T::o_s0, CONFIG_T::o_s1, CONFIG_T::o_s2, CONFIG_T::o_s3,
                                            CONFIG_T::o_s4, CONFIG_T::o_s5);
        const acc_T x = (acc_T)data[i];
        switch (CONFIG_T::op) {
        case reduce_op::sum_square:
        case reduce_op::l2: acc[j] += x * x; break;
        case reduce_op::l1: acc[j] += x < 0 ? (acc_T)(-x) : x; break;
        case reduce_op::max: if (!seen[j] || x > acc[j]) acc[j] = x; break;
        case reduce_op::min: if (!seen[j] || x < acc[j]) acc[j] = x; break;
        case reduce_op::prod: acc[j] *= x; break;
        default: acc[j] += x;
        }
        if (extremum) seen[j] = true;
    }
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) {
        if (CONFIG_T::op == reduce_op::l2) res[j] = (res_T)std::sqrt(to_float(acc[j]));
        else if (CONFIG_T::op == reduce_op::sum) res[j] = (res_T)(acc[j] * (typename CONFIG_T::scale_t)CONFIG_T::scale);
        else res[j] = (res_T)acc[j];
    }
}

// Running sums along the middle axis of [n_outer][n_axis][n_inner]; exclusive: without the
// element itself; reverse: from the end.
template <class data_T, class res_T, typename CONFIG_T>
void cumsum(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_axis * CONFIG_T::n_inner],
            res_T res[CONFIG_T::n_outer * CONFIG_T::n_axis * CONFIG_T::n_inner]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
        for (unsigned i = 0; i < CONFIG_T::n_inner; i++) {
            typename CONFIG_T::accum_t acc = 0;
            for (unsigned k = 0; k < CONFIG_T::n_axis; k++) {
                const unsigned j = CONFIG_T::reverse ? CONFIG_T::n_axis - 1 - k : k;
                const unsigned at = (o * CONFIG_T::n_axis + j) * CONFIG_T::n_inner + i;
                if (CONFIG_T::exclusive) { res[at] = (res_T)acc; acc += data[at]; }
                else { acc += data[at]; res[at] = (res_T)acc; }
            }
        }
    }
}

// data viewed as [n_outer][n_axis][n_inner]; res as [n_outer][n_idx][n_inner].
template <class data_T, class idx_T, class res_T, typename CONFIG_T>
void gather(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_axis * CONFIG_T::n_inner], const idx_T indices[CONFIG_T::n_idx],
            res_T res[CONFIG_T::n_outer * CONFIG_T::n_idx * CONFIG_T::n_inner]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
        for (unsigned j = 0; j < CONFIG_T::n_idx; j++) {
            int k = (int)indices[j];
            if (k < 0) k += CONFIG_T::n_axis;
            if (k < 0) k = 0;
            if (k > (int)CONFIG_T::n_axis - 1) k = CONFIG_T::n_axis - 1;  // out of range: clamp (ONNX leaves it undefined)
            for (unsigned i = 0; i < CONFIG_T::n_inner; i++)
                res[(o * CONFIG_T::n_idx + j) * CONFIG_T::n_inner + i] = (res_T)data[(o * CONFIG_T::n_axis + k) * CONFIG_T::n_inner + i];
        }
    }
}

} // namespace kiln

#endif
