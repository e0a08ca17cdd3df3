"""QKeras quantizers read as QONNX ``Quant`` parameters (scale, bits, signed, narrow).

Used by the QKeras -> QONNX converter (frontend/qkeras_loader.py); see its docstring for the
semantics of each quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import KilnError
from kiln.quant import QuantSpec


@dataclass
class QuantParams:
    """One QONNX ``Quant`` node: ``clip(round(x / scale), min_int, max_int) * scale``."""

    scale: np.ndarray  # float32, scalar or broadcastable to the quantized tensor
    bits: int
    signed: bool
    narrow: bool

    @property
    def min_int(self) -> int:
        return self._integer_range().q_min

    @property
    def max_int(self) -> int:
        return self._integer_range().q_max

    def _integer_range(self) -> QuantSpec:
        """The same integer range Kiln's own quantizer description gives (kiln/quant.py)."""
        return QuantSpec(scale=1.0, bits=self.bits, signed=self.signed, narrow=self.narrow)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """What the Quant node computes (float32, round half to even)."""
        x = np.asarray(x, np.float32)
        return (np.clip(np.round(x / self.scale), self.min_int, self.max_int) * self.scale).astype(np.float32)


def quantizer_classes():
    from qkeras.quantizers import quantized_bits, quantized_relu

    return quantized_bits, quantized_relu


def is_quantizer(obj) -> bool:
    from qkeras.quantizers import BaseQuantizer

    return isinstance(obj, BaseQuantizer)


def _int(value) -> int:
    """A quantizer field that may be a python number or a tf.Variable."""
    return int(np.asarray(value))


def _po2(exponent: int) -> np.ndarray:
    return np.asarray(2.0 ** exponent, np.float32)


def _check_common(q, where: str) -> None:
    if float(np.asarray(q.qnoise_factor)) != 1.0:
        raise KilnError(f"{where}: {q} has qnoise_factor={q.qnoise_factor} (only 1.0, full quantization, is exact)")
    if q.use_stochastic_rounding:
        raise KilnError(f"{where}: {q} uses stochastic rounding, which has no QONNX form")


def _bits_params(q, where: str) -> QuantParams:
    """quantized_bits with alpha None/1 (a fixed power-of-two step)."""
    bits, integer, keep_negative = _int(q.bits), _int(q.integer), bool(q.keep_negative)
    _check_common(q, where)
    if bits - keep_negative < 1:
        raise KilnError(f"{where}: {q} is a 1-bit (sign) quantizer; not supported")
    if q.alpha is not None and not (np.ndim(q.alpha) == 0 and float(q.alpha) == 1.0):
        raise KilnError(f"{where}: {q} has alpha={q.alpha!r}; QKeras multiplies by alpha after rounding, "
                        "which one Quant node cannot express (use alpha=1, None or 'auto_po2' on weights)")
    return QuantParams(scale=_po2(integer - bits + keep_negative), bits=bits, signed=keep_negative,
                       narrow=bool(q.symmetric) and keep_negative)


def _relu_params(q, where: str) -> QuantParams:
    """quantized_relu without sigmoid / negative slope."""
    bits, integer = _int(q.bits), _int(q.integer)
    _check_common(q, where)
    if q.use_sigmoid:
        raise KilnError(f"{where}: {q} has use_sigmoid=1; not supported")
    if q.negative_slope:
        raise KilnError(f"{where}: {q} has negative_slope={q.negative_slope}; not supported")
    params = QuantParams(scale=_po2(integer - bits), bits=bits, signed=False, narrow=False)
    top = float(params.max_int * params.scale)
    if not q.is_quantized_clip and q.relu_upper_bound is not None and q.relu_upper_bound < top:
        raise KilnError(f"{where}: {q} has relu_upper_bound={q.relu_upper_bound} below its largest value {top}; "
                        "not supported")
    return params


def activation_quant(q, where: str) -> QuantParams:
    """Quant parameters for a quantizer applied to an activation tensor (fixed scale only)."""
    quantized_bits, _ = quantizer_classes()
    if is_po2(q):
        raise KilnError(f"{where}: {q} on an activation rounds to powers of two, which no QONNX Quant node "
                        "computes; quantized_po2 is supported on weights and biases only")
    if type(q) is quantized_bits and isinstance(q.alpha, str):
        raise KilnError(f"{where}: {q} has alpha={q.alpha!r}, a scale computed from each input batch; "
                        "only alpha=None/1 can be converted on activations")
    return _fixed_params(q, where)


def _fixed_params(q, where: str) -> QuantParams:
    quantized_bits, quantized_relu = quantizer_classes()
    if type(q) is quantized_relu:
        return _relu_params(q, where)
    if type(q) is quantized_bits:
        return _bits_params(q, where)
    raise KilnError(f"{where}: quantizer {q} ({type(q).__name__}) is not supported; "
                    "supported: quantized_bits, quantized_relu, quantized_po2 (weights)")


def is_po2(q) -> bool:
    from qkeras.quantizers import quantized_po2

    return type(q) is quantized_po2


def po2_weights(q, w: np.ndarray, where: str) -> tuple[np.ndarray, QuantParams]:
    """quantized_po2 on a weight tensor: QKeras's own values ``q(w)`` (each ``+-2**e``, ``e``
    between the quantizer's exponent bounds) and the uniform grid that holds them exactly.

    The powers of two are not a uniform grid, so no Quant node computes ``quantized_po2``;
    but its *results* are: every ``+-2**e`` with ``e_min <= e <= e_max`` is an integer
    multiple of ``2**e_min`` below ``2**(e_max + 1)``, i.e. a ``Quant(scale=2**e_min,
    bitwidth=e_max - e_min + 2, signed)`` of itself.  The converter stores ``q(w)`` and that
    Quant (which changes nothing), so the weights keep an exact fixed-point type.
    """
    import tensorflow as tf

    _check_common(q, where)
    if getattr(q, "log2_rounding", "rnd") not in ("rnd", "floor"):
        raise KilnError(f"{where}: {q} has log2_rounding={q.log2_rounding!r}; supported: rnd, floor")
    values = np.asarray(q(tf.constant(w, tf.float32)), np.float32)
    magnitudes = np.abs(values[values != 0])
    if magnitudes.size == 0:
        return values, QuantParams(scale=_po2(0), bits=2, signed=True, narrow=False)
    exponents = np.log2(magnitudes)
    if not np.array_equal(exponents, np.round(exponents)):
        raise KilnError(f"{where}: {q} gave values that are not powers of two; not supported")
    e_min, e_max = int(exponents.min()), int(exponents.max())
    params = QuantParams(scale=_po2(e_min), bits=e_max - e_min + 2, signed=True, narrow=False)
    if not np.array_equal(params.apply(values), values):  # cannot happen for powers of two; stated, not assumed
        raise KilnError(f"{where}: {q} values do not fit the grid 2**{e_min} with {params.bits} bits")
    return values, params


def weight_quant(q, w: np.ndarray, where: str) -> QuantParams:
    """Quant parameters for a quantizer on a weight tensor ``w`` (Keras layout).

    The result is checked against QKeras itself (``q(w)``) and must match bit for bit.
    Its scale is a scalar or has the rank of ``w`` (per output channel).
    (``quantized_po2`` has no Quant form on the raw weights: see ``po2_weights``.)
    """
    import tensorflow as tf

    quantized_bits, _ = quantizer_classes()
    auto = type(q) is quantized_bits and isinstance(q.alpha, str)
    params = _auto_scale_params(q, w, where) if auto else _fixed_params(q, where)
    expected = np.asarray(q(tf.constant(w, tf.float32)), np.float32)
    got = params.apply(w)
    if not np.array_equal(got, expected):
        why = ("QKeras rounds 'auto' scales half away from zero, Quant half to even, and QKeras pairs its last "
               "scale with the previous iteration's integers" if auto else
               "are some weights beyond 2**24 quantization steps?")
        raise KilnError(f"{where}: {q} cannot be reproduced exactly by a QONNX Quant node: "
                        f"{np.count_nonzero(got != expected)} of {w.size} quantized values differ ({why})")
    return params


def _auto_scale_params(q, w: np.ndarray, where: str) -> QuantParams:
    """quantized_bits(alpha="auto"/"auto_po2"): read the scale QKeras chose for ``w``.

    QKeras output: ``(scale * m) * (m_i * z / m)`` with integers ``|z| <= 2**(bits-1) - 1``,
    so the Quant step is ``quantizer.scale * m_i / m`` (signed, narrow).
    """
    import tensorflow as tf

    bits, integer, keep_negative = _int(q.bits), _int(q.integer), bool(q.keep_negative)
    _check_common(q, where)
    if bits < 2:
        raise KilnError(f"{where}: {q} is a 1-bit quantizer; not supported")
    q(tf.constant(w, tf.float32))  # sets q.scale for these weights
    m = 2.0 ** (bits - keep_negative)
    step = (np.asarray(q.scale, np.float32) * np.float32(2.0 ** integer / m)).astype(np.float32)
    if step.ndim not in (0, w.ndim):
        raise KilnError(f"{where}: {q} chose a scale of shape {step.shape} for weights of shape {w.shape}; "
                        "not supported")
    if step.size > 1 and np.all(step == step.flat[0]):
        step = np.asarray(step.flat[0], np.float32)
    return QuantParams(scale=step, bits=bits, signed=True, narrow=True)
