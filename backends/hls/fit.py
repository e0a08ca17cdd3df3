"""The fit check of ``kiln compile``: does the estimated design fit ``budget`` x the board?

Every resource of the estimate (DSP, LUT, FF, BRAM counted in BRAM18K blocks, and URAM on boards
that have it) is compared
with ``budget`` x the board's, whatever chose the reuse factors (``--reuse auto``, a model-wide
``--reuse R`` or a config's per-layer ``reuse_factor``). An over-budget design is a KilnError
naming each resource over (estimate vs limit), the layers that dominate it, and what to change;
``--no-fit-check`` writes it anyway with that text as a warning. Float designs are for
functional checks (exact arithmetic, 3-DSP multipliers): the driver does not check them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from kiln.backends.hls.estimate import estimate_layer
from kiln.board import Board, list_boards

RESOURCES = ("dsp", "lut", "ff", "bram", "uram")  # keys of the per-layer estimates and totals
LABELS = {"dsp": "DSP", "lut": "LUT", "ff": "FF", "bram": "BRAM18K", "uram": "URAM"}
BOARD_KEYS = {"dsp": "dsp", "lut": "lut", "ff": "ff", "bram": "bram_18k", "uram": "uram"}
TOP_LAYERS = 3


def board_limits(board: Board, budget: float) -> dict[str, float]:
    """resource -> budget x the board's amount (0: the board file does not list it, not checked).
    URAM is a key only on boards that have it (the stream estimate puts memories there, memory.py)."""
    return {r: budget * board.resources.get(BOARD_KEYS[r], 0) for r in RESOURCES
            if r != "uram" or board.resources.get("uram")}


@dataclass
class Over:
    resource: str
    estimate: int
    limit: float
    board_total: int
    top: list = field(default_factory=list)  # (name, op, reuse, amount) of the dominating layers


@dataclass
class FitResult:
    board: Board
    budget: float
    how: str                                   # what chose the reuse factors (for the message)
    totals: dict
    limits: dict
    over: list[Over]
    advice: list[str] = field(default_factory=list)

    def as_dict(self, skipped: str | None = None) -> dict:
        """``skipped``: why over budget did not stop the compile ("float design", "--no-fit-check")."""
        return {"checked": skipped is None, "skipped": skipped, "budget_fraction": self.budget, "reuse_from": self.how,
                "limits": {r: int(v) for r, v in self.limits.items()},
                "over": {o.resource: {"estimate": o.estimate, "limit": int(o.limit),
                                      "layers": [t[0] for t in o.top]} for o in self.over}}

    def summary(self) -> str:
        return ", ".join(f"{LABELS[o.resource]} {o.estimate:,} > {int(o.limit):,}" for o in self.over)

    def message(self) -> str:
        names = ", ".join(LABELS[o.resource] for o in self.over)
        lines = [f"the design cannot fit {self.budget:.0%} of {self.board.name}'s {names} ({self.how}; "
                 "estimates):"]
        for o in self.over:
            top = ", ".join(f"{name!r} ({op}, R={r}: {amount:,})" for name, op, r, amount in o.top)
            lines.append(f"  {LABELS[o.resource]} {o.estimate:,} estimated > {int(o.limit):,} "
                         f"({self.budget:.0%} of {o.board_total:,}); dominated by {top}")
        lines.append("what to change:")
        lines += [f"  - {a}" for a in self.advice]
        return "\n".join(lines)


def check_fit(layers: list, costs: dict, board: Board, budget: float, how: str, mode: str,
              fixed: set[str] = frozenset(), model_reuse=None, auto_fits=None) -> FitResult:
    """``layers``: LayerEstimate rows; ``costs``: name -> LayerCost (for the valid reuse factors);
    ``mode``: "auto", "model" (one --reuse R) or "config" (the config's [model] reuse_factor);
    ``fixed``: layers whose reuse factor the config sets; ``auto_fits(fixed)``: would the automatic
    choice keeping those layers' factors fit (default: the io_parallel ``--reuse auto``)."""
    limits = board_limits(board, budget)
    totals = {r: sum(getattr(layer, r) for layer in layers) for r in RESOURCES}
    over = []
    for r in RESOURCES:
        if limits.get(r) and totals[r] > limits[r]:
            top = sorted((layer for layer in layers if getattr(layer, r)), key=lambda l: -getattr(l, r))[:TOP_LAYERS]
            over.append(Over(r, totals[r], limits[r], board.resources[BOARD_KEYS[r]],
                             [(l.name, l.op, l.reuse, getattr(l, r)) for l in top]))
    result = FitResult(board, budget, how, totals, limits, over)
    if over:
        if auto_fits is None:
            def auto_fits(keep):
                return _auto_fits(layers, costs, board, budget, keep)
        result.advice = _advice(over, layers, board, budget, mode, fixed, model_reuse, auto_fits)
    return result


def _auto_fits(layers: list, costs: dict, board: Board, budget: float, fixed: set[str]) -> bool:
    """Would ``--reuse auto`` (keeping the ``fixed`` layers' factors) fit? Runs it on copies."""
    from kiln.backends.hls.reuse import choose_reuse

    ops = {layer.name: layer.op for layer in layers}
    trial = {n: (ops[n], replace(c, reuse_factor=c.reuse_factor if n in fixed else 1)) for n, c in costs.items()}
    choose_reuse(trial, board, budget, fixed)
    rows = [estimate_layer(n, op, c, []) for n, (op, c) in trial.items()]
    limits = board_limits(board, budget)
    return all(not limits.get(r) or sum(getattr(row, r) for row in rows) <= limits[r] for r in RESOURCES)


def _advice(over: list[Over], layers: list, board: Board, budget: float, mode: str,
            fixed: set[str], model_reuse, auto_fits) -> list[str]:
    """Only flags and config keys that exist, and (checked on the estimates) help this design."""
    tips = []
    if mode in ("model", "config") and auto_fits(fixed):
        where = f"--reuse {model_reuse}" if mode == "model" else "the config's [model] reuse_factor"
        tips.append(f"drop {where}: --reuse auto (the default) finds per-layer reuse factors that fit")
    dominating = sorted({name for o in over for name, *_ in o.top if name in fixed})
    if dominating and auto_fits(fixed - set(dominating)):
        keys = ", ".join(f'[layers."{n}"] reuse_factor' for n in dominating)
        tips.append(f"raise (or remove, for --reuse auto to choose) {keys} in the --config file")
    ff = [o for o in over if o.resource == "ff"]
    example = (ff or over)[0].top[0][0]
    tips.append("narrower types: --precision fixed<W,I> (e.g. fixed<8,3>) for the whole model: products of operands "
                "of at most 10 bits take LUTs instead of DSPs, and every value held in registers (FF) shrinks; or "
                f"per layer in a --config file, [layers.\"{example}\"] precision = \"fixed<W,I>\" (that layer's "
                "output registers)")
    totals = {o.resource: o.estimate for o in over}
    need = max(totals[r] / o.board_total for o in over for r in [o.resource])
    if budget < 1 and need <= 1:
        tips.append(f"--budget {math.ceil(need * 100) / 100:g} (now {budget:g}: the fraction of the board "
                    "Kiln may fill)")
    everything = {r: sum(getattr(layer, r) for layer in layers) for r in RESOURCES}
    bigger = [b.name for b in sorted(list_boards(), key=lambda b: b.resources.get("lut", 0))
              if b.kind == "fpga" and b.name != board.name
              and all(everything[r] <= v for r, v in board_limits(b, budget).items() if v)
              and (everything["uram"] == 0 or b.resources.get("uram"))]
    if bigger:
        tips.append(f"a larger board: --board {' or '.join(bigger[:3])} (fits {budget:.0%} at these reuse factors; "
                    "see `kiln boards`)")
    tips.append("--no-fit-check writes the project anyway, to C-simulate its numerics (it will not fit the board)")
    return tips


def summary_lines(estimate: dict) -> list[str]:
    """What ``kiln compile`` prints: reuse factors, II, latency, resources vs budget (estimates)."""
    layers, total = estimate["layers"], estimate["total"]
    fit = estimate.get("fit") or {}
    fraction = total.get("budget_fraction")
    shared = sorted((layer for layer in layers if layer["reuse"] > 1), key=lambda l: -l["reuse"])
    rs = [layer["reuse"] for layer in layers]
    if not shared:
        reuse = "reuse 1 on every layer"
    else:
        listed = ", ".join(f"{l['name']} {l['reuse']}" for l in shared[:6])
        more = f", +{len(shared) - 6} more" if len(shared) > 6 else ""
        reuse = (f"reuse {min(rs)}..{max(rs)} ({fit.get('reuse_from', '').replace('with the reuse factors ', '')}"
                 f"): {len(shared)} of {len(layers)} layers above 1: {listed}{more}").replace(" ()", "")
    lines = [reuse, f"II {total['ii']} cycles, latency {total['latency_cycles']} cycles = {total['latency_ns']:,.0f} ns "
                    f"at {total['clock_mhz']:g} MHz (estimates)"]
    cells = []
    for r in RESOURCES:
        board_total = total["budget"].get(BOARD_KEYS[r])
        limit = (total.get("limits") or {}).get(r)
        value = total.get(r, 0)
        if r == "uram" and not board_total and not value:
            continue
        if limit:
            mark = "  OVER" if value > limit else ""
            cells.append(f"{LABELS[r]} {value:,} / {limit:,} ({100 * value / limit:.0f}%){mark}")
        else:
            cells.append(f"{LABELS[r]} {value:,} / {board_total or '-'}")
    head = (f"resources vs budget ({fraction:.0%} of the board)" if fraction else "resources vs board")
    if fit.get("skipped"):
        head += f", not enforced: {fit['skipped']}"
    lines.append(f"{head}: " + ", ".join(cells))
    return lines
