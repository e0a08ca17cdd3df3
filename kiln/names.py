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
