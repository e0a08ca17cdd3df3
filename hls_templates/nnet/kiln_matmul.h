// MatMul between two tensors (e.g. Q K^T and A V in attention): batched [batch..][M][K] x
// [batch..][K][N] with numpy broadcasting over up to 4 batch axes (strides in units of
// whole matrices, 0 on a broadcast axis).
#ifndef KILN_MATMUL_H_
#define KILN_MATMUL_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::matmul: generated configs inherit this and override every field.
struct matmul_config {
    static const unsigned n_a = 1, n_b = 1, n_out = 1;
    static const unsigned m = 1, k = 1, n = 1;
    static const unsigned reuse_factor = 1;
    static const unsigned multiplier_limit = 1;
    static const bool transpose_a = false, transpose_b = false;  // a stored [k][m] / b stored [n][k] (Einsum)
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1;  // output batch shape, leading 1s
    static const unsigned a_s0 = 0, a_s1 = 0, a_s2 = 0, a_s3 = 0, b_s0 = 0, b_s1 = 0, b_s2 = 0, b_s3 = 0;
    typedef float accum_t;
};

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void matmul(const a_T a[CONFIG_T::n_a], const b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
    const unsigned mk = CONFIG_T::m * CONFIG_T::k, kn = CONFIG_T::k * CONFIG_T::n, mn = CONFIG_T::m * CONFIG_T::n;
    unsigned batch = 0;
    for (unsigned i0 = 0; i0 < CONFIG_T::d0; i0++)
    for (unsigned i1 = 0; i1 < CONFIG_T::d1; i1++)
    for (unsigned i2 = 0; i2 < CONFIG_T::d2; i2++)
    for (unsigned i3 = 0; i3 < CONFIG_T::d3; i3++) {
        const unsigned ao = (i0 * CONFIG_T::a_s0 + i1 * CONFIG_T::a_s1 + i2 * CONFIG_T::a_s2 + i3 * CONFIG_T::a_s3) * mk;
        const unsigned bo = (i0 * CONFIG_T::b_s0 + i1 * CONFIG_T::b_s1 + i2 * CONFIG_T::b_s2 + i3 * CONFIG_T::b_s3) * kn;
    Rows:
        for (unsigned r = 0; r < CONFIG_T::m; r++) {
        Cols:
            for (unsigned c = 0; c < CONFIG_T::n; c++) {
                typename CONFIG_T::accum_t acc = 0;
            Inner:
                for (unsigned i = 0; i < CONFIG_T::k; i++) {
                    const unsigned ia = CONFIG_T::transpose_a ? i * CONFIG_T::m + r : r * CONFIG_T::k + i;
                    const unsigned ib = CONFIG_T::transpose_b ? c * CONFIG_T::k + i : i * CONFIG_T::n + c;
                    acc += a[ao + ia] * b[bo + ib];
                }
                res[batch * mn + r * CONFIG_T::n + c] = (res_T)acc;
            }
        }
        batch++;
    }
}

} // namespace kiln

#endif
