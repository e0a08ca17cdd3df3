// Convolution, NCHW, one sample: 1-D convolutions use in_h = k_h = out_h = 1.
// Supports stride, explicit padding (top/left; bottom/right follow from out_h/out_w),
// dilation and groups. Weights [n_filt][n_chan / groups][k_h][k_w] as in ONNX.
#ifndef KILN_CONV_H_
#define KILN_CONV_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::conv2d: generated configs inherit this and override every field.
struct conv2d_config {
    static const unsigned n_chan = 1, in_h = 1, in_w = 1;
    static const unsigned n_filt = 1, out_h = 1, out_w = 1;
    static const unsigned k_h = 1, k_w = 1;
    static const unsigned stride_h = 1, stride_w = 1;
    static const unsigned dil_h = 1, dil_w = 1;
    static const unsigned pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    static const unsigned groups = 1;
    static const unsigned reuse_factor = 1;
    static const unsigned block_factor = 1;
    static const unsigned multiplier_limit = 1;
    typedef float accum_t;
    typedef float weight_t;
    typedef float bias_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void conv2d(const data_T data[CONFIG_T::n_chan * CONFIG_T::in_h * CONFIG_T::in_w],
            res_T res[CONFIG_T::n_filt * CONFIG_T::out_h * CONFIG_T::out_w],
            const typename CONFIG_T::weight_t weights[CONFIG_T::n_filt * (CONFIG_T::n_chan / CONFIG_T::groups) * CONFIG_T::k_h * CONFIG_T::k_w],
            const typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = weights cyclic factor = CONFIG_T::block_factor
    #pragma HLS ARRAY_PARTITION variable = biases complete
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
    const unsigned cpg = CONFIG_T::n_chan / CONFIG_T::groups;
    const unsigned fpg = CONFIG_T::n_filt / CONFIG_T::groups;
Filters:
    for (unsigned f = 0; f < CONFIG_T::n_filt; f++) {
        const unsigned g = f / fpg;
    Rows:
        for (unsigned oh = 0; oh < CONFIG_T::out_h; oh++) {
        Cols:
            for (unsigned ow = 0; ow < CONFIG_T::out_w; ow++) {
                typename CONFIG_T::accum_t acc = biases[f];
            Channels:
                for (unsigned c = 0; c < cpg; c++) {
                KernelRows:
                    for (unsigned kh = 0; kh < CONFIG_T::k_h; kh++) {
                    KernelCols:
                        for (unsigned kw = 0; kw < CONFIG_T::k_w; kw++) {
                            const int ih = (int)(oh * CONFIG_T::stride_h + kh * CONFIG_T::dil_h) - (int)CONFIG_T::pad_top;
                            const int iw = (int)(ow * CONFIG_T::stride_w + kw * CONFIG_T::dil_w) - (int)CONFIG_T::pad_left;
                            if (ih >= 0 && ih < (int)CONFIG_T::in_h && iw >= 0 && iw < (int)CONFIG_T::in_w) {
                                acc += data[((g * cpg + c) * CONFIG_T::in_h + ih) * CONFIG_T::in_w + iw] *
                                       weights[((f * cpg + c) * CONFIG_T::k_h + kh) * CONFIG_T::k_w + kw];
                            }
                        }
                    }
                }
                res[(f * CONFIG_T::out_h + oh) * CONFIG_T::out_w + ow] = (res_T)acc;
            }
        }
    }
}

} // namespace kiln

#endif
