// Binary element-wise ops with ONNX (numpy) broadcasting: Add, Sub, Mul, Div, Min, Max,
// Mod (fmod=1: C's fmod, the sign of the dividend, evaluated in float); the comparisons Equal,
// Less, Greater, LessOrEqual, GreaterOrEqual and the logic ops And, Or, Xor (bool results,
// compared exactly in the operands' own types); and Where (select).
// The output is walked as a 6-D index (shape d0..d5, padded with leading 1s); each operand
// has its own strides (0 along broadcast axes), so one template covers every broadcast.
#ifndef KILN_ELTWISE_H_
#define KILN_ELTWISE_H_

#include "kiln_common.h"

namespace kiln {

// The kernel of a kiln::binary layer; the emitter (eltwise.py) writes `kiln::binary_op::<name>`.
enum class binary_op { add, sub, mul, div, min, max, mod, equal, less, greater, less_equal, greater_equal,
                       logical_and, logical_or, logical_xor };

// The contract of kiln::binary: generated configs inherit this and override every field.
struct binary_config {
    static const unsigned n_a = 1, n_b = 1, n_out = 1;
    static const binary_op op = binary_op::add;
    static const unsigned reuse_factor = 1;
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = 1;  // output shape, leading 1s
    static const unsigned a_s0 = 0, a_s1 = 0, a_s2 = 0, a_s3 = 0, a_s4 = 0, a_s5 = 0;  // a's strides over it
    static const unsigned b_s0 = 0, b_s1 = 0, b_s2 = 0, b_s3 = 0, b_s4 = 0, b_s5 = 0;  // b's strides over it
};

// The broadcast walk of kiln::binary and kiln::select: output position o -> the offsets of
// operands a and b (their strides over the 6-D output shape, 0 along broadcast axes).
template <typename CONFIG_T>
inline void operand_offsets(unsigned o, int &ia, int &ib) {
    #pragma HLS INLINE
    ia = walk_offset<CONFIG_T>(o, CONFIG_T::a_s0, CONFIG_T::a_s1, CONFIG_T::a_s2, CONFIG_T::a_s3, CONFIG_T::a_s4,
                               CONFIG_T::a_s5);
    ib = walk_offset<CONFIG_T>(o, CONFIG_T::b_s0, CONFIG_T::b_s1, CONFIG_T::b_s2, CONFIG_T::b_s3, CONFIG_T::b_s4,
                               CONFIG_T::b_s5);
}

template <class a_T, class b_T, class res_T, typename CONFIG_T>
void binary(const a_T a[CONFIG_T::n_a], const b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        int ia, ib;
        operand_offsets<CONFIG_T>(o, ia, ib);
        if (CONFIG_T::op == binary_op::add) res[o] = (res_T)(a[ia] + b[ib]);
        else if (CONFIG_T::op == binary_op::sub) res[o] = (res_T)(a[ia] - b[ib]);
        else if (CONFIG_T::op == binary_op::mul) res[o] = (res_T)(a[ia] * b[ib]);
        else if (CONFIG_T::op == binary_op::div) res[o] = (res_T)(a[ia] / b[ib]);
        else if (CONFIG_T::op == binary_op::min) res[o] = b[ib] < a[ia] ? (res_T)b[ib] : (res_T)a[ia];
        else if (CONFIG_T::op == binary_op::max) res[o] = b[ib] > a[ia] ? (res_T)b[ib] : (res_T)a[ia];
        else if (CONFIG_T::op == binary_op::mod) res[o] = (res_T)std::fmod(to_float(a[ia]), to_float(b[ib]));
        else if (CONFIG_T::op == binary_op::equal) res[o] = (res_T)(a[ia] == b[ib]);
        else if (CONFIG_T::op == binary_op::less) res[o] = (res_T)(a[ia] < b[ib]);
        else if (CONFIG_T::op == binary_op::greater) res[o] = (res_T)(a[ia] > b[ib]);
        else if (CONFIG_T::op == binary_op::less_equal) res[o] = (res_T)(a[ia] <= b[ib]);
        else if (CONFIG_T::op == binary_op::greater_equal) res[o] = (res_T)(a[ia] >= b[ib]);
        else if (CONFIG_T::op == binary_op::logical_and) res[o] = (res_T)(a[ia] != 0 && b[ib] != 0);
        else if (CONFIG_T::op == binary_op::logical_or) res[o] = (res_T)(a[ia] != 0 || b[ib] != 0);
        else res[o] = (res_T)((a[ia] != 0) != (b[ib] != 0));
    }
}

// The contract of kiln::select (Where): binary_config's fields plus the condition's strides.
struct select_config : binary_config {
    static const unsigned n_c = 1;
    static const unsigned c_s0 = 0, c_s1 = 0, c_s2 = 0, c_s3 = 0, c_s4 = 0, c_s5 = 0;  // cond's strides
};

// res = cond ? a : b, every operand broadcast to the output.
template <class c_T, class a_T, class b_T, class res_T, typename CONFIG_T>
void select(const c_T cond[CONFIG_T::n_c], const a_T a[CONFIG_T::n_a], const b_T b[CONFIG_T::n_b],
            res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        const int ic = walk_offset<CONFIG_T>(o, CONFIG_T::c_s0, CONFIG_T::c_s1, CONFIG_T::c_s2, CONFIG_T::c_s3,
                                             CONFIG_T::c_s4, CONFIG_T::c_s5);
        int ia, ib;
        operand_offsets<CONFIG_T>(o, ia, ib);
        res[o] = cond[ic] ? (res_T)a[ia] : (res_T)b[ib];
    }
}

} // namespace kiln

#endif
