"""A compiled TVM artifact on disk: run it here or on a device, and measure its latency.

``run`` and ``bench`` need only the library and ``kiln_manifest.json``; ``model.onnx`` is
read only for the ONNX Runtime reference (outputs and, on the host, latency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln.backends.tvm.target import host_arch, require_tvm, runs_here, short_error
from kiln.errors import KilnError
from kiln.compiled import CompiledModel
from kiln.reference import OutputComparison, compare_outputs, sample_shape

DEFAULT_REPEAT = 200
DEFAULT_WARMUP = 10


@dataclass
class Timing:
    """Per-run latencies in seconds."""
    label: str
    method: str
    times: list[float]

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def p10(self) -> float:
        return float(np.percentile(self.times, 10))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.times, 90))

    @property
    def mean(self) -> float:
        return float(np.mean(self.times))

    @property
    def throughput(self) -> float:
        """Inferences per second (batch 1): runs / total time."""
        return 1.0 / self.mean if self.mean > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "runs": len(self.times), "median_s": self.median,
                "p10_s": self.p10, "p90_s": self.p90, "mean_s": self.mean, "throughput_per_s": self.throughput}


@dataclass
class BenchReport:
    where: str                     # "this machine" or the RPC address
    repeat: int
    warmup: int
    tvm: Timing                    # the device's own timer (time_evaluator)
    tvm_wall: Timing | None = None         # host only: Python call, wall clock (the method used for ORT)
    onnxruntime: Timing | None = None      # host only
    outputs: list[np.ndarray] = field(default_factory=list)   # outputs of the timed input, fetched back
    comparison: list[OutputComparison] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """TVM / ONNX Runtime median latency, both measured the same way (> 1: TVM slower)."""
        if self.onnxruntime is None or self.tvm_wall is None:
            return None
        return self.tvm_wall.median / self.onnxruntime.median

    @property
    def ratio_device_timer(self) -> float | None:
        if self.onnxruntime is None:
            return None
        return self.tvm.median / self.onnxruntime.median


class _Runtime:
    """The library loaded into a Relax VM, here or on an RPC device."""

    def __init__(self, artifact: "TVMArtifact", remote=None):
        tvm = require_tvm()
        from tvm import relax

        self.artifact = artifact
        lib_path = artifact.library
        if not lib_path.is_file():
            raise KilnError(f"{artifact.path}: the library {lib_path.name} is missing; compile again")
        self.session = None
        if remote is None:
            if not runs_here(artifact.target):
                raise KilnError(
                    f"{artifact.path} is compiled for {artifact.target['mtriple']} ({artifact.manifest['board']}); "
                    f"this machine is {host_arch()}: run it on the device with --rpc HOST:PORT or "
                    "--tracker HOST:PORT --key KEY")
            try:
                lib = tvm.runtime.load_module(str(lib_path))
            except Exception as exc:
                raise KilnError(f"cannot load {lib_path}: {short_error(exc)}") from None
            self.dev = tvm.cpu()
            self.where = "this machine"
        else:
            from kiln.backends.tvm.remote import connect

            self.session = connect(remote)
            try:
                self.session.upload(str(lib_path))
                lib = self.session.load_module(lib_path.name)
            except Exception as exc:
                raise KilnError(f"the device ({remote.label}) could not load {lib_path.name} built for "
                                f"{artifact.target['mtriple']}: {short_error(exc)}") from None
            self.dev = self.session.cpu()
            self.where = remote.label
        try:
            self.vm = relax.VirtualMachine(lib, self.dev)
        except Exception as exc:
            raise KilnError(f"cannot start the Relax VM for {lib_path.name}: {short_error(exc)}") from None
        self._tvm = tvm

    def set_sample(self, sample: list[np.ndarray]) -> None:
        tensors = [self._tvm.runtime.tensor(np.ascontiguousarray(x), self.dev) for x in sample]
        self.vm.set_input("main", *tensors)

    def invoke(self) -> None:
        self.vm.invoke_stateful("main")

    def outputs(self) -> list[np.ndarray]:
        out = self.vm.get_outputs("main")
        flat = []

        def walk(o):
            if isinstance(o, (tuple, list)):
                for item in o:
                    walk(item)
            else:
                flat.append(o.numpy())

        walk(out)
        return flat

    def call(self, sample: list[np.ndarray]) -> list[np.ndarray]:
        self.set_sample(sample)
        self.invoke()
        return self.outputs()


class TVMArtifact(CompiledModel):
    backend = "tvm"

    @property
    def target(self) -> dict:
        return self.manifest["target"]

    @property
    def library(self) -> Path:
        return self.path / self.manifest["library"]["file"]

    # --- inputs ------------------------------------------------------------------------
    def _sample(self, arrays: list[np.ndarray], s: int) -> list[np.ndarray]:
        """Sample s of every input, shaped as the library takes it (batch pinned to 1)."""
        out = []
        for spec, x in zip(self.inputs, arrays):
            one = x[s:s + 1] if spec.get("batch_axis") else x[s]
            out.append(one.astype(spec["dtype"]).reshape(spec["shape"]))
        return out

    def random_inputs(self, n: int = 1, seed: int = 0) -> list[np.ndarray]:
        """Standard-normal floats / small non-negative integers, with a leading axis of n samples."""
        rng = np.random.default_rng(seed)
        arrays = []
        for spec in self.inputs:
            shape = (n, *sample_shape(spec))
            if spec["dtype"].startswith("float"):
                arrays.append(rng.standard_normal(shape).astype(spec["dtype"]))
            elif spec["dtype"] == "bool":
                arrays.append(rng.integers(0, 2, shape).astype(bool))
            else:
                arrays.append(rng.integers(0, 2, shape).astype(spec["dtype"]))
        return arrays

    # --- run ---------------------------------------------------------------------------
    def load(self, remote=None) -> _Runtime:
        """The library in a Relax VM: here, or on the device of ``remote`` (a RemoteSpec)."""
        return _Runtime(self, remote)

    def run(self, inputs, remote=None, return_all: bool = False, runtime: _Runtime | None = None):
        """Outputs for N samples (one library call per sample), shaped like ONNX Runtime's."""
        arrays = self.check_inputs(inputs)
        rt = runtime or self.load(remote)
        n = arrays[0].shape[0]
        per_output: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for s in range(n):
            ys = rt.call(self._sample(arrays, s))
            if len(ys) != len(self.outputs):
                raise KilnError(f"the library returned {len(ys)} output(s), the manifest lists {len(self.outputs)}")
            for k, (spec, y) in enumerate(zip(self.outputs, ys)):
                per_output[k].append(y.reshape(sample_shape(spec)))
        results = [np.stack(o) for o in per_output]
        return results if (return_all or len(results) > 1) else results[0]

    def compare(self, inputs, outputs=None, remote=None) -> list[OutputComparison]:
        outputs = outputs if outputs is not None else self.run(inputs, remote=remote, return_all=True)
        return self._compare(outputs, inputs)

    # --- bench -------------------------------------------------------------------------
    def bench(self, repeat: int = DEFAULT_REPEAT, warmup: int = DEFAULT_WARMUP, inputs=None, remote=None,
              onnxruntime: bool = True, progress=None) -> BenchReport:
        """Latency of one inference (batch 1) over ``repeat`` runs after ``warmup`` runs.

        TVM is timed by the device's own timer (``time_evaluator``: here, or on the RPC
        device). On this machine it is also timed as a Python call with a wall clock, the
        way ONNX Runtime (same model, same input, same process) is timed, and the ratio is
        taken between those two. The two wall-clock series are interleaved, a block of each
        in turn (``INTERLEAVE_BLOCKS``), so that a slow minute of the machine falls on both
        engines and not on one. The outputs of the timed input are fetched back and compared
        with ONNX Runtime.
        """
        if repeat < 1 or warmup < 0:
            raise KilnError("--repeat must be >= 1 and --warmup >= 0")
        arrays = self.check_inputs(inputs) if inputs is not None else self.random_inputs(1)
        arrays = [a[:1] for a in arrays]  # the first sample
        sample = self._sample(arrays, 0)
        say = progress or (lambda msg: None)
        model = self.path / "model.onnx"
        ort_run = None
        if remote is None and onnxruntime and model.is_file():
            ort_run, ort_label = _onnxruntime_call(model, self.inputs, sample, threads=self.target.get("num-cores"))
        rt = self.load(remote)
        rt.set_sample(sample)
        say(f"warm-up ({warmup} runs) on {rt.where}")
        for _ in range(warmup):
            rt.invoke()
        outputs = rt.outputs()
        say(f"timing TVM ({repeat} runs, device timer) on {rt.where}")
        try:
            evaluator = rt.vm.time_evaluator("invoke_stateful", rt.dev, number=1, repeat=repeat)
            times = [float(t) for t in evaluator("main").results]
        except Exception as exc:
            raise KilnError(f"timing on {rt.where} failed: {short_error(exc)}") from None
        label = f"TVM {self.manifest['tvm_version']} ({self.manifest['board']}"
        report = BenchReport(where=rt.where, repeat=repeat, warmup=warmup,
                             tvm=Timing(label + (f", {rt._tvm.runtime.num_threads()} threads)" if remote is None else ")"),
                                        "device timer (time_evaluator)", times))
        if remote is None:
            engines = [("tvm", rt.invoke)] + ([("onnxruntime", ort_run)] if ort_run is not None else [])
            say(f"timing {' and '.join(n for n, _ in engines)} ({repeat} runs each, wall clock, interleaved)")
            if ort_run is not None:
                _wall_clock(ort_run, 0, max(warmup, 1))
            series = interleaved_wall_clock(dict(engines), repeat)
            report.tvm_wall = Timing(report.tvm.label, "Python call, wall clock", series["tvm"])
            if ort_run is not None:
                report.onnxruntime = Timing(ort_label, "Python call, wall clock", series["onnxruntime"])
        per_output = [[y.reshape(sample_shape(spec))] for spec, y in zip(self.outputs, outputs)]
        report.outputs = [np.stack(o) for o in per_output]
        if model.is_file():
            report.comparison = compare_outputs(self.outputs, report.outputs, self.reference(arrays))
        return report


INTERLEAVE_BLOCKS = 10   # wall-clock blocks per engine in `bench` (at least RUNS_PER_BLOCK runs each)
RUNS_PER_BLOCK = 4
BLOCK_WARMUP = 2         # untimed runs opening each block: the pause let the worker threads (and the vCPU) sleep
# after each engine's block, until its idle worker threads sleep and leave the cores to the other:
# TVM's spin for 300,000 yields (~0.18 s of a core, measured) before they block, and ONNX Runtime's
# (spinning allowed, its default) also spin on past the run (measured, mobilenetv3_small_050: TVM's
# runs 1.75-2.1 ms within 0.05 s of an ONNX Runtime block, 1.2 ms after 0.1 s or more)
BLOCK_PAUSE_S = 0.3


def interleaved_wall_clock(engines: dict, repeat: int, blocks: int = INTERLEAVE_BLOCKS,
                           pause_s: float = BLOCK_PAUSE_S) -> dict[str, list[float]]:
    """``repeat`` wall-clock times of each engine, taken in up to ``blocks`` blocks that
    alternate between the engines (``BLOCK_WARMUP`` untimed runs opening each block, a pause
    of ``pause_s`` after it)."""
    blocks = max(1, min(blocks, repeat // RUNS_PER_BLOCK))
    times: dict[str, list[float]] = {name: [] for name in engines}
    for k in range(blocks):
        count = repeat * (k + 1) // blocks - repeat * k // blocks
        for name, fn in engines.items():
            times[name] += _wall_clock(fn, count, BLOCK_WARMUP)
            time.sleep(pause_s)
    return times


def _wall_clock(fn, repeat: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    clock = time.perf_counter_ns
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e-9)
    return times


def _onnxruntime_call(model: Path, specs: list[dict], sample: list[np.ndarray], threads: int | None = None):
    """(a call running ONNX Runtime on the sample, its label); ``threads``: intra-op threads (the board's cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise KilnError(f"ONNX Runtime cannot load {model}: {short_error(exc)}") from None
    types = {i.name: i.type for i in session.get_inputs()}
    feed = {}
    for spec, x in zip(specs, sample):
        want = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32}.get(types.get(spec["name"], ""), x.dtype)
        feed[spec["name"]] = np.ascontiguousarray(x.astype(want))
    label = f"ONNX Runtime {ort.__version__} (CPU EP, {options.intra_op_num_threads or 'default'} threads)"
    return (lambda: session.run(None, feed)), label
