// Streaming layers that accumulate every pixel of a [1, C, ...] pixel stream into C per-channel
// sums and write one pixel: GlobalAveragePool and the squeeze of squeeze-excite (ReduceMean /
// ReduceSum over H, W). Included by kiln_stream.h (packets, streams, read_pixel / write_pixel).
#ifndef KILN_STREAM_ACCUMULATE_H_
#define KILN_STREAM_ACCUMULATE_H_

#include "kiln_math.h"
#include "kiln_pool.h"

namespace kiln {

// GlobalAveragePool: one accumulator per channel, one pixel per read, one packet out.
template <class data_T, class res_T, typename CONFIG_T, unsigned FI = 1, unsigned FO = 1>
void global_average_pool_stream(stream<packet<data_T, CONFIG_T::n_chan / FI> > &in,
                                stream<packet<res_T, CONFIG_T::n_chan / FO> > &out) {
    #pragma HLS INLINE off
    typename CONFIG_T::accum_t acc[CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = acc complete
    for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++) acc[ch] = 0;
Pixels:
    for (unsigned i = 0; i < CONFIG_T::n_spatial; i++) {
        #pragma HLS PIPELINE
        data_T px[CONFIG_T::n_chan];
        read_pixel<data_T, CONFIG_T::n_chan, FI>(in, px);
        for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++) acc[ch] += px[ch];
    }
    res_T y[CONFIG_T::n_chan];
    for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++)
        y[ch] = (res_T)(acc[ch] * (typename CONFIG_T::scale_t)CONFIG_T::inv_count);
    write_pixel<res_T, CONFIG_T::n_chan, FO>(y, out);
}

// ReduceMean / ReduceSum over every spatial axis (keepdims; squeeze-excite's squeeze): the
// per-channel sums of kiln::reduce (same order: pixels in raster order), one pixel per read,
// then the scale of kiln::reduce (1 / count for ReduceMean, 1 for ReduceSum), one packet out.
template <class data_T, class res_T, typename CONFIG_T, unsigned FI = 1, unsigned FO = 1>
void reduce_spatial_stream(stream<packet<data_T, CONFIG_T::n_out / FI> > &in,
                           stream<packet<res_T, CONFIG_T::n_out / FO> > &out) {
    #pragma HLS INLINE off
    typedef typename CONFIG_T::accum_t acc_T;
    acc_T acc[CONFIG_T::n_out];
    #pragma HLS ARRAY_PARTITION variable = acc complete
    for (unsigned ch = 0; ch < CONFIG_T::n_out; ch++) acc[ch] = 0;
Pixels:
    for (unsigned i = 0; i < CONFIG_T::n_in / CONFIG_T::n_out; i++) {
        #pragma HLS PIPELINE
        data_T px[CONFIG_T::n_out];
        read_pixel<data_T, CONFIG_T::n_out, FI>(in, px);
        for (unsigned ch = 0; ch < CONFIG_T::n_out; ch++) acc[ch] += (acc_T)px[ch];
    }
    res_T y[CONFIG_T::n_out];
    for (unsigned ch = 0; ch < CONFIG_T::n_out; ch++)
        y[ch] = (res_T)(acc[ch] * (typename CONFIG_T::scale_t)CONFIG_T::scale);
    write_pixel<res_T, CONFIG_T::n_out, FO>(y, out);
}

} // namespace kiln

#endif
