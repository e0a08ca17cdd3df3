"""Channel folding of pixel streams (FINN's SIMD, hls4ml's n_pack): C / F channels per packet.

A pixel-order stream carries one pixel as F packets of C / F channels (F divides C), so its FIFO
is C / F elements wide, and the templates that read or write whole pixels (Conv, pools,
GlobalAveragePool, the streamed ReduceMean, the buffered adapters' read_tensor / write_tensor)
take a pixel in F reads / writes (nnet/kiln_stream.h read_pixel, write_pixel). The element-wise
templates (activations, binary ops, squeeze-excite's per-channel op) and clones work packet by
packet, so every stream they join has one fold: the streams are grouped into classes (a
union-find over those processes) and each class gets one F.

F is chosen from the rate (FINN-R, Blott et al., TRETS 11(3) 2018, section 4.2: fold as far
as the target II allows): the largest divisor F of C with pixels x F <= the target II for
every stream of the class, so no process becomes slower than the target. A class is not
folded where a reader needs whole rows (Dense, a packet-preserving copy, a top-level port).
The stream folding (stream_fold.py) turns channel folding on only for a design that does not
fit without it; the target II it used is kept on the graph (CHANNEL_FOLD_II) so that the
rendered design is the one estimated.
"""

from __future__ import annotations

from kiln.backends.hls.reuse import divisors
from kiln.backends.hls.stream_plan import (ACCUMULATE_TEMPLATES, BINARY_STREAM, CHANNEL_STREAM, StreamPlan,
                                           PIXEL_TEMPLATES)

CHANNEL_FOLD_II = "kiln.stream_channel_fold_ii"   # graph metadata: the target II of the channel folding
JOINING = ("kiln::activation_stream", BINARY_STREAM, CHANNEL_STREAM)   # all their streams: one fold
WHOLE_PIXEL = tuple(PIXEL_TEMPLATES.values()) + ACCUMULATE_TEMPLATES   # read_pixel / write_pixel


def _classes(plan: StreamPlan) -> list[list]:
    parent = {id(s): id(s) for s in plan.streams}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for proc in plan.processes:
        if proc.kind in ("clone", "drain") or (proc.kind == "native" and proc.template in JOINING):
            ends = proc.inputs + proc.outputs
            for s in ends[1:]:
                parent[find(id(s))] = find(id(ends[0]))
    groups: dict[int, list] = {}
    for s in plan.streams:
        groups.setdefault(find(id(s)), []).append(s)
    return list(groups.values())


def _takes_folded(proc) -> bool:
    return proc is None or proc.kind in ("buffered", "clone", "drain") or (
        proc.kind == "native" and (proc.template in JOINING or proc.template in WHOLE_PIXEL))


def fold_channels(plan: StreamPlan, target_ii: int) -> None:
    """Set every pixel stream's channel fold for ``target_ii`` cycles per frame (module docstring)."""
    by_name = {p.layer_name: p for p in plan.processes}
    for group in _classes(plan):
        for s in group:
            s.packet, s.fold = s.channels, 1
        if not all(s.pixel and not s.port for s in group):
            continue
        if not all(_takes_folded(by_name.get(s.producer)) and _takes_folded(by_name.get(s.consumer)) for s in group):
            continue
        channels = group[0].channels
        most = max(s.pixels for s in group)
        fold = max(d for d in divisors(channels) if most * d <= max(target_ii, most))
        for s in group:
            s.packet, s.fold = channels // fold, fold


def channel_fold_ii(model) -> int | None:
    """The target II the stream folding chose channel folding for (None: not folded)."""
    value = model.graph.metadata_props.get(CHANNEL_FOLD_II)
    return int(value) if value else None
