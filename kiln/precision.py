"""Numeric types of values: C++ ``float`` or Xilinx ``ap_fixed`` fixed point.

Text forms accepted (case-insensitive):
``float``, ``fixed<W,I>``, ``ufixed<W,I>``, ``fixed<W,I,RND,SAT>`` (rounding one of
TRN, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV, TRN_ZERO; overflow one of WRAP,
SAT, SAT_ZERO, SAT_SYM), and ``ap_fixed<...>`` / ``ap_ufixed<...>`` as synonyms.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from kiln.errors import KilnError

ROUNDING_MODES = ("TRN", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV", "TRN_ZERO")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")


@dataclass(frozen=True)
class FloatType:
    """IEEE single precision, the exact reference mode."""

    def cpp(self) -> str:
        return "float"

    def __str__(self) -> str:
        return "float"

    def quantize(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).astype(np.float64)


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, rounding, overflow>`` (signed) or ``ap_ufixed``."""

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self):
        if not 1 <= self.width <= 1024:
            raise KilnError(f"fixed-point width {self.width} out of range 1..1024")
        if self.rounding not in ROUNDING_MODES:
            raise KilnError(f"unknown rounding mode {self.rounding!r}; use one of {', '.join(ROUNDING_MODES)}")
        if self.overflow not in OVERFLOW_MODES:
            raise KilnError(f"unknown overflow mode {self.overflow!r}; use one of {', '.join(OVERFLOW_MODES)}")

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    @property
    def max_value(self) -> float:
        return 2.0 ** (self.integer - (1 if self.signed else 0)) - self.lsb

    @property
    def min_value(self) -> float:
        return -(2.0 ** (self.integer - 1)) if self.signed else 0.0

    def cpp(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        if self.rounding == "TRN" and self.overflow == "WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding},AP_{self.overflow}>"

    def __str__(self) -> str:
        base = "fixed" if self.signed else "ufixed"
        if self.rounding == "TRN" and self.overflow == "WRAP":
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Nearest representable value, saturated: how constants are written into the project."""
        scaled = np.round(np.asarray(values, dtype=np.float64) / self.lsb) * self.lsb
        return np.clip(scaled, self.min_value, self.max_value)

    def integer_bits_for(self, magnitude: float) -> int:
        """Integer bits (incl. sign) needed to hold +-magnitude."""
        if magnitude <= 0:
            return 1
        return max(1, math.ceil(math.log2(magnitude + self.lsb)) + (1 if self.signed else 0))


@dataclass(frozen=True)
class IntType:
    """A C++ ``int``: integer tensors (token ids, gather indices), never rescaled."""

    def cpp(self) -> str:
        return "int"

    def __str__(self) -> str:
        return "int"

    def quantize(self, values: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(values, dtype=np.float64))


@dataclass(frozen=True)
class BoolType:
    """A C++ ``bool``: masks and the results of comparisons and logic ops (0 or 1)."""

    def cpp(self) -> str:
        return "bool"

    def __str__(self) -> str:
        return "bool"

    def quantize(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values) != 0).astype(np.float64)


Precision = FloatType | FixedType | IntType | BoolType

_FIXED_RE = re.compile(r"^(ap_)?(u?)fixed\s*<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\w+)\s*)?(?:,\s*(\w+)\s*)?>$", re.I)


def parse_precision(text: str, where: str = "precision") -> Precision:
    """Parse a precision string; a bad one is a KilnError naming ``where``."""
    if isinstance(text, (FloatType, FixedType)):
        return text
    s = str(text).strip()
    if s.lower() == "float":
        return FloatType()
    if s.lower() == "int":
        return IntType()
    if s.lower() == "bool":
        return BoolType()
    m = _FIXED_RE.match(s)
    if not m:
        raise KilnError(f"{where}: cannot parse precision {s!r}; expected 'float' or 'fixed<W,I>' "
                        "(optionally 'fixed<W,I,RND_CONV,SAT>' or 'ufixed<W,I>')")
    width, integer = int(m.group(3)), int(m.group(4))
    rounding = (m.group(5) or "TRN").upper().removeprefix("AP_")
    overflow = (m.group(6) or "WRAP").upper().removeprefix("AP_")
    if integer > width:
        raise KilnError(f"{where}: {s!r} has more integer bits than total bits")
    return FixedType(width, integer, signed=not m.group(2), rounding=rounding, overflow=overflow)


def accumulator_for(a: Precision, b: Precision, fan_in: int) -> Precision:
    """Type of a sum of ``fan_in`` products a*b that cannot overflow.

    Product of W1.I1 x W2.I2 has W1+W2 bits, I1+I2 integer bits; adding n of them
    needs ceil(log2(n)) more integer bits (plus one for a bias term).
    """
    if isinstance(a, FloatType) or isinstance(b, FloatType):
        return FloatType()
    growth = math.ceil(math.log2(max(fan_in, 1) + 1))
    width = min(a.width + b.width + growth, 1024)
    integer = a.integer + b.integer + growth
    return FixedType(width, min(integer, width), signed=a.signed or b.signed)


def sum_type_for(a: Precision, count: int) -> Precision:
    """Type of a sum of ``count`` values of type ``a`` (pooling, softmax sums)."""
    if isinstance(a, FloatType):
        return a
    growth = math.ceil(math.log2(max(count, 1) + 1))
    return FixedType(min(a.width + growth, 1024), a.integer + growth, signed=a.signed)


def union_type(types: list[FixedType], extra_integer: int = 0) -> FixedType:
    """A type holding every value of each of ``types`` (plus ``extra_integer`` bits of growth)."""
    signed = any(t.signed for t in types)
    frac = max(t.frac for t in types)
    integer = max(t.integer + (1 if signed and not t.signed else 0) for t in types) + extra_integer
    return FixedType(min(integer + frac, 1024), integer, signed=signed)


def accumulator_with_bias(x: Precision, w: Precision, b: Precision | None, fan_in: int) -> Precision:
    """Accumulator of a Dense/Conv: ``accumulator_for`` (which leaves one integer bit for the bias),
    widened to the bias's fractional bits when it has more, so adding the bias is exact too."""
    acc = accumulator_for(x, w, fan_in)
    if isinstance(acc, FixedType) and isinstance(b, FixedType) and b.frac > acc.frac:
        return union_type([acc, b])
    return acc
