"""After tuning: keep the tuned build only where the whole model runs faster with it.

The tuning database picks each kernel's schedule by its own measurement: a tuned record
wins where it measured faster than the rule-based baseline. Those per-kernel figures are
single measurements on a shared machine; the fastest of many noisy candidates is often
faster only by luck (the winner's curse), and a kernel timed alone with warm caches says
little about the cache state it meets inside the model. So ``kiln compile --tune`` builds
the model twice, with the database's tuned schedules and with the rule-based ones alone,
times both end to end on the same random inputs in alternating blocks (one machine, one
run: a slow spell of the VM hits both), and ships the faster. A user never gets a tuned
library that is slower than the untuned one they would have got, and the manifest says
which build was kept and the two medians.

Only where the library runs on this machine (tuning for an RPC device measures kernels
there; the tuned build is kept).
"""

from __future__ import annotations

import time

import numpy as np

# the timed share of the check: each build runs until about this many seconds are spent on it,
# in BLOCKS alternating blocks, with at least MIN_RUNS runs each
BUDGET_S = 6.0
BLOCKS = 6
MIN_RUNS = 6
MAX_RUNS = 60


def random_sample(inputs: list[dict], seed: int = 0) -> list[np.ndarray]:
    """One sample of every input port (standard-normal floats, zeros for integer indices)."""
    rng = np.random.default_rng(seed)
    sample = []
    for spec in inputs:
        shape = spec["shape"]
        if spec["dtype"].startswith("float"):
            sample.append(rng.standard_normal(shape).astype(spec["dtype"]))
        else:
            sample.append(np.zeros(shape, dtype=spec["dtype"]))
    return sample


def _call(tvm, executable, sample: list[np.ndarray]):
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    vm.set_input("main", *[tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in sample])
    return lambda: vm.invoke_stateful("main")


def time_builds(tvm, builds: dict, inputs: list[dict]) -> dict[str, float]:
    """Median wall-clock seconds of one inference of each build (``{name: executable}``),
    timed in alternating blocks on one random sample."""
    from kiln.backends.tvm.artifact import interleaved_wall_clock

    sample = random_sample(inputs)
    calls = {name: _call(tvm, ex, sample) for name, ex in builds.items()}
    first = []
    for fn in calls.values():
        fn()  # loads the weights, wakes the thread pool
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
    runs = int(np.clip(BUDGET_S / max(max(first), 1e-6), MIN_RUNS, MAX_RUNS))
    series = interleaved_wall_clock(calls, runs, blocks=BLOCKS)
    return {name: float(np.median(times)) for name, times in series.items()}


def keep_faster(tvm, tuned, rule_based, inputs: list[dict]) -> tuple[str, dict]:
    """("tuned" or "rule-based", the check's record for the manifest): the faster build of
    the model; the tuned one only where its median is below the rule-based one's."""
    medians = time_builds(tvm, {"tuned": tuned, "rule-based": rule_based}, inputs)
    kept = "tuned" if medians["tuned"] < medians["rule-based"] else "rule-based"
    return kept, {"kept": kept, "tuned_ms": round(medians["tuned"] * 1e3, 4),
                  "rule_based_ms": round(medians["rule-based"] * 1e3, 4)}

