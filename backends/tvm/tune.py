"""MetaSchedule tuning of a Relax module for a board target, within a trial budget.

What makes TVM 0.27's tuner usable here (measured on this 2-core machine):

* apache-tvm-ffi must be 0.1.14.post0: with 0.1.15.post2 MetaSchedule segfaults (pinned
  in pyproject.toml's ``tvm`` extra; ``kiln doctor`` checks it). It also needs psutil,
  cloudpickle and xgboost (the ``xgb`` cost model; ``xgboost-cpu`` is the same module
  without the 350 MB NCCL wheel).
* ``import tvm.s_tir.tensor_intrin`` takes 35-50 s, almost all of it registering the CUDA
  and ROCm tensor intrinsics (TVMScript parsing). MetaSchedule imports it once in the tuning
  process and, through its default build function, once in every builder worker, and
  ``LocalBuilder`` starts a fresh pool of workers for every batch of candidates: 16 trials
  of a 5-kernel MLP took 525 s, nearly all of it builder start-up. Here only the target's
  CPU intrinsics are registered (x86's for an x86 board, arm_cpu's for an Arm one: the Arm
  module alone takes ~12 s to parse), in the tuner and in the builder workers, and one
  builder pool is kept for the whole run: the same tuning takes a fraction of that.
* The builder timeout is raised (a worker's first build still imports TVM: ~5 s).
* Every kernel's untuned code is measured too, with the same builder, runner and timer, and
  goes into the database as one more candidate (MetaSchedule never proposes "no schedule"):
  kernel by kernel the tuned library keeps the faster of the two. Without it a small budget
  made small models slower than untuned (parallel schedules cost ~2-4 us per kernel launch
  on this 2-core machine; the jet MLP went from 7 us untuned to 11-14 us "tuned").
* The evolutionary search is scaled to the budget (its default population of 512 costs
  seconds per task, which a budget of a few trials per task does not need).

The tuning database and MetaSchedule's logs stay in ``<artifact>/tuning/``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

from kiln.errors import KilnError

BUILDER_TIMEOUT_S = 180
RUNNER_TIMEOUT_S = 60
_INTRIN_PKG = "tvm.s_tir.tensor_intrin"
_ARM_ARCHES = ("aarch64", "arm64", "arm", "armv7", "armv7a", "armv8", "thumbv7")


def intrinsics_module(target) -> str:
    """The tensor-intrinsic module of ``target`` (a target dict, a tvm Target or an mtriple):
    ``arm_cpu`` for Arm triples, ``x86`` otherwise."""
    if isinstance(target, dict):
        mtriple = str(target.get("mtriple", ""))
    elif isinstance(target, str):
        mtriple = target
    else:  # a tvm.target.Target
        mtriple = str(target.attrs.get("mtriple", ""))
    from kiln.backends.tvm.target import triple_arch

    return "arm_cpu" if triple_arch(mtriple).lower() in _ARM_ARCHES else "x86"


def load_cpu_tensor_intrinsics(target) -> None:
    """Register ``target``'s CPU tensor intrinsics, without the other architectures' (35-50 s).

    ``tvm.s_tir.tensor_intrin/__init__`` imports every architecture's intrinsics; a
    package module with the same search path but an empty body takes its place, so that
    MetaSchedule's own ``import tvm.s_tir.tensor_intrin`` finds it already loaded. A later
    call for another architecture adds that one's module.
    """
    if _INTRIN_PKG not in sys.modules:
        import tvm.s_tir  # noqa: F401

        spec = importlib.util.find_spec(_INTRIN_PKG)
        pkg = types.ModuleType(_INTRIN_PKG, "CPU tensor intrinsics only (registered by Kiln)")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__package__ = _INTRIN_PKG
        sys.modules[_INTRIN_PKG] = pkg
    importlib.import_module(f"{_INTRIN_PKG}.{intrinsics_module(target)}")


def build_candidate(mod, target, _params):
    """MetaSchedule's default build function, minus the GPU tensor intrinsics (runs in the
    builder worker processes, which import it by reference: keep it a module-level function)."""
    load_cpu_tensor_intrinsics(target)
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _check_tuning_deps() -> None:
    missing = [m for m in ("psutil", "cloudpickle", "xgboost") if importlib.util.find_spec(m) is None]
    if missing:
        raise KilnError(f"tuning needs {', '.join(missing)} (MetaSchedule's workers and cost model); "
                        "install the tvm extra: `pip install -e '.[tvm]'`")


def _persistent_builder(max_workers: int, timeout_sec: float):
    """A LocalBuilder whose worker pool lives for the whole tuning run."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(PyBuilder):
        def __init__(self):
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec)

        def build(self, build_inputs):
            results = []
            jobs = [(build_candidate, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            for res in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                elif res.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"build failed: {res.value}"))
            return results

        def shutdown(self):
            self.pool.shutdown()

    return PersistentBuilder()


def _progress_callback(on_trial):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            on_trial(len(measure_candidates))

    return Progress()


def _runner(target: dict, tracker: tuple[str, int] | None, key: str | None, runs_here: bool):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
    if tracker is not None:
        if not key:
            raise KilnError("--tracker needs --key (the device key its RPC servers registered with)")
        config = ms.runner.RPCConfig(tracker_host=tracker[0], tracker_port=tracker[1], tracker_key=key,
                                     session_timeout_sec=RUNNER_TIMEOUT_S)
        return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=1)
    if not runs_here:
        raise KilnError(f"tuning for {target['mtriple']} measures candidates on the device: pass "
                        "--tracker HOST:PORT --key KEY (a TVM RPC tracker the device's RPC server registered with)")
    return ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S, evaluator_config=evaluator)


def count_kernels(mod, target: dict) -> int:
    """How many distinct kernels (tuning tasks) the build of ``mod`` has."""
    from kiln.backends.tvm.schedules import legalize
    from kiln.backends.tvm.tuning_db import kernels

    load_cpu_tensor_intrinsics(target)
    return len(kernels(legalize(mod, target), target))


def _measure(builder, runner, mods, tvm_target) -> list:
    """Build and run scheduled kernel modules (one batch: the builder's workers build them side
    by side): per module (run seconds list, args info), or None where it failed."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    from tvm.s_tir.meta_schedule.utils import remove_build_dir

    out = []
    for mod, built in zip(mods, builder.build([BuilderInput(m, tvm_target) for m in mods])):
        if built.error_msg is not None:
            out.append(None)
            continue
        try:
            args = ArgInfo.from_prim_func(mod["main"])
            res = runner.run([RunnerInput(built.artifact_path, "cpu", args)])[0].result()
            ok = res.error_msg is None and res.run_secs
            out.append(([float(v) for v in res.run_secs], args) if ok else None)
        finally:
            remove_build_dir(built.artifact_path)
    return out


def _commit(database, k, trace, got, tvm_target) -> None:
    from tvm.s_tir.meta_schedule.database import TuningRecord

    database.commit_tuning_record(TuningRecord(trace, database.commit_workload(k.workload), got[0], tvm_target, got[1]))


def _measure_baselines(ks, database, builder, runner, tvm_target, target) -> int:
    """Measure the rule-based schedule of every kernel the database has no baseline of, with the
    same builder, runner and timer as the trials, and commit it as a record: MetaSchedule never
    proposes it, and for kernels of a few microseconds a small budget often finds nothing
    faster; this way each kernel keeps the faster of the two."""
    from kiln.backends.tvm.schedules import vector_lanes
    from kiln.backends.tvm.tuning_db import baseline, look_up

    lanes, cores = vector_lanes(target), int(target.get("num-cores") or 1)
    count = 0
    for k in ks:
        look_up(database, k)
        if k.rule_secs is not None:
            continue
        trace, scheduled, _rule = baseline(k.workload, lanes, cores)
        (got,) = _measure(builder, runner, [scheduled], tvm_target)
        if got is not None:
            _commit(database, k, trace, got, tvm_target)
            count += 1
        look_up(database, k)
    return count


def _search_tiles(order, budget_s, started, database, builder, runner, tvm_target, target, on_trial,
                  batch: int = 8, cap: int | None = None) -> list:
    """The rule's other tiles (``schedules.tile_plans``: vector width, row tile, loop order, fused
    pixels) of each kernel in ``order`` not yet tuned, dominant first, measured as records beside
    its baseline until ``budget_s`` is spent: a few dozen candidates a kernel, each a schedule
    the rule itself builds, where MetaSchedule's search from random traces found nothing faster
    in 5 minutes (session 7: DeiT 27.5 -> 28.1 ms after 626 candidates). The first batch of
    the first kernel searched is measured whatever is left of the budget (measuring the baselines
    can spend a small one: a tuning run then tunes something, its verdict not the clock's).
    ``cap``: at most that many candidates a kernel. Returns the kernels searched."""
    import time

    from kiln.backends.tvm.schedules import rule_schedule, tile_plans, vector_lanes

    lanes, cores = vector_lanes(target), int(target.get("num-cores") or 1)
    searched, per_candidate = [], 1.0
    for k in order:
        if k.tuned:
            continue  # the database holds tuned records of it (an earlier model's, or an earlier run's)
        candidates = []
        for plan in tile_plans(k.workload["main"], lanes, cores)[:cap]:
            try:
                sch, _rule = rule_schedule(k.workload["main"], lanes, cores, plan)
            except Exception:  # a plan this kernel's loops refuse
                continue
            candidates.append(sch)
        if not candidates:
            continue
        for i in range(0, len(candidates), batch):
            left = budget_s - (time.monotonic() - started)
            first = not searched  # the dominant kernel's first batch, even where the baselines spent the budget
            take = batch if first or left == float("inf") else min(batch, int(left / per_candidate))
            chunk = candidates[i:i + take]
            if not chunk:
                return searched
            if i == 0:
                searched.append(k)
            t0 = time.monotonic()
            for sch, got in zip(chunk, _measure(builder, runner, [c.mod for c in chunk], tvm_target)):
                if got is not None:
                    _commit(database, k, sch.trace, got, tvm_target)
            per_candidate = (time.monotonic() - t0) / len(chunk)
            on_trial(len(chunk))
    return searched


def _drop_unnamed_handlers() -> None:
    """MetaSchedule's logger set-up names every handler of its logger in a dictConfig and fails on
    one without a name (``None.format``); a second tuning run in one process can find such a
    handler there. Its set-up replaces the handlers anyway, so drop the unnamed ones first."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in [h for h in logger.handlers if h.get_name() is None]:
        logger.removeHandler(handler)


def _tune_some(ks, trials: int, per_task: int, database, builder, runner, tvm_target, work_dir, seed, on_trial):
    """One MetaSchedule run over kernels ``ks`` (``per_task`` trials each, ``trials`` in all)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir
    from tvm.s_tir.meta_schedule.utils import fork_seed

    population = int(min(512, max(32, 8 * per_task)))
    _drop_unnamed_handlers()
    contexts = []
    for k, logger, rand in zip(ks, get_loggers_from_work_dir(str(work_dir), [k.name for k in ks]),
                               fork_seed(seed, n=len(ks))):
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=population, init_min_unmeasured=min(50, population // 2),
            genetic_num_iters=4 if per_task >= 32 else 2)
        contexts.append(ms.TuneContext(mod=k.workload, target=tvm_target, space_generator="post-order-apply",
                                       search_strategy=strategy, task_name=k.name, logger=logger,
                                       rand_state=rand, num_threads="physical").clone())
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [_progress_callback(on_trial)]
    ms.tune_tasks(tasks=contexts, task_weights=[float(max(k.calls, 1)) for k in ks], work_dir=str(work_dir),
                  max_trials_global=trials, max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task),
                  builder=builder, runner=runner, database=database, measure_callbacks=callbacks)


def tune(mod, target: dict, work_dir: Path, database, trials: int | None = None, minutes: float | None = None,
         tracker=None, key=None, runs_here=True, progress=None, seed: int = 0, chunk: int = 8):
    """Tune the kernels of ``mod`` (a Relax IRModule from the importer) into ``database``.

    ``trials``: N trials for the model, N / kernels per kernel; kernels the database already
    holds tuned records of count as done. ``minutes``: measure every kernel's rule-based
    schedule, then tune kernels in order of their share of the time (those not yet tuned first),
    ``chunk`` trials at a time, until the budget is spent. ``progress(message)`` reports.
    Returns a summary dict (the manifest's ``tuning``); the build applies the database.
    """
    import time

    _check_tuning_deps()
    from kiln.backends.tvm.schedules import legalize
    from kiln.backends.tvm.target import host_cpu_count, require_tvm
    from kiln.backends.tvm.tuning_db import export_records, kernels, look_up

    tvm = require_tvm()  # measuring workers inherit its $TVM_NUM_THREADS: candidates timed on every core

    started = time.monotonic()
    load_cpu_tensor_intrinsics(target)
    tvm_target = tvm.target.Target(target)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Console logging off (the task table is long); everything still goes to tuning/logs/.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    say = progress or (lambda msg: None)
    ks = kernels(legalize(mod, target), target)
    before = len(database.get_all_tuning_records())
    summary = {"trials": trials, "minutes": minutes, "tasks": len(ks), "measured": 0,
               "runner": "rpc-tracker" if tracker else "local", "work_dir": work_dir.name}
    if not ks:
        return summary
    measured = [0]

    def on_trial(n):
        measured[0] += n
        if trials:
            say(f"{min(measured[0], trials)}/{trials} trials measured")
        else:
            say(f"{measured[0]} trials measured, {time.monotonic() - started:.0f} of {60 * minutes:.0f} s")

    builder = _persistent_builder(max_workers=max(1, min(host_cpu_count(), 4)), timeout_sec=BUILDER_TIMEOUT_S)
    runner = _runner(target, tracker, key, runs_here)
    tuned_now = []
    try:
        say(f"measuring the rule-based schedules of {len(ks)} kernels")
        summary["untuned_measured"] = _measure_baselines(ks, database, builder, runner, tvm_target, target)
        total = sum((k.rule_secs or k.best_secs or 0.0) * max(k.calls, 1) for k in ks) or 1.0
        for k in ks:
            k.extra["share"] = (k.rule_secs or k.best_secs or 0.0) * max(k.calls, 1) / total
        order = sorted(ks, key=lambda k: (k.tuned, -k.extra["share"]))  # not yet tuned first, dominant first
        if trials:
            per_task = max(1, trials // len(ks))
            pending = [k for k in order if not k.tuned]
            if pending:  # half of each kernel's trials on the rule's other tiles, the rest MetaSchedule's
                tiles = max(1, per_task // 2)
                _search_tiles(pending, float("inf"), started, database, builder, runner, tvm_target, target,
                              on_trial, cap=tiles)
                if per_task > tiles:
                    _tune_some(pending, (per_task - tiles) * len(pending), per_task - tiles, database, builder,
                               runner, tvm_target, work_dir, seed, on_trial)
                tuned_now = pending
            summary["trials_per_task"] = per_task
        else:  # the rule's other tiles of the dominant kernels first, then MetaSchedule's search
            tuned_now = _search_tiles(order, 60.0 * minutes, started, database, builder, runner, tvm_target,
                                      target, on_trial)
            summary["tile_candidates"] = measured[0]
            for k in order:
                look_up(database, k)
            more = _tune_for(order, 60.0 * minutes, started, chunk, database, builder, runner, tvm_target,
                             work_dir, seed, on_trial, measured)
            reached = {id(k) for k in tuned_now + more}
            tuned_now = [k for k in order if id(k) in reached]  # dominant first, whichever search reached it
    finally:
        builder.shutdown()
    kept = 0
    for k in ks:
        records = look_up(database, k)
        kept += bool(records) and str(records[0].trace) == str(k.baseline_trace)
    summary.update({
        "measured": measured[0], "new_records": len(database.get_all_tuning_records()) - before,
        "records": export_records(database, ks, work_dir), "rule_kept": int(kept),
        "tuned_kernels": [k.name for k in tuned_now],
        "shares": {k.name: round(k.extra["share"], 4) for k in order},
        "seconds": round(time.monotonic() - started, 1)})
    summary["untuned_kept"] = summary["rule_kept"]
    return summary


def _tune_for(order, budget_s, started, chunk, database, builder, runner, tvm_target, work_dir, seed, on_trial,
              measured) -> list:
    """Rounds over ``order`` (dominant kernels first), ``chunk`` trials per kernel per round, each
    chunk cut to what the time left pays for at the seconds per trial measured so far."""
    import time

    done, per_trial, rnd = [], 2.0, 0
    while True:
        progressed = False
        for k in order:
            left = budget_s - (time.monotonic() - started)
            n = min(chunk, int(left / per_trial))
            if n < 1:
                return done
            t0, m0 = time.monotonic(), measured[0]
            _tune_some([k], n, n, database, builder, runner, tvm_target, work_dir, seed + 1000 * rnd, on_trial)
            if measured[0] > m0:
                per_trial = (time.monotonic() - t0) / (measured[0] - m0)
                progressed = True
            if k not in done:
                done.append(k)
        rnd += 1
        if not progressed:  # the search space of every kernel is exhausted
            return done
