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
  of a 5-kernel MLP took 525 s, nearly all of it builder start-up. Here only the CPU
  intrinsics (x86, arm_cpu) are registered, in the tuner and in the builder workers, and
  one builder pool is kept for the whole run: the same tuning takes a fraction of that.
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
_CPU_INTRINSICS = ("x86", "arm_cpu")


def load_cpu_tensor_intrinsics() -> None:
    """Register the x86 and Arm tensor intrinsics without the CUDA/ROCm ones (35-50 s).

    ``tvm.s_tir.tensor_intrin/__init__`` imports every architecture's intrinsics; a
    package module with the same search path but an empty body takes its place, so that
    MetaSchedule's own ``import tvm.s_tir.tensor_intrin`` finds it already loaded.
    """
    if _INTRIN_PKG in sys.modules:
        return
    import tvm.s_tir  # noqa: F401

    spec = importlib.util.find_spec(_INTRIN_PKG)
    pkg = types.ModuleType(_INTRIN_PKG, "CPU tensor intrinsics only (registered by Kiln)")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__package__ = _INTRIN_PKG
    sys.modules[_INTRIN_PKG] = pkg
    for name in _CPU_INTRINSICS:
        importlib.import_module(f"{_INTRIN_PKG}.{name}")


def build_candidate(mod, target, _params):
    """MetaSchedule's default build function, minus the GPU tensor intrinsics (runs in the
    builder worker processes, which import it by reference: keep it a module-level function)."""
    load_cpu_tensor_intrinsics()
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


def _prepare(mod, tvm_target):
    """Legalize and fuse (relax.pipeline.static_shape_tuning_pipeline's steps before tuning)."""
    import tvm
    from tvm import relax

    with tvm_target:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.get_pipeline("zero"),
        ])(mod)


def count_kernels(mod, target: dict) -> int:
    """How many tuning tasks (fused kernels) MetaSchedule would tune in ``mod``."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    load_cpu_tensor_intrinsics()
    tvm_target = tvm.target.Target(target)
    return len(ms.relax_integration.extract_tasks(_prepare(mod, tvm_target), tvm_target))


def tune(mod, target: dict, trials: int, work_dir: Path, tracker=None, key=None, runs_here=True,
         progress=None, seed: int = 0):
    """Tune ``mod`` (a Relax IRModule from the importer) and return it with the best schedules applied.

    ``progress(done, total)`` is called as trials are measured. Returns (module, summary dict).
    """
    _check_tuning_deps()
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from kiln.backends.tvm.target import host_cpu_count

    load_cpu_tensor_intrinsics()
    tvm_target = tvm.target.Target(target)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Console logging off (the task table is long); everything still goes to tuning/logs/.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    mod = _prepare(mod, tvm_target)
    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    if not tasks:
        return mod, {"trials": trials, "tasks": 0, "measured": 0}
    per_task = max(1, trials // len(tasks))
    population = int(min(512, max(32, 8 * per_task)))
    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2),
        genetic_num_iters=4 if per_task >= 32 else 2)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), strategy=strategy, seed=seed)
    measured = [0]

    def on_trial(n):
        measured[0] += n
        if progress:
            progress(min(measured[0], trials), trials)

    callbacks = ms.measure_callback.MeasureCallback.create("default") + [_progress_callback(on_trial)]
    builder = _persistent_builder(max_workers=max(1, min(host_cpu_count(), 4)), timeout_sec=BUILDER_TIMEOUT_S)
    runner = _runner(target, tracker, key, runs_here)
    try:
        database = ms.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
            max_trials_per_task=per_task, num_trials_per_iter=min(64, per_task), builder=builder, runner=runner,
            measure_callbacks=callbacks)
        baselines = _add_untuned_baselines(contexts, database, builder, runner, tvm_target)
    finally:
        builder.shutdown()
    kept_untuned = 0
    for ctx in contexts:
        best = database.get_top_k(database.commit_workload(ctx.mod), 1)
        kept_untuned += bool(best) and _is_identity(best[0].trace)
    with tvm_target, database:
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    records = len(database.get_all_tuning_records())
    summary = {"trials": trials, "tasks": len(tasks), "trials_per_task": per_task, "measured": measured[0],
               "records": records, "untuned_measured": baselines, "untuned_kept": int(kept_untuned),
               "population": population, "runner": "rpc-tracker" if tracker else "local",
               "work_dir": work_dir.name}
    return mod, summary


def _identity_trace(mod):
    """A schedule trace that leaves the kernel as it is. The database ignores records with no
    instruction, so it holds one that changes nothing: looking up the kernel's output blocks."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    sch.work_on("main")
    sch.get_output_blocks(sch.get_sblock("root"))
    return sch.trace


def _is_identity(trace) -> bool:
    return all(inst.kind.name in ("GetSBlock", "GetOutputBlocks") for inst in trace.insts)


def _add_untuned_baselines(contexts, database, builder, runner, tvm_target) -> int:
    """Measure every kernel as the untuned build compiles it (no schedule: an empty trace) with
    the same builder, runner and timer as the tuning trials, and put it in the database as one
    more candidate. MetaSchedule never proposes it, and for kernels of a few microseconds a
    small budget often finds nothing faster (its schedules parallelise over threads): this way
    the tuned library takes, kernel by kernel, the faster of the two."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.runner import RunnerInput
    from tvm.s_tir.meta_schedule.utils import remove_build_dir

    mods = [ctx.mod for ctx in contexts]
    built = builder.build([BuilderInput(m, tvm_target) for m in mods])
    count = 0
    for mod, b in zip(mods, built):
        if b.error_msg is not None:
            continue
        try:
            args = ArgInfo.from_prim_func(mod["main"])
            res = runner.run([RunnerInput(b.artifact_path, "cpu", args)])[0].result()
            if res.error_msg is None and res.run_secs:
                database.commit_tuning_record(TuningRecord(
                    _identity_trace(mod), database.commit_workload(mod), [float(v) for v in res.run_secs],
                    tvm_target, args))
                count += 1
        finally:
            remove_build_dir(b.artifact_path)
    return count

