"""``profile``: observed statistics of every input-dependent float value of a model on samples."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from kiln.calibrate.profile_data import (HIST_MAX, HIST_MIN, PERCENTILE_SAMPLE_CAP, PERCENTILES, Profile,
                                         ValueStats, pct_key)
from kiln.calibrate.runner import BATCH_SIZE, Runner, dynamic_values, label_of
from kiln.calibrate.samples import load_model, load_samples, model_input_specs, with_symbolic_batch
from kiln.errors import KilnError


class _Accumulator:
    """Streaming stats of one value: exact min/max/moments/histogram, percentile sample."""

    def __init__(self, name: str, keep_fraction_for):
        self.name = name
        self.shape = None
        self.count = self.zeros = self.nonfinite = 0
        self.min, self.max = math.inf, -math.inf
        self.sum = self.sumsq = 0.0
        self.hist = np.zeros(HIST_MAX - HIST_MIN + 1, dtype=np.int64)
        self.kept: list[np.ndarray] = []
        self.keep_fraction_for = keep_fraction_for
        self.fraction = None

    def add(self, y: np.ndarray, n: int, shape: list, rng) -> None:
        """``y``: the value for ``n`` samples; ``shape``: one sample's shape."""
        y = np.asarray(y)
        if self.shape is None:
            self.shape = [int(d) for d in shape]
            self.fraction = self.keep_fraction_for(y.size // max(n, 1))
        flat = y.reshape(-1)
        if not flat.size:
            return
        finite = np.isfinite(flat)
        if not finite.all():
            self.nonfinite += int(flat.size - finite.sum())
            flat = flat[finite]
            if not flat.size:
                return
        if flat.dtype != np.float64:
            flat = flat.astype(np.float32, copy=False)  # float16/bfloat16 widen exactly
        self.count += flat.size
        self.min = min(self.min, float(flat.min()))
        self.max = max(self.max, float(flat.max()))
        self.sum += float(flat.sum(dtype=np.float64))
        self.sumsq += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
        if flat.dtype == np.float32:
            # floor(log2|x|) of a normal float32 is its exponent field - 127; field 0 holds the
            # zeros and the subnormals (< 2**-126, below the histogram's range)
            bits = flat.view(np.uint32)
            counts = np.bincount((bits >> 23) & 0xFF, minlength=256)
            zeros = int(flat.size - np.count_nonzero(bits & 0x7FFFFFFF))
            counts[0] -= zeros
            exps = np.arange(256) - 127
        else:
            nonzero = flat[flat != 0]
            zeros = int(flat.size - nonzero.size)
            _, e = np.frexp(np.abs(nonzero))  # |x| = m * 2**e, m in [0.5, 1): floor(log2|x|) = e - 1
            lo = int(e.min()) - 1 if e.size else 0
            counts = np.bincount(e - 1 - lo) if e.size else np.zeros(0, dtype=np.int64)
            exps = np.arange(counts.size) + lo
        self.zeros += zeros
        np.add.at(self.hist, np.clip(exps, HIST_MIN, HIST_MAX) - HIST_MIN, counts)
        if self.fraction >= 1.0:
            self.kept.append(flat)
        else:
            self.kept.append(flat[rng.random(flat.size) < self.fraction])

    def finish(self) -> ValueStats | None:
        if self.count == 0:
            if self.nonfinite == 0:
                return None
            return ValueStats(self.name, self.shape or [], 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, self.nonfinite)
        kept = np.concatenate(self.kept) if self.kept else np.zeros(0)
        mean = self.sum / self.count
        std = math.sqrt(max(self.sumsq / self.count - mean * mean, 0.0))
        pct = {}
        abs_pct = {}
        if kept.size:
            qs = np.percentile(kept, PERCENTILES)
            pct = {pct_key(p): float(q) for p, q in zip(PERCENTILES, qs)}
            mags = np.abs(kept[kept != 0])
            if mags.size:
                abs_pct = {pct_key(p): float(q) for p, q in zip(PERCENTILES, np.percentile(mags, PERCENTILES))}
        nz = np.nonzero(self.hist)[0]
        hist_lo = int(nz[0]) + HIST_MIN if nz.size else 0
        hist = self.hist[nz[0]:nz[-1] + 1].tolist() if nz.size else []
        return ValueStats(self.name, self.shape, int(self.count), self.min, self.max,
                          max(abs(self.min), abs(self.max)), mean, std, int(self.zeros), int(self.nonfinite),
                          pct, abs_pct, hist_lo, hist, exact_percentiles=self.fraction >= 1.0)


def profile(model, arrays, names=None, input_specs: list[dict] | None = None, batch_size: int = BATCH_SIZE,
            progress: bool | None = None) -> Profile:
    """Observed statistics of the model's float values on N samples (see ``ValueStats``).

    ``model``: an ONNX file or ModelProto. ``arrays``: what ``load_samples`` accepts.
    ``names``: the values to record (default: every float tensor that depends on a graph
    input, graph inputs and outputs included; weights and constants are left out).
    ``input_specs``: the model's inputs (default: read from the model). ``progress``: show a
    progress bar (default: on a terminal, when the run takes more than a second or so).
    """
    started = time.perf_counter()
    proto = load_model(model)
    specs = input_specs if input_specs is not None else model_input_specs(proto)
    specs = with_symbolic_batch(proto, specs)
    arrays = load_samples(arrays, specs)
    n = arrays[0].shape[0]
    graph_inputs = [s["name"] for s in specs]
    graph_outputs = [o.name for o in proto.graph.output]
    produced = dynamic_values(proto)
    if names is None:
        wanted = list(graph_inputs) + produced
        for o in graph_outputs:
            if o not in wanted:
                wanted.append(o)
    else:
        wanted = list(dict.fromkeys(names))
        known = set(graph_inputs) | {o for node in proto.graph.node for o in node.output if o}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise KilnError(f"{label_of(model)} computes no value named {', '.join(map(repr, unknown[:5]))}"
                            f"{' ...' if len(unknown) > 5 else ''}")
    computed = [w for w in wanted if w not in graph_inputs]
    runner = Runner(proto, specs, computed, optimize=False, label=label_of(model))
    rng = np.random.default_rng(0)

    def fraction_for(per_sample: int) -> float:
        total = per_sample * n
        return 1.0 if total <= PERCENTILE_SAMPLE_CAP else PERCENTILE_SAMPLE_CAP / total

    accs = {w: _Accumulator(w, fraction_for) for w in wanted}
    for spec, x in zip(specs, arrays):  # x: (N, *sample) whether or not the input has a batch axis
        if spec["name"] in accs:
            if x.dtype.kind == "f":
                accs[spec["name"]].add(x, n, [1, *x.shape[1:]] if spec.get("batch_axis") else list(x.shape[1:]), rng)
            else:
                del accs[spec["name"]]
    index = {name: i for i, name in enumerate(runner.output_names)}
    columns = [(w, index[w]) for w in computed if w in index]
    bar = _Progress(n, enabled=progress)
    batched_run = False
    pending: list[list[np.ndarray]] = []  # one-sample runs, added to the stats a batch at a time

    def flush():
        for k, (name, _) in enumerate(columns):
            acc = accs.get(name)
            if acc is not None and pending:
                ys = [run[k] for run in pending]
                acc.add(np.concatenate([y.reshape(1, -1) for y in ys]), len(ys), list(ys[0].shape), rng)
        pending.clear()

    try:
        for count, batched, results in runner.chunks(arrays, batch_size, lead=graph_outputs):
            batched_run = batched_run or batched
            for name, i in columns:
                y = results[i]
                if not isinstance(y, np.ndarray) or y.dtype.kind != "f":
                    accs.pop(name, None)
            if batched:
                for name, i in columns:
                    acc = accs.get(name)
                    if acc is not None:
                        acc.add(results[i], count, runner.sample_shapes[name], rng)
            else:
                pending.append([np.asarray(results[i]) for _, i in columns])
                if len(pending) >= batch_size:
                    flush()
            bar.advance(count)
        flush()
    finally:
        bar.close()
    values = {}
    for w in wanted:
        acc = accs.get(w)
        stats = acc.finish() if acc is not None else None
        if stats is not None:
            values[w] = stats
    name = proto.graph.name if not isinstance(model, (str, os.PathLike)) else Path(model).name
    return Profile(n_samples=int(n), values=values, model=name, inputs=graph_inputs, outputs=graph_outputs,
                   batched=batched_run, seconds=time.perf_counter() - started)


class _Progress:
    """A rich progress bar on stderr, shown on a terminal once a run takes more than ~1 s."""

    def __init__(self, total: int, enabled: bool | None):
        self.total, self.done = total, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self.bar = None
        self.task = None

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self.bar is None and time.perf_counter() - self.started > 1.0 and self.done < self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("profiling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("profile", total=self.total)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
