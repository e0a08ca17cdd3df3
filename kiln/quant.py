"""Quantizers: one description for QONNX ``Quant``/``BipolarQuant``, ONNX Q/DQ pairs and QKeras.

Every quantizer Kiln accepts computes, per element (QONNX's definition)::

    q = clip(round(x / scale + zero_point), q_min, q_max)      # an integer
    y = (q - zero_point) * scale

with ``round`` one of ROUND (half to even, as numpy, ONNX QuantizeLinear and tf.round),
FLOOR or ROUND_TO_ZERO, and ``[q_min, q_max]`` the signed/unsigned ``bits``-bit range
(``narrow`` drops the most negative code). ``BipolarQuant`` is y = (x >= 0 ? 1 : -1) * scale.

How it lands on hardware types (``QuantSpec.fixed_type`` / ``QuantSpec.mapping``):

* **exact**: a power-of-two scale 2^e with zero point 0 is exactly an ap_fixed:
  ``fixed<bits, bits+e, RND_CONV, SAT>`` (SAT_SYM when signed and narrow;
  ``ufixed`` when unsigned). The quantizer becomes a type conversion.
* **multiply**: any other scale (or a zero point) is computed as
  ``q = clamp(round(x * (1/scale))) ; y = q * scale`` by ``kiln::quantize``;
  ``y`` is held in a fixed type with 8 fractional bits below the scale's own, so the
  only error against ONNX Runtime is a possible one-LSB rounding difference near a tie.
  A quantizer reading the per-output scale Mul of a Dense/Conv (below) has that Mul
  multiply by ``S / scale`` instead and only rounds and clamps: one multiply per value
  (requantization, passes/weight_scale.py ``_requantize``).
* on constants (weights, biases) the quantizer is evaluated at compile time; a
  power-of-two scale gives an exact weight type. Any other scale is **folded**: the
  values q * scale are held in a fixed type fine enough that the error is below 2^-14 of
  the scale (``weight_type``), and where the constants are a Dense/Conv's weights,
  passes/weight_scale.py turns them back into exact integers with the scale applied
  once per output after the sum (activation scales follow them there when they can).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from kiln.errors import KilnError
from kiln.precision import FixedType

ROUNDING = {"ROUND": "RND_CONV", "FLOOR": "TRN", "ROUND_TO_ZERO": "TRN_ZERO"}  # -> ap_fixed modes
ROUND_FUNCTIONS = {"ROUND": np.round, "FLOOR": np.floor, "ROUND_TO_ZERO": np.fix}   # numpy: half to even...
EXTRA_FRAC_BITS = 8  # fractional bits below the scale's own for non-power-of-two activation scales
WEIGHT_EXTRA_FRAC_BITS = 14  # the same for constants (one rounding per weight, summed over the fan-in)


def po2_exponent(scale: float) -> int | None:
    """e with scale == 2**e exactly, else None."""
    if not (scale > 0 and math.isfinite(scale)):
        return None
    mantissa, exponent = math.frexp(scale)
    return exponent - 1 if mantissa == 0.5 else None


@dataclass(frozen=True)
class QuantSpec:
    """A per-tensor quantizer (activations) or the scalar parameters of one channel."""

    scale: float
    zero_point: int = 0
    bits: int = 8
    signed: bool = True
    narrow: bool = False
    rounding: str = "ROUND"
    bipolar: bool = False

    def __post_init__(self):
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise KilnError(f"quantizer scale must be a positive finite number, got {self.scale}")
        if self.rounding not in ROUNDING:
            raise KilnError(f"quantizer rounding mode {self.rounding!r} is not supported; "
                            f"supported: {', '.join(ROUNDING)}")
        if not self.bipolar and not 1 <= self.bits <= 32:
            raise KilnError(f"quantizer bit width {self.bits} is not supported (1..32)")
        if self.bits == 1 and self.signed and not self.bipolar:
            raise KilnError("a signed 1-bit Quant is not supported; use BipolarQuant")

    # --- integer range -------------------------------------------------------------------
    @property
    def q_min(self) -> int:
        if self.bipolar:
            return -1
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def q_max(self) -> int:
        if self.bipolar:
            return 1
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1 - (1 if self.narrow else 0)

    # --- semantics -----------------------------------------------------------------------
    def apply(self, x: np.ndarray, scale=None, zero_point=None) -> np.ndarray:
        """The quantizer in numpy (float64), exactly as QONNX's reference executes it.

        ``scale``/``zero_point`` (arrays broadcasting against x, as ONNX broadcasts them)
        replace the spec's own for per-channel quantizers of constants.
        """
        x = np.asarray(x, dtype=np.float64)
        scale = np.asarray(self.scale if scale is None else scale, dtype=np.float64)
        zero_point = np.asarray(self.zero_point if zero_point is None else zero_point, dtype=np.float64)
        if self.bipolar:
            return np.where(x >= 0, 1.0, -1.0) * scale
        q = ROUND_FUNCTIONS[self.rounding](x / scale + zero_point)
        return (np.clip(q, self.q_min, self.q_max) - zero_point) * scale

    # --- hardware type -------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True when the quantizer is a plain ap_fixed conversion (power-of-two scale, no zero point)."""
        return (not self.bipolar and self.zero_point == 0 and po2_exponent(self.scale) is not None
                and not (self.narrow and not self.signed))

    def fixed_type(self) -> FixedType:
        """The ap_fixed type that holds every output value (exactly, or to 2^-8 of the scale)."""
        e = po2_exponent(self.scale)
        if self.exact:
            overflow = "SAT_SYM" if (self.signed and self.narrow) else "SAT"
            return FixedType(self.bits, self.bits + e, signed=self.signed, rounding=ROUNDING[self.rounding],
                             overflow=overflow)
        lo, hi = (self.q_min - self.zero_point) * self.scale, (self.q_max - self.zero_point) * self.scale
        frac = (-e if e is not None else EXTRA_FRAC_BITS - math.floor(math.log2(self.scale)))
        return fitting_type(min(lo, 0.0), max(hi, 0.0), frac)

    def mapping(self) -> str:
        """What the report says about how this quantizer reaches the hardware."""
        t = self.fixed_type()
        if self.exact:
            return f"exact: scale 2^{po2_exponent(self.scale)} -> {t}"
        if self.bipolar:
            return f"bipolar: +-{self.scale:g} -> {t}"
        return (f"multiply: scale {self.scale:.6g}{f', zero point {self.zero_point}' if self.zero_point else ''} "
                f"is not a power of two; computed as round(x*(1/scale)) * scale -> {t}")

    def as_attributes(self) -> dict:
        return asdict(self)


def fitting_type(lo: float, hi: float, frac: int) -> FixedType:
    """The narrowest fixed type with ``frac`` fractional bits holding [lo, hi] (round half to even, saturating)."""
    signed = lo < 0
    integer = 1  # never fewer: negative integer bits are legal C++ but not every tool takes them
    while True:
        t = FixedType(max(integer + frac, 1), integer, signed=signed, rounding="RND_CONV", overflow="SAT")
        if t.min_value <= lo and t.max_value >= hi:
            return t
        integer += 1


def weight_type(values: np.ndarray, specs: list[QuantSpec]) -> tuple[FixedType, str]:
    """The fixed type for constants quantized by ``specs`` (one per channel, or one) and what
    the report says: exact for power-of-two scales, else folded with the error bound."""
    frac = max(s.fixed_type().frac + (0 if s.exact else WEIGHT_EXTRA_FRAC_BITS - EXTRA_FRAC_BITS) for s in specs)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    fixed = fitting_type(min(lo, 0.0), max(hi, 0.0), frac)
    if all(s.exact for s in specs):
        return fixed, f"exact: power-of-two scale(s) -> {fixed}"
    err = float(np.max(np.abs(fixed.quantize(values) - values))) if values.size else 0.0
    return fixed, f"folded: non-power-of-two scale(s) folded into the constants as {fixed} (max error {err:.2e})"
