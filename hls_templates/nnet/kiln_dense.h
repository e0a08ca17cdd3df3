// Dense (fully connected): res[r][o] = bias[o] + sum_i data[r][i] * w[i][o].
// n_rows > 1 applies the same weights to each row (MatMul on a [.., K] tensor).
// Weights are stored [n_in][n_out] (ONNX MatMul order).
#ifndef KILN_DENSE_H_
#define KILN_DENSE_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::dense: generated configs inherit this and override every field.
struct dense_config {
    static const unsigned n_rows = 1, n_in = 1, n_out = 1;  // rows of n_in in, rows of n_out out
    static const unsigned reuse_factor = 1;
    static const unsigned block_factor = 1;      // ceil(n_in * n_out / reuse_factor)
    static const unsigned multiplier_limit = 1;
    typedef float accum_t;
    typedef float weight_t;
    typedef float bias_t;
};

// One output of one row: biases[o] + sum_i data[r][i] * w[i][o], accumulated in accum_t in
// input order (dense, and the odd last output of dense_packed).
template <class data_T, typename CONFIG_T>
typename CONFIG_T::accum_t dense_output(const data_T data[CONFIG_T::n_rows * CONFIG_T::n_in],
                                        const typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                                        const typename CONFIG_T::bias_t biases[CONFIG_T::n_out], unsigned r, unsigned o) {
    #pragma HLS INLINE
    typename CONFIG_T::accum_t acc = biases[o];
Inputs:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) acc += data[r * CONFIG_T::n_in + i] * weights[i * CONFIG_T::n_out + o];
    return acc;
}

template <class data_T, class res_T, typename CONFIG_T>
void dense(const data_T data[CONFIG_T::n_rows * CONFIG_T::n_in], res_T res[CONFIG_T::n_rows * CONFIG_T::n_out],
           const typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
           const typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = weights cyclic factor = CONFIG_T::block_factor
    #pragma HLS ARRAY_PARTITION variable = biases complete
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
    Outputs:
        for (unsigned o = 0; o < CONFIG_T::n_out; o++)
            res[r * CONFIG_T::n_out + o] = (res_T)dense_output<data_T, CONFIG_T>(data, weights, biases, r, o);
    }
}

#ifndef KILN_FLOAT_ONLY  // ap_int arithmetic: fixed-point designs only
// Two integer products in one DSP48 multiply (AMD WP486, "INT8 optimization"): for outputs
// o and o+1 sharing the input x, p = ((w[o+1] << 18) + w[o]) * x = w[o+1]*x * 2^18 + w[o]*x.
// The low 18 bits are w[o]*x (it fits: |w*x| < 2^17), the rest w[o+1]*x minus the borrow of
// a negative low part. Exact; kiln/backends/hls/layers/dense.py uses it when the input and
// the weights are integers (ap_fixed<W, W>) with weight bits <= 9 and product bits <= 18.
template <class data_T, class res_T, typename CONFIG_T>
void dense_packed(const data_T data[CONFIG_T::n_rows * CONFIG_T::n_in],
                  res_T res[CONFIG_T::n_rows * CONFIG_T::n_out],
                  const typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                  const typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = weights cyclic factor = CONFIG_T::block_factor
    #pragma HLS ARRAY_PARTITION variable = biases complete
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
    Outputs:
        for (unsigned o = 0; o + 1 < CONFIG_T::n_out; o += 2) {
            typename CONFIG_T::accum_t acc_lo = biases[o], acc_hi = biases[o + 1];
        Inputs:
            for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
                ap_int<18> x = (ap_int<18>)data[r * CONFIG_T::n_in + i];
                ap_int<27> w = ((ap_int<27>)(ap_int<9>)weights[i * CONFIG_T::n_out + o + 1] << 18) +
                               (ap_int<27>)(ap_int<9>)weights[i * CONFIG_T::n_out + o];
                ap_int<45> p = w * x;
                ap_int<18> lo = p(17, 0);
                ap_int<27> hi = (ap_int<27>)(p >> 18) + (ap_int<27>)(lo < 0 ? 1 : 0);
                acc_lo += lo;
                acc_hi += hi;
            }
            res[r * CONFIG_T::n_out + o] = (res_T)acc_lo;
            res[r * CONFIG_T::n_out + o + 1] = (res_T)acc_hi;
        }
        if (CONFIG_T::n_out % 2) {  // the last output of an odd count: one plain product each
            const unsigned o = CONFIG_T::n_out - 1;
            res[r * CONFIG_T::n_out + o] = (res_T)dense_output<data_T, CONFIG_T>(data, weights, biases, r, o);
        }
    }
}
#endif

} // namespace kiln

#endif
