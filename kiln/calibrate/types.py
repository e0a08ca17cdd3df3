"""Fixed-point types chosen from observed ranges (``choose_fixed``, ``fits``)."""

from __future__ import annotations

import math

from kiln.calibrate.profile_data import ValueStats
from kiln.errors import KilnError
from kiln.precision import FixedType


def choose_fixed(stats, bits: int, margin_bits: int = 1) -> FixedType:
    """A signed ``fixed<bits, I>`` that holds the observed range with ``margin_bits`` to spare.

    Rule: I0 is the fewest integer bits (sign included) with which a signed type holds
    [min, max]: 2**(I0-1) >= -min and 2**(I0-1) > max, at least 1 (a sign bit only).
    I = I0 + margin_bits, and one more if ``max`` still exceeds the type's largest value
    ``2**(I-1) - lsb`` (possible only with margin 0 and very few fractional bits). The
    fractional bits are the rest: bits - I. So max 5.0 needs I0 = 4 (range [-8, 8)) and
    gets I = 5 with the default margin: fixed<16,5> for 16 bits.

    * All zero (or no finite value seen): I = 1 + margin_bits, i.e. a small range of
      +-2**margin_bits; the values carry no information on the type they need.
    * Always signed: an unsigned type would save one bit on values >= 0 (ReLU outputs), but a
      signed one stays correct when a deployment input drives such a value below zero where
      the calibration set did not; one bit of ``bits`` is the price.
    * I is capped at ``bits`` (no fractional bits): a range that needs more integer bits
      than ``bits`` does not fit, ``fits`` says so.

    ``stats``: a ``ValueStats`` or a mapping with "min" and "max".
    """
    if bits < 1:
        raise KilnError(f"fixed-point width {bits} must be at least 1")
    if margin_bits < 0:
        raise KilnError(f"margin_bits {margin_bits} must be >= 0")
    lo, hi = _range_of(stats)
    if lo == 0 and hi == 0:
        return FixedType(bits, min(bits, 1 + margin_bits))
    need = 1
    if hi > 0:
        need = max(need, math.floor(math.log2(hi)) + 2)       # 2**(I0-1) > hi
    if lo < 0:
        need = max(need, math.ceil(math.log2(-lo)) + 1)       # 2**(I0-1) >= -lo
    integer = min(bits, need + margin_bits)
    t = FixedType(bits, integer)
    while integer < bits and hi > t.max_value:
        integer += 1
        t = FixedType(bits, integer)
    return t


def fits(stats, t) -> bool:
    """Whether every observed value of ``stats`` lies in the range of fixed type ``t``."""
    lo, hi = _range_of(stats)
    return t.min_value <= lo and hi <= t.max_value


def _range_of(stats) -> tuple[float, float]:
    if isinstance(stats, ValueStats):
        lo, hi = stats.min, stats.max
    else:
        lo, hi = stats["min"], stats["max"]
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise KilnError(f"cannot choose a fixed-point type for a range [{lo}, {hi}]")
    return lo, hi
