"""Constant weights in a packed panel layout, at compile time (a Relax module pass).

A dense kernel ``C[i, n] = sum_k A[i, k] * W[k, n]`` whose vector operand ``W`` is a constant
(a Linear's weight) reads, in each step of ``k``, one vector tile of a row of ``W``: a stride of
``N`` floats between steps. At ``N = 2048`` (MLP-Mixer's 512 -> 2048) that stride is a multiple
of L1's set span, so the ``K x tile`` panel the row tiles share maps to one cache set and is
read from L2 at each step. ONNX Runtime's MLAS packs such weights when its session loads.
This pass does it when Kiln compiles: the weight becomes ``Wp[N / P, K, P]`` (``P``, the tile
width the rule gives the kernel's vector axis), the panel of a column tile is contiguous, and
the kernel iterates ``(n // P, ..., n % P, k)`` so that its accesses stay affine (the schedule
rules and MetaSchedule see an ordinary tile). Measured on MLP-Mixer's 196 x 512 x 2048 dense
with GELU at AVX2 (8 lanes, 2 cores), the rule's 4 x 16 tile, timed alone: 5.5 ms -> 4.7 ms
(ONNX Runtime's MatMul alone 4.0 ms that hour; a hand-picked tile over the packed weight reached
2.5 ms on a quieter day, against 2.9 ms for ONNX Runtime). The outputs are bit-identical (the
reduction order is unchanged).

A kernel is packed when its main block (``schedules._main_block``) reads a parameter by its
last spatial axis (the vector axis) and reduction axes only, each index one iter var (a
dense's ``W[k, n]``; an NHWC conv's ``W[o, kh, kw, i]``, conv_layout.py, packed to
``[O / P, KH, KW, I, P]``); every call site passes a constant there; and the rule's tile
divides the vector axis. Others are left as they were. A weight whose vector axis is one tile
wide is packed too when that axis is not its last: an NHWC conv's ``W[o, kh, kw, i]`` with 16
output channels (MobileNetV3's stem, its 16-channel depthwise convs) read a vector as a gather
of stride ``KH x KW x I``; MobileNetV3-small's 3x3 stride-2 stem: 0.34 -> 0.26 ms (kernel alone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("kiln.tvm.pack_weights")


@dataclass(frozen=True)
class Packing:
    """How one kernel's weight parameter ``param`` (its index among the inputs) is packed: its
    dim ``axis`` (the one the vector axis indexes) split by ``width`` into the first and last dims."""
    param: int
    axis: int
    width: int
    func: object  # the kernel over the packed parameter

    def pack(self, weight: np.ndarray) -> np.ndarray:
        """``weight`` in the packed layout: ``[N / P, <the other dims in order>, P]``."""
        moved = np.moveaxis(weight, self.axis, -1)
        split = moved.reshape(*moved.shape[:-1], moved.shape[-1] // self.width, self.width)
        return np.ascontiguousarray(np.moveaxis(split, -2, 0))


def _weight_read(stmt, spatial, reduce, params: dict):
    """(read region, its buffer's param index, the vector axis's position) of the main block's
    read of a parameter indexed by the vector axis and reduction axes, one iter var a dim."""
    from kiln.backends.tvm.tir_access import _bname

    vec = spatial[-1].var
    reduce_vars = {iv.var for iv in reduce}
    written = {_bname(w) for w in stmt.writes}
    for region in stmt.reads:
        name = _bname(region)
        if name in written or name not in params:
            continue
        idx = [rg.min for rg in region.region]
        if not all(hasattr(e, "name") for e in idx) or len({e.name for e in idx}) != len(idx):
            continue
        if not any(e.same_as(vec) for e in idx) or len(idx) < 2:
            continue
        if all(e.same_as(vec) or any(e.same_as(r) for r in reduce_vars) for e in idx):
            return region, params[name], next(i for i, e in enumerate(idx) if e.same_as(vec))
    return None


def packing_of(func, lanes: int, cores: int, constant=lambda param: True) -> Packing | None:
    """The packing of one kernel (see the module docstring), or None. ``constant(param)``: does
    every call pass a constant as that parameter (asked before the rule's tile is probed)."""
    from tvm.s_tir import Schedule
    from tvm.tirx import IndexMap

    from kiln.backends.tvm.schedules import _main_block, rule_schedule
    from kiln.backends.tvm.tir_access import _canonical, _int, _realizes

    sch = Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    realizes = _realizes(func)
    main = _main_block(sch, blocks, realizes)
    if main is None:
        return None
    stmt = sch.get(main)
    canon = _canonical(sch, main, realizes[stmt.name_hint])
    if canon is None:
        return None
    _loops, spatial, reduce = canon
    params = {str(p.name): i for i, p in enumerate(func.params)}
    found = _weight_read(stmt, spatial, reduce, params)
    if found is None or not constant(found[1]):
        return None
    region, param, axis = found
    buffer_name = str(func.params[param].name)
    if sum(1 for b in blocks for r in sch.get(b).reads if _reads(r, buffer_name)) != 1:
        return None  # another block reads the weight too
    probe: dict = {}
    try:
        _sch, rule = rule_schedule(func, lanes, cores, probe=probe)
    except Exception:  # noqa: BLE001 - a kernel the rules cannot take is left as it is
        return None
    plan = probe.get("plan")
    if rule != "tile" or plan is None or plan.fuse or not probe.get("contiguous") or probe.get("strided"):
        return None
    width, extent = plan.ni, _int(spatial[-1].dom.extent)
    if width is None or width < 2 or extent is None or extent % width:
        return None
    if extent == width and axis == len(region.region) - 1:
        return None  # one panel, already contiguous (a dense's W[k, n] with N one tile)
    n_sp = len(spatial)

    unit = [i for i, iv in enumerate(reduce) if _int(iv.dom.extent) == 1]

    def block_map(*ivs):  # the vector axis's tiles outermost, its lanes last among the spatial axes
        # (a 1x1 conv's unit kernel axes, which the new iteration counts as spatial, before them)
        sp, red = ivs[:n_sp], ivs[n_sp:]
        return (sp[-1] // width, *sp[:-1], *[red[i] for i in unit], sp[-1] % width,
                *[r for i, r in enumerate(red) if i not in unit])

    def buffer_map(*dims):
        rest = [d for i, d in enumerate(dims) if i != axis]
        return (dims[axis] // width, *rest, dims[axis] % width)

    sch.transform_block_layout(main, IndexMap.from_func(block_map, ndim=len(stmt.iter_vars)))
    # after the block's new iteration: the weight's new indices simplify to (o, ..., lane)
    index = next(i for i, r in enumerate(sch.get(main).reads) if _reads(r, buffer_name))
    sch.transform_layout(main, ("read", index), IndexMap.from_func(buffer_map, ndim=len(region.region)))
    return Packing(param=param, axis=axis, width=width, func=sch.mod["main"])


def _reads(region, buffer_name: str) -> bool:
    from kiln.backends.tvm.tir_access import _bname

    return _bname(region) == buffer_name


def pack_constant_weights(mod, target: dict):
    """``mod`` (legalized, fused) with the constant weights of its dense and conv kernels packed."""
    from tvm import relax, tirx
    from tvm.ir.expr import Constant  # relax.Constant before 0.27

    from kiln.backends.tvm.schedules import vector_lanes

    lanes, cores = vector_lanes(target), int(target.get("num-cores") or 1)
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return mod
    calls = _call_sites(mod)
    plans = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or (func.attrs is not None and "tirx.is_scheduled" in func.attrs):
            continue
        sites = calls.get(gv.name_hint)
        if not sites:
            continue
        # a call that passes a computed weight: the kernel must keep its layout
        packing = packing_of(func, lanes, cores, lambda param, sites=sites: all(
            param < len(args) and isinstance(args[param], Constant) for args in sites))
        if packing is not None:
            plans[gv.name_hint] = packing
    if not plans:
        return mod
    # a new GlobalVar per packed kernel: its struct info (which call_tir's lowering checks the
    # arguments against) is the packed signature; the old one is dropped with the old kernel
    fresh = {}
    for name, packing in plans.items():
        old = mod[name]
        packed = packing.func.with_attrs(old.attrs) if old.attrs is not None else packing.func
        fresh[name] = (relax.BlockBuilder().add_func(packed, name), packed)
    rewritten = _repacker()(mod, plans, {name: gv for name, (gv, _f) in fresh.items()}).transform()
    for name, (gv, packed) in fresh.items():
        del rewritten[rewritten.get_global_var(name)]
        rewritten[gv] = packed
    log.info("packed the constant weights of %d kernels", len(plans))
    return rewritten


def _call_sites(mod) -> dict:
    """Kernel name -> the argument tuples of its call_tir calls in the module's Relax functions."""
    from tvm import relax
    from tvm.ir import Op

    call_tir = Op.get("relax.call_tir")
    out: dict = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
            callee, args = expr.args[0], expr.args[1]
            fields = list(args.fields) if isinstance(args, relax.Tuple) else [args]
            out.setdefault(callee.name_hint, []).append(fields)

    for _gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return out


def _repacker():
    """The Relax mutator class (built on first use: TVM is an optional extra)."""
    from tvm import relax
    from tvm.ir import Op

    call_tir = Op.get("relax.call_tir")

    @relax.expr_functor.mutator
    class Repack(relax.PyExprMutator):
        """Passes each packed kernel's weight to it in the packed layout."""

        def __init__(self, mod, plans, callees):
            super().__init__(mod)
            self.mod_, self.plans, self.callees = mod, plans, callees
            self.packed = {}  # (kernel, weight constant) -> its packed constant: one copy of a shared weight

        def transform(self):
            for gv, func in self.mod_.functions_items():
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gv, self.visit_expr(func))
            return self.builder_.get()

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not call.op.same_as(call_tir) or call.args[0].name_hint not in self.plans:
                return call
            packing = self.plans[call.args[0].name_hint]
            fields = list(call.args[1].fields)
            weight = fields[packing.param]
            key = (call.args[0].name_hint, weight)
            if key not in self.packed:
                self.packed[key] = relax.const(packing.pack(weight.value.numpy()))
            fields[packing.param] = self.packed[key]
            callee = self.callees[call.args[0].name_hint]
            return relax.Call(call.op, [callee, relax.Tuple(fields), *call.args[2:]], call.attrs, call.ty_args,
                              call.span)

    return Repack
