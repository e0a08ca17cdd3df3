// Pooling, NCHW, one sample (1-D pooling uses in_h = k_h = out_h = 1).
// MaxPool (with dilation), AveragePool (count_include_pad as in ONNX: the divisor counts
// the window clipped to the padded input, or only the valid elements), GlobalAveragePool.
#ifndef KILN_POOL_H_
#define KILN_POOL_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::pool2d and kiln::global_average_pool: generated configs inherit this and override every field.
struct pool2d_config {
    static const unsigned n_chan = 1, in_h = 1, in_w = 1, out_h = 1, out_w = 1;
    static const unsigned k_h = 1, k_w = 1, stride_h = 1, stride_w = 1;
    static const unsigned dil_h = 1, dil_w = 1;
    static const unsigned pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    static const bool is_max = true;
    static const bool count_include_pad = false;
    static const unsigned reuse_factor = 1;
    typedef float accum_t;
};
struct global_average_pool_config {
    static const unsigned n_chan = 1, n_spatial = 1;
    static const unsigned reuse_factor = 1;
    static constexpr float inv_count = 1.0f;
    typedef float accum_t;
    typedef float scale_t;
};

template <class data_T, class res_T, typename CONFIG_T>
void pool2d(const data_T data[CONFIG_T::n_chan * CONFIG_T::in_h * CONFIG_T::in_w],
            res_T res[CONFIG_T::n_chan * CONFIG_T::out_h * CONFIG_T::out_w]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
Channels:
    for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
    Rows:
        for (unsigned oh = 0; oh < CONFIG_T::out_h; oh++) {
        Cols:
            for (unsigned ow = 0; ow < CONFIG_T::out_w; ow++) {
                const int h0 = (int)(oh * CONFIG_T::stride_h) - (int)CONFIG_T::pad_top;
                const int w0 = (int)(ow * CONFIG_T::stride_w) - (int)CONFIG_T::pad_left;
                typename CONFIG_T::accum_t acc = 0;
                bool first = true;
                unsigned valid = 0;
                for (unsigned kh = 0; kh < CONFIG_T::k_h; kh++) {
                    for (unsigned kw = 0; kw < CONFIG_T::k_w; kw++) {
                        const int ih = h0 + (int)(kh * CONFIG_T::dil_h);
                        const int iw = w0 + (int)(kw * CONFIG_T::dil_w);
                        if (ih < 0 || ih >= (int)CONFIG_T::in_h || iw < 0 || iw >= (int)CONFIG_T::in_w) continue;
                        data_T v = data[(c * CONFIG_T::in_h + ih) * CONFIG_T::in_w + iw];
                        if (CONFIG_T::is_max) {
                            if (first || v > acc) acc = v;
                        } else {
                            acc += v;
                        }
                        first = false;
                        valid++;
                    }
                }
                const unsigned o = (c * CONFIG_T::out_h + oh) * CONFIG_T::out_w + ow;
                if (CONFIG_T::is_max) {
                    res[o] = (res_T)acc;
                } else {
                    unsigned count = valid;
                    if (CONFIG_T::count_include_pad) {
                        // window clipped to the padded extent [-pad_top, in_h + pad_bottom)
                        int h1 = h0 + (int)CONFIG_T::k_h, w1 = w0 + (int)CONFIG_T::k_w;
                        if (h1 > (int)(CONFIG_T::in_h + CONFIG_T::pad_bottom)) h1 = CONFIG_T::in_h + CONFIG_T::pad_bottom;
                        if (w1 > (int)(CONFIG_T::in_w + CONFIG_T::pad_right)) w1 = CONFIG_T::in_w + CONFIG_T::pad_right;
                        count = (unsigned)((h1 - h0) * (w1 - w0));
                    }
                    res[o] = (res_T)(acc / (typename CONFIG_T::accum_t)(count ? count : 1));
                }
            }
        }
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void global_average_pool(const data_T data[CONFIG_T::n_chan * CONFIG_T::n_spatial], res_T res[CONFIG_T::n_chan]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
Channels:
    for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
        typename CONFIG_T::accum_t acc = 0;
        for (unsigned i = 0; i < CONFIG_T::n_spatial; i++) acc += data[c * CONFIG_T::n_spatial + i];
        res[c] = (res_T)(acc * (typename CONFIG_T::scale_t)CONFIG_T::inv_count);
    }
}

} // namespace kiln

#endif
