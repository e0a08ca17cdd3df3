"""What the passes may assume about an operator, declared where the operator is implemented.

Each HLS layer emitter (backends/hls/layers/) states its operators' traits as class
attributes (``LayerEmitter.keeps_input_type``, ``commutes_with_scale``, ``max_rank``) and the
``register`` decorator records them here; passes read them with ``traits(op_type, domain)``
without importing the backends.

Loading: the registry fills when ``kiln.backends.hls.layers`` is imported (it imports
every emitter module). ``traits`` imports that package itself on first use, lazily, so a
pass run on its own (tests/passes, or the TVM path) sees the same traits as one run by the
driver, and no pass imports a backend.

A few standard operators have traits the passes rely on but no HLS emitter yet
(``WITHOUT_EMITTER``); they are declared here, and move to their emitter when it is written.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from kiln.annotations import STANDARD_DOMAINS


@dataclass(frozen=True)
class OpTraits:
    """``keeps_input_type``: every output value is one of the first input's values (Relu, max,
    reshapes, gathers), so an exact type of the input is exact for the output.
    ``commutes_with_scale``: op(s * x) == s * op(x) for a positive scalar s (Relu, max, reshapes),
    so a quantizer's scale may move past it. ``max_rank``: the highest tensor rank the layer
    implements (None: no limit stated)."""

    keeps_input_type: bool = False
    commutes_with_scale: bool = False
    max_rank: int | None = None


NONE = OpTraits()
_REGISTRY: dict[tuple[str, str], OpTraits] = {}
_EMITTERS_PACKAGE = "kiln.backends.hls.layers"
_loaded = False

# (traits, ops): standard operators without an HLS emitter whose traits passes/precision.py and
# passes/weight_scale.py have always used
WITHOUT_EMITTER = (
    (OpTraits(keeps_input_type=True, commutes_with_scale=True), ("GlobalMaxPool",)),
    (OpTraits(keeps_input_type=True), ("DepthToSpace", "SpaceToDepth")),
)


def _key(op_type: str, domain: str) -> tuple[str, str]:
    return ("" if domain in STANDARD_DOMAINS else domain, op_type)


def declare(op_type: str, domain: str, op_traits: OpTraits) -> None:
    """Record ``op_traits`` for (domain, op_type); an emitter's ``register`` calls this."""
    _REGISTRY[_key(op_type, domain)] = op_traits


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        importlib.import_module(_EMITTERS_PACKAGE)  # its emitters' @register calls declare()
        _loaded = True


def traits(op_type: str, domain: str = "") -> OpTraits:
    """The traits of ``op_type`` in ``domain`` ("" or "ai.onnx": standard ONNX); all False
    for an operator nothing declares."""
    _ensure_loaded()
    return _REGISTRY.get(_key(op_type, domain), NONE)


def ops_with(trait: str, domain: str = "") -> set[str]:
    """The op types of ``domain`` that have ``trait`` (e.g. "keeps_input_type")."""
    _ensure_loaded()
    wanted = _key("", domain)[0]
    return {op for (d, op), t in _REGISTRY.items() if d == wanted and getattr(t, trait)}


for _traits, _ops in WITHOUT_EMITTER:
    for _op in _ops:
        declare(_op, "", _traits)
