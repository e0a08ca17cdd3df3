"""The load path of weight arrays placed in URAM (stream designs on boards with URAM and an AXI wrapper).

UltraScale+ URAM has no bitstream initialisation (it powers up as 0: AMD UG901, "Differences between
UltraRAM and Block RAM"), so a weight array bound to URAM (memory.py) is a RAM that must be written
before the first frame. Kiln generates, for such designs on Alveo boards (the m_axi ``kiln_top_axi``):

- the URAM arrays as writable memories without an initialiser (``weights/*.h``; ``kiln_load_weights``
  of the C-sim skips them), so that synthesis, the Vitis C-sim and co-simulation and the g++ C-sim all
  start with them zeroed, as the hardware does;
- ``kiln_load_uram_weights(image)`` in ``kiln_top.cpp``, which writes every URAM array, in the order
  of the image, from a packed weight image;
- a load mode of ``kiln_top_axi``: an m_axi pointer ``weight_image`` (bundle gmem2) and an AXI-Lite flag
  ``load_weights``; a call with ``load_weights = 1`` writes the arrays before its samples (the
  drivers call it once at start-up with ``n_samples = 0``);
- the image, ``weights/kiln_uram_image.bin``, and its layout in ``kiln_manifest.json`` (``uram_load``).

Word format of the image (Kiln's choice): little-endian 64-bit words; each array starts on a new word;
an element is its own type's bit pattern (the ``W`` bits of the ``ap_fixed``/``ap_ufixed``, two's
complement: the value / LSB; a ``float`` array: its IEEE binary32 bits), ``floor(64 / W)`` elements
per word, element ``k`` of a word in bits ``[k W, (k + 1) W)``, unused high bits 0. Bit patterns,
not floats, so that the load is exact for every width up to 64 and a 16-bit array takes a quarter
of the words of doubles (float32 would not hold a fixed type wider than 24 bits exactly).

On the Zynq boards of ``boards/`` (no URAM) and on boards without a wrapper (vu13p: the bare
``kiln_top``) there is no load path; there the estimate keeps ``loaded: false`` and the compile warns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.precision import FixedType, FloatType

IMAGE = "weights/kiln_uram_image.bin"
WORD_BITS = 64
LOADED_NOTE = ("written before the first frame by the load mode of kiln_top_axi (load_weights = 1, the packed "
               f"image {IMAGE}, layout in kiln_manifest.json uram_load); the drivers call it once at start-up")


def has_load_path(board_family: str) -> bool:
    """Boards whose generated wrapper carries the load path: the m_axi kiln_top_axi of Alveo cards."""
    return board_family == "alveo"


def element_bits(precision) -> int:
    """Bits of one element of a weight array of ``precision`` in the image."""
    if isinstance(precision, FixedType):
        if precision.width > WORD_BITS:
            raise KilnError(f"a URAM weight array of {precision} is wider than the load path's {WORD_BITS}-bit word")
        return precision.width
    if isinstance(precision, FloatType):
        return 32
    raise KilnError(f"a URAM weight array of type {precision} has no load-path word format (fixed or float only)")


def raw_bits(values: np.ndarray, precision) -> np.ndarray:
    """The bit patterns (uint64, ``element_bits`` wide) of ``values``, already quantised to ``precision``."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if isinstance(precision, FloatType):
        return values.astype(np.float32).view(np.uint32).astype(np.uint64)
    scaled = values / precision.lsb
    ints = np.round(scaled).astype(np.int64)
    if not np.array_equal(ints.astype(np.float64), scaled):
        raise KilnError(f"weights not quantised to {precision}: cannot write their bit patterns")
    mask = np.uint64((1 << precision.width) - 1) if precision.width < 64 else np.uint64(2**64 - 1)
    return ints.view(np.uint64) & mask   # two's complement in the low W bits


def pack(bits: np.ndarray, width: int) -> np.ndarray:
    """``floor(64 / width)`` elements per little-endian 64-bit word, element k at bit k x width."""
    per_word = WORD_BITS // width
    n_words = -(-len(bits) // per_word)
    padded = np.zeros(n_words * per_word, dtype=np.uint64)
    padded[:len(bits)] = bits
    shifts = (np.arange(per_word, dtype=np.uint64) * np.uint64(width))
    return np.bitwise_or.reduce(padded.reshape(n_words, per_word) << shifts, axis=1)


def build_image(weights: list, names: list[str]) -> tuple[np.ndarray, list[dict]]:
    """(words, layout) of the image of the weight arrays named ``names`` (context.WeightArray), in that order."""
    by_name = {w.name: w for w in weights}
    words, layout, offset = [], [], 0
    for name in names:
        w = by_name[name]
        width = element_bits(w.precision)
        packed = pack(raw_bits(w.values, w.precision), width)
        layout.append({"name": w.name, "ctype": w.ctype, "precision": str(w.precision), "size": int(w.values.size),
                       "element_bits": width, "per_word": WORD_BITS // width, "offset_words": offset,
                       "words": len(packed), "float": isinstance(w.precision, FloatType)})
        words.append(packed)
        offset += len(packed)
    return (np.concatenate(words) if words else np.zeros(0, np.uint64)), layout


def manifest_entry(layout: list[dict], n_words: int) -> dict:
    return {"image": IMAGE, "word_bits": WORD_BITS, "byte_order": "little", "words": n_words,
            "element": "the array type's bit pattern (fixed: value / LSB, two's complement, W bits; float: IEEE "
                       "binary32), floor(64 / W) per word from bit 0 up; each array starts on a new word",
            "arrays": layout}


def write_image(root: Path, words: np.ndarray) -> None:
    words.astype("<u8").tofile(root / IMAGE)


def mark_loaded(estimate: dict, loaded: bool, board: str) -> dict:
    """The estimate's ``uram_weights``: loaded and how, or why not (``board`` has no wrapper that carries it)."""
    uram = estimate.get("uram_weights")
    if uram:
        uram["loaded"] = loaded
        uram["why"] = LOADED_NOTE if loaded else (
            "UltraScale+ URAM has no bitstream initialisation (it powers up as 0, AMD UG901); these weight memories "
            f"must be written before the first frame, and Kiln generates that load path only in the m_axi wrapper "
            f"kiln_top_axi of Alveo boards ({board} has no wrapper): the C-simulation is exact, a bitstream would "
            "compute with zero weights there")
    return estimate
