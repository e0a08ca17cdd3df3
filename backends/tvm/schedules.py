"""Rule-based TIR schedules for every kernel of a Relax module, applied without any search.

TVM 0.27's default CPU pipeline legalizes each op to a naive loop nest (one thread, scalar
code), and the pip wheel has no BLAS/DNNL; ``tvm.s_tir.dlight.cpu`` offers only GEMV and
Reduction rules (its GEMV rule wants the reduction innermost, [S, R] x [R], where Kiln's
matmuls are [R, S]; and on mobilenetv3's 288->1024 head it took 145 s to compile against
0.6 s here, so it is not used). This pass runs after legalize + fuse (the default pipeline's legalize
passes) and gives each PrimFunc a schedule built with ``tvm.s_tir.Schedule``:

* ``tile``: the kernel's main multiply-accumulate block (matmul, dense, batch matmul,
  conv2d incl. depthwise/grouped: a reduction block reading two or more buffers) gets a
  register tile: the innermost output axis split by the board's vector width (AVX2: 8
  floats, AVX-512: 16, NEON: 4) and vectorized, a second output axis that the vectorized
  operand does not depend on (matmul rows, conv output channels) split by up to 8 and
  unrolled, within the register file (AVX2's 16 registers: 7 x 8, not a spilling 7 x 16; a
  1x1 conv's 14x14 pixels merged into one row axis for 4 x 16), the accumulator in a
  ``local`` cache (``cache_write``) written back under the tile loop with the fused epilogue
  (bias, activation, residual: ``reverse_compute_inline`` into the write-back), ``decompose_reduction`` for the init, and the outer spatial loops
  fused and parallel.
* ``rows``: a kernel that reduces the rows of a tensor and rewrites them (softmax): one
  parallel loop over the rows, every block computed per row, the reductions vector-wide
  (row_rule.py).
* ``plain``: every other block (elementwise, injective, pooling, softmax/layernorm
  reductions): elementwise producers of non-main blocks inlined, outer spatial loops fused
  and parallel (when the block is big enough to pay for a parallel launch), the innermost
  contiguous spatial loop vectorized; a long reduction of a few rows (GroupNorm's statistics)
  split between the cores (row_rule.py).

A rule that raises for a kernel is skipped (logged at debug level): the kernel falls back to
the plain rule alone, then to TVM's default code. The counts are returned for the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

from kiln.backends.tvm.row_rule import schedule_rows, split_long_reduction, vectorize_row
from kiln.backends.tvm.tir_access import (_bname, _canonical, _int, _is_copy, _is_einsum, _pick, _realizes,  # noqa: F401
                                          _axes_contiguous, _rows_contiguous, _strided, _unit_stride, _vars_in,
                                          _vector_tail, _vector_tile, _volume)

log = logging.getLogger("kiln.tvm.schedules")

PARALLEL_MIN_WORK = 4096   # loop-nest iterations below which a parallel launch costs more than it saves
MAX_ROW_TILE = 8
PARALLEL_TASKS_PER_CORE = 8  # parallel loop extent wanted per core (uneven tasks even out)


def vector_lanes(target: dict) -> int:
    """float32 lanes of the board's SIMD unit: NEON 4, AVX2 8, AVX-512 16 (x86 from LLVM's CPU features)."""
    arch = target.get("mtriple", "").split("-", 1)[0]
    if arch in ("aarch64", "arm"):
        return 4
    if arch != "x86_64":
        return 4
    try:
        import tvm
        from tvm.target import codegen

        tgt = tvm.target.Target(target)
        if codegen.llvm_cpu_has_features("avx512f", tgt):
            return 16
        if codegen.llvm_cpu_has_features("avx2", tgt):
            return 8
    except Exception:  # feature query unavailable: AVX2 is the x86-64 baseline Kiln assumes
        return 8
    return 4


def _main_block(sch, blocks, realizes):
    """The multiply-accumulate block: a reduction reading two buffers besides its output, the largest."""
    best, best_volume = None, 0
    for b in blocks:
        stmt = sch.get(b)
        if not any(iv.iter_type == 2 for iv in stmt.iter_vars):
            continue
        written = {_bname(w) for w in stmt.writes}
        inputs = {_bname(r) for r in stmt.reads} - written
        if len(inputs) >= 2 and _volume(stmt) > best_volume and stmt.name_hint in realizes:
            best, best_volume = b, _volume(stmt)
    return best


def _tile_axes(sch, block, realize):
    """(loops, spatial, reduce, vector iter var, its axis contiguous in the output, row axis
    index or None, operands indexed by the vector axis) of a main block."""
    canon = _canonical(sch, block, realize)
    if canon is None:
        raise ValueError("main block's loops do not bind its iter vars one to one")
    loops, spatial, reduce = canon
    if not spatial or not reduce:
        raise ValueError("main block has no spatial or no reduction axis")
    stmt = sch.get(block)
    vec_iv = spatial[-1]
    out_last = stmt.writes[0].region[-1].min
    contiguous = _unit_stride(out_last, vec_iv.var)
    # operands indexed by the vector axis: the row tile goes on an axis none of them depends on
    inputs = [r for r in stmt.reads if _bname(r) not in {_bname(w) for w in stmt.writes}]
    vec_operands = [r for r in inputs if any(vec_iv.var in _vars_in(rg.min) for rg in r.region)]
    row = None
    for idx in range(len(spatial) - 2, -1, -1):
        iv = spatial[idx]
        if _int(iv.dom.extent) > 1 and not any(iv.var in _vars_in(rg.min) for r in vec_operands for rg in r.region):
            row = idx
            break
    return loops, spatial, reduce, vec_iv, contiguous, row, vec_operands


def _pad_to_whole_tiles(sch, block, realize, lanes: int):
    """``pad_einsum`` for a main block whose vector axis (a prime token count: q @ k^T over
    DeiT's 197 tokens) is no whole number of vectors, or whose row axis no whole row tile.

    Split as it is, its last tile is predicated, and LLVM scalarizes every tile of such a
    loop and keeps the accumulators in memory: DeiT-tiny's q @ k^T took 3.5 ms a call against
    0.15 ms for attn @ v with the same flops (52% of the model). Padded, the block computes on
    zero-filled copies of its operands into a padded output (padding blocks that the plain rule
    schedules) and tiles without a predicate. Returns the (possibly new) block, its realize and
    the names of the padding blocks ([] when nothing was padded)."""
    _, spatial, _, vec_iv, contiguous, row, vec_operands = _tile_axes(sch, block, realize)
    stmt = sch.get(block)
    pads = {}
    vext = _int(vec_iv.dom.extent)
    if contiguous and _vector_tail(vext, lanes) and _is_einsum(stmt) and not _strided(vec_operands, vec_iv.var):
        pads[vec_iv.var] = lanes
    if pads and row is not None:  # rows alone: the predicated tail row tile costs less than a padded copy
        rext = _int(spatial[row].dom.extent)
        if rext >= 16 and all(rext % m for m in (8, 4, 2)):
            pads[spatial[row].var] = 4
    if not pads:
        return block, realize, []
    root = sch.get_sblock("root")
    before = {sch.get(b).name_hint for b in sch.get_child_blocks(root)}
    name = stmt.name_hint
    try:
        sch.pad_einsum(block, [pads.get(iv.var, 1) for iv in stmt.iter_vars])
    except Exception as exc:  # not an einsum after all: tile it as it is, tail and all
        log.debug("pad_einsum refused %s: %s", name, str(exc).strip().splitlines()[-1:])
        return block, realize, []
    block = sch.get_sblock(name)
    realize = _realizes(sch.mod["main"])[name]
    added = [sch.get(b).name_hint for b in sch.get_child_blocks(root) if sch.get(b).name_hint not in before]
    return block, realize, added


@dataclass(frozen=True)
class TilePlan:
    """How ``_tile_main`` tiles a main block: ``fuse`` (iterate a 1x1 conv's H x W pixels as one
    axis), ``ni`` (width of the vectorized output tile; 1: not vectorized), ``mi`` (rows of the
    unrolled row tile; 1: none), ``column_outer`` (column tiles outside row tiles), ``merge_rows``
    (iterate a 1x1 conv's H x W pixels as one row axis for the row tile). ``None``
    fields take the rule's choice for the board (``_default_plan``); tuning measures others."""
    fuse: bool | None = None
    ni: int | None = None
    mi: int | None = None
    column_outer: bool | None = None
    merge_rows: bool | None = None


def _can_fuse_pixels(stmt, spatial, row, contiguous) -> bool:
    """A 1x1 stride-1 conv (elementwise-shaped reads) whose rows and columns can be one axis."""
    n_sp = len(spatial)
    return bool(contiguous and n_sp >= 2 and row != n_sp - 2 and _rows_contiguous(stmt, spatial))


def _mergeable_rows(stmt, spatial, row, vec_operands) -> int | None:
    """Rows of a 1x1 stride-1 conv in NHWC (pixels x channels) counted over H x W, where the
    row axis (W) and the axis before it (H) can be one axis (adjacent in the block and in every
    access, which the weights do not index); None where they cannot."""
    if row is None or row < 1:
        return None
    h, w = spatial[row - 1], spatial[row]
    ivs = [iv.var for iv in stmt.iter_vars]
    if _int(h.dom.extent) in (None, 1) or ivs.index(h.var) + 1 != ivs.index(w.var):
        return None
    if any(h.var in _vars_in(rg.min) for r in vec_operands for rg in r.region):
        return None
    if not _axes_contiguous(stmt, h, w):
        return None
    return _int(h.dom.extent) * _int(w.dom.extent)


def _default_plan(spatial, row, contiguous, can_fuse, vec_operands, vec_iv, lanes: int,
                  merged_rows: int | None = None) -> TilePlan:
    """The rule's tile for the board's vector width (see ``_tile_main``); ``merged_rows``:
    the rows over H x W where a 1x1 conv's pixel rows can be merged (``_mergeable_rows``)."""
    vext = _int(vec_iv.dom.extent)
    fuse = (can_fuse
            and (vext < 2 * lanes or _vector_tile(vext, lanes, 2 * lanes) % lanes)
            and (vext * _int(spatial[-2].dom.extent)) % lanes == 0)
    if fuse:
        vext *= _int(spatial[-2].dom.extent)
        if row is not None and row > len(spatial) - 2:
            row = None
    row_ext = _int(spatial[row].dom.extent) if row is not None else 1
    # rows of 14 or 7 pixels take no 4-row tile; 14 x 14 = 196 pixels do (49 of them): a 4 x 16
    # tile over the merged pixels, the shape of mixer's 196-token dense at 37 GMAC/s
    merge = bool(not fuse and merged_rows and row_ext % 4 and merged_rows % 4 == 0)
    if merge:
        row_ext = merged_rows
    cap = 2 * lanes if row_ext > 1 else 4 * lanes
    if _strided(vec_operands, vec_iv.var):
        cap = lanes  # stride-2 conv: each vector is a gather; more than one per step spills
    ni = _vector_tile(vext, lanes, cap) if contiguous else 1
    mi = 1
    if row is not None:
        # 7 before 2: a 7x7 stage's rows (or 14) in one 7-row tile, not 7 tiles of one row
        # (PoolFormer's 512 -> 2048 conv at 7x7 in NHWC: 2.3 -> 0.8 ms; 1280 -> 320 at 14x14: 1.8 -> 1.3 ms)
        mi = _pick(row_ext, (MAX_ROW_TILE if ni <= lanes else 4, 4, 7, 2))
        if ni > lanes and _tile_registers(mi, ni, lanes) > _registers(lanes):
            # 7 x 16 at AVX2's 16 registers spills its accumulators: 7 x 8 instead (PoolFormer's
            # 1280 -> 320 conv at 14x14: 3.3 -> 2.8 ms; 512 -> 2048 at 7x7: 2.3 -> 1.9 ms)
            ni = _vector_tile(vext, lanes, lanes)
            mi = _pick(row_ext, (MAX_ROW_TILE, 4, 7, 2))
        if mi == 1 and row_ext >= 16:
            mi = 4  # a tail row tile (prime token counts: 197)
    return TilePlan(fuse=fuse, ni=ni, mi=mi, column_outer=True, merge_rows=merge)


def _tile_main(sch, block, realize, lanes: int, cores: int, padding=(), plan: TilePlan | None = None,
               probe: dict | None = None) -> None:
    """Register-tile, vectorize, parallelize the main block; inline its elementwise epilogue
    (not ``padding``'s copy-out block: inlined, it would write the padded tile unpredicated).
    ``plan``: fields that override the rule's choice (tuning's variants). ``probe`` (a dict)
    receives the block's tileable extents and the rule's plan (``tile_plans`` asks)."""
    loops, spatial, reduce, vec_iv, contiguous, row, vec_operands = _tile_axes(sch, block, realize)
    stmt = sch.get(block)
    n_sp = len(spatial)
    sp_loops, red_loops = list(loops[:n_sp]), list(loops[n_sp:])
    can_fuse = _can_fuse_pixels(stmt, spatial, row, contiguous)
    merged_rows = _mergeable_rows(stmt, spatial, row, vec_operands)
    chosen = _default_plan(spatial, row, contiguous, can_fuse, vec_operands, vec_iv, lanes, merged_rows)
    if plan is not None:
        chosen = replace(chosen, **{k: v for k, v in asdict(plan).items() if v is not None})
    if probe is not None:
        probe.update(width=_int(vec_iv.dom.extent), height=_int(spatial[-2].dom.extent) if n_sp >= 2 else 1,
                     rows=_int(spatial[row].dom.extent) if row is not None else 1, contiguous=contiguous,
                     row_before={False: row == n_sp - 2, True: row is not None and row == n_sp - 3},
                     strided=_strided(vec_operands, vec_iv.var),
                     can_fuse=can_fuse, merged_rows=merged_rows, plan=chosen)
    if chosen.fuse and not can_fuse:
        raise ValueError("plan fuses the pixel axes of a block that is no 1x1 stride-1 conv")
    if chosen.merge_rows and (chosen.fuse or not merged_rows):
        raise ValueError("plan merges pixel rows of a block whose rows cannot be merged")
    merged_out = None
    if chosen.merge_rows:
        # a 1x1 conv's H x W pixels as one row axis (iter vars (..., h, w, ...) -> (..., h * W + w, ...));
        # its accumulator cache and write-back indexed by it too (as ``_flatten_writeback`` does for ``fuse``)
        h, w = spatial[row - 1], spatial[row]
        width = _int(w.dom.extent)
        merged_out = ([d for d, rg in enumerate(stmt.writes[0].region) if h.var in _vars_in(rg.min)][0], width)
        _flatten_iteration(sch, block, [iv.var for iv in stmt.iter_vars].index(h.var), width)
        loops = sch.get_loops(block)
        n_sp -= 1
        row -= 1
        sp_loops, red_loops = list(loops[:n_sp]), list(loops[n_sp:])
    vext = _int(vec_iv.dom.extent)
    fused_rows = 0
    if chosen.fuse:
        # a 1x1 stride-1 conv (elementwise-shaped reads): rows too short for whole vectors
        # (56: half-vector tiles) are one run of H x W pixels, tiled by whole vectors
        fused_rows = vext
        _flatten_iteration(sch, block, n_sp - 2, fused_rows)
        loops = sch.get_loops(block)
        sp_loops, red_loops = list(loops[:n_sp - 1]), list(loops[n_sp - 1:])
        vext *= _int(spatial[-2].dom.extent)
        n_sp -= 1
        if row is not None and row > n_sp - 1:
            row = None
    ni, mi = (chosen.ni if contiguous else 1), (chosen.mi if row is not None else 1)
    if vext % ni and ni > 1 and not _vector_tail(vext, lanes):
        raise ValueError(f"plan's vector tile {ni} leaves a tail of an axis of {vext}")
    outer, inner = [], []
    for idx, loop in enumerate(sp_loops):
        if idx == n_sp - 1 and ni > 1:
            o, i = sch.split(loop, [None, ni])
            outer.append(o)
            inner.append(i)
        elif idx == row and mi > 1:
            o, i = sch.split(loop, [None, mi])
            outer.append(o)
            inner.insert(0, i)
        else:
            outer.append(loop)
    if chosen.column_outer and row == n_sp - 2 and ni > 1 and mi > 1:  # matmul rows, or a 1x1 conv's channels over its pixels:
        # column tiles outside row tiles, so the k x columns panel of the vector operand stays
        # in L1 while the row tiles pass under it (DeiT's 192 -> 768 dense: 0.66 -> 0.59 ms)
        outer[-2], outer[-1] = outer[-1], outer[-2]
    sch.reorder(*outer, *red_loops, *inner)
    writeback = sch.cache_write(block, 0, "local")
    if not padding:
        _inline_epilogue(sch, writeback)
    if fused_rows:
        _flatten_writeback(sch, block, writeback, fused_rows)
    if merged_out is not None:
        _flatten_writeback(sch, block, writeback, merged_out[1], axis=merged_out[0])
    sch.reverse_compute_at(writeback, outer[-1], preserve_unit_loops=True)
    if ni > 1:
        sch.vectorize(inner[-1])
        wl = sch.get_loops(writeback)
        if len(wl) > len(outer):
            sch.vectorize(wl[-1])
    if mi > 1:
        sch.unroll(inner[0])
    if cores > 1 and _volume(stmt) >= PARALLEL_MIN_WORK:
        _parallel_outer(sch, outer, cores)
    # last: an update block without its init is neither complete nor a reduction, which
    # vectorize/parallel refuse (MetaSchedule's postprocessors keep the same order)
    init = sch.decompose_reduction(block, red_loops[0])
    if ni > 1:
        il = sch.get_loops(init)
        if len(il) > len(outer):
            sch.vectorize(il[-1])


def _merged_axes(ndim: int, axis: int, width: int):
    """IndexMap of ``ndim`` axes merging ``axis`` and the one after it: (..., a, b, ...) -> (..., a * width + b, ...)."""
    from tvm.tirx import IndexMap

    return IndexMap.from_func(lambda *i: (*i[:axis], i[axis] * width + i[axis + 1], *i[axis + 2:]), ndim=ndim)


def _flatten_iteration(sch, block, axis: int, width: int) -> None:
    """Iterate the main block over one fused (row x column) axis: iter vars (..., row, column,
    reduce...) -> (..., row * width + column, reduce...), its reads indexed by // and %
    (contiguous once the buffers are flattened)."""
    sch.transform_block_layout(block, _merged_axes(len(sch.get(block).iter_vars), axis, width))


def _flatten_writeback(sch, block, writeback, width: int, axis: int | None = None) -> None:
    """Index the accumulator cache and its write-back by the fused (row x column) axis, so that
    the write-back of a tile of that axis covers the tile exactly. Indexed by rows and columns,
    its region is a box of whole rows: under the tile it would write columns not yet computed,
    and above it the cache is rows x all columns (poolformer's 1x1 convs: 46 ms). ``axis``: the
    first of the two output dims merged (default: the last two)."""
    ndim = len(sch.get(writeback).iter_vars)
    flat = _merged_axes(ndim, ndim - 2 if axis is None else axis, width)
    sch.transform_layout(block, ("write", 0), flat)
    sch.transform_block_layout(writeback, flat)


def _parallel_outer(sch, loops, cores: int) -> None:
    """Fuse the fewest leading loops that give every core several tasks and make that loop
    parallel; the loops under it stay a plain nest (fusing the whole nest puts a div/mod per
    element in the body and stops LLVM vectorizing it: 10x slower on a padded copy)."""
    want, count, extent = cores * PARALLEL_TASKS_PER_CORE, 0, 1
    for loop in loops:
        ext = _int(sch.get(loop).extent)
        if ext is None:
            break
        count, extent = count + 1, extent * ext
        if extent >= want:
            break
    if count == 0 or extent <= 1:
        return
    sch.parallel(sch.fuse(*loops[:count]) if count > 1 else loops[0])


def _inline_epilogue(sch, writeback) -> None:
    """Fold the elementwise consumers of the write-back (bias, activation, residual) into it."""
    while True:
        consumers = sch.get_consumers(writeback)
        if len(consumers) != 1:
            return
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:
            return


def _schedule_plain(sch, block, realize, lanes: int, cores: int) -> None:
    """Parallel outer spatial loops and a vectorized innermost contiguous loop."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if not loops:
        return
    ivs = list(stmt.iter_vars)
    values = list(realize.iter_values) if realize is not None else []
    simple = len(loops) == len(ivs) == len(values) and all(
        v.same_as(sch.get(lp).loop_var) for lp, v in zip(loops, values))
    if not simple or split_long_reduction(sch, block, lanes, cores):
        return
    lead = 0
    while lead < len(ivs) and ivs[lead].iter_type == 0:
        lead += 1
    spatial_loops = list(loops[:lead])
    if not spatial_loops:
        return
    whole = lead == len(ivs)
    if whole and stmt.writes:
        last = stmt.writes[0].region[-1].min if len(stmt.writes[0].region) else None
        ext = _int(ivs[lead - 1].dom.extent)
        if last is not None and ivs[lead - 1].var in _vars_in(last) and ext >= lanes:
            outer = vectorize_row(sch, spatial_loops[-1], ext, lanes)
            if ext % lanes:  # a row of 197, partitioned: gone from the nest the parallel loop is fused from
                spatial_loops.pop()
            else:
                spatial_loops[-1] = outer
    if cores > 1 and _volume(stmt) >= PARALLEL_MIN_WORK:
        _parallel_outer(sch, spatial_loops, cores)


def _inline_producers(sch, blocks, main) -> list:
    """Inline elementwise/injective producers whose consumers are not the main block."""
    kept = []
    for b in blocks:
        if main is not None and sch.get(b).name_hint == sch.get(main).name_hint:
            kept.append(b)
            continue
        stmt = sch.get(b)
        consumers = sch.get_consumers(b)
        feeds_main = main is not None and any(sch.get(c).name_hint == sch.get(main).name_hint for c in consumers)
        if feeds_main and _is_copy(stmt):  # a 1x1 conv's pad_temp without padding: read in place
            try:
                sch.compute_inline(b)
                continue
            except Exception:
                pass
        if len(consumers) > 1 and not _is_copy(stmt):
            kept.append(b)  # computed once (softmax's exp feeds its sum and its quotient), not per consumer
            continue
        if consumers and not feeds_main and all(iv.iter_type == 0 for iv in stmt.iter_vars):
            try:
                sch.compute_inline(b)
                continue
            except Exception:
                pass
        kept.append(b)
    return kept


def rule_schedule(func, lanes: int, cores: int, plan: TilePlan | None = None, probe: dict | None = None):
    """(traced Schedule, rule name) for one kernel; (None, ``default``) when no rule applies.
    The trace replays the rule (the tuning database keeps it as the kernel's baseline record).
    ``plan``: the main block's tile instead of the rule's (a tuning variant; a plan that does
    not fit the kernel raises rather than falling back to another rule)."""
    from tvm.s_tir import Schedule

    for rule in ("tile", "rows", "plain"):
        try:
            sch = Schedule(func)
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
            realizes = _realizes(func)
            main = _main_block(sch, blocks, realizes) if rule == "tile" else None
            if rule == "tile" and main is None:
                continue
            main_name = sch.get(main).name_hint if main is not None else None
            rest = [sch.get(b).name_hint for b in _inline_producers(sch, blocks, main)]
            if rule == "rows":
                schedule_rows(sch, [sch.get_sblock(name) for name in rest], lanes, cores)
                return sch, rule
            if main is not None:
                main, realize, padding = _pad_to_whole_tiles(sch, main, realizes[main_name], lanes)
                rest += padding
                _tile_main(sch, main, realize, lanes, cores, padding, plan, probe)
            alive = {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}
            realizes = _realizes(sch.mod["main"])  # padding blocks are new
            for name in rest:
                if name != main_name and name in alive:
                    _schedule_plain(sch, sch.get_sblock(name), realizes.get(name), lanes, cores)
            return sch, rule
        except Exception as exc:  # TVMError or a rule's own ValueError: try the next rule
            if plan is not None:
                raise
            log.debug("schedule rule %s failed for %s: %s", rule, func.attrs.get("global_symbol", "?")
                      if func.attrs else "?", str(exc).strip().splitlines()[-1:] or exc)
    return None, "default"


def schedule_func(func, lanes: int, cores: int):
    """(scheduled PrimFunc, rule name) for one kernel; rule ``default`` leaves it as it was."""
    sch, rule = rule_schedule(func, lanes, cores)
    return (sch.mod["main"], rule) if sch is not None else (func, rule)


def _registers(lanes: int) -> int:
    """Vector registers of the board: AVX2 16, AVX-512 and NEON 32."""
    return 32 if lanes in (4, 16) else 16


def _tile_registers(mi: int, ni: int, lanes: int) -> int:
    """Vector registers an ``mi`` x ``ni`` register tile holds: its accumulators, one row of the
    vector operand and the broadcast of the other."""
    vecs = -(-ni // lanes)
    return mi * vecs + vecs + 1


def tile_plans(func, lanes: int, cores: int, limit: int = 24) -> list[TilePlan]:
    """Other tiles of a kernel's main block worth measuring (tuning's rule variants; the rule's
    own plan not among them): vector widths of whole vectors (or one widened vector), row
    tiles that divide the rows (or the merged pixel rows), both loop orders, the fused pixel
    axis where a 1x1 conv has one; those whose accumulators, operand vectors and broadcast fit
    the register file (with two to spare, spilled: a 7 x 16 tile at AVX2's 16 registers was the fastest on mixer's
    196 x 512 x 2048 dense, 4.6 ms against 6.4 ms for the rule's 4 x 16), nearest a full file
    first. [] for a kernel the tile rule does not schedule."""
    probe: dict = {}
    _sch, rule = rule_schedule(func, lanes, cores, probe=probe)
    if rule != "tile" or "plan" not in probe or None in (probe["width"], probe["height"], probe["rows"]):
        return []  # no main block, or a symbolic extent (a dynamic batch)
    regs, own = _registers(lanes), probe["plan"]

    def same_order(plan):  # the loop order of a tile without rows before its columns is moot
        moot = not (plan.mi > 1 and plan.ni > 1 and probe["row_before"][plan.fuse])
        return replace(plan, column_outer=True) if moot else plan

    def divisors(rows):
        return [m for m in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16) if m <= rows and rows % m == 0]

    # (fuse, merge_rows) -> (vector axis width, row tiles)
    modes = {(False, False): (probe["width"], divisors(probe["rows"]))}
    if probe["can_fuse"]:
        modes[True, False] = (probe["width"] * probe["height"], divisors(probe["rows"]))
    if probe["merged_rows"]:
        modes[False, True] = (probe["width"], [m for m in divisors(probe["merged_rows"]) if m > 1])
    plans = []
    for (fuse, merge), (width, mis) in modes.items():
        if not probe["contiguous"]:
            nis = [1]
        else:
            top = lanes if probe["strided"] else 4 * lanes
            nis = [d for d in range(2, min(top, width) + 1) if width % d == 0
                   and (d % lanes == 0 or lanes // 2 < d <= lanes)]
        if fuse:  # a fused width the rows tile the same way is no other plan
            nis = [d for d in nis if probe["width"] % d]
        orders = (True, False) if probe["row_before"][fuse] and not merge else (True,)
        for ni in nis:
            for mi in mis:
                if _tile_registers(mi, ni, lanes) > regs + 2:
                    continue
                for column_outer in (orders if mi > 1 and ni > 1 else (True,)):
                    plan = TilePlan(fuse=fuse, ni=ni, mi=mi, column_outer=column_outer, merge_rows=merge)
                    if plan != same_order(own):
                        plans.append((abs(regs - _tile_registers(mi, ni, lanes)), -ni, plan))
    plans.sort(key=lambda p: p[:2])
    return [p[2] for p in plans[:limit]]


def schedule_module(mod, target: dict):
    """Schedule every unscheduled PrimFunc of ``mod``; returns (module, counts by rule)."""
    import tvm
    from tvm import tirx

    lanes = vector_lanes(target)
    cores = int(target.get("num-cores") or 1)
    counts = {"tile": 0, "rows": 0, "plain": 0, "default": 0}
    updates, rules = {}, {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
            continue
        new, rule = schedule_func(func, lanes, cores)
        counts[rule] += 1
        rules[gv.name_hint] = rule
        if rule != "default":
            updates[gv] = new.with_attr("tirx.is_scheduled", True)
        else:
            log.info("kernel %s: no schedule rule applied, TVM's default code", gv.name_hint)
    for gv, func in updates.items():
        mod[gv] = func
    counts["kernels"] = sum(counts.values())
    counts["vector_lanes"], counts["cores"] = lanes, cores
    counts["rules"] = rules
    return mod, counts


def legalize(mod, target: dict, conv_layout: str | None = "NHWC"):
    """``erf`` as ``fast_erf`` (fast_math.py), convs in NHWC (conv_layout.py), then the default
    CPU pipeline's library dispatch, legalize and fuse passes, then the constant weights of
    dense and conv kernels packed (pack_weights.py): the kernels that ``schedule_module``
    schedules and tuning measures. ``conv_layout=None`` keeps ONNX's NCHW convs (the rules
    tile those too: the tests of the NCHW conv tiles ask for it)."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from kiln.backends.tvm.conv_layout import conv_layout_passes
    from kiln.backends.tvm.fast_math import fast_math_pass
    from kiln.backends.tvm.pack_weights import pack_constant_weights

    tvm_target = tvm.target.Target(target)
    with tvm_target:
        mod = tvm.transform.Sequential([*conv_layout_passes(conv_layout), fast_math_pass()]
                                       + cpu.library_dispatch_passes(tvm_target)
                                       + cpu.legalize_passes(tvm_target))(mod)
        return pack_constant_weights(mod, target)


def scheduled_pipeline(target: dict, counts: dict | None = None, database=None):
    """The default CPU Relax pipeline with ``schedule_module`` after legalize + fuse.
    ``counts`` (a dict) receives the rule counts. ``database`` (a MetaSchedule database): its
    best record of a kernel replaces the rule where a tuned one measured faster (tuning_db.py)."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    tvm_target = tvm.target.Target(target)

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with tvm_target:
            mod = legalize(mod, target)
            tuned = {}
            if database is not None:
                from kiln.backends.tvm.tuning_db import apply_database

                mod, tuned = apply_database(mod, database, target)
            mod, found = schedule_module(mod, target)
            found["rules"].update(tuned)
            found["tuned"] = len(tuned)
            if counts is not None:
                from kiln.backends.tvm.kernels import kernel_table

                counts.update(found)
                counts["table"] = kernel_table(mod, found.pop("rules"))
            return tvm.transform.Sequential(cpu.dataflow_lower_passes(tvm_target)
                                            + cpu.finalize_passes(tvm_target))(mod)

    return _pipeline
