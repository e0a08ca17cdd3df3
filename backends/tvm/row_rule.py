"""The ``rows`` schedule rule: kernels that reduce each row of a tensor and then rewrite that row
(softmax; any max/sum over the last axis feeding an elementwise pass over the same rows).

Under the ``plain`` rule each block of such a kernel is its own loop nest over the whole tensor:
softmax reads its input, writes ``exp`` and reads it twice more, four passes over a tensor that
does not fit the cache (MobileViT-XXS's 4 x 4 x 196 x 196 scores: 2.4 MB), and its two
reductions (the row's max, the row's sum) run one scalar at a time. This rule makes one
parallel loop over the rows and computes every block of a row under it (``compute_at``: the
row stays in L1 and ``exp``'s buffer shrinks to one row), each reduction ``rfactor``-ed into
vector-wide partial results (a vector of maxima / sums, folded at the end of the row; where the
row is a whole number of vectors or half vectors: DeiT's 197 stays a scalar chain, in L1), and
the elementwise blocks vectorized with a scalar tail. MobileViT-XXS's softmax (rows of 196):
2.4 -> 1.4 ms a call (time_evaluator, kernel alone).

A reduction with (almost) no rows and a long row (GroupNorm with one group: PoolFormer's mean
and variance over 56 x 56 x 64 = 200,704 values) is the other case the plain rule runs as
one scalar chain on one core: ``split_long_reduction`` shares it between the cores, each part
summed a vector at a time (``rfactor`` twice: parts, then lanes). PoolFormer-S12's variance at
56x56: 0.64 -> 0.12 ms a call, and closer to the float64 value (2e-5 off before, on inputs of
mean 3: the serial float32 sum loses digits).

A kernel is row-shaped when its last block is elementwise over rank-n outputs and every other
block either writes the same rank-n shape or reduces the last axis of it into the first n - 1
axes; ``schedule_rows`` raises ``ValueError`` on any other kernel (the caller falls back to
the ``plain`` rule).
"""

from __future__ import annotations

import math

from kiln.backends.tvm.tir_access import _int

ROWS_MIN = 64  # fewer rows than this: too little to share between cores, the plain rule instead
LONG_REDUCTION = 16384  # values a row must have before its reduction is shared between cores


def _shape(stmt):
    return [_int(iv.dom.extent) for iv in stmt.iter_vars]


def _reduce_last(stmt) -> bool:
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    return kinds[-1] == 2 and all(k == 0 for k in kinds[:-1])


def _check_row_shaped(sch, blocks) -> list[int]:
    """The output's shape, when every block is a spatial block of that shape or a reduction of
    its last axis; ValueError otherwise."""
    out = sch.get(blocks[-1])
    shape = _shape(out)
    if len(shape) < 2 or None in shape or any(iv.iter_type != 0 for iv in out.iter_vars):
        raise ValueError("last block is not elementwise over a static rank >= 2 shape")
    reductions = 0
    for b in blocks[:-1]:
        stmt = sch.get(b)
        if _shape(stmt) != shape:
            raise ValueError(f"block {stmt.name_hint} is not over the output's rows")
        if _reduce_last(stmt):
            if len(stmt.writes) != 1 or len(stmt.writes[0].region) != len(shape) - 1:
                raise ValueError(f"reduction {stmt.name_hint} does not write one value per row")
            reductions += 1
        elif any(iv.iter_type != 0 for iv in stmt.iter_vars):
            raise ValueError(f"block {stmt.name_hint} reduces an axis other than the last")
    if not reductions:
        raise ValueError("no row reduction")
    rows = math.prod(shape[:-1])
    if rows < ROWS_MIN:
        raise ValueError(f"{rows} rows")
    return shape


def _vector_partials(sch, block, lanes: int):
    """``rfactor`` a row reduction into a vector of partial results; returns the partial block's
    name, or None when the row length is no whole number of vectors, half or quarter vectors
    (rows of 196 take 4-wide partials at AVX2's 8 lanes and AVX-512's 16 alike): a
    predicated last chunk would be vectorized wrong, and ``loop_partition`` of the partials'
    chunk loop drops the predicate (TVM 0.27: rows of 196 read 4 values of the next row)."""
    loop = sch.get_loops(block)[-1]
    length = _int(sch.get(loop).extent)
    width = next((w for w in (lanes, lanes // 2, lanes // 4) if w >= 2 and length % w == 0), None)
    if width is None:
        return None
    _outer, inner = sch.split(loop, [None, width])
    return sch.get(sch.rfactor(inner, 0)).name_hint


def vectorize_row(sch, loop, length: int, lanes: int):
    """Whole vectors, then a scalar tail loop (one predicated vector loop would be scalarized
    whole; ``loop_partition`` keeps both under the same outer loops). Returns the loop over the
    whole vectors, or None for a row shorter than a vector (left as it is)."""
    if length < lanes:
        return None
    if length % lanes:
        loop = sch.loop_partition(loop, [length // lanes * lanes, None])[0]
    outer, inner = sch.split(loop, [None, lanes])
    sch.vectorize(inner)
    return outer


def schedule_rows(sch, blocks, lanes: int, cores: int) -> None:
    """Schedule a row-shaped kernel whose elementwise producers are already inlined (``blocks``:
    the blocks left, in order); ValueError when it is not row-shaped."""
    shape = _check_row_shaped(sch, blocks)
    names = [sch.get(b).name_hint for b in blocks]
    partials = []
    for b in blocks[:-1]:
        if _reduce_last(sch.get(b)):
            name = _vector_partials(sch, b, lanes)
            if name is not None:
                partials.append(name)
    out = sch.get_sblock(names[-1])
    row = sch.fuse(*sch.get_loops(out)[:-1])
    if cores > 1:
        sch.parallel(row)
    for b in reversed(sch.get_child_blocks(sch.get_sblock("root"))[:-1]):
        sch.compute_at(b, row, preserve_unit_loops=False)
    for name in partials:  # compute_at orders its loops (lane, chunk): the lane loop goes inside
        block = sch.get_sblock(name)
        lane, chunk = sch.get_loops(block)[-2:]
        sch.reorder(chunk, lane)
        sch.vectorize(lane)
        sch.decompose_reduction(block, chunk)
    for name in names:
        block = sch.get_sblock(name)
        if all(iv.iter_type == 0 for iv in sch.get(block).iter_vars):
            vectorize_row(sch, sch.get_loops(block)[-1], shape[-1], lanes)


def split_long_reduction(sch, block, lanes: int, cores: int) -> bool:
    """Share a reduction of fewer than ``ROWS_MIN`` rows of at least ``LONG_REDUCTION`` values
    (its one reduction axis last, its loops as legalized) between the cores: the row split into
    parts reduced in parallel, each a vector of partial results; False (nothing changed) when
    the block is not such a reduction or its row is no whole number of parts of vectors."""
    stmt = sch.get(block)
    if cores < 2 or not _reduce_last(stmt):
        return False
    shape = _shape(stmt)
    length = shape[-1]
    if None in shape or math.prod(shape[:-1]) >= ROWS_MIN or length < LONG_REDUCTION:
        return False
    parts = next((p for p in (4 * cores, 2 * cores, cores) if length % (p * lanes) == 0), None)
    if parts is None:
        return False
    part, _rest = sch.split(sch.get_loops(block)[-1], [parts, None])
    per_part = sch.rfactor(part, 0)
    _chunk, lane = sch.split(sch.get_loops(per_part)[-1], [None, lanes])
    per_lane = sch.rfactor(lane, 0)
    loops = sch.get_loops(per_lane)  # ..., part, chunk, lane
    sch.vectorize(loops[-1])
    sch.parallel(loops[-3])
    sch.decompose_reduction(per_lane, loops[-2])
    return True
