"""The emitter interface and registry (in the manner of onnx2c's one-file-per-node)."""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from kiln.backends.hls.call import Call, render_calls
from kiln.backends.hls.estimate import LayerCost
from kiln.annotations import is_standard
from kiln.ir_utils import const_array
from kiln.op_traits import OpTraits, declare


@dataclass
class Layer:
    """What one node contributes to the project."""

    config: str  # C++ config struct(s), placed in parameters.h
    calls: Call | tuple[Call, ...]  # the template call(s) the top function makes (call.py renders them)
    header: str  # nnet header with the template it calls
    cost: LayerCost | None = None  # for the latency/resource estimates (None: wiring only)
    # filled in by the writer (writer.emit_layers):
    layer_name: str = ""  # kiln.names.layer_name: the spelling of manifest, report, trace and overflow rows
    op: str = ""          # the node's op_type
    comment: str = ""   # the "// Op name" line above the call
    traced: list[dict] = field(default_factory=list)  # outputs `kiln csim --trace` dumps after the call
    shadow: dict | None = None  # the overflow-counting variant of the call (make OVERFLOW=1), or None
    weights: list = field(default_factory=list)  # (C name, values) of the weight arrays this layer added
    weights_in_uram: bool = False  # stream mode: the estimate put its weight memory in URAM (memory.py)

    def __post_init__(self):
        if isinstance(self.calls, Call):
            self.calls = (self.calls,)
        self.calls = tuple(self.calls)

    @property
    def call(self) -> str:
        """The C++ statement(s) in the top function."""
        return render_calls(self.calls)


class LayerEmitter:
    """One operator family -> one C++ template call.

    ``ops``: (domain, op_type) pairs handled. ``check`` returns why a node cannot be
    emitted (an attribute value the template does not implement), or None; an emitter
    that overrides it ends with ``return super().check(node)`` so the checks common to
    every layer (``tensor_problem``) still run. ``integer_tensors``: the layer only
    moves data, so integer tensors (ids, held as C++ ``int``) may pass through it.
    ``emit`` returns the Layer, using the EmitContext for names, types and weights.

    Operator traits, read by the passes through ``kiln.op_traits.traits`` (see OpTraits there):
    ``keeps_input_type`` (output values are input values), ``commutes_with_scale`` (a positive
    scale moves through it) — True for every op of the emitter, or the set of its op types that
    have it — and ``max_rank`` (the highest rank the template implements; None: no limit).
    """

    ops: tuple[tuple[str, str], ...] = ()
    header: str = ""
    integer_tensors: bool = False
    bool_tensors: bool = False
    keeps_input_type: bool | frozenset[str] = False
    commutes_with_scale: bool | frozenset[str] = False
    max_rank: int | None = None

    def traits(self, op_type: str) -> OpTraits:
        """This emitter's traits for one of its op types."""
        def holds(trait):
            return trait if isinstance(trait, bool) else op_type in trait
        return OpTraits(keeps_input_type=holds(self.keeps_input_type),
                        commutes_with_scale=holds(self.commutes_with_scale), max_rank=self.max_rank)

    def check(self, node: ir.Node) -> str | None:
        return tensor_problem(node, self.integer_tensors, self.bool_tensors or self.integer_tensors)

    def emit(self, node: ir.Node, ctx) -> Layer:  # pragma: no cover - interface
        raise NotImplementedError


def tensor_problem(node: ir.Node, integer_tensors: bool = False, bool_tensors: bool = False) -> str | None:
    """Why the node's run-time tensors cannot be layer ports, or None.

    Layers compute in float or fixed point, so run-time inputs and produced outputs must
    be floating point: integer arithmetic would need integer semantics (wrap-around,
    truncating division) that the templates do not implement. Layers that only move data
    (``integer_tensors``) also pass integers and bools through; comparisons, logic ops,
    Cast and Where (``bool_tensors``) read or produce bool tensors (C++ ``bool``).
    Every tensor must hold at least one element. Constant inputs (shapes, axes, weights)
    are read at compile time and may have any type.
    """
    runtime = [v for v in node.inputs if v is not None and const_array(v) is None]
    produced = [v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]
    for value in runtime + produced:
        dtype = value.dtype
        allowed = (dtype is None or dtype.is_floating_point() or (integer_tensors and dtype.is_integer())
                   or (bool_tensors and dtype == ir.DataType.BOOL))
        if not allowed:
            return f"{dtype.name.lower()} tensors are not supported; Kiln computes in float or fixed point"
        if value.shape is not None and any(d == 0 for d in value.shape):
            return "empty tensors (a dimension of size 0) are not supported"
    return None


REGISTRY: dict[tuple[str, str], LayerEmitter] = {}


def register(cls):
    """Class decorator: the emitter handles ``cls.ops``; their traits go to kiln.op_traits."""
    instance = cls()
    handled = {op for _, op in cls.ops}
    for trait in (cls.keeps_input_type, cls.commutes_with_scale):
        if not isinstance(trait, bool) and not set(trait) <= handled:
            raise TypeError(f"{cls.__name__}: traits name ops it does not handle: {sorted(set(trait) - handled)}")
    for domain, op in cls.ops:
        REGISTRY[(domain, op)] = instance
        declare(op, domain, instance.traits(op))
    return cls


def emitter_for(node: ir.Node) -> LayerEmitter | None:
    domain = "" if is_standard(node) else node.domain
    return REGISTRY.get((domain, node.op_type))
