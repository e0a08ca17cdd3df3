"""Choose per-layer reuse factors that fit a board budget (``--reuse auto``).

Start every layer at R = 1 (lowest latency); while the estimated DSPs or LUTs exceed
``budget`` x the board's, raise the reuse factor of the layer that uses most of the
scarce resource to its next valid value (a divisor of its multiplications, as the
templates' weight partitioning requires). This trades latency for area where it buys
the most. If no layer can go further, the budget is impossible: the error names the
layers that dominate.
"""

from __future__ import annotations

from kiln.backends.hls.estimate import LayerCost, estimate_layer
from kiln.board import Board
from kiln.errors import KilnError

RESOURCES = ("dsp", "lut")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_reuse(costs: dict[str, tuple[str, LayerCost]], board: Board, budget: float,
                 fixed: set[str] = frozenset()) -> dict[str, int]:
    """name -> reuse factor. ``costs``: layer name -> (op, cost at R=1); ``fixed``: names whose
    reuse factor the user set."""
    if not 0 < budget <= 1:
        raise KilnError(f"--budget must be in (0, 1], got {budget}")
    limits = {r: budget * board.resources.get(r, 0) for r in RESOURCES}
    reuse = {name: cost.reuse_factor for name, (_, cost) in costs.items()}
    options = {name: divisors(cost.divisible) for name, (_, cost) in costs.items()
               if cost.divisible and name not in fixed}

    def usage(name: str) -> dict[str, int]:
        op, cost = costs[name]
        cost.reuse_factor = reuse[name]
        est = estimate_layer(name, op, cost, [])
        return {"dsp": est.dsp, "lut": est.lut}

    while True:
        per_layer = {name: usage(name) for name in costs}
        totals = {r: sum(u[r] for u in per_layer.values()) for r in RESOURCES}
        over = [r for r in RESOURCES if limits[r] and totals[r] > limits[r]]
        if not over:
            return reuse
        scarce = max(over, key=lambda r: totals[r] / limits[r])
        movable = [n for n in options if reuse[n] < options[n][-1] and per_layer[n][scarce] > 0]
        if not movable:
            top = sorted(per_layer, key=lambda n: -per_layer[n][scarce])[:5]
            detail = ", ".join(f"{n} ({costs[n][0]}, R={reuse[n]}: {per_layer[n][scarce]} {scarce.upper()})"
                               for n in top)
            raise KilnError(f"the design cannot fit {budget:.0%} of {board.name}'s {scarce.upper()} "
                            f"({totals[scarce]} estimated > {int(limits[scarce])}) even at the largest reuse "
                            f"factors; dominated by: {detail}. Lower the precision (--precision / [layers]) "
                            f"or raise --budget.")
        name = max(movable, key=lambda n: per_layer[n][scarce])
        reuse[name] = next(d for d in options[name] if d > reuse[name])
