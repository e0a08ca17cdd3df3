// Streaming per-row layers (backends/hls/stream_rows.py): LayerNorm and Softmax over the last
// axis, one row (packet) per read; GELU and element-wise math, a packet of P elements in F cycles.
// Like dense_stream, each calls its io_parallel kernel on one row with a one-row config, so the
// arithmetic (and the C-simulation) is that of io_parallel, bit for bit.
#ifndef KILN_STREAM_ROWS_H_
#define KILN_STREAM_ROWS_H_

#include "kiln_stream.h"
#include "kiln_gelu.h"
#include "kiln_layernorm.h"
#include "kiln_math.h"
#include "kiln_softmax.h"

namespace kiln {

// ---- LayerNorm over the last axis: one row of n_norm values per read, PIPELINE II = R ----
template <class C, unsigned R> struct layernorm_row_config : C {
    static const unsigned n_outer = 1;
    static const unsigned reuse_factor = R;
};

template <class data_T, class res_T, typename CONFIG_T, unsigned R>
void layernorm_stream(stream<packet<data_T, CONFIG_T::n_norm> > &in, stream<packet<res_T, CONFIG_T::n_norm> > &out,
                      const typename CONFIG_T::scale_t scale[CONFIG_T::n_norm],
                      const typename CONFIG_T::bias_t bias[CONFIG_T::n_norm]) {
    #pragma HLS INLINE off
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_outer; r++) {
        packet<data_T, CONFIG_T::n_norm> x = in.read();
        packet<res_T, CONFIG_T::n_norm> y;
        layernorm<data_T, res_T, layernorm_row_config<CONFIG_T, R> >(x.data, y.data, scale, bias);
        out.write(y);
    }
}

// ---- Softmax over the last axis (n_inner = 1): one row of n_axis values per read ---------
template <class C, unsigned R> struct softmax_row_config : C {
    static const unsigned n_outer = 1, n_inner = 1;
    static const unsigned reuse_factor = R;
};

template <class data_T, class res_T, typename CONFIG_T, unsigned R>
void softmax_stream(stream<packet<data_T, CONFIG_T::n_axis> > &in, stream<packet<res_T, CONFIG_T::n_axis> > &out) {
    #pragma HLS INLINE off
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_outer; r++) {
        packet<data_T, CONFIG_T::n_axis> x = in.read();
        packet<res_T, CONFIG_T::n_axis> y;
        softmax<data_T, res_T, softmax_row_config<CONFIG_T, R> >(x.data, y.data);
        out.write(y);
    }
}

// ---- element-wise kernels (GELU, unary math): P / F values a cycle (kiln_stream.h's packet_map_stream) ----
struct gelu_kernel {
    template <class data_T, class res_T, typename C> static void apply(const data_T *x, res_T *y) {
        #pragma HLS INLINE
        gelu<data_T, res_T, C>(x, y);
    }
};

struct unary_math_kernel {
    template <class data_T, class res_T, typename C> static void apply(const data_T *x, res_T *y) {
        #pragma HLS INLINE
        unary_math<data_T, res_T, C>(x, y);
    }
};

template <class data_T, class res_T, typename CONFIG_T, unsigned P, unsigned F>
void gelu_stream(stream<packet<data_T, P> > &in, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
    packet_map_stream<data_T, res_T, CONFIG_T, P, F, gelu_kernel>(in, out);
}

template <class data_T, class res_T, typename CONFIG_T, unsigned P, unsigned F>
void unary_math_stream(stream<packet<data_T, P> > &in, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
    packet_map_stream<data_T, res_T, CONFIG_T, P, F, unary_math_kernel>(in, out);
}

} // namespace kiln

#endif
