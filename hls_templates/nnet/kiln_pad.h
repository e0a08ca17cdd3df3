// Outputs larger than their input: Pad (constant, reflect, edge, wrap) and Tile (wrap with no
// leading pad). Each output element walked as a 6-D index (shape d0..d5, leading 1s) reads the
// input at i_k - b_k along each axis k (b_k: the leading pad, negative to crop), mapped back
// into [0, n_k) by the mode, or writes the constant when a constant pad falls outside.
#ifndef KILN_PAD_H_
#define KILN_PAD_H_

#include "kiln_common.h"

namespace kiln {

enum class pad_mode { constant, reflect, edge, wrap };

// The contract of kiln::pad: generated configs inherit this and override every field.
struct pad_config {
    static const unsigned n_in = 1, n_out = 1;
    static const pad_mode mode = pad_mode::constant;
    static const unsigned reuse_factor = 1;
    static constexpr float value = 0.0f;                                    // the constant pad value
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = 1;  // output shape, leading 1s
    static const int n0 = 1, n1 = 1, n2 = 1, n3 = 1, n4 = 1, n5 = 1;        // input shape, leading 1s
    static const int b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0;        // leading pads
};

// Position i along an input axis of n values -> the index it reads; false: outside (constant).
template <typename CONFIG_T>
inline bool pad_source(int i, int n, int &index) {
    #pragma HLS INLINE
    if (CONFIG_T::mode == pad_mode::edge) {
        index = i < 0 ? 0 : (i >= n ? n - 1 : i);
    } else if (CONFIG_T::mode == pad_mode::wrap) {
        index = ((i % n) + n) % n;
    } else if (CONFIG_T::mode == pad_mode::reflect) {
        const int period = 2 * (n - 1);
        if (period == 0) {
            index = 0;
        } else {
            int r = ((i % period) + period) % period;
            index = r < n ? r : period - r;
        }
    } else {
        index = i;
        return i >= 0 && i < n;
    }
    return true;
}

template <class data_T, class res_T, typename CONFIG_T>
void pad(const data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    const int n[6] = {CONFIG_T::n0, CONFIG_T::n1, CONFIG_T::n2, CONFIG_T::n3, CONFIG_T::n4, CONFIG_T::n5};
    const int b[6] = {CONFIG_T::b0, CONFIG_T::b1, CONFIG_T::b2, CONFIG_T::b3, CONFIG_T::b4, CONFIG_T::b5};
    const unsigned d[6] = {CONFIG_T::d0, CONFIG_T::d1, CONFIG_T::d2, CONFIG_T::d3, CONFIG_T::d4, CONFIG_T::d5};
Outputs:
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        unsigned flat = o;
        int offset = 0, stride = 1;
        bool inside = true;
    Axes:
        for (int k = 5; k >= 0; k--) {
            int index;
            inside = pad_source<CONFIG_T>((int)(flat % d[k]) - b[k], n[k], index) && inside;
            offset += index * stride;
            stride *= n[k];
            flat /= d[k];
        }
        res[o] = inside ? (res_T)data[offset] : (res_T)CONFIG_T::value;
    }
}

} // namespace kiln

#endif
