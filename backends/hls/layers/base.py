"""The emitter interface and registry (in the manner of onnx2c's one-file-per-node)."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir


@dataclass
class Layer:
    """What one node contributes to the project."""

    config: str  # C++ config struct(s), placed in parameters.h
    call: str    # C++ statement(s) in the top function
    header: str  # nnet header with the template it calls


class LayerEmitter:
    """One operator family -> one C++ template call.

    ``ops``: (domain, op_type) pairs handled. ``check`` returns why a node cannot be
    emitted (an attribute value the template does not implement), or None.
    ``emit`` returns the Layer, using the EmitContext for names, types and weights.
    """

    ops: tuple[tuple[str, str], ...] = ()
    header: str = ""

    def check(self, node: ir.Node) -> str | None:
        return None

    def emit(self, node: ir.Node, ctx) -> Layer:  # pragma: no cover - interface
        raise NotImplementedError


REGISTRY: dict[tuple[str, str], LayerEmitter] = {}


def register(cls):
    instance = cls()
    for domain, op in cls.ops:
        REGISTRY[(domain, op)] = instance
    return cls


def emitter_for(node: ir.Node) -> LayerEmitter | None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return REGISTRY.get((domain, node.op_type))
