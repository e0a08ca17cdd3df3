"""Where a stream-mode memory lives: LUTRAM, block RAM (counted in BRAM18K) or UltraRAM (URAM).

Block RAM: a RAMB18 holds 18 Kb in one of its aspect ratios (16K x 1 ... 1K x 18, 512 x 36 in
simple dual-port mode; AMD UG473 table 1-2, UG573 table 1-3); a memory takes its best one.

UltraRAM (UltraScale+ parts that have it, e.g. alveo-u250 and vu13p: 1,280 blocks): one block is
4K x 72 bits (288 Kb) with a fixed aspect ratio and one clock (AMD UG573 "UltraRAM", UG901
"Differences between UltraRAM and Block RAM"), so a memory of ``words`` x ``width`` takes
ceil(width / 72) x ceil(words / 4096) blocks, and each bank of a partitioned memory its own.

The rule (Kiln's, stated here): on a board whose file lists ``uram`` > 0, a weight memory or a
buffered layer's array whose banks are each at least one URAM deep (>= 4,096 words) goes to
URAM (line buffers and FIFOs stay in BRAM/SRL); shallower ones stay in BRAM
(they would waste the URAM's depth as well as its width), and memories of < 64 words are
LUTRAM (words x bits / 64 LUTs). A 16-bit bank of 4,096 words is then 1 URAM instead of 4
BRAM18K. URAM is used while ``--budget`` x the board's URAM lasts: in dataflow order, a process
whose URAM memories would overrun it keeps them in BRAM (stream_estimate.estimate_stream), so the
URAM total never exceeds its budget and the rest of the memories count against BRAM. The
generated C++ binds each such memory with ``#pragma HLS BIND_STORAGE ... impl=uram`` (UG1399 "pragma HLS bind_storage"; URAM implements the RAM types, not ROMs).

UltraScale+ URAM has no initial contents in the bitstream: it powers up as 0 (UG901, as above;
Versal's URAM does take INIT values, AM007). Weight memories placed in URAM are therefore RAMs
that must be written before the first frame: uram_load.py generates that load path where the
board's wrapper can carry it (Alveo: the m_axi kiln_top_axi); elsewhere (vu13p, no wrapper) the
compile output and ``kiln_estimate.json`` (``uram_weights``, ``loaded: false``) say that a bitstream
would compute with zero weights in those memories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LUTRAM_MAX_WORDS = 64
URAM_DEPTH, URAM_WIDTH = 4096, 72

# RAMB18 aspect ratios (depth, width) of 7-series and UltraScale(+) block RAM (AMD UG473 table 1-2,
# UG573 table 1-3: 16K x 1 ... 1K x 18, 512 x 36 in simple dual-port mode)
RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


def ramb18_count(words: int, width: int) -> int:
    """BRAM18K of one memory of ``words`` x ``width`` bits, in its best RAMB18 aspect ratio."""
    return min(math.ceil(width / w) * math.ceil(words / d) for d, w in RAMB18_SHAPES)


def uram_count(words: int, width: int) -> int:
    """URAM blocks (4K x 72) of one memory of ``words`` x ``width`` bits."""
    return math.ceil(width / URAM_WIDTH) * math.ceil(words / URAM_DEPTH)


@dataclass(frozen=True)
class Placement:
    bram: int = 0
    uram: int = 0
    lut: int = 0


def place(words: int, width: int, banks: int = 1, uram: bool = False) -> Placement:
    """``banks`` memories of ``words`` x ``width`` bits; ``uram``: the board has URAM."""
    if banks <= 0 or words <= 0:
        return Placement()
    if words < LUTRAM_MAX_WORDS:
        return Placement(lut=banks * math.ceil(words * width / 64))
    if uram and words >= URAM_DEPTH:
        return Placement(uram=banks * uram_count(words, width))
    return Placement(bram=banks * ramb18_count(words, width))
