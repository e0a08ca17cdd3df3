// Data movement: Transpose and Slice (one strided walk over the input) and Concat (one
// call per input, each writing its slab at an offset along the concat axis).
#ifndef KILN_LAYOUT_H_
#define KILN_LAYOUT_H_

#include "kiln_common.h"

namespace kiln {

// The output walked as a 6-D index (shape d0..d5, leading 1s) reads the input at
// offset + sum(i_k * s_k): a Transpose permutes the input strides, a Slice scales them by
// its steps (negative for reversed slices) and starts at its first element.
template <class data_T, class res_T, typename CONFIG_T>
void strided_copy(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    unsigned o = 0;
    for (unsigned i0 = 0; i0 < CONFIG_T::d0; i0++)
    for (unsigned i1 = 0; i1 < CONFIG_T::d1; i1++)
    for (unsigned i2 = 0; i2 < CONFIG_T::d2; i2++)
    for (unsigned i3 = 0; i3 < CONFIG_T::d3; i3++)
    for (unsigned i4 = 0; i4 < CONFIG_T::d4; i4++)
    for (unsigned i5 = 0; i5 < CONFIG_T::d5; i5++) {
        res[o++] = (res_T)data[CONFIG_T::offset + (int)i0 * CONFIG_T::s0 + (int)i1 * CONFIG_T::s1 + (int)i2 * CONFIG_T::s2 +
                               (int)i3 * CONFIG_T::s3 + (int)i4 * CONFIG_T::s4 + (int)i5 * CONFIG_T::s5];
    }
}

// data viewed as [n_outer][in_inner], written to res viewed as [n_outer][out_inner] at offset.
template <class data_T, class res_T, typename CONFIG_T>
void concat_part(const data_T data[CONFIG_T::n_outer * CONFIG_T::in_inner],
                 res_T res[CONFIG_T::n_outer * CONFIG_T::out_inner]) {
    #pragma HLS INLINE
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
        for (unsigned i = 0; i < CONFIG_T::in_inner; i++) {
            #pragma HLS UNROLL
            res[o * CONFIG_T::out_inner + CONFIG_T::offset + i] = (res_T)data[o * CONFIG_T::in_inner + i];
        }
    }
}

// Per-channel scale and shift (a BatchNormalization that could not be folded):
// data viewed as [n_outer][n_chan][n_inner].
template <class data_T, class res_T, typename CONFIG_T>
void scale_shift(const data_T data[CONFIG_T::n_outer * CONFIG_T::n_chan * CONFIG_T::n_inner],
                 res_T res[CONFIG_T::n_outer * CONFIG_T::n_chan * CONFIG_T::n_inner],
                 const typename CONFIG_T::scale_t scale[CONFIG_T::n_chan],
                 const typename CONFIG_T::shift_t shift[CONFIG_T::n_chan]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = scale complete
    #pragma HLS ARRAY_PARTITION variable = shift complete
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++)
        for (unsigned c = 0; c < CONFIG_T::n_chan; c++)
            for (unsigned i = 0; i < CONFIG_T::n_inner; i++) {
                const unsigned k = (o * CONFIG_T::n_chan + c) * CONFIG_T::n_inner + i;
                res[k] = (res_T)(data[k] * scale[c] + shift[c]);
            }
}

} // namespace kiln

#endif
