"""Target boards, one TOML data file each under ``boards/`` (package ``kiln.boards``).

FPGA boards list their block RAM as the data sheets do, in 36 Kb blocks (``bram_36k``);
Kiln counts BRAM in 18 Kb blocks everywhere else (estimates, reports, the fit check, Vitis
HLS's BRAM_18K), so ``resources`` also holds ``bram_18k`` = 2 x ``bram_36k``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources

from kiln.errors import KilnError


@dataclass(frozen=True)
class Board:
    name: str
    kind: str
    description: str
    part: str
    clock_mhz: float
    source: str
    resources: dict = field(default_factory=dict)
    target: dict = field(default_factory=dict)     # kind = "cpu": the TVM target (dict form)
    toolchain: dict = field(default_factory=dict)  # kind = "cpu": the C compiler that links the library
    family: str = ""  # kind = "fpga": "zynq" (PYNQ driver), "alveo" (XRT host), "virtex" (bare part)
    gpu: dict = field(default_factory=dict)  # kind = "tensorrt": arch, compute capability, memory, DLA cores

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


def _board_files():
    return sorted((f for f in resources.files("kiln.boards").iterdir() if f.name.endswith(".toml")),
                  key=lambda f: f.name)


def list_boards() -> list[Board]:
    return [_parse(f.name, f.read_text()) for f in _board_files()]


def get_board(name: str) -> Board:
    for board in list_boards():
        if board.name == name:
            return board
    known = ", ".join(b.name for b in list_boards())
    raise KilnError(f"unknown board {name!r}; known boards: {known} (see `kiln boards`)")


def _parse(filename: str, text: str) -> Board:
    data = tomllib.loads(text)
    res = dict(data.get("resources", {}))
    if "bram_36k" in res and "bram_18k" not in res:
        res["bram_18k"] = 2 * res["bram_36k"]
    return Board(name=data["name"], kind=data["kind"], description=data.get("description", ""),
                 part=data.get("part", ""), clock_mhz=float(data.get("clock_mhz", 0)),
                 source=data.get("source", ""), resources=res,
                 target=dict(data.get("target", {})), toolchain=dict(data.get("toolchain", {})),
                 family=data.get("family", ""), gpu=dict(data.get("gpu", {})))
