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
        for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
            typename CONFIG_T::accum_t acc = biases[o];
        Inputs:
            for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
                acc += data[r * CONFIG_T::n_in + i] * weights[i * CONFIG_T::n_out + o];
            }
            res[r * CONFIG_T::n_out + o] = (res_T)acc;
        }
    }
}

} // namespace kiln

#endif
