"""Stream-mode (io_stream) estimates: per-process II and resources, FIFO depths, throughput.

All figures are estimates, labelled as such wherever they are shown, built on the
io_parallel relations of estimate.py (multipliers = multiplications / R, DSP48E2 27x18,
narrow products in LUTs, accumulators, BRAM18K counting) applied to what each streaming
template instantiates. The dataflow model is that of hls4ml's io_stream (Aarrestad et al.,
"Fast convolutional neural networks on FPGAs with hls4ml", MLST 2 045015, 2021, section 3:
line buffers, one pixel per cycle, layers as DATAFLOW processes) and of FINN's folding
(Umuroglu et al., "FINN", FPGA 2017, section 4; Blott et al., "FINN-R", TRETS 11(3) 2018,
section 4.2: a layer's cycles per frame = its work / (PE x SIMD), the pipeline's rate is
that of its slowest layer):

* II per frame (cycles between frames a process accepts):
  Dense: rows x R_row (one row per read; the row's n_in x n_out products on
  n_in x n_out / R_row multipliers, R_row = stream_plan.row_reuse).
  Activation, element-wise binary op of two streams, per-channel binary op (squeeze-excite):
  output packets x F (one packet of P elements per F cycles on P / F multipliers/LUT paths,
  F = stream_plan.packet_fold); packet-preserving copy (Flatten of a 1x1 map): output packets.
  Conv / pooling: max(input pixels x max(R, F_in), output pixels x max(R, F_out)) (one pixel
  per F reads, F the stream's channel fold, stream_channels.py; the window's products of all
  filters on weights / R multipliers); GlobalAveragePool and a ReduceMean/ReduceSum over H, W
  (squeeze-excite's squeeze): input packets (C accumulators, C scale multiplies).
  LayerNorm / Softmax over the last axis: rows x R_row (one row per read, the io_parallel kernel
  on that row at PIPELINE II = R_row); GELU / element-wise math: packets x F (stream_rows.py).
  Their resources are those of ONE row (the row's products on products / R_row multipliers, one
  row's output registers), and a lookup table read by L lanes a cycle is ceil(L / 2) copies
  (dual-port ROM, AMD UG573).
  Buffered adapter: max(packets in, io_parallel II, packets out); clone: packets.
* Throughput: frames/s = clock / max II (FINN-R eq. 1: the slowest stage sets the rate).
* Latency (pipeline fill): the longest path of the processes' initial delays (cycles from a
  frame's first packet in to its first packet out) plus the bottleneck's II: Dense R_row + 1 +
  ceil(log2 n_in) + 1; Conv/pool the pixels before the first window is complete
  ((K_eff_h - 1) x in_w + K_eff_w) x R (padding ignored: an upper bound) plus the product's adder tree;
  a buffered adapter all its input packets plus the io_parallel latency; activations 1.
* Window registers (FF) of a Conv: K_eff_h x K_eff_w x C x bits below R = k_w; from R >= k_w
  the taps are read from the line buffer's banks (k_w reads of a bank per output pixel in R
  cycles), as for pools: none.
* Line buffers: K_eff_h rows x in_w pixels x C channels, partitioned into K_eff_h x C banks
  of in_w words; a bank of >= 64 words is BRAM18K (each in its best RAMB18 aspect ratio,
  16K x 1 ... 1K x 18, 512 x 36: AMD UG473 table 1-2), a shallower one LUTRAM (words x bits
  / 64 LUTs). Weights of streamed Dense/Conv: the banks of estimate.py (ceil(n / R) of R
  words from R >= 64), each in its best aspect ratio (io_parallel's estimate counts 512 x 36). Buffered adapters' whole-tensor arrays are
  counted the same way (one bank per array). On boards with URAM, weight memories and buffered
  arrays whose banks are >= 4,096 words deep go to URAM (4K x 72 blocks) while the URAM budget
  lasts (memory.py); line buffers stay in BRAM (the templates bind none to URAM).
* FIFOs (Vitis HLS maps shallow FIFOs to SRL shift registers, UG1399 "STREAM"): depth <= 32:
  ceil(depth / 32) x width LUTs (SRL32); deeper: ceil(width / 36) x ceil(depth / 512) BRAM18K.
* FIFO depth (packets), from the rates of producer and consumer (t = cycles per packet):
  a fork whose two branches meet again at a residual join gets the lag of the other branch
  (stream_fifo.py: the packets the long branch reads ahead of the shortcut, + 2); any other
  fork (more readers, squeeze-excite's per-channel operand, a buffered layer between) holds
  the whole tensor on each branch, since a sibling branch may hold the frame back; a producer that writes
  in a burst (buffered adapter, clone: one packet per cycle) into a slower consumer gets
  ceil(B x (1 - 1 / t_c)) + 1 (what accumulates during the burst, capped at the tensor);
  otherwise 2 (a steady producer is throttled to the consumer's rate: more depth does not
  raise the throughput).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from kiln.backends.hls.estimate import LayerCost, LayerEstimate, ModelEstimate, estimate_layer
from kiln.backends.hls.memory import LUTRAM_MAX_WORDS, RAMB18_SHAPES, Placement, place, ramb18_count  # noqa: F401
from kiln.backends.hls.stream_attention import ATTENTION_STREAM_TEMPLATES, estimate_attention
from kiln.backends.hls.stream_fifo import fork_depths
from kiln.backends.hls.stream_rows import ELEMENT_STREAMS, ROW_STREAMS, estimate_row_process
from kiln.backends.hls.stream_plan import ACCUMULATE_TEMPLATES, DENSE_TEMPLATES, PACKET_TEMPLATES, StreamPlan, packet_fold
from kiln.ir_utils import attr, const_array

SRL_MAX_DEPTH = 32
URAM_NO_INIT = ("UltraScale+ URAM has no bitstream initialisation (it powers up as 0, AMD UG901); these weight "
                "memories must be written before the first frame, and Kiln does not generate that load path yet: "
                "the C-simulation is exact, a bitstream would compute with zero weights there")


def weight_memory(cost: LayerCost, uram: bool = False) -> Placement | None:
    """The weight memory of a folded layer, as estimate.py banks it: from R >= 64, ceil(weights / R)
    banks of R words of the weight width (memory.place: BRAM18K in its best aspect ratio, or URAM
    when the board has it and a bank is >= 4,096 words deep); None: R < 64 (registers/LUTRAM)."""
    r = max(1, cost.reuse_factor)
    if not cost.weight_bits or r < 64:
        return None
    width = max(cost.weight_width, 1)
    return place(r, width, math.ceil(cost.weight_bits / width / r), uram)


def weight_row(name: str, op: str, cost: LayerCost, inputs: list, uram: bool = False) -> LayerEstimate:
    """estimate_layer with the weights in the memory of weight_memory (a 16-bit bank of 6,144
    words: 6 BRAM18K in 1K x 18, where estimate.py's 512 x 36 would count 12; 2 URAM on a board
    with URAM)."""
    mem = weight_memory(cost, uram)
    if mem is None:
        return estimate_layer(name, op, cost, inputs)
    row = estimate_layer(name, op, replace(cost, weight_bits=0), inputs)
    return replace(row, bram=row.bram + mem.bram, uram=mem.uram, lut=row.lut + mem.lut)


def fifo_cost(depth: int, width: int) -> tuple[int, int]:
    """(BRAM18K, LUT) of one FIFO of ``depth`` packets of ``width`` bits."""
    if depth <= SRL_MAX_DEPTH:
        return 0, math.ceil(depth / 32) * width
    return math.ceil(width / 36) * math.ceil(depth / 512), 0


def _bits(stream, precision_bits: dict) -> int:
    return precision_bits.get(stream.ctype, 32)


class StreamEstimate(ModelEstimate):
    """ModelEstimate of a dataflow: latency adds the bottleneck's II to the fill; the JSON
    gains throughput, the FIFOs and the buffered layers."""

    fifos: list = []
    buffered: list = []
    uram_weights: list = []   # weight arrays bound to URAM (writer.uram_weight_arrays): they need a load path

    @property
    def latency_cycles(self) -> int:
        return super().latency_cycles + self.ii

    def as_dict(self) -> dict:
        d = super().as_dict()
        d["io"] = "stream"
        d["total"]["frames_per_s"] = self.clock_mhz * 1e6 / max(self.ii, 1)
        d["fifos"] = self.fifos
        d["buffered"] = self.buffered
        if self.uram_weights:
            d["uram_weights"] = {"arrays": self.uram_weights, "loaded": False, "why": URAM_NO_INIT}
        return d


def _window(proc) -> tuple[int, int, int, int]:
    """(kernel rows, kernel cols, input width, pad_top) of a Conv/pool process's node."""
    node = proc.node
    kernel = list(const_array(node.inputs[1]).shape[2:]) if node.op_type == "Conv" else list(attr(node, "kernel_shape"))
    kernel = [1] + kernel if len(kernel) == 1 else kernel
    dil = list(attr(node, "dilations", [1] * len(kernel)))
    dil = [1] + dil if len(dil) == 1 else dil
    keff = [d * (k - 1) + 1 for d, k in zip(dil, kernel)]
    in_w = node.inputs[0].shape[-1]
    return keff[0], keff[1], int(in_w), 0


def _kernel_w(node) -> int:
    kernel = list(const_array(node.inputs[1]).shape[2:]) if node.op_type == "Conv" else list(attr(node, "kernel_shape"))
    return int(kernel[-1])


def estimate_process(proc, plan: StreamPlan, bits_of: dict, uram: bool = False) -> LayerEstimate | None:
    """``uram``: the board has URAM (memory.py decides which memories go there; the layer's
    ``weights_in_uram`` and each buffered array's stream ``in_uram`` record it for the C++)."""
    cost = proc.layer.cost if proc.layer is not None and proc.layer.cost is not None else LayerCost()
    if proc.layer is not None:
        proc.layer.weights_in_uram = False
    ins, outs = proc.inputs, proc.outputs
    if proc.kind in ("clone", "drain"):
        n = ins[0].n_packets
        return LayerEstimate(proc.layer_name, "Clone", 1, n, 1, 0, 0, 0, 0, [ins[0].producer])
    inputs = [s.producer for s in ins]
    if proc.kind == "buffered":
        par = estimate_layer(proc.layer_name, proc.op, cost, inputs)
        mem = weight_memory(cost, uram) if uram else None
        if mem is not None and mem.uram:   # else the io_parallel count (512 x 36) stays, as without URAM
            par = replace(weight_row(proc.layer_name, proc.op, cost, inputs, uram), ii=par.ii)
            proc.layer.weights_in_uram = True
        n_in, n_out = sum(s.n_packets for s in ins), sum(s.n_packets for s in outs)
        bram, lut, urams = par.bram, par.lut, par.uram
        for s in ins + outs:
            p = place(s.size, _bits(s, bits_of), 1, uram)
            bram, lut, urams = bram + p.bram, lut + p.lut, urams + p.uram
            s.in_uram = p.uram > 0
        return replace(par, ii=max(n_in, par.ii, n_out), latency_cycles=n_in + par.latency_cycles, bram=bram, lut=lut,
                       uram=urams)
    if proc.template in ATTENTION_STREAM_TEMPLATES:
        return estimate_attention(proc, plan, bits_of, uram, weight_row)
    src, dst = ins[0], outs[0]
    if proc.template in ROW_STREAMS + ELEMENT_STREAMS:
        return estimate_row_process(proc, inputs)
    if proc.template in DENSE_TEMPLATES.values():
        rf = plan.row_configs[proc.layer_name][2]
        n_in, n_out = src.packet, dst.packet
        row = weight_row(proc.layer_name, proc.op, replace(cost, mults=n_in * n_out, reuse_factor=rf,
                                                           out_elems=n_out), inputs, uram)
        proc.layer.weights_in_uram = row.uram > 0
        return replace(row, ii=src.n_packets * rf)
    if proc.template in PACKET_TEMPLATES:
        share, fold = dst.packet / max(dst.size, 1), packet_fold(proc)
        row = estimate_layer(proc.layer_name, proc.op, replace(
            cost, mults=math.ceil(cost.mults * share), adds=math.ceil(cost.adds * share), out_elems=dst.packet,
            reuse_factor=fold), inputs)
        # a per-channel operand (squeeze-excite) is one packet read before the pixels: no extra cycles
        return replace(row, ii=dst.n_packets * fold, latency_cycles=max(row.latency_cycles, 1))
    r = max(1, cost.reuse_factor)
    pixels_in, pixels_out, chans = src.pixels, dst.pixels, src.channels
    if proc.template in ACCUMULATE_TEMPLATES:
        row = estimate_layer(proc.layer_name, proc.op, replace(cost, adds=chans, out_elems=chans, reuse_factor=1),
                             inputs)
        return replace(row, ii=src.n_packets, latency_cycles=src.n_packets + row.latency_cycles)
    keff_h, keff_w, in_w, _ = _window(proc)
    per_pixel = replace(cost, mults=cost.mults // max(pixels_out, 1), adds=cost.adds // max(pixels_out, 1),
                        out_elems=dst.packet, reuse_factor=r)
    row = weight_row(proc.layer_name, proc.op, per_pixel, inputs, uram)
    proc.layer.weights_in_uram = row.uram > 0
    line = place(in_w, _bits(src, bits_of), keff_h * chans)   # BRAM: the stream templates bind no line buffer to URAM
    b, l = line.bram, line.lut
    fill = max(0, (keff_h - 1) * in_w + keff_w) * max(r, src.fold) + row.latency_cycles
    # conv2d_stream copies the window into registers below R = k_w; from R >= k_w, and pool2d_stream
    # always, the taps are read from the line buffer directly
    k_w = _kernel_w(proc.node)
    window_ff = (keff_h * keff_w * chans * _bits(src, bits_of)
                 if proc.template == "kiln::conv2d_stream" and r < k_w else 0)
    # a pixel takes max(R, F) cycles: R for its products, F packet reads (writes) per pixel in (out)
    ii = max(pixels_in * max(r, src.fold), pixels_out * max(r, dst.fold))
    return replace(row, ii=ii, latency_cycles=fill, bram=row.bram + b, lut=row.lut + l,
                   ff=row.ff + window_ff)


def fifo_depths(plan: StreamPlan, rows: dict) -> None:
    """Set each FIFO's depth and the reason, from the rates of its producer and consumer."""
    readers: dict[str, int] = {}
    for proc in plan.processes:
        if proc.kind == "clone":
            readers[id(proc)] = sum(1 for s in proc.outputs if s.consumer != "output")
    for proc in plan.processes:
        forks = fork_depths(plan, proc) if proc.kind == "clone" and readers[id(proc)] > 1 else None
        for s in proc.outputs:
            if s.port:
                continue
            consumer = rows.get(s.consumer)
            t_c = consumer.ii / max(s.n_packets, 1) if consumer is not None else 1.0
            if forks is not None:
                s.depth, s.depth_reason = forks[id(s)]
            elif proc.kind == "clone" and readers[id(proc)] > 1:
                s.depth = max(2, s.n_packets)
                s.depth_reason = "fork: holds the whole tensor while a sibling branch holds the frame back"
            elif proc.kind in ("clone", "buffered") and t_c > 1:
                s.depth = max(2, min(s.n_packets, math.ceil(s.n_packets * (1 - 1 / t_c)) + 1))
                s.depth_reason = (f"burst of {s.n_packets} packets at 1/cycle into a consumer taking "
                                  f"{t_c:.3g} cycles/packet")
            else:
                s.depth = 2
                t_p = rows[proc.layer_name].ii / max(s.n_packets, 1) if proc.layer_name in rows else 1.0
                s.depth_reason = (f"steady producer ({t_p:.3g} cycles/packet) into consumer "
                                  f"({t_c:.3g} cycles/packet)")


def estimate_stream(plan: StreamPlan, clock_mhz: float, budget: dict, bits_of: dict,
                    uram_limit: float | None = None) -> StreamEstimate:
    """``uram_limit``: the URAM blocks the memories may fill (default: all the board's). In dataflow
    order, each process's memories go to URAM (memory.py's rule) while that budget lasts; a
    process whose URAM memories would overrun it keeps them all in BRAM."""
    rows = {}
    uram_left = budget.get("uram", 0) if uram_limit is None else uram_limit
    for proc in plan.processes:
        row = estimate_process(proc, plan, bits_of, uram_left > 0)
        if row.uram > uram_left:
            row = estimate_process(proc, plan, bits_of, False)
        uram_left -= row.uram
        rows[proc.layer_name] = row
    fifo_depths(plan, rows)
    fifo_rows, bram, lut = [], 0, 0
    for s in plan.streams:
        if s.port:
            continue
        width = s.packet * _bits(s, bits_of)
        b, l = fifo_cost(s.depth, width)
        bram, lut = bram + b, lut + l
        fifo_rows.append({"name": s.name, "value": s.value, "producer": s.producer, "consumer": s.consumer,
                          "packets": s.n_packets, "packet": s.packet, "order": "pixel" if s.pixel else "flat",
                          "width_bits": width, "depth": s.depth, "why": s.depth_reason, "bram": b, "lut": l})
    layers = list(rows.values())
    if fifo_rows:
        layers.append(LayerEstimate("FIFOs", "FIFO", 1, 1, 0, 0, lut, 0, bram, []))
    est = StreamEstimate(layers, clock_mhz, budget)
    est.fifos = fifo_rows
    est.buffered = [{"layer": p.layer_name, "op": p.op, "why": p.reason} for p in plan.buffered]
    return est


def type_widths(typedefs: dict) -> dict:
    """typedef name -> bits (ap_fixed<W, ...> / ap_int<W>: W; float and int: 32)."""
    widths = {}
    for name, cpp in typedefs.items():
        m = re.match(r"ap_u?(?:fixed|int)<\s*(\d+)", cpp)
        widths[name] = int(m.group(1)) if m else 32
    return widths
