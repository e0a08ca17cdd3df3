// Data movement: Transpose and Slice (one strided walk over the input) and Concat (one
// call per input, each writing its slab at an offset along the concat axis).
#ifndef KILN_LAYOUT_H_
#define KILN_LAYOUT_H_

#include "kiln_common.h"

namespace kiln {

// The contracts of the layout templates: generated configs inherit these and override every field.
struct strided_copy_config {
    static const unsigned n_in = 1, n_out = 1;
    static const int offset = 0;
    static const unsigned reuse_factor = 1;
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = 1;  // output shape, leading 1s
    static const int s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0;        // input strides over it
};
struct concat_part_config {
    static const unsigned n_outer = 1, in_inner = 1, out_inner = 1, offset = 0;
};
struct scale_shift_config {
    static const unsigned n_outer = 1, n_chan = 1, n_inner = 1;
    static const unsigned reuse_factor = 1;
    typedef float scale_t;
    typedef float shift_t;
};

// The output walked as a 6-D index (shape d0..d5, leading 1s) reads the input at
// offset + sum(i_k * s_k): a Transpose permutes the input strides, a Slice scales them by
// its steps (negative for reversed slices) and starts at its first element.
template <class data_T, class res_T, typename CONFIG_T>
void strided_copy(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        res[o] = (res_T)data[CONFIG_T::offset + walk_offset<CONFIG_T>(o, CONFIG_T::s0, CONFIG_T::s1, CONFIG_T::s2,
                                                                       CONFIG_T::s3, CONFIG_T::s4, CONFIG_T::s5)];
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
