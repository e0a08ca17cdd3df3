"""Folding of a stream (io_stream) design for a board: per-layer reuse factors from the stream cost model.

In a dataflow the frame rate is set by the slowest process (FINN-R, Blott et al., TRETS 11(3)
2018, section 4.2: cycles per frame of a layer = its work / its parallelism; the pipeline's
rate is that of its slowest layer), so folding is chosen against one target II ``T`` (cycles
per frame) for every process at once, as FINN's ``SetFolding`` transformation does:

* each foldable process (a layer whose reuse factor the templates accept: Dense, Conv, the
  streamed pools (R = the II per input pixel, the window's adds shared R ways), the streamed
  element-wise activations and binary ops with multiplies or adds (F = cycles per packet, a
  divisor of the packet), the per-row layers of stream_rows.py (LayerNorm / Softmax: rows x a
  divisor of the row; GELU / math: F, a divisor of the packet, tables included) and the buffered layers with multiplications) takes, among its valid reuse factors whose stream II
  (stream_estimate.estimate_process) is <= T, the one of least resources (the sum of each
  resource's share of the budget); a process that cannot fold keeps its II;
* ``--target-fps F``: T = floor(clock / F). A process whose II exceeds T at its fastest factor
  (or at the factor the config fixes) is an error naming it: the bottleneck cannot meet F.
* without a rate: the smallest T (of the IIs the processes can take) at which the whole
  design, FIFOs included, fits ``budget`` x the board; the fastest design that fits. When
  none fits with whole-pixel packets, the pixel streams are channel-folded for T
  (stream_channels.py: C / F channels per packet, F as large as T allows) and T searched
  again; when a resource is over even then at the largest factors (weights beyond the
  BRAM), the smallest T at which the other resources fit, and the fit check reports what
  is over.

Reuse factors chosen here are those of the io_parallel emitters (a streamed Dense's factor is
rows x its per-row factor, stream_plan.row_reuse), so the rendered design is the one estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kiln.backends.hls.context import EmitContext
from kiln.backends.hls.fit import RESOURCES, board_limits
from kiln.backends.hls.reuse import divisors
from kiln.backends.hls.stream_channels import CHANNEL_FOLD_II, fold_channels
from kiln.backends.hls.stream_attention import ATTENTION_STREAM_TEMPLATES, attention_folding
from kiln.backends.hls.stream_estimate import estimate_process, estimate_stream, type_widths
from kiln.backends.hls.stream_plan import ACCUMULATE_TEMPLATES, COPY_STREAM, DENSE_TEMPLATES, FOLDED_PACKET_TEMPLATES, row_reuse
from kiln.backends.hls.stream_render import stream_design
from kiln.backends.hls.stream_rows import ELEMENT_STREAMS, ROW_STREAMS, candidates as row_candidates
from kiln.board import Board
from kiln.errors import KilnError

POOL_STREAM = "kiln::pool2d_stream"   # any R: its PIPELINE II (the pool emitters take any factor)


@dataclass
class Option:
    reuse: int
    ii: int
    usage: dict
    score: float       # sum of the resources' shares of the budget
MEMORY = {"bram", "uram"}   # resources that folding barely shrinks (the weights themselves)


def _set_reuse(proc, plan, r: int) -> None:
    proc.layer.cost.reuse_factor = r
    if proc.template in DENSE_TEMPLATES.values():
        src, dst = proc.inputs[0], proc.outputs[0]
        name, text, _ = plan.row_configs[proc.layer_name]
        rf = row_reuse(r, src.packet, dst.packet, src.n_packets)
        plan.row_configs[proc.layer_name] = (name, text, rf)
    elif proc.template in ATTENTION_STREAM_TEMPLATES:
        plan.row_configs[proc.layer_name] = ("", "", *attention_folding(r, proc.node))


def _candidates(proc) -> list[int]:
    """Valid reuse factors of a process's layer (ascending)."""
    cost = proc.layer.cost
    if proc.template in ROW_STREAMS + ELEMENT_STREAMS:
        return row_candidates(proc)
    if proc.template in DENSE_TEMPLATES.values():
        src, dst = proc.inputs[0], proc.outputs[0]
        return [src.n_packets * d for d in divisors(src.packet * dst.packet)]
    if proc.template in FOLDED_PACKET_TEMPLATES:  # F: packets of P elements on P / F units
        return divisors(proc.outputs[0].packet)
    if proc.template == POOL_STREAM:  # the window's adds of one output pixel, II = R per input pixel
        return divisors(max(1, cost.adds // max(proc.outputs[0].n_packets, 1)))
    return divisors(cost.divisible)


def _options(proc, plan, bits_of: dict, limits: dict) -> list[Option]:
    opts = []
    for r in _candidates(proc):
        _set_reuse(proc, plan, r)
        row = estimate_process(proc, plan, bits_of, bool(limits.get("uram")))
        usage = {k: getattr(row, k) for k in RESOURCES}
        opts.append(Option(r, row.ii, usage, sum(usage[k] / limits[k] for k in RESOURCES if limits.get(k))))
    return opts


def _pick(opts: list[Option], target: int) -> Option | None:
    """The option of least resources with II <= target (None: even the fastest is slower)."""
    fitting = [o for o in opts if o.ii <= target]
    return min(fitting, key=lambda o: (o.score, o.ii)) if fitting else None


def fold_stream(model, cfg, board: Board, opset: int, target_fps: float | None = None) -> dict[str, int]:
    """layer name -> reuse factor for the stream design of ``model`` (see the module docstring).
    Layers whose reuse factor the config sets keep it. Where channel folding is needed, its
    target II is left on the graph (stream_channels.CHANNEL_FOLD_II) for the rendering."""
    chosen, _, channel_ii = _fold(model, cfg, board, opset, target_fps)
    if channel_ii is not None:
        model.graph.metadata_props[CHANNEL_FOLD_II] = str(channel_ii)
    return chosen


def stream_auto_fits(model, cfg, board: Board, opset: int, fixed: set[str]) -> bool:
    """Would the stream folding (keeping the ``fixed`` layers' factors) fit the budget?"""
    saved = model.graph.metadata_props.get(CHANNEL_FOLD_II)
    try:
        return _fold(model, cfg, board, opset, None, fixed)[1]
    finally:
        if saved is not None:
            model.graph.metadata_props[CHANNEL_FOLD_II] = saved


def _fold(model, cfg, board: Board, opset: int, target_fps: float | None, fixed: set[str] | None = None):
    """(layer name -> reuse factor, whether the design then fits, the channel folding's target
    II or None: whole-pixel packets)."""
    model.graph.metadata_props.pop(CHANNEL_FOLD_II, None)
    ctx = EmitContext(default_precision=cfg.precision, opset=opset)
    from kiln.backends.hls.writer import board_budget, emit_layers

    layers = emit_layers(model, ctx)
    plan = stream_design(model, layers, ctx)
    bits_of = type_widths(ctx.typedefs)
    limits = board_limits(board, cfg.budget)
    if fixed is None:
        fixed = {name for name, layer in cfg.layers.items() if layer.reuse_factor is not None}
    options: dict[str, list[Option]] = {}
    steady: dict[str, int] = {}          # II of the processes that do not fold
    procs = {}
    for proc in plan.processes:
        cost = proc.layer.cost if proc.layer is not None else None
        foldable = (proc.kind in ("native", "buffered") and cost is not None and proc.layer_name not in fixed
                    and (cost.divisible or proc.template == POOL_STREAM or (
                        proc.template in FOLDED_PACKET_TEMPLATES and (cost.mults or cost.adds)) or (
                        proc.template in ELEMENT_STREAMS and (cost.mults or cost.adds or cost.table_entries)))
                    and proc.template != COPY_STREAM and proc.template not in ACCUMULATE_TEMPLATES)
        if foldable:
            options[proc.layer_name] = _options(proc, plan, bits_of, limits)
            procs[proc.layer_name] = proc
        else:
            steady[proc.layer_name] = estimate_process(proc, plan, bits_of, bool(limits.get("uram"))).ii
    slowest_fixed = max(steady.values(), default=1)

    def apply(target: int) -> dict[str, int]:
        chosen = {}
        for name, opts in options.items():
            pick = _pick(opts, target) or opts[0]
            chosen[name] = pick.reuse
            _set_reuse(procs[name], plan, pick.reuse)
        return chosen

    def over(channel_ii: int | None) -> set[str]:
        """The resources over the budget, pixel streams channel-folded for ``channel_ii`` (None: not)."""
        fold_channels(plan, channel_ii or 0)
        est = estimate_stream(plan, board.clock_mhz, board_budget(board), bits_of, limits.get("uram", 0))
        return {k for k in RESOURCES if limits.get(k) and est.total(k) > limits[k]}

    def fits(channel_ii: int | None = None) -> bool:
        return not over(channel_ii)

    if target_fps is not None:
        if target_fps <= 0:
            raise KilnError(f"--target-fps must be positive, got {target_fps:g}")
        target = math.floor(board.clock_mhz * 1e6 / target_fps)
        slow = [(opts[0].ii, name, procs[name].op, f"R={opts[0].reuse}, its fastest") for name, opts in options.items()
                if opts[0].ii > target]
        slow += [(ii, name, _op(plan, name), "does not fold" if name not in fixed else "reuse_factor set by the config")
                 for name, ii in steady.items() if ii > target]
        if slow:
            slow.sort(reverse=True)
            listed = "; ".join(f"{name!r} ({op}): II {ii:,} cycles ({how}) = "
                               f"{board.clock_mhz * 1e6 / ii:,.0f} frames/s" for ii, name, op, how in slow[:3])
            raise KilnError(f"--target-fps {target_fps:g} needs every layer's II <= {target:,} cycles per frame "
                            f"({board.clock_mhz:g} MHz / {target_fps:g}) on {board.name}; the bottleneck cannot: "
                            f"{listed}. Lower --target-fps, or see `kiln report` for the layers' IIs")
        chosen = apply(target)
        if fits():
            return chosen, True, None
        return chosen, fits(target), target     # channel folding: narrower FIFOs at the same rate
    levels = sorted({o.ii for opts in options.values() for o in opts} | {slowest_fixed})
    levels = [t for t in levels if t >= slowest_fixed]
    lo, hi = 0, len(levels) - 1
    apply(levels[hi])
    channel = False
    if not fits():
        channel = True    # whole-pixel packets do not fit even at the largest factors: fold the channels
        beyond = over(levels[hi])
    else:
        beyond = set()
    if beyond - MEMORY:   # logic over even at the largest factors: the design of the least resources
        return apply(levels[hi]), False, levels[hi] if channel else None
    # the smallest level that fits (resources fall as the level rises); where some resource is
    # over even at the largest factors (weights beyond the BRAM / URAM), the smallest at which the others fit
    while lo < hi:
        mid = (lo + hi) // 2
        apply(levels[mid])
        if not over(levels[mid] if channel else None) - beyond:
            hi = mid
        else:
            lo = mid + 1
    chosen = apply(levels[lo])
    return chosen, not beyond, levels[lo] if channel else None


def _op(plan, name: str) -> str:
    return next((p.op for p in plan.processes if p.layer_name == name), "?")
