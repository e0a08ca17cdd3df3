// Element-wise math that appears in unfused exports (decomposed LayerNorm and GELU):
// Erf, Sqrt, Exp, Reciprocal, Pow with a constant exponent. Evaluated in float (hls_math
// provides these for synthesis); the fusion passes replace the usual patterns by
// LayerNormalization / Gelu layers with fixed-point tables.
// Also ReduceMean/ReduceSum (walk the input, accumulate into the output by strides that
// are 0 on reduced axes) and Gather (rows of a table by index).
#ifndef KILN_MATH_H_
#define KILN_MATH_H_

#include "kiln_common.h"

namespace kiln {

enum math_op { MATH_ERF = 0, MATH_SQRT = 1, MATH_EXP = 2, MATH_RECIPROCAL = 3, MATH_POW = 4, MATH_NEG = 5, MATH_ABS = 6 };

template <class data_T, class res_T, typename CONFIG_T>
void unary_math(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        const float x = to_float(data[i]);
        float y;
        switch (CONFIG_T::op) {
        case MATH_ERF: y = std::erf(x); break;
        case MATH_SQRT: y = std::sqrt(x); break;
        case MATH_EXP: y = std::exp(x); break;
        case MATH_RECIPROCAL: y = 1.0f / x; break;
        case MATH_NEG: y = -x; break;
        case MATH_ABS: y = std::fabs(x); break;
        default: y = CONFIG_T::exponent == 2.0f ? x * x : (CONFIG_T::exponent == 3.0f ? x * x * x : std::pow(x, CONFIG_T::exponent));
        }
        res[i] = (res_T)y;
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void reduce(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    typename CONFIG_T::accum_t acc[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable = acc complete
    for (unsigned j = 0; j < CONFIG_T::n_out; j++) acc[j] = 0;
    unsigned i = 0;
    for (unsigned i0 = 0; i0 < CONFIG_T::d0; i0++)
    for (unsigned i1 = 0; i1 < CONFIG_T::d1; i1++)
    for (unsigned i2 = 0; i2 < CONFIG_T::d2; i2++)
    for (unsigned i3 = 0; i3 < CONFIG_T::d3; i3++)
    for (unsigned i4 = 0; i4 < CONFIG_T::d4; i4++)
    for (unsigned i5 = 0; i5 < CONFIG_T::d5; i5++) {
        acc[i0 * CONFIG_T::o_s0 + i1 * CONFIG_T::o_s1 + i2 * CONFIG_T::o_s2 + i3 * CONFIG_T::o_s3 +
            i4 * CONFIG_T::o_s4 + i5 * CONFIG_T::o_s5] += data[i++];
    }
    for (unsigned j = 0; j < CONFIG_T::n_out; j++)
        res[j] = (res_T)(acc[j] * (typename CONFIG_T::scale_t)CONFIG_T::scale);
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
