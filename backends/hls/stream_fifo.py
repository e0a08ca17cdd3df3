"""Stream mode: the depth of a fork's FIFOs from the lag between its branches (residual shortcuts).

A tensor read by two layers goes through a clone process that writes each packet to both
branches at once; where the branches meet again (the residual Add, one packet of each per
cycle) the short branch (the shortcut) must hold what the long branch reads ahead of it,
else the clone blocks on the full shortcut FIFO and the long branch starves: a deadlock.
hls4ml (io_stream) and FINN (InsertFIFO / set_fifo_depths) size this FIFO from the delay of
the other branch rather than the whole tensor; here that delay is counted exactly, in packets
of the forked tensor, from what the streaming templates read before they write:

* ``need[k]``: input packets a process has read when it writes its output packet k.
  Packet-per-packet templates (activations, binary ops, copies, Dense rows, clones): k + 1.
  Line-buffer Conv / pooling (``nnet/kiln_stream.h`` window_geometry): output (oh, ow) is
  written when its trigger pixel (tr, tc) = the window's bottom-right input pixel, clipped to
  the input, has been read: tr x in_w + tc + 1 (cumulative maximum, outputs in raster order).
  GlobalAveragePool and buffered adapters read the whole tensor first.
* Along a branch the counts compose (``cur = cur[need - 1]``): ``cur[k]`` = forked packets the
  branch has taken in when it delivers its packet k to the join.
* Depth of branch b's FIFO out of the clone = max over k of (cur_other[k] - cur_b[k]) + 2
  (what the other branch has read ahead while b's k-th packet waits at the join, plus one packet
  in flight each side), at least 2, at most the whole tensor. This is the delay of the long
  branch in cycles times the fork's packet rate, counted in packets rather than cycles, so it
  does not depend on the folding.

Forks whose branches do not meet at one two-stream join through single-stream processes
(more readers, a nested fork, the per-channel operand of squeeze-excite, which reads the
whole tensor before the first pixel) keep the whole tensor on each branch.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.hls.layers.conv import as_2d, spatial_params
from kiln.backends.hls.stream_plan import BINARY_STREAM, DENSE_TEMPLATES, PACKET_TEMPLATES
from kiln.ir_utils import attr, const_array, static_shape
from kiln.names import safe_comment

WINDOW_TEMPLATES = ("kiln::conv2d_stream", "kiln::pool2d_stream")
SLACK = 2   # one packet in flight on each side of the join


def window_need(node) -> np.ndarray:
    """need[k] of a line-buffer Conv / pool (see the module docstring), outputs in raster order."""
    xs, ys = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    kernel = (list(const_array(node.inputs[1]).shape[2:]) if node.op_type == "Conv"
              else list(attr(node, "kernel_shape")))
    p = spatial_params(node, list(xs[2:]), kernel)
    in_h, in_w = as_2d(list(xs[2:]), 1)
    out_h, out_w = as_2d(list(ys[2:]), 1)
    k_h, k_w = as_2d(kernel, 1)
    s_h, s_w = as_2d(p["strides"], 1)
    d_h, d_w = as_2d(p["dilations"], 1)
    p_t, p_l = as_2d(p["begin"], 0)
    oh, ow = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    tr = np.clip(oh * s_h + d_h * (k_h - 1) - p_t, 0, in_h - 1)
    tc = np.clip(ow * s_w + d_w * (k_w - 1) - p_l, 0, in_w - 1)
    return np.maximum.accumulate((tr * in_w + tc + 1).ravel())


def process_need(proc) -> np.ndarray | None:
    """need[k] of a process of one input stream and one output stream; None: unknown."""
    if len(proc.inputs) != 1 or len(proc.outputs) != 1:
        return None
    n_in, n_out = proc.inputs[0].n_packets, proc.outputs[0].n_packets
    if proc.kind == "clone" or proc.template in PACKET_TEMPLATES or proc.template in DENSE_TEMPLATES.values():
        return np.arange(1, n_out + 1) if n_in == n_out else None
    if proc.template in WINDOW_TEMPLATES:   # F_out packets per output pixel, F_in per input pixel
        return np.repeat(window_need(proc.node), proc.outputs[0].fold) * proc.inputs[0].fold
    return np.full(n_out, n_in)   # GlobalAveragePool, buffered adapters: the whole tensor first


def _branch(stream, by_name: dict):
    """Follow one clone output to the next two-stream process: (join, the stream it reads,
    cur, layers passed) or None."""
    cur = np.arange(1, stream.n_packets + 1)
    passed = []
    while True:
        proc = by_name.get(stream.consumer)
        if proc is None:
            return None
        if len(proc.inputs) == 2:
            return proc, stream, cur, passed
        need = process_need(proc)
        if need is None or proc.kind == "clone":
            return None
        cur = cur[need - 1]
        passed.append(proc.layer_name)
        stream = proc.outputs[0]


def fork_depths(plan, clone) -> dict[int, tuple[int, str]] | None:
    """id(stream) -> (depth, reason) for the two outputs of ``clone`` whose branches meet at one
    residual join (kiln::binary_stream); None: the fork is not of that form."""
    outs = [s for s in clone.outputs if s.consumer != "output"]
    if len(outs) != 2 or len(clone.outputs) != 2:
        return None
    by_name = {p.layer_name: p for p in plan.processes}
    branches = [_branch(s, by_name) for s in outs]
    if any(b is None for b in branches):
        return None
    (join_a, in_a, cur_a, via_a), (join_b, in_b, cur_b, via_b) = branches
    if join_a is not join_b or in_a is in_b or join_a.template != BINARY_STREAM or len(cur_a) != len(cur_b):
        return None
    n = outs[0].n_packets
    result = {}
    for s, mine, other, via in ((outs[0], cur_a, cur_b, via_b), (outs[1], cur_b, cur_a, via_a)):
        lag = int(np.max(other - mine))
        depth = max(2, min(n, lag + SLACK))
        path = f"via {', '.join(safe_comment(v) for v in via)}" if via else "directly"
        result[id(s)] = (depth, f"fork: the other branch ({path}) reads up to {max(lag, 0)} packets ahead of "
                                f"this one before the join {safe_comment(join_a.layer_name)} takes both; depth = "
                                f"that lag + {SLACK} (the whole tensor is {n})")
    return result
