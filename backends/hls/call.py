"""A layer's C++ template call as data, rendered to C++ in one place.

Emitters return ``Call`` objects instead of C++ text: the template, its template
arguments (types, the config struct, sizes) and its function arguments (array names).
The writer derives the other variants of a layer from the same structure: the overflow
shadow (writer.py) is the call with its output arrays and types ``renamed`` to their wide
copies. A call over a fixed batch axis (Conv, pools: one sample per template call) is one
call with ``batch`` > 1 and a per-sample ``strides`` entry for each argument.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Call:
    template: str                  # "kiln::dense"
    type_args: tuple[str, ...]     # "v0_t", "v3_t", "layer2_config", "64"
    args: tuple[str, ...]          # "v0", "v3", "layer2_w", "layer2_b"
    batch: int = 1                 # > 1: a loop over the samples of a fixed batch axis
    strides: tuple[int, ...] = ()  # per-sample offset of each argument in that loop (0: the same array)

    def __post_init__(self):
        object.__setattr__(self, "type_args", tuple(str(t) for t in self.type_args))
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        object.__setattr__(self, "strides", tuple(self.strides))

    def renamed(self, names: dict[str, str]) -> Call:
        """The same call with whole type/array names replaced (``names``: old -> new)."""
        return replace(self, type_args=tuple(names.get(t, t) for t in self.type_args),
                       args=tuple(names.get(a, a) for a in self.args))

    def render(self) -> str:
        """The C++ statement (a for loop over the samples when ``batch`` > 1)."""
        if self.batch == 1:
            return f"{self.template}<{', '.join(self.type_args)}>({', '.join(self.args)});"
        strides = self.strides + (0,) * (len(self.args) - len(self.strides))
        args = [f"{a} + n * {s}" if s else a for a, s in zip(self.args, strides)]
        inner = f"{self.template}<{', '.join(self.type_args)}>({', '.join(args)});"
        return f"for (unsigned n = 0; n < {self.batch}; n++) {{\n        {inner}\n    }}"


def render_calls(calls) -> str:
    """Several calls of one layer (Concat: one per input), one statement per line."""
    return "\n    ".join(c.render() for c in calls)
