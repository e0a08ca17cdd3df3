"""Choose per-layer reuse factors that fit a board budget (``--reuse auto``).

Start every layer at R = 1 (lowest latency). While any estimated resource (DSP, LUT, FF,
BRAM18K) exceeds ``budget`` x the board's, take the resource most over its limit and raise
the reuse factor of one layer to its next valid value (a divisor of its multiplications, as
the templates' weight partitioning requires): the layer whose step saves most of that
resource without pushing another resource over its limit (from R = 64 a layer's weights move
to BRAM). This trades latency for area where it buys the most, balancing all four resources.
A resource over the whole board even at the largest factors is not chased (no budget can
fit it; raising R would only add latency). When no step helps any resource still over, the factors found are returned; the
fit check (fit.py) then names what is over and the layers that dominate it.
"""

from __future__ import annotations

import bisect
import math

from kiln.backends.hls.estimate import LayerCost, estimate_layer
from kiln.backends.hls.fit import RESOURCES, board_limits
from kiln.board import Board
from kiln.errors import KilnError


def divisors(n: int) -> list[int]:
    """The divisors of n in increasing order, in O(sqrt(n)) steps."""
    if n < 1:
        return []
    small, large = [], []
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            small.append(d)
            if d != n // d:
                large.append(n // d)
    return small + large[::-1]


def choose_reuse(costs: dict[str, tuple[str, LayerCost]], board: Board, budget: float,
                 fixed: set[str] = frozenset()) -> dict[str, int]:
    """name -> reuse factor. ``costs``: layer name -> (op, cost at R=1); ``fixed``: names whose
    reuse factor the user set."""
    if not 0 < budget <= 1:
        raise KilnError(f"--budget must be in (0, 1], got {budget}")
    limits = board_limits(board, budget)
    reuse = {name: cost.reuse_factor for name, (_, cost) in costs.items()}
    options = {name: divisors(cost.divisible) for name, (_, cost) in costs.items()
               if cost.divisible and name not in fixed}

    def usage(name: str, r: int) -> dict[str, int]:
        op, cost = costs[name]
        cost.reuse_factor = r
        est = estimate_layer(name, op, cost, [])
        return {k: getattr(est, k) for k in RESOURCES}

    per_layer = {name: usage(name, reuse[name]) for name in costs}
    totals = {k: sum(u[k] for u in per_layer.values()) for k in RESOURCES}
    # a resource over the whole board even at the largest factors (e.g. FF of registered
    # outputs) is not chased: no budget can fit it, and raising R would only add latency
    floor = {k: sum((usage(n, options[n][-1]) if n in options else per_layer[n])[k] for n in costs)
             for k in RESOURCES}
    for n in options:
        usage(n, reuse[n])
    whole = board_limits(board, 1.0)
    hopeless = {k for k in RESOURCES if k != "bram" and whole.get(k) and floor[k] > whole[k]}

    def best_step(scarce: str):
        best = None
        for name, opts in options.items():
            i = bisect.bisect_right(opts, reuse[name])
            if i == len(opts):
                continue
            new = usage(name, opts[i])
            usage(name, reuse[name])  # leave the cost at the current factor
            gain = per_layer[name][scarce] - new[scarce]
            if gain <= 0:
                continue
            pushes_over = any(limits.get(k) and totals[k] <= limits[k] < totals[k] - per_layer[name][k] + new[k]
                              for k in RESOURCES)
            if not pushes_over and (best is None or gain > best[0]):
                best = (gain, name, opts[i], new)
        return best

    while True:
        over = sorted((k for k in RESOURCES if limits.get(k) and totals[k] > limits[k] and k not in hopeless),
                      key=lambda k: -totals[k] / limits[k])
        step = next((s for s in map(best_step, over) if s is not None), None)
        if step is None:  # fits, or nothing more to gain: the fit check reports what is over
            for name in costs:
                costs[name][1].reuse_factor = reuse[name]
            return reuse
        _, name, r, new = step
        for k in RESOURCES:
            totals[k] += new[k] - per_layer[name][k]
        per_layer[name], reuse[name] = new, r
