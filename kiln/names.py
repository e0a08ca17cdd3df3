"""Turning names that come from a model into safe C++ identifiers and file names.

Model names are arbitrary strings (``x"); system("id``). Nothing from a model is
pasted into generated C++, Tcl or paths; everything goes through ``NameTable``.
"""

from __future__ import annotations

import re

_CPP_RESERVED = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case",
    "catch", "char", "class", "compl", "const", "constexpr", "const_cast", "continue", "decltype",
    "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern",
    "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace",
    "new", "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected",
    "public", "register", "reinterpret_cast", "return", "short", "signed", "sizeof", "static",
    "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local", "throw",
    "true", "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void",
    "volatile", "wchar_t", "while", "main", "kiln", "std",
}


def sanitize(name: str, max_len: int = 40) -> str:
    """A C identifier fragment made of ``[A-Za-z0-9_]`` only (may be empty)."""
    s = re.sub(r"[^A-Za-z0-9_]+", "_", name or "").strip("_")
    s = re.sub(r"__+", "_", s)  # double underscores are reserved in C++
    return s[:max_len].rstrip("_")


class NameTable:
    """Hands out unique, safe identifiers: ``<prefix><index>_<sanitized hint>``."""

    def __init__(self):
        self._used: set[str] = set()

    def make(self, prefix: str, hint: str = "") -> str:
        base = sanitize(hint)
        ident = f"{prefix}_{base}" if base else prefix
        if ident in _CPP_RESERVED or ident[0].isdigit():
            ident = f"k_{ident}"
        unique, n = ident, 1
        while unique in self._used:
            unique = f"{ident}_{n}"
            n += 1
        self._used.add(unique)
        return unique


def safe_comment(text: str) -> str:
    """Text for a C++ ``//`` comment: letters, digits, ``_``, ``.``, ``-`` and spaces only."""
    return re.sub(r"[^A-Za-z0-9_ .\-]", "_", text or "")[:80]


def layer_name(node, index: int) -> str:
    """The one spelling of a layer's name in configs, reports, traces, profiles and overflow rows.

    ``node`` is an ONNX ``NodeProto`` or an onnx_ir ``Node``: its name as in the model
    (``/fc1/Gemm``, slashes and all), or for an unnamed node ``<op_type>_<index>``, ``index``
    being its position in the graph. The frontend names every unnamed node of the user's
    model this way when it loads it (``name_layers``), so the index is the one in the user's
    graph and the name is the same at every later stage; fused layers keep the name of the
    node they replace.
    """
    return node.name or f"{node.op_type}_{index}"


def name_layers(graph) -> bool:
    """Give every unnamed node of an ONNX ``GraphProto`` its ``layer_name`` and make repeated
    names unique (a later duplicate becomes ``<name>_<index>``); True if any name changed."""
    taken = {node.name for node in graph.node if node.name}
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(graph.node):
        name = node.name
        if not name or name in seen:
            name = layer_name(node, index) if not name else f"{name}_{index}"
            while name in taken or name in seen:
                name = f"{name}_"
            node.name = name
            changed = True
        seen.add(name)
    return changed
