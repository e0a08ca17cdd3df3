"""The per-board tuning database: MetaSchedule records reused across compiles.

    ~/.cache/kiln/tvm-db/<board>/        default (KILN_TUNING_DB or --tuning-db DIR: that directory)
        database_workload.json           one line per kernel (its PrimFunc; keyed by structural hash)
        database_tuning_record.json      one line per measured schedule (trace, run seconds)

A kernel's records are its rule-based schedule (schedules.py, measured as its baseline before
any tuning) and whatever ``--tune``/``--tune-minutes`` measured. Every compile for the board
(tuned or not) asks the database about each kernel: the best record wins, so a tuned schedule
is used only where it measured faster than the rule-based one; a kernel the database does not
know gets the rule-based schedule. Records of one board's machine say nothing about another's:
hence one directory per board.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError

ENV_VAR = "KILN_TUNING_DB"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"

log = logging.getLogger("kiln.tvm.tuning_db")


def database_dir(board: str, override=None) -> Path:
    """Where the database of ``board`` lives: ``override``, else $KILN_TUNING_DB, else the cache."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", board) or "board"
    return Path.home() / ".cache" / "kiln" / "tvm-db" / safe


def open_database(directory: Path, create: bool, target: dict):
    """The JSONDatabase of ``target``'s board in ``directory``; None when it does not exist
    and ``create`` is False."""
    directory = Path(directory)
    if not create and not (directory / RECORDS).is_file():
        return None
    from tvm.s_tir import meta_schedule as ms

    from kiln.backends.tvm.tune import load_cpu_tensor_intrinsics

    load_cpu_tensor_intrinsics(target)  # tuned records may tensorize with them
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".kiln-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise KilnError(f"tuning database {directory}: cannot write there ({exc.strerror}); "
                        f"choose another with --tuning-db DIR or {ENV_VAR}") from None
    try:
        return ms.database.JSONDatabase(str(directory / WORKLOADS), str(directory / RECORDS), allow_missing=True)
    except Exception as exc:  # a corrupt line
        raise KilnError(f"tuning database {directory} cannot be read ({str(exc).strip().splitlines()[-1]}); "
                        "move it away or choose another with --tuning-db DIR") from None


@dataclass
class Kernel:
    """One distinct kernel of a legalized module: its workload and the functions that share it."""
    gvs: list                    # the module's GlobalVars of this kernel
    func: object                 # the PrimFunc as the module has it
    workload: object             # the IRModule MetaSchedule keys it by (normalized: "main")
    calls: int = 0
    baseline_trace: object = None
    rule: str = "default"
    rule_secs: float | None = None   # the baseline's measured time (from the database)
    best_secs: float | None = None
    tuned: bool = False              # does the database hold a tuned record beside the baseline?
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.gvs[0].name_hint


def workload_of(func):
    """MetaSchedule's workload of a kernel (an IRModule, ``main``), its blocks renamed in order
    (``b1``, ``b2``, ...; the root stays ``root``). Structurally equal kernels of two models share
    one database workload whatever their block names (a mean's reduction is ``lv251_red`` in
    ConvNeXt, another ``lv*_red`` in the next model), and a record's trace finds blocks by name:
    under the names of the model that tuned it, a record would not replay on the workload the
    database keeps (and a database holding such a record cannot be loaded at all)."""
    import re

    import tvm
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    mod = _normalize_mod(func)
    count = [0]

    def rename(match):
        if match.group(1) == "root":
            return match.group(0)
        count[0] += 1
        return f'T.sblock("b{count[0]}")'

    text = re.sub(r'T\.sblock\("([^"]*)"\)', rename, mod.script())
    return tvm.script.from_source(text)


def scheduled_kernel(k: Kernel, trace):
    """``trace`` (a record of ``k``'s workload) applied to the workload: the kernel's PrimFunc, with
    the module's attributes (no ``global_symbol``: the Relax build names kernels)."""
    from tvm.s_tir import Schedule

    sch = Schedule(k.workload)
    trace.apply_to_schedule(sch, remove_postproc=False)
    new = sch.mod["main"]
    if k.func.attrs is None or "global_symbol" not in k.func.attrs:
        new = new.without_attr("global_symbol")
    return new


def _identity_trace(mod):
    """A trace that leaves the kernel as it is (the database ignores records with no
    instruction, so it holds one that changes nothing: looking up the output blocks)."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    sch.work_on("main")
    sch.get_output_blocks(sch.get_sblock("root"))
    return sch.trace


def baseline(workload, lanes: int, cores: int):
    """(trace, scheduled IRModule, rule) of a kernel's rule-based schedule (its baseline record)."""
    from kiln.backends.tvm.schedules import rule_schedule

    sch, rule = rule_schedule(workload["main"], lanes, cores)
    if sch is None:
        return _identity_trace(workload), workload, rule
    return sch.trace, sch.mod, rule


def kernels(lmod, target: dict, known_to=None) -> list[Kernel]:
    """The distinct unscheduled kernels of a legalized, fused module, with call counts and baselines.
    ``known_to`` (a database): only the kernels it holds get their workload with canonical block
    names and their baseline (printing and re-parsing a kernel costs ~0.1 s: ~10 s for
    MobileViT's 81); the others keep MetaSchedule's workload, which that database does not hold
    under any names, and no baseline."""
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    from kiln.backends.tvm.kernels import kernel_table
    from kiln.backends.tvm.schedules import vector_lanes

    lanes, cores = vector_lanes(target), int(target.get("num-cores") or 1)
    calls = {e["name"]: e["calls"] for e in kernel_table(lmod)}
    found: dict[int, list[Kernel]] = {}
    out = []
    for gv, func in lmod.functions_items():
        if not isinstance(func, tirx.PrimFunc) or (func.attrs is not None and "tirx.is_scheduled" in func.attrs):
            continue
        wl = _normalize_mod(func)  # structural equality ignores block names: canonical or not, the same kernel
        h = tvm_ffi.structural_hash(wl)
        same = next((k for k in found.get(h, []) if tvm_ffi.structural_equal(k.workload, wl)), None)
        if same is not None:
            same.gvs.append(gv)
            same.calls += calls.get(gv.name_hint, 0)
            continue
        k = Kernel([gv], func, wl, calls.get(gv.name_hint, 0))
        if known_to is None or known_to.has_workload(wl):
            k.workload = workload_of(func)
            k.baseline_trace, _mod, k.rule = baseline(k.workload, lanes, cores)
        found.setdefault(h, []).append(k)
        out.append(k)
    return out


def _mean(record) -> float | None:
    secs = [float(s) for s in (record.run_secs or [])]
    return sum(secs) / len(secs) if secs else None


def look_up(database, k: Kernel) -> list:
    """Fill ``k.rule_secs``/``best_secs``/``tuned`` from the database; returns its records, best first."""
    if database is None or not database.has_workload(k.workload):
        return []
    records = database.get_top_k(database.commit_workload(k.workload), 1 << 20)
    key = str(k.baseline_trace)
    k.rule_secs = next((_mean(r) for r in records if str(r.trace) == key), None)
    k.best_secs = _mean(records[0]) if records else None
    k.tuned = any(str(r.trace) != key for r in records)
    return records


def apply_database(lmod, database, target: dict):
    """Replace each kernel whose best record is a tuned schedule (faster than its rule-based
    baseline) that computes what the baseline does (``computes_the_same``) with that schedule;
    a tuned record that does not is skipped for the next one. Returns (module, {function name:
    "tuned"})."""
    applied = {}
    for k in kernels(lmod, target, known_to=database):
        new, want = None, None
        for record in look_up(database, k):
            if str(record.trace) == str(k.baseline_trace):
                break  # the rule-based schedule is the fastest correct one: schedules.py applies it
            try:
                candidate = scheduled_kernel(k, record.trace)
            except Exception:  # a record that no longer replays (another TVM): the next one
                continue
            if want is None:  # the baseline's outputs, computed once for all of the kernel's records
                want = host_outputs(scheduled_kernel(k, k.baseline_trace))
            if _same_outputs(host_outputs(candidate), want):
                new = candidate.with_attr("tirx.is_scheduled", True)
                break
            log.warning("tuned schedule of %s gives other outputs than its rule-based one: not used",
                        k.gvs[0].name_hint)
        if new is None:
            continue
        for gv in k.gvs:
            lmod[gv] = new
            applied[gv.name_hint] = "tuned"
    return lmod, applied


def computes_the_same(candidate, reference, rtol: float = 1e-5) -> bool:
    """Do two schedules of one kernel give the same outputs (within ``rtol`` of the output
    scale) on the same random inputs, both built for this host? MetaSchedule does not check the
    schedules it samples, and TVM 0.27 miscompiles some: a tile of MobileNetV3-small's 1x1 conv
    at 56x56 that it measured fastest gave a relative error of 0.9 (session 12). A kernel that
    cannot run here (a symbolic shape) counts as not the same (its rule-based schedule stays)."""
    return _same_outputs(host_outputs(candidate), host_outputs(reference), rtol)


def host_outputs(func) -> list | None:
    """Every argument of kernel ``func`` after one run built for this host, on seeded random
    float inputs (integer arguments, gather indices, are zeros: always in bounds); None where it
    cannot be built or run here (a symbolic extent)."""
    import numpy as np
    import tvm

    try:
        buffer_map = getattr(func, "buffer_map", None)  # TVM 0.27's tirx: the params are the buffers
        buffers = [buffer_map[p] for p in func.params] if buffer_map is not None else list(func.params)
        shapes = [[int(d) for d in b.shape] for b in buffers]
        lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                             target=tvm.target.Target("llvm"))
        rng = np.random.default_rng(0)
        tensors = [tvm.runtime.tensor(rng.standard_normal(shape).astype(b.dtype) if "float" in str(b.dtype)
                                      else np.zeros(shape, dtype=str(b.dtype)))
                   for shape, b in zip(shapes, buffers)]
        lib["main"](*tensors)
    except Exception:  # a symbolic extent, or a schedule this host cannot build or run
        return None
    return [t.numpy() for t in tensors]


def _same_outputs(got, want, rtol: float = 1e-5) -> bool:
    """``host_outputs`` of two schedules agree: as many arrays, the same shapes, each within
    ``rtol`` of the reference's scale (NaN where the reference has NaN)."""
    import numpy as np

    if got is None or want is None or len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return False
        scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
        close = np.abs(g.astype(np.float64) - w) <= rtol * scale
        if not np.all(close | (np.isnan(g) & np.isnan(w))):
            return False
    return True


def export_records(database, ks: list[Kernel], directory: Path) -> int:
    """Copy the records of this model's kernels into ``directory`` (the artifact's tuning/)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.database import TuningRecord

    directory.mkdir(parents=True, exist_ok=True)
    out = ms.database.JSONDatabase(str(directory / WORKLOADS), str(directory / RECORDS), allow_missing=True)
    n = 0
    for k in ks:
        wl = out.commit_workload(k.workload)
        for r in look_up(database, k):
            out.commit_tuning_record(TuningRecord(r.trace, wl, r.run_secs, r.target, r.args_info))
            n += 1
    return n
