"""What a kernel's TIR says about itself: loop/iter-var bindings, buffer accesses and their
strides, block volumes (the questions the schedule rules of schedules.py ask)."""

from __future__ import annotations


def _int(expr) -> int | None:
    value = getattr(expr, "value", None)
    return int(value) if isinstance(value, int) else None


def _vars_in(expr) -> set:
    from tvm.tirx.analysis import undefined_vars

    return set(undefined_vars(expr))


def _realizes(func) -> dict:
    """Block name -> its SBlockRealize (for the iter var bindings)."""
    out = {}
    stack = [func.body]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if hasattr(node, "iter_values") and hasattr(node, "block"):
            out[node.block.name_hint] = node
            stack.append(node.block.body)
            if node.block.init is not None:
                stack.append(node.block.init)
        elif hasattr(node, "seq"):
            stack.extend(node.seq)
        else:
            for attr in ("body", "then_case", "else_case"):
                child = getattr(node, attr, None)
                if child is not None and not isinstance(child, (int, float)):
                    stack.append(child)
    return out


def _canonical(sch, block, realize):
    """(loops, spatial iter vars, reduce iter vars) when each loop binds one iter var in order,
    spatial before reduce; else None."""
    loops = sch.get_loops(block)
    ivs = list(realize.block.iter_vars)
    if len(loops) != len(ivs) or not ivs:
        return None
    seen_reduce = False
    for loop, iv, value in zip(loops, ivs, realize.iter_values):
        if not value.same_as(sch.get(loop).loop_var) or _int(iv.dom.extent) is None:
            return None
        if iv.iter_type == 2:
            seen_reduce = True
        elif iv.iter_type == 0:
            if seen_reduce:
                return None
        else:
            return None
    return loops, [iv for iv in ivs if iv.iter_type == 0], [iv for iv in ivs if iv.iter_type == 2]


def _bname(region) -> str:
    """Name of the buffer a read/write region (TensorRegion in 0.27, BufferRegion before) is of."""
    buf = getattr(region, "buffer", None)
    if buf is None:
        buf = region.source
    return str(getattr(buf, "name", buf))


def _volume(block) -> int:
    total = 1
    for iv in block.iter_vars:
        total *= _int(iv.dom.extent) or 1
    return total


def _pick(extent: int, candidates) -> int:
    for c in candidates:
        if c <= extent and extent % c == 0:
            return c
    return 1


def _is_axis(expr, var, units) -> bool:
    """Is ``expr`` ``var`` itself, give or take reduction axes of extent 1 (a 1x1 kernel's ry, rx)?"""
    if expr.same_as(var):
        return True
    if not units or not (_vars_in(expr) <= {var, *units}):
        return False
    from tvm.sym.pattern import detect_linear_equation

    coef = detect_linear_equation(expr, [var, *units])
    return len(coef) == len(units) + 2 and _int(coef[0]) == 1 and _int(coef[-1]) == 0


def _rows_contiguous(stmt, spatial) -> bool:
    """Does every access that uses the last two spatial axes index its last two dims with them
    exactly, over dims of the same extents (so that fusing the two axes stays contiguous)?"""
    return _axes_contiguous(stmt, spatial[-2], spatial[-1], last=True)


def _axes_contiguous(stmt, y, x, last: bool = False) -> bool:
    """Does every access that uses iter vars ``y`` or ``x`` index two adjacent dims with them
    exactly (``y``, then ``x``; with ``last`` its last two dims), over dims of their extents,
    so that the two axes merged into one (``y * extent(x) + x``) stay contiguous?"""
    units = [iv.var for iv in stmt.iter_vars if iv.iter_type == 2 and _int(iv.dom.extent) == 1]
    for region in list(stmt.reads) + list(stmt.writes):
        used = set()
        for rg in region.region:
            used |= _vars_in(rg.min)
        if x.var not in used and y.var not in used:
            continue
        dims = [d for d, rg in enumerate(region.region) if _is_axis(rg.min, x.var, units)]
        if len(dims) != 1 or dims[0] < 1 or (last and dims[0] != len(region.region) - 1):
            return False
        dx = dims[0]
        if not _is_axis(region.region[dx - 1].min, y.var, units):
            return False
        buf = getattr(region, "buffer", None) or region.source
        shape = [_int(d) for d in getattr(buf, "shape", [])]
        if len(shape) <= dx or shape[dx] != _int(x.dom.extent) or shape[dx - 1] != _int(y.dom.extent):
            return False
    return True


def _unit_stride(expr, var) -> bool:
    """Is ``expr`` ``var`` plus terms without it (``var`` alone, or a packed axis's ``o * 16 + var``)?"""
    if var not in _vars_in(expr):
        return False
    if expr.same_as(var):
        return True
    from tvm.sym.pattern import detect_linear_equation

    coef = detect_linear_equation(expr, [var])
    return len(coef) == 2 and _int(coef[0]) == 1 and var not in _vars_in(coef[1])


def _strided(regions, var) -> bool:
    """Does any access index its buffer with ``var`` at a coefficient other than 1?"""
    from tvm.sym.pattern import detect_linear_equation

    for region in regions:
        for rg in region.region:
            if var in _vars_in(rg.min):
                coef = detect_linear_equation(rg.min, [var])
                if len(coef) != 2 or _int(coef[0]) != 1:
                    return True
    return False


def _vector_tile(extent: int, lanes: int, cap: int) -> int:
    """Width of the vectorized output tile: the largest divisor of ``extent`` up to ``cap``
    that is a whole number of vectors (or of half vectors); a short axis whole (within ``cap``,
    else its largest divisor within it); else 1."""
    for step in (lanes, lanes // 2):
        best = max((d for d in range(step, min(cap, extent) + 1, step) if extent % d == 0), default=0)
        if best:
            return best
    if 2 <= extent <= min(lanes, cap):
        return extent  # one (widened) vector
    if lanes < extent <= min(2 * lanes, cap):
        # more than a vector and no whole number of them: LLVM splits the tile into a vector and
        # a ragged rest (14 at 8 lanes, a 4 x 14 tile: 12.1 ms for poolformer's 320 -> 1280 conv
        # at 14 x 14); a divisor that is one widened vector runs at 2.6 ms (7, in an 8 x 7 tile)
        one = max((d for d in range(lanes // 2 + 1, lanes + 1) if extent % d == 0), default=0)
        return one or extent
    if cap <= extent <= 2 * lanes:
        # a strided operand (cap = lanes): a gather wider than a vector is split badly by LLVM
        # (28 wide at 16 lanes: 21 ms for poolformer's 3x3 stride-2 conv, 2.7 ms 14 wide)
        return max(d for d in range(1, cap + 1) if extent % d == 0)
    return lanes if _vector_tail(extent, lanes) else 1  # a tail: the last tile is predicated


def _vector_tail(extent: int, lanes: int) -> bool:
    """An axis longer than two vectors that no whole (or half) vector divides: ``_vector_tile``
    gives it a predicated last tile (``lanes >= 2``; a cap of at least ``lanes``)."""
    return extent > 2 * lanes and all(extent % step for step in (lanes, lanes // 2))


def _is_einsum(stmt) -> bool:
    """Every buffer access of the block indexed by iter vars or constants, one per axis (what
    ``pad_einsum`` takes: a matmul, not a conv's ``pad_temp[yy * 2 + ry]``)."""
    for region in list(stmt.reads) + list(stmt.writes):
        for rg in region.region:
            if _int(rg.extent) != 1:
                return False
            if _int(rg.min) is None and not hasattr(rg.min, "name"):
                return False
    return True


def _is_copy(stmt) -> bool:
    """A block whose body stores one buffer element read as it is (no padding condition)."""
    body = stmt.body
    return (all(iv.iter_type == 0 for iv in stmt.iter_vars) and hasattr(body, "value")
            and hasattr(body, "indices") and hasattr(body.value, "indices")  # a TensorLoad (BufferLoad before 0.27)
            and (hasattr(body.value, "buffer") or hasattr(body.value, "source")))
