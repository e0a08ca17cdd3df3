"""The IR's annotations: the ``kiln.*`` metadata keys and the helpers that read and write them.

Frontend, passes and backends all speak through this module, so a key is spelled once:

* on a **value**: its numeric type (``PRECISION``: the object in ``value.meta``, its text in
  ``value.metadata_props``, what ``kiln_ir.onnx`` keeps), why it was chosen
  (``PRECISION_SOURCE``: config, quant, inferred, calibrated, default, int), how a quantizer
  reached the hardware (``QUANT``, a note ``kiln report`` lists) and, for quantized weights, the
  frontend's quantizer specs (``QUANT_SPECS``, ``meta`` only);
* on a **node** (a layer): the per-layer types of its roles (``role_key("weight")``: kiln.weight,
  kiln.bias, kiln.accum), its reuse factor (``REUSE_FACTOR``) and whether the user set it
  (``REUSE_EXPLICIT``), and for a quantizer (``QUANT``) the same note as for values.

``is_op`` / ``is_standard`` tell an operator by op type and domain (ONNX's default domain is
spelled "" or "ai.onnx"); ``quant_spec`` reads a kiln.Quantize node's quantizer.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.ir_utils import KILN_DOMAIN, attr
from kiln.precision import Precision, parse_precision
from kiln.quant import QuantSpec

# --- keys ---------------------------------------------------------------------------------------
PRECISION = "kiln.precision"
PRECISION_SOURCE = "kiln.precision_source"
QUANT = "kiln.quant"
QUANT_SPECS = "kiln.quant_specs"
REUSE_FACTOR = "kiln.reuse_factor"
REUSE_EXPLICIT = "kiln.reuse_explicit"
ROLES = ("weight", "bias", "accum")  # the per-layer types a config can set ([layers.NAME] weight = ...)
VALUE_KEYS = (PRECISION, PRECISION_SOURCE, QUANT, QUANT_SPECS)  # what a copy of a constant carries over

STANDARD_DOMAINS = ("", "ai.onnx")


def role_key(role: str) -> str:
    """The node metadata key of a layer role's type: ``kiln.weight``, ``kiln.bias``, ``kiln.accum``."""
    if role not in ROLES:
        raise ValueError(f"unknown layer role {role!r}; roles are {ROLES}")
    return f"kiln.{role}"


# --- operators ----------------------------------------------------------------------------------
def is_standard(node_or_domain) -> bool:
    """The node (or opset/domain string) is in ONNX's default domain."""
    domain = node_or_domain if isinstance(node_or_domain, str) else node_or_domain.domain
    return domain in STANDARD_DOMAINS


def is_op(node, *op_types: str, domain: str = "") -> bool:
    """``node`` is one of ``op_types`` in ``domain`` (default: ONNX's default domain; KILN_DOMAIN
    for the fused ops). None is no op."""
    if node is None or node.op_type not in op_types:
        return False
    return is_standard(node) if domain in STANDARD_DOMAINS else node.domain == domain


def is_quantize(node: ir.Node) -> bool:
    return is_op(node, "Quantize", domain=KILN_DOMAIN)


def is_dense_or_conv(node: ir.Node) -> bool:
    """kiln.Dense or ONNX Conv: the layers that sum weighted inputs (and have a bias)."""
    return is_op(node, "Dense", domain=KILN_DOMAIN) or is_op(node, "Conv")


def quant_spec(node: ir.Node) -> QuantSpec:
    """The QuantSpec of a kiln.Quantize node."""
    return QuantSpec(scale=float(attr(node, "scale")), zero_point=int(attr(node, "zero_point", 0)),
                     bits=int(attr(node, "bits")), signed=bool(attr(node, "signed", 1)),
                     narrow=bool(attr(node, "narrow", 0)), rounding=str(attr(node, "rounding", "ROUND")),
                     bipolar=bool(attr(node, "bipolar", 0)))


# --- values -------------------------------------------------------------------------------------
def precision_of(value: ir.Value):
    """The type attached to ``value`` (graph inputs, computed values, quantized constants)."""
    p = value.meta.get(PRECISION)
    if p is None and PRECISION in value.metadata_props:
        p = parse_precision(value.metadata_props[PRECISION])
    return p


def source_of(value: ir.Value) -> str | None:
    """Why the value has its type (see passes/precision.py), or None when nothing set it."""
    return value.meta.get(PRECISION_SOURCE) or value.metadata_props.get(PRECISION_SOURCE)


def set_precision(value: ir.Value, precision: Precision, source: str | None = None) -> None:
    """Attach ``precision`` (and where it came from) to ``value``: the object in ``meta``,
    the text in ``metadata_props`` (what kiln_ir.onnx keeps)."""
    value.meta[PRECISION] = precision
    value.metadata_props[PRECISION] = str(precision)
    if source is not None:
        value.meta[PRECISION_SOURCE] = source
        value.metadata_props[PRECISION_SOURCE] = source


def copy_precision(src: ir.Value | None, dst: ir.Value) -> ir.Value:
    """Carry a quantized constant's type (meta and metadata props) over to ``dst``, a copy of it."""
    if src is not None:
        for key in VALUE_KEYS:
            if key in src.meta:
                dst.meta[key] = src.meta[key]
            if key in src.metadata_props:
                dst.metadata_props[key] = src.metadata_props[key]
    return dst


def quant_note(item) -> str | None:
    """The ``kiln.quant`` note of a node or value, or None."""
    return item.metadata_props.get(QUANT)


def set_quant_note(item, note: str, append: bool = False) -> None:
    """Set (or, with ``append``, extend) the ``kiln.quant`` note of a node or value."""
    item.metadata_props[QUANT] = item.metadata_props[QUANT] + note if append else note


# --- layers (nodes) ------------------------------------------------------------------------------
def layer_type_text(node: ir.Node, role: str) -> str | None:
    """The text of the layer's ``role`` type (kiln.weight/bias/accum), or None when unset."""
    return node.metadata_props.get(role_key(role))


def set_layer_type(node: ir.Node, role: str, precision) -> None:
    node.metadata_props[role_key(role)] = str(precision)


def reuse_factor(node: ir.Node) -> int:
    """The layer's reuse factor (1 when none was set)."""
    return int(node.metadata_props.get(REUSE_FACTOR, "1"))


def set_reuse_factor(node: ir.Node, rf: int, explicit: bool = False) -> None:
    node.metadata_props[REUSE_FACTOR] = str(rf)
    if explicit:
        node.metadata_props[REUSE_EXPLICIT] = "1"


def reuse_is_explicit(node: ir.Node) -> bool:
    """The user set this layer's reuse factor ([layers.NAME] reuse_factor), so it must not be lowered."""
    return node.metadata_props.get(REUSE_EXPLICIT) == "1"
