// Binary element-wise ops with ONNX (numpy) broadcasting: Add, Sub, Mul, Div.
// The output is walked as a 6-D index (shape d0..d5, padded with leading 1s); each operand
// has its own strides (0 along broadcast axes), so one template covers every broadcast.
#ifndef KILN_ELTWISE_H_
#define KILN_ELTWISE_H_

#include "kiln_common.h"

namespace kiln {

enum binary_op { BIN_ADD = 0, BIN_SUB = 1, BIN_MUL = 2, BIN_DIV = 3 };

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void binary(const a_T a[CONFIG_T::n_a], const b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    unsigned o = 0;
    for (unsigned i0 = 0; i0 < CONFIG_T::d0; i0++)
    for (unsigned i1 = 0; i1 < CONFIG_T::d1; i1++)
    for (unsigned i2 = 0; i2 < CONFIG_T::d2; i2++)
    for (unsigned i3 = 0; i3 < CONFIG_T::d3; i3++)
    for (unsigned i4 = 0; i4 < CONFIG_T::d4; i4++)
    for (unsigned i5 = 0; i5 < CONFIG_T::d5; i5++) {
        const unsigned ia = i0 * CONFIG_T::a_s0 + i1 * CONFIG_T::a_s1 + i2 * CONFIG_T::a_s2 +
                            i3 * CONFIG_T::a_s3 + i4 * CONFIG_T::a_s4 + i5 * CONFIG_T::a_s5;
        const unsigned ib = i0 * CONFIG_T::b_s0 + i1 * CONFIG_T::b_s1 + i2 * CONFIG_T::b_s2 +
                            i3 * CONFIG_T::b_s3 + i4 * CONFIG_T::b_s4 + i5 * CONFIG_T::b_s5;
        if (CONFIG_T::op == BIN_ADD) res[o] = (res_T)(a[ia] + b[ib]);
        else if (CONFIG_T::op == BIN_SUB) res[o] = (res_T)(a[ia] - b[ib]);
        else if (CONFIG_T::op == BIN_MUL) res[o] = (res_T)(a[ia] * b[ib]);
        else res[o] = (res_T)(a[ia] / b[ib]);
        o++;
    }
}

} // namespace kiln

#endif
