"""EmitContext: what layer emitters use to name things, pick types and add weights.

Every identifier that reaches C++ comes from ``NameTable`` (sanitised, unique), never
straight from the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jinja2
import numpy as np
import onnx_ir as ir

from kiln.annotations import layer_type_text, precision_of, reuse_factor, reuse_is_explicit
from kiln.errors import KilnError
from kiln.names import NameTable
from kiln.precision import FloatType, Precision, parse_precision

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                            keep_trailing_newline=True)


FLOAT_MAX = 3.4028234e38


def c_float(value: float) -> str:
    """A C++ float literal (clamped to the float range, always with an exponent)."""
    return f"{max(-FLOAT_MAX, min(FLOAT_MAX, float(value))):.9e}f"


@dataclass
class WeightArray:
    name: str           # C identifier
    ctype: str          # typedef name
    values: np.ndarray  # already quantized to the type (float64)
    precision: Precision


@dataclass
class EmitContext:
    default_precision: Precision
    opset: int
    names: NameTable = field(default_factory=NameTable)
    typedefs: dict[str, str] = field(default_factory=dict)   # typedef name -> C++ type
    weights: list[WeightArray] = field(default_factory=list)
    uram_budget: float = 1.0   # stream mode: the fraction of the board's URAM its memories may fill (--budget)
    _vars: dict[int, str] = field(default_factory=dict)
    _layer_ids: dict[int, str] = field(default_factory=dict)

    @property
    def float_mode(self) -> bool:
        return isinstance(self.default_precision, FloatType)

    # --- names -----------------------------------------------------------------
    def layer_id(self, node: ir.Node) -> str:
        key = id(node)
        if key not in self._layer_ids:
            self._layer_ids[key] = self.names.make(f"L{len(self._layer_ids)}", node.op_type + "_" + (node.name or ""))
        return self._layer_ids[key]

    def var(self, value: ir.Value) -> str:
        key = id(value)
        if key not in self._vars:
            self._vars[key] = self.names.make(f"v{len(self._vars)}", value.name or "")
            self.typedef_for_value(value)
        return self._vars[key]

    # --- types -----------------------------------------------------------------
    def typedef(self, name: str, precision: Precision) -> str:
        self.typedefs[name] = precision.cpp()
        return name

    def precision(self, value: ir.Value) -> Precision:
        p = precision_of(value)
        return p if p is not None else self.default_precision

    def typedef_for_value(self, value: ir.Value) -> str:
        return self.typedef(f"{self.var(value)}_t", self.precision(value))

    def ctype(self, value: ir.Value) -> str:
        return f"{self.var(value)}_t"

    def layer_precision(self, node: ir.Node, key: str) -> Precision | None:
        text = layer_type_text(node, key)
        return parse_precision(text, f"layer {node.name!r} {key}") if text else None

    def reuse(self, node: ir.Node, n_mults: int | None = None) -> int:
        """The layer's reuse factor. It must divide the layer's multiplications (the templates
        share each multiplier between R of them). A model-wide value that does not divide is
        lowered to the nearest valid one, as hls4ml does; a per-layer value is an error."""
        rf = reuse_factor(node)
        if n_mults is not None and n_mults % rf != 0:
            from kiln.backends.hls.reuse import divisors

            valid = divisors(n_mults)
            if not reuse_is_explicit(node):
                return max(d for d in valid if d <= rf)
            raise KilnError(f"layer {node.name!r} ({node.op_type}): reuse_factor {rf} does not divide its "
                            f"{n_mults} multiplications; valid values: {valid[:12]}{' ...' if len(valid) > 12 else ''}")
        return rf

    # --- constants -------------------------------------------------------------
    def weight(self, node: ir.Node, array: np.ndarray, role: str = "weight", kind: str | None = None,
               precision: Precision | None = None, value: ir.Value | None = None) -> tuple[str, str, Precision]:
        """Add a constant array named ``<layer>_<role>`` for ``node``; returns (C name, C type, precision).

        Its type is ``precision`` when given (e.g. IntType for indices), else the layer's
        ``kind`` override ("weight" or "bias"; by default "bias" for the role "bias" and
        "weight" otherwise), else the type a quantizer gave the constant ``value`` (fixed-point
        designs), else the model precision.
        """
        if precision is None:
            kind = kind or ("bias" if role == "bias" else "weight")
            quantized = precision_of(value) if (value is not None and not self.float_mode) else None
            precision = self.layer_precision(node, kind) or quantized or self.default_precision
        name = self.names.make(f"{self.layer_id(node)}_{role}")
        ctype = self.typedef(f"{name}_t", precision)
        values = precision.quantize(np.asarray(array, dtype=np.float64).reshape(-1))
        self.weights.append(WeightArray(name, ctype, values, precision))
        return name, ctype, precision

    def operand(self, node: ir.Node, value: ir.Value, role: str) -> tuple[str, str, Precision]:
        """A node input as (C name, C type, precision): a variable, or a weight if constant."""
        from kiln.ir_utils import const_array

        array = const_array(value)
        if array is not None:
            return self.weight(node, array, role, value=value)
        return self.var(value), self.ctype(value), self.precision(value)

    @staticmethod
    def render(template: str, **kwargs) -> str:
        return _JINJA.from_string(template).render(**kwargs)
