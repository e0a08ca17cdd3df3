// Streaming (io_stream) layers: layers connected by FIFOs under #pragma HLS DATAFLOW.
//
// A tensor travels as packets (kiln::packet<T, P>), in one of two orders:
//   flat   the ONNX row-major order, one packet = one row of the last axis (P = shape[-1])
//   pixel  [N=1, C, spatial...] tensors: one pixel = F packets of C / F channels (P = C / F;
//          F, the stream's channel fold, 1 unless stream_channels.py folds it), pixels in
//          raster order, what a line-buffer convolution reads, one pixel per F reads
// The arithmetic of every streaming layer is that of its io_parallel kernel, in the same
// order, so stream and parallel C-simulations give bit-identical outputs.
//
// kiln::stream is hls::stream for synthesis; in the g++ C-simulation (KILN_CSIM) it wraps
// hls::stream (the header from the hls4ml wheel) with a name, so a read from an empty stream
// or a stream left non-empty at the end of the top function stops the run and names it.
#ifndef KILN_STREAM_H_
#define KILN_STREAM_H_

#include "kiln_common.h"
#include "kiln_activation.h"
#include "kiln_dense.h"
#include "kiln_eltwise.h"
#include "hls_stream.h"
#if defined(KILN_CSIM) && !defined(__SYNTHESIS__)
#include <cstdio>
#include <cstdlib>
#endif

namespace kiln {

template <class T, unsigned N> struct packet {
    T data[N];
};

// Lane j of packet k of a stream -> its index in ONNX order: pixel order, F packets per pixel
// (channels (k % F) x P ... + P - 1 of pixel k / F); flat order, row k.
template <unsigned N, unsigned P, bool PIXEL, unsigned F> inline unsigned tensor_index(unsigned k, unsigned j) {
    return PIXEL ? ((k % F) * P + j) * (N / (P * F)) + k / F : k * P + j;
}

#if defined(KILN_CSIM) && !defined(__SYNTHESIS__)
// Exit codes of the C-simulation for stream errors (the Python side reports stderr).
static const int STREAM_READ_EMPTY = 5, STREAM_NOT_DRAINED = 6;

template <class T> class stream {
  public:
    explicit stream(const char *name = "unnamed") : name_(name) {}
    T read() {
        if (fifo_.empty()) {
            std::fprintf(stderr, "kiln: stream '%s' read while empty: its consumer reads more packets than its "
                         "producer writes (a rate bug; in hardware a deadlock)\n", name_);
            std::exit(STREAM_READ_EMPTY);
        }
        return fifo_.read();
    }
    void write(const T &v) { fifo_.write(v); }
    bool empty() { return fifo_.empty(); }
    unsigned size() { return (unsigned)fifo_.size(); }
    const char *name() const { return name_; }

  private:
    hls::stream<T> fifo_;
    const char *name_;
};

// End of the top function: every FIFO must be empty again.
template <class T> void check_drained(stream<T> &s) {
    if (!s.empty()) {
        std::fprintf(stderr, "kiln: stream '%s' left with %u packet(s) at the end of kiln_top: its producer writes "
                     "more packets than its consumer reads (a rate bug)\n", s.name(), s.size());
        std::exit(STREAM_NOT_DRAINED);
    }
}

// `kiln csim --trace`: a stream's packets (the whole tensor, written by its producer before
// its consumer runs in the sequential C-simulation) as doubles in ONNX order, not consumed.
template <class T, unsigned N, unsigned P, bool PIXEL, unsigned F = 1>
void stream_values(stream<packet<T, P> > &s, double *values) {
    const unsigned n = s.size();
    for (unsigned k = 0; k < n; k++) {
        packet<T, P> p = s.read();
        for (unsigned j = 0; j < P; j++) values[tensor_index<N, P, PIXEL, F>(k, j)] = as_double(p.data[j]);
        s.write(p);
    }
}
#else
template <class T> using stream = hls::stream<T>;
template <class T> void check_drained(stream<T> &) {}
#endif

// A whole tensor (array in ONNX order) -> packets in the stream's order, and back: the top's
// ports in the testbench and AXI wrapper, and the buffered adapters of layers without a
// streaming template.
template <class T, unsigned N, unsigned P, bool PIXEL, unsigned F = 1, class A = T>
void write_tensor(const A *a, stream<packet<T, P> > &s) {
WritePackets:
    for (unsigned k = 0; k < N / P; k++) {
        #pragma HLS PIPELINE
        packet<T, P> p;
        for (unsigned j = 0; j < P; j++) p.data[j] = (T)a[tensor_index<N, P, PIXEL, F>(k, j)];
        s.write(p);
    }
}

template <class T, unsigned N, unsigned P, bool PIXEL, unsigned F = 1, class A = T>
void read_tensor(stream<packet<T, P> > &s, A *a) {
ReadPackets:
    for (unsigned k = 0; k < N / P; k++) {
        #pragma HLS PIPELINE
        packet<T, P> p = s.read();
        for (unsigned j = 0; j < P; j++) a[tensor_index<N, P, PIXEL, F>(k, j)] = (A)p.data[j];
    }
}

// ---- element-wise activations: P elements per packet, P / F elements per cycle ----------
// F (the stream folding, stream_fold.py) divides P: a packet takes F cycles on P / F units.
template <class C, unsigned N> struct packet_config : C {
    static const unsigned n_elem = N;
    static const unsigned reuse_factor = 1;
};

// The loop every per-element stream shares: KERNEL::apply<data_T, res_T, config>(x, y) on P / F values a cycle.
template <class data_T, class res_T, typename CONFIG_T, unsigned P, unsigned F, class KERNEL>
void packet_map_stream(stream<packet<data_T, P> > &in, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE
    packet<data_T, P> x;
    packet<res_T, P> y;
Chunks:
    for (unsigned i = 0; i < CONFIG_T::n_elem / P * F; i++) {
        #pragma HLS PIPELINE
        const unsigned c = i % F;
        if (c == 0) x = in.read();
        KERNEL::template apply<data_T, res_T, packet_config<CONFIG_T, P / F> >(x.data + c * (P / F), y.data + c * (P / F));
        if (c == F - 1) out.write(y);
    }
}

struct activation_kernel {
    template <class data_T, class res_T, typename C> static void apply(const data_T *x, res_T *y) {
        #pragma HLS INLINE
        activation<data_T, res_T, C>(x, y);
    }
};

template <class data_T, class res_T, typename CONFIG_T, unsigned P, unsigned F>
void activation_stream(stream<packet<data_T, P> > &in, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
    packet_map_stream<data_T, res_T, CONFIG_T, P, F, activation_kernel>(in, out);
}

// ---- element-wise binary ops on two streams of the same shape and order ----------------
// (Add of a residual, Mul, Sub, Min, Max): one packet of each per F cycles, the arithmetic of
// kiln::binary on P / F contiguous elements per cycle.
template <class C, unsigned P> struct binary_packet_config : C {
    static const unsigned n_a = P, n_b = P, n_out = P;
    static const unsigned reuse_factor = 1;
    static const unsigned d0 = 1, d1 = 1, d2 = 1, d3 = 1, d4 = 1, d5 = P;
    static const unsigned a_s0 = 0, a_s1 = 0, a_s2 = 0, a_s3 = 0, a_s4 = 0, a_s5 = 1;
    static const unsigned b_s0 = 0, b_s1 = 0, b_s2 = 0, b_s3 = 0, b_s4 = 0, b_s5 = 1;
};

template <class a_T, class b_T, class res_T, typename CONFIG_T, unsigned P, unsigned F>
void binary_stream(stream<packet<a_T, P> > &a, stream<packet<b_T, P> > &b, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
    packet<a_T, P> x;
    packet<b_T, P> y;
    packet<res_T, P> z;
Chunks:
    for (unsigned i = 0; i < CONFIG_T::n_out / P * F; i++) {
        #pragma HLS PIPELINE
        const unsigned c = i % F;
        if (c == 0) {
            x = a.read();
            y = b.read();
        }
        binary<a_T, b_T, res_T, binary_packet_config<CONFIG_T, P / F> >(x.data + c * (P / F), y.data + c * (P / F),
                                                                         z.data + c * (P / F));
        if (c == F - 1) out.write(z);
    }
}

// ---- a [1, C, ...] pixel stream times (or plus...) a per-channel [1, C, 1, 1] tensor -------
// (squeeze-excite's channel scale). Packets of P = C / FC channels (FC: the channel fold of
// both streams). The per-channel operand (FC packets) is read first and held in registers;
// then one packet per F cycles. The pixel operand's FIFO must hold the whole tensor while the
// per-channel one is computed from it (a fork: stream_estimate sizes it so). BCAST_A: the
// per-channel operand is the op's first input (a), else its second (b).
template <class a_T, class b_T, class res_T, typename CONFIG_T, unsigned P, bool BCAST_A, unsigned F, unsigned FC = 1>
void channel_binary_stream(stream<packet<a_T, P> > &a, stream<packet<b_T, P> > &b, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
    a_T ha[BCAST_A ? P * FC : 1];
    b_T hb[BCAST_A ? 1 : P * FC];
    #pragma HLS ARRAY_PARTITION variable = ha complete
    #pragma HLS ARRAY_PARTITION variable = hb complete
    for (unsigned q = 0; q < FC; q++) {
        if (BCAST_A) { packet<a_T, P> p = a.read(); for (unsigned j = 0; j < P; j++) ha[q * P + j] = p.data[j]; }
        else { packet<b_T, P> p = b.read(); for (unsigned j = 0; j < P; j++) hb[q * P + j] = p.data[j]; }
    }
    packet<a_T, P> ca;
    packet<b_T, P> cb;
    packet<res_T, P> z;
Chunks:
    for (unsigned i = 0; i < CONFIG_T::n_out / P * F; i++) {
        #pragma HLS PIPELINE
        const unsigned c = i % F, q = i / F % FC;
        if (c == 0) {
            if (BCAST_A) {
                cb = b.read();
                for (unsigned j = 0; j < P; j++) ca.data[j] = ha[q * P + j];
            } else {
                ca = a.read();
                for (unsigned j = 0; j < P; j++) cb.data[j] = hb[q * P + j];
            }
        }
        binary<a_T, b_T, res_T, binary_packet_config<CONFIG_T, P / F> >(ca.data + c * (P / F), cb.data + c * (P / F),
                                                                         z.data + c * (P / F));
        if (c == F - 1) out.write(z);
    }
}

// ---- one pixel in FI packets (into C values) / out in FO packets (from C values) -------
template <class T, unsigned C, unsigned FI> void read_pixel(stream<packet<T, C / FI> > &in, T v[C]) {
    #pragma HLS INLINE
    for (unsigned q = 0; q < FI; q++) {
        packet<T, C / FI> p = in.read();
        for (unsigned j = 0; j < C / FI; j++) v[q * (C / FI) + j] = p.data[j];
    }
}

template <class T, unsigned C, unsigned FO> void write_pixel(const T v[C], stream<packet<T, C / FO> > &out) {
    #pragma HLS INLINE
    for (unsigned q = 0; q < FO; q++) {
        packet<T, C / FO> p;
        for (unsigned j = 0; j < C / FO; j++) p.data[j] = v[q * (C / FO) + j];
        out.write(p);
    }
}

// ---- a copy whose packets are the same on both sides (Flatten of a 1x1 pixel map, Reshape
// keeping the last axis): one packet per cycle, with the type conversion of kiln::copy.
template <class data_T, class res_T, unsigned N, unsigned P>
void copy_stream(stream<packet<data_T, P> > &in, stream<packet<res_T, P> > &out) {
    #pragma HLS INLINE off
Packets:
    for (unsigned k = 0; k < N / P; k++) {
        #pragma HLS PIPELINE
        packet<data_T, P> x = in.read();
        packet<res_T, P> y;
        for (unsigned j = 0; j < P; j++) y.data[j] = (res_T)x.data[j];
        out.write(y);
    }
}

// ---- Dense: one row (n_in) per read, its multiplies folded by ROW_T::reuse_factor ------
template <class data_T, class res_T, typename CONFIG_T, typename ROW_T>
void dense_stream(stream<packet<data_T, CONFIG_T::n_in> > &in, stream<packet<res_T, CONFIG_T::n_out> > &out,
                  const typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                  const typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
        packet<data_T, CONFIG_T::n_in> x = in.read();
        packet<res_T, CONFIG_T::n_out> y;
        dense<data_T, res_T, ROW_T>(x.data, y.data, weights, biases);
        out.write(y);
    }
}

#ifndef KILN_FLOAT_ONLY
template <class data_T, class res_T, typename CONFIG_T, typename ROW_T>
void dense_packed_stream(stream<packet<data_T, CONFIG_T::n_in> > &in, stream<packet<res_T, CONFIG_T::n_out> > &out,
                         const typename CONFIG_T::weight_t weights[CONFIG_T::n_in * CONFIG_T::n_out],
                         const typename CONFIG_T::bias_t biases[CONFIG_T::n_out]) {
    #pragma HLS INLINE off
Rows:
    for (unsigned r = 0; r < CONFIG_T::n_rows; r++) {
        packet<data_T, CONFIG_T::n_in> x = in.read();
        packet<res_T, CONFIG_T::n_out> y;
        dense_packed<data_T, res_T, ROW_T>(x.data, y.data, weights, biases);
        out.write(y);
    }
}
#endif

// ---- sliding windows: a line buffer of the last K_eff rows, one pixel per read ---------
// Output (oh, ow) is computed as soon as the last input pixel its window needs has arrived
// (its "trigger": the bottom-right window pixel clipped to the input), outputs in raster order.
// Rows r-K_eff+1 .. r of the input are in the buffer when the trigger row r is being read.
template <typename CONFIG_T> struct window_geometry {
    static const unsigned keff_h = CONFIG_T::dil_h * (CONFIG_T::k_h - 1) + 1;
    static const unsigned rows = keff_h < CONFIG_T::in_h ? keff_h : CONFIG_T::in_h;
    static int clip(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }
    static bool triggered(unsigned oh, unsigned ow, unsigned r, unsigned c) {
        const int tr = clip((int)(oh * CONFIG_T::stride_h + (keff_h - 1)) - (int)CONFIG_T::pad_top, CONFIG_T::in_h - 1);
        const int tc = clip((int)(ow * CONFIG_T::stride_w + CONFIG_T::dil_w * (CONFIG_T::k_w - 1)) -
                            (int)CONFIG_T::pad_left, CONFIG_T::in_w - 1);
        return tr < (int)r || (tr == (int)r && tc <= (int)c);
    }
};

// Conv: per output pixel, the KxK window of every channel is taken from the line buffer and
// the n_filt sums are those of kiln::conv2d (same order: filter, channel, kernel row, col).
// At R < k_w the window is copied into registers (every tap in one cycle); from R >= k_w the
// products read the line buffer directly (each bank, one row of one channel, gives the k_w
// taps of an output in k_w of its R cycles), as pool2d_stream does: no window registers.
template <class data_T, class res_T, typename CONFIG_T, unsigned FI = 1, unsigned FO = 1>
void conv2d_stream(stream<packet<data_T, CONFIG_T::n_chan / FI> > &in, stream<packet<res_T, CONFIG_T::n_filt / FO> > &out,
                   const typename CONFIG_T::weight_t weights[CONFIG_T::n_filt * (CONFIG_T::n_chan / CONFIG_T::groups) * CONFIG_T::k_h * CONFIG_T::k_w],
                   const typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    #pragma HLS INLINE off
    typedef window_geometry<CONFIG_T> G;
    KILN_ACTIVATION data_T line[G::rows][CONFIG_T::in_w][CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = line complete dim = 1
    #pragma HLS ARRAY_PARTITION variable = line complete dim = 3
    data_T window[CONFIG_T::n_chan][CONFIG_T::k_h][CONFIG_T::k_w];
    bool valid[CONFIG_T::k_h][CONFIG_T::k_w];
    #pragma HLS ARRAY_PARTITION variable = window complete dim = 0
    const unsigned cpg = CONFIG_T::n_chan / CONFIG_T::groups;
    const unsigned fpg = CONFIG_T::n_filt / CONFIG_T::groups;
    const bool direct = CONFIG_T::reuse_factor >= CONFIG_T::k_w;
    unsigned oh = 0, ow = 0;
InRows:
    for (unsigned r = 0; r < CONFIG_T::in_h; r++) {
    InCols:
        for (unsigned c = 0; c < CONFIG_T::in_w; c++) {
            #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
            data_T px[CONFIG_T::n_chan];
            read_pixel<data_T, CONFIG_T::n_chan, FI>(in, px);
            for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++) line[r % G::rows][c][ch] = px[ch];
            while (oh < CONFIG_T::out_h && G::triggered(oh, ow, r, c)) {
                for (unsigned kh = 0; kh < CONFIG_T::k_h; kh++) {
                    for (unsigned kw = 0; kw < CONFIG_T::k_w; kw++) {
                        const int ih = (int)(oh * CONFIG_T::stride_h + kh * CONFIG_T::dil_h) - (int)CONFIG_T::pad_top;
                        const int iw = (int)(ow * CONFIG_T::stride_w + kw * CONFIG_T::dil_w) - (int)CONFIG_T::pad_left;
                        valid[kh][kw] = ih >= 0 && ih < (int)CONFIG_T::in_h && iw >= 0 && iw < (int)CONFIG_T::in_w;
                        for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++)
                            if (valid[kh][kw] && !direct) window[ch][kh][kw] = line[ih % G::rows][iw][ch];
                    }
                }
                res_T y[CONFIG_T::n_filt];
            Filters:
                for (unsigned f = 0; f < CONFIG_T::n_filt; f++) {
                    const unsigned g = f / fpg;
                    typename CONFIG_T::accum_t acc = biases[f];
                    for (unsigned ch = 0; ch < cpg; ch++)
                        for (unsigned kh = 0; kh < CONFIG_T::k_h; kh++)
                            for (unsigned kw = 0; kw < CONFIG_T::k_w; kw++)
                                if (valid[kh][kw]) {
                                    const int ih = (int)(oh * CONFIG_T::stride_h + kh * CONFIG_T::dil_h) - (int)CONFIG_T::pad_top;
                                    const int iw = (int)(ow * CONFIG_T::stride_w + kw * CONFIG_T::dil_w) - (int)CONFIG_T::pad_left;
                                    const data_T v = direct ? line[ih % G::rows][iw][g * cpg + ch] : window[g * cpg + ch][kh][kw];
                                    acc += v * weights[((f * cpg + ch) * CONFIG_T::k_h + kh) * CONFIG_T::k_w + kw];
                                }
                    y[f] = (res_T)acc;
                }
                write_pixel<res_T, CONFIG_T::n_filt, FO>(y, out);
                if (++ow == CONFIG_T::out_w) { ow = 0; oh++; }
            }
        }
    }
}

// MaxPool / AveragePool with the same line buffer; per channel the window walk of kiln::pool2d.
template <class data_T, class res_T, typename CONFIG_T, unsigned FI = 1, unsigned FO = 1>
void pool2d_stream(stream<packet<data_T, CONFIG_T::n_chan / FI> > &in, stream<packet<res_T, CONFIG_T::n_chan / FO> > &out) {
    #pragma HLS INLINE off
    typedef window_geometry<CONFIG_T> G;
    KILN_ACTIVATION data_T line[G::rows][CONFIG_T::in_w][CONFIG_T::n_chan];
    #pragma HLS ARRAY_PARTITION variable = line complete dim = 1
    #pragma HLS ARRAY_PARTITION variable = line complete dim = 3
    unsigned oh = 0, ow = 0;
InRows:
    for (unsigned r = 0; r < CONFIG_T::in_h; r++) {
    InCols:
        for (unsigned c = 0; c < CONFIG_T::in_w; c++) {
            #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
            data_T px[CONFIG_T::n_chan];
            read_pixel<data_T, CONFIG_T::n_chan, FI>(in, px);
            for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++) line[r % G::rows][c][ch] = px[ch];
            while (oh < CONFIG_T::out_h && G::triggered(oh, ow, r, c)) {
                const int h0 = (int)(oh * CONFIG_T::stride_h) - (int)CONFIG_T::pad_top;
                const int w0 = (int)(ow * CONFIG_T::stride_w) - (int)CONFIG_T::pad_left;
                res_T y[CONFIG_T::n_chan];
            Channels:
                for (unsigned ch = 0; ch < CONFIG_T::n_chan; ch++) {
                    typename CONFIG_T::accum_t acc = 0;
                    bool first = true;
                    unsigned n_valid = 0;
                    for (unsigned kh = 0; kh < CONFIG_T::k_h; kh++) {
                        for (unsigned kw = 0; kw < CONFIG_T::k_w; kw++) {
                            const int ih = h0 + (int)(kh * CONFIG_T::dil_h);
                            const int iw = w0 + (int)(kw * CONFIG_T::dil_w);
                            if (ih < 0 || ih >= (int)CONFIG_T::in_h || iw < 0 || iw >= (int)CONFIG_T::in_w) continue;
                            data_T v = line[ih % G::rows][iw][ch];
                            if (CONFIG_T::is_max) {
                                if (first || v > acc) acc = v;
                            } else {
                                acc += v;
                            }
                            first = false;
                            n_valid++;
                        }
                    }
                    if (CONFIG_T::is_max) {
                        y[ch] = (res_T)acc;
                    } else {
                        unsigned count = n_valid;
                        if (CONFIG_T::count_include_pad) {
                            int h1 = h0 + (int)CONFIG_T::k_h, w1 = w0 + (int)CONFIG_T::k_w;
                            if (h1 > (int)(CONFIG_T::in_h + CONFIG_T::pad_bottom)) h1 = CONFIG_T::in_h + CONFIG_T::pad_bottom;
                            if (w1 > (int)(CONFIG_T::in_w + CONFIG_T::pad_right)) w1 = CONFIG_T::in_w + CONFIG_T::pad_right;
                            count = (unsigned)((h1 - h0) * (w1 - w0));
                        }
                        y[ch] = (res_T)(acc / (typename CONFIG_T::accum_t)(count ? count : 1));
                    }
                }
                write_pixel<res_T, CONFIG_T::n_chan, FO>(y, out);
                if (++ow == CONFIG_T::out_w) { ow = 0; oh++; }
            }
        }
    }
}

} // namespace kiln

#include "kiln_stream_accumulate.h"

#endif
