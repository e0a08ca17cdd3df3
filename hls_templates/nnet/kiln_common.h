// Kiln HLS layer library: shared helpers.
// Every layer works on flat arrays in ONNX (row-major, NCHW) order, one sample per call.
// A layer is a function template parameterised by its input/output types and a config
// struct (CONFIG_T) that carries sizes, the reuse factor and internal types, in the
// manner of hls4ml's nnet_utils.
#ifndef KILN_COMMON_H_
#define KILN_COMMON_H_

// KILN_FLOAT_ONLY (defines.h sets it when no type of the design is ap_*) leaves out
// the ap_types headers and the overloads for them: parsing ap_fixed.h is most of the g++
// time of a small C-simulation build.
#ifndef KILN_FLOAT_ONLY
#include "ap_fixed.h"
#include "ap_int.h"
#endif
#include <cmath>

// KILN_ACTIVATION in front of an activation buffer (a layer's output array, a large scratch
// array): static storage in the g++ C-simulation (the Makefile defines KILN_CSIM), so models
// with megabytes of activations do not overflow the default 8 MB stack; a plain local for
// Vitis HLS, whose synthesis needs locals (a static array would be state kept between calls).
#if defined(KILN_CSIM) && !defined(__SYNTHESIS__)
#define KILN_ACTIVATION static
#else
#define KILN_ACTIVATION
#endif

namespace kiln {

// Convert any numeric (float or ap_fixed) to float for table index arithmetic.
template <class T> inline float to_float(const T &x) { return (float)x; }

// Multiply by 2^-n / 2^n: a shift for fixed point, ldexp for float.
inline float shift_right(float x, int n) { return std::ldexp(x, -n); }
inline float shift_left(float x, int n) { return std::ldexp(x, n); }
#ifndef KILN_FLOAT_ONLY
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> ap_fixed<W, I, Q, O, N> shift_right(ap_fixed<W, I, Q, O, N> x, int n) { return x >> n; }
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> ap_fixed<W, I, Q, O, N> shift_left(ap_fixed<W, I, Q, O, N> x, int n) { return x << n; }
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> ap_ufixed<W, I, Q, O, N> shift_right(ap_ufixed<W, I, Q, O, N> x, int n) { return x >> n; }
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> ap_ufixed<W, I, Q, O, N> shift_left(ap_ufixed<W, I, Q, O, N> x, int n) { return x << n; }
#endif

// Convert to double for the testbench's output files.
inline double as_double(float x) { return (double)x; }
inline double as_double(double x) { return x; }
inline double as_double(int x) { return (double)x; }
inline double as_double(bool x) { return x ? 1.0 : 0.0; }
#ifndef KILN_FLOAT_ONLY
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> double as_double(const ap_fixed<W, I, Q, O, N> &x) { return x.to_double(); }
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N> double as_double(const ap_ufixed<W, I, Q, O, N> &x) { return x.to_double(); }
template <int W> double as_double(const ap_int<W> &x) { return (double)x.to_int64(); }
template <int W> double as_double(const ap_uint<W> &x) { return (double)x.to_uint64(); }
#endif

// The one 6-D index walk (eltwise, layout, math): flat position `flat` of the row-major
// walk over CONFIG_T::d0..d5 (a shape padded with leading 1s) -> sum(i_k * s_k), the offset
// of that element in an array with strides s0..s5 (0 along broadcast/reduced axes,
// negative for reversed slices).
template <typename CONFIG_T>
inline int walk_offset(unsigned flat, int s0, int s1, int s2, int s3, int s4, int s5) {
    #pragma HLS INLINE
    const int i5 = flat % CONFIG_T::d5; flat /= CONFIG_T::d5;
    const int i4 = flat % CONFIG_T::d4; flat /= CONFIG_T::d4;
    const int i3 = flat % CONFIG_T::d3; flat /= CONFIG_T::d3;
    const int i2 = flat % CONFIG_T::d2; flat /= CONFIG_T::d2;
    const int i1 = flat % CONFIG_T::d1; flat /= CONFIG_T::d1;
    const int i0 = flat;
    return i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4 + i5 * s5;
}

// Copy with type conversion: Reshape, Flatten, Squeeze, Unsqueeze, Identity are all copies
// of a flat array (the layout does not change).
template <class data_T, class res_T, unsigned N>
void copy(const data_T data[N], res_T res[N]) {
    #pragma HLS INLINE
Copy:
    for (unsigned i = 0; i < N; i++) {
        #pragma HLS UNROLL
        res[i] = (res_T)data[i];
    }
}

} // namespace kiln

#endif
