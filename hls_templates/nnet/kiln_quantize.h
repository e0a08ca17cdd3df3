// Kiln HLS layer library: quantizers (QONNX Quant / BipolarQuant, ONNX Q/DQ pairs, QKeras).
// A quantizer with a power-of-two scale and no zero point is a plain ap_fixed conversion
// (kiln::copy into a <bits, bits+e, AP_RND_CONV, AP_SAT> type) and never reaches this file.
// Here: any other scale, a zero point, bipolar quantizers, and every quantizer in float
// designs. Per element:   q = clamp(round(x * inv_scale), q_lo, q_hi);  y = q * scale
// with q_lo = q_min - zero_point, q_hi = q_max - zero_point (the zero point is an integer,
// so it commutes with rounding).
#ifndef KILN_QUANTIZE_H_
#define KILN_QUANTIZE_H_

#include "kiln_common.h"

namespace kiln {

// The quantizer's rounding (QONNX ROUND, FLOOR, ROUND_TO_ZERO); the emitter (quantize.py
// ROUNDING_MODES) writes `kiln::rounding_mode::<name>` with these names.
enum class rounding_mode { half_even, floor, toward_zero };

// The contract of kiln::quantize: generated configs inherit this and override what they set.
struct quantize_config {
    static const unsigned n_elem = 1;
    static const unsigned reuse_factor = 1;
    static const unsigned multiplier_limit = 1;
    static const bool bipolar = false;       // y = +scale / -scale by the sign of x
    static const bool rescale = true;        // y = q * scale; false: y = q (the integers)
    static const rounding_mode rounding = rounding_mode::half_even;
    static const int q_lo = -128;            // q_min - zero_point
    static const int q_hi = 127;             // q_max - zero_point
    static constexpr double scale = 1.0;
    typedef float inv_t;    // the type inv_scale is held in
    typedef float q_t;      // the integer q (fixed point: its rounding mode is the quantizer's)
    typedef float scale_t;  // the type scale is held in
};

// Round to an integer held in Q. Fixed point: Q's own quantisation mode does it
// (AP_RND_CONV = half to even, AP_TRN = floor, AP_TRN_ZERO = toward zero). Float: <cmath>.
template <class Q> struct round_to_int {
    template <class T> static Q apply(const T &t, rounding_mode) { return (Q)t; }
};
template <> struct round_to_int<float> {
    template <class T> static float apply(const T &t, rounding_mode mode) {
        float f = (float)t;
        return mode == rounding_mode::half_even ? std::nearbyint(f)
                                                : (mode == rounding_mode::floor ? std::floor(f) : std::trunc(f));
    }
};

// inv_scale[0] = input_scale / scale: 1/scale, or, after a requantizing Mul (which multiplied a
// Dense/Conv's integer sum by its scales / this scale), a power of two: a shift. rescale: y = q * scale; else y = q (integers for the next
// layer, whose own output multiply applies the scale). PIPELINE II = reuse_factor shares the
// multipliers between reuse_factor elements (ALLOCATION), as kiln::dense does.
template <class data_T, class res_T, typename CONFIG_T>
void quantize(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem],
              const typename CONFIG_T::inv_t inv_scale[1]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    #pragma HLS ARRAY_PARTITION variable = inv_scale complete
    #pragma HLS ALLOCATION operation instances = mul limit = CONFIG_T::multiplier_limit
    typedef typename CONFIG_T::q_t q_t;
    typedef typename CONFIG_T::scale_t scale_t;
Quantize:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        if (CONFIG_T::bipolar) {
            res[i] = data[i] >= 0 ? (res_T)(scale_t)CONFIG_T::scale : (res_T)(-(scale_t)CONFIG_T::scale);
            continue;
        }
        // the full product, rounded once into q_t (saturating: far-out values still clamp)
        q_t q = round_to_int<q_t>::apply(data[i] * inv_scale[0],
                                         CONFIG_T::rounding);
        if (q < (q_t)CONFIG_T::q_lo) q = (q_t)CONFIG_T::q_lo;
        if (q > (q_t)CONFIG_T::q_hi) q = (q_t)CONFIG_T::q_hi;
        if (CONFIG_T::rescale)
            res[i] = (res_T)(q * (scale_t)CONFIG_T::scale);
        else
            res[i] = (res_T)q;
    }
}

} // namespace kiln

#endif
