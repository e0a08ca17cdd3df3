// Resize over the last two axes: data viewed as [n_outer][in_h][in_w] -> [n_outer][out_h][out_w].
// The coordinate transformation and the rounding of every output row and column are done at
// compile time (resize.py) into index tables: output row y reads input rows y0[y] and y1[y]
// with weight wy[y] on y1 (columns likewise). Nearest reads (y0, x0); linear blends the four
//   (1 - wy) * ((1 - wx) * d[y0][x0] + wx * d[y0][x1]) + wy * ((1 - wx) * d[y1][x0] + wx * d[y1][x1]).
#ifndef KILN_RESIZE_H_
#define KILN_RESIZE_H_

#include "kiln_common.h"

namespace kiln {

enum class resize_mode { nearest, linear };

// The contract of kiln::resize: generated configs inherit this and override every field.
struct resize_config {
    static const unsigned n_outer = 1, in_h = 1, in_w = 1, out_h = 1, out_w = 1;
    static const resize_mode mode = resize_mode::nearest;
    static const unsigned reuse_factor = 1;
    typedef float coeff_t;  // the weights wy, wx (and 1 - w)
    typedef float accum_t;  // the blended value before the output type
};

template <class data_T, class res_T, typename CONFIG_T>
void resize(const data_T data[CONFIG_T::n_outer * CONFIG_T::in_h * CONFIG_T::in_w],
            res_T res[CONFIG_T::n_outer * CONFIG_T::out_h * CONFIG_T::out_w],
            const int y0[CONFIG_T::out_h], const int y1[CONFIG_T::out_h], const typename CONFIG_T::coeff_t wy[CONFIG_T::out_h],
            const int x0[CONFIG_T::out_w], const int x1[CONFIG_T::out_w], const typename CONFIG_T::coeff_t wx[CONFIG_T::out_w]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    typedef typename CONFIG_T::coeff_t coeff_t;
    typedef typename CONFIG_T::accum_t accum_t;
Planes:
    for (unsigned o = 0; o < CONFIG_T::n_outer; o++) {
        const data_T *plane = data + o * CONFIG_T::in_h * CONFIG_T::in_w;
        res_T *out = res + o * CONFIG_T::out_h * CONFIG_T::out_w;
    Rows:
        for (unsigned y = 0; y < CONFIG_T::out_h; y++) {
        Columns:
            for (unsigned x = 0; x < CONFIG_T::out_w; x++) {
                if (CONFIG_T::mode == resize_mode::nearest) {
                    out[y * CONFIG_T::out_w + x] = (res_T)plane[y0[y] * CONFIG_T::in_w + x0[x]];
                } else {
                    const coeff_t ay = (coeff_t)1 - wy[y], ax = (coeff_t)1 - wx[x];
                    accum_t top = ax * plane[y0[y] * CONFIG_T::in_w + x0[x]] + wx[x] * plane[y0[y] * CONFIG_T::in_w + x1[x]];
                    accum_t bottom = ax * plane[y1[y] * CONFIG_T::in_w + x0[x]] + wx[x] * plane[y1[y] * CONFIG_T::in_w + x1[x]];
                    out[y * CONFIG_T::out_w + x] = (res_T)(ay * top + wy[y] * bottom);
                }
            }
        }
    }
}

} // namespace kiln

#endif
