"""Calibration: the observed ranges of a model's values on sample inputs, fixed-point types
chosen from them, and int8 Q/DQ ONNX models calibrated on the same samples.

* ``load_samples`` reads a ``.npy`` (one model input) or ``.npz`` (one array per input, by
  name or in order) and checks it against the model's inputs.
* ``profile`` runs ONNX Runtime with every input-dependent float tensor exposed as an output
  (whole batches at once when the model's batch axis is symbolic, else one sample per run)
  and records per value: min, max, abs max, mean, std, the 0.1/1/25/50/75/99/99.9
  percentiles of x and of |x| (non-zero elements), and a histogram of floor(log2|x|), in the
  spirit of hls4ml's profiling. The result is a ``Profile``, saved in a project as
  ``kiln_profile.json``.
* ``choose_fixed`` turns one value's stats into an ``ap_fixed`` type of a given width.
* ``write_int8_qdq`` writes an int8 QuantizeLinear/DequantizeLinear model with ONNX
  Runtime's static quantizer, calibrated on the samples.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.fsutil import load_array_file
from kiln.precision import FixedType
from kiln.reference import numpy_type, ort_error, ort_session

PROFILE_FILE = "kiln_profile.json"
PROFILE_VERSION = 1
PERCENTILES = (0.1, 1.0, 25.0, 50.0, 75.0, 99.0, 99.9)
# floor(log2|x|) histogram bins cover [HIST_MIN, HIST_MAX]; values beyond land in the end bins
HIST_MIN, HIST_MAX = -64, 63
# percentiles are exact up to this many elements per value; beyond it they come from a
# uniform random subsample of about this size (min/max/abs max/histogram are always exact)
PERCENTILE_SAMPLE_CAP = 1 << 18
BATCH_SIZE = 256

_ONNX_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _pct_key(p: float) -> str:
    return f"{p:g}"


# --------------------------------------------------------------------------------------------
# profile data


@dataclass
class ValueStats:
    """What ``profile`` observed of one tensor over all samples (every element of every sample)."""

    name: str
    shape: list                  # one sample's shape as ONNX Runtime computes it (batch axis as 1)
    count: int                   # finite elements observed
    min: float
    max: float
    abs_max: float
    mean: float
    std: float
    zeros: int                   # elements exactly 0
    nonfinite: int = 0           # inf/nan elements (left out of every other figure)
    percentiles: dict = field(default_factory=dict)      # of x: "0.1" .. "99.9" -> value
    abs_percentiles: dict = field(default_factory=dict)  # of |x| over non-zero finite elements
    hist_lo: int = 0             # floor(log2|x|) of hist[0]
    hist: list = field(default_factory=list)  # counts of non-zero |x| per floor(log2|x|) bin
    exact_percentiles: bool = True

    @property
    def abs_min_nonzero_log2(self) -> int | None:
        """floor(log2) of the smallest non-zero |x| (from the histogram), None if all zero."""
        for i, c in enumerate(self.hist):
            if c:
                return self.hist_lo + i
        return None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ValueStats":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Profile:
    """Per-value statistics of a model on ``n_samples`` samples; ``values`` in graph order
    (graph inputs first)."""

    n_samples: int
    values: dict                 # name -> ValueStats
    model: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    batched: bool = False        # ONNX Runtime ran whole batches (else one sample per run)
    seconds: float = 0.0
    version: int = PROFILE_VERSION

    def __getitem__(self, name: str) -> ValueStats:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def to_dict(self) -> dict:
        return {"version": self.version, "model": self.model, "n_samples": self.n_samples,
                "batched": self.batched, "seconds": round(self.seconds, 3), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "percentiles": [_pct_key(p) for p in PERCENTILES],
                "values": [v.to_dict() for v in self.values.values()]}

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        values = {v["name"]: ValueStats.from_dict(v) for v in d["values"]}
        return cls(n_samples=int(d["n_samples"]), values=values, model=d.get("model", ""),
                   inputs=list(d.get("inputs", [])), outputs=list(d.get("outputs", [])),
                   batched=bool(d.get("batched", False)), seconds=float(d.get("seconds", 0.0)),
                   version=int(d.get("version", PROFILE_VERSION)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Profile":
        return cls.from_dict(json.loads(text))

    def save(self, path) -> Path:
        """Write atomically (a temporary file renamed over ``path``)."""
        path = Path(path)
        _atomic_write_bytes(path, self.to_json().encode())
        return path


def load_profile(path) -> Profile:
    """Read a ``kiln_profile.json``; a missing or corrupt file is a KilnError."""
    path = Path(path)
    try:
        return Profile.from_json(path.read_text())
    except FileNotFoundError:
        raise KilnError(f"{path}: no such profile file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise KilnError(f"{path} is not a valid Kiln profile ({type(exc).__name__}: {exc}); "
                        "profile again with `kiln report PROJECT --data SAMPLES.npy`") from None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise KilnError(f"cannot write {path}: {exc.strerror or exc}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# inputs


def model_input_specs(model) -> list[dict]:
    """The model's inputs in the form of kiln_manifest.json's "inputs": name, shape (a symbolic
    batch axis as 1, other symbolic dims as None), dtype, batch_axis (axis 0 symbolic or 1:
    the rule of Kiln's frontend)."""
    import onnx

    proto = _load_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    specs = []
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        batch = bool(dims) and (shape[0] is None or shape[0] == 1)
        if batch:
            shape[0] = 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "float32"
        specs.append({"name": inp.name, "shape": shape, "dtype": dtype, "batch_axis": batch,
                      "symbolic_batch": bool(dims) and not dims[0].HasField("dim_value")})
    return specs


def _sample_shape(spec: dict) -> list:
    return list(spec["shape"][1:] if spec.get("batch_axis") else spec["shape"])


def load_samples(path_or_array, input_specs: list[dict]) -> list[np.ndarray]:
    """Sample inputs, one (N, *sample_shape) array per model input in order.

    ``path_or_array``: a ``.npy`` file (a model with one input), a ``.npz`` file (one array per
    input, by input name, else in order), an array, a list of arrays or a dict by name.
    Shapes, dtype kinds and sample counts are checked against ``input_specs`` (dicts with
    "name", "shape", "batch_axis" and optionally "dtype", like kiln_manifest.json's
    "inputs"); every problem is a KilnError naming the file and what is wrong.
    """
    names = [s["name"] for s in input_specs]
    if not names:
        raise KilnError("the model has no inputs, so there is nothing to feed samples to")
    where = "samples"
    if isinstance(path_or_array, (str, os.PathLike)):
        path = Path(path_or_array)
        where = str(path)
        data = load_array_file(path, "sample")
        if isinstance(data, dict) and not data:
            raise KilnError(f"{path}: the .npz file holds no arrays")
    else:
        data = path_or_array
    if isinstance(data, dict):
        if all(n in data for n in names):
            arrays = [data[n] for n in names]
        elif len(data) == len(names) and not any(k in names for k in data):
            arrays = list(data.values())  # in order (np.savez(f, a, b) names them arr_0, arr_1)
        else:
            missing = [n for n in names if n not in data]
            raise KilnError(f"{where}: has arrays {sorted(data)} but the model's inputs are {names}; "
                            f"missing {missing} (name each array after its input, or give them in order)")
    elif isinstance(data, (list, tuple)):
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(names):
        hint = " (use a .npz with one array per input)" if len(names) > 1 and len(arrays) == 1 else ""
        raise KilnError(f"{where}: the model has {len(names)} input(s) {names}, got {len(arrays)} array(s){hint}")
    out, n = [], None
    for spec, x in zip(input_specs, arrays):
        x = np.asarray(x)
        want = _sample_shape(spec)
        shown = ", ".join("?" if d is None else str(d) for d in want)
        expected = f"(N{', ' if want else ''}{shown})"
        if x.dtype.kind not in "fiub":
            raise KilnError(f"{where}: input {spec['name']!r} has dtype {x.dtype}; expected a numeric array")
        dtype = spec.get("dtype", "float32")
        is_float = str(dtype).startswith(("float", "bfloat"))
        if is_float and x.dtype.kind not in "fiu" or not is_float and x.dtype.kind not in "iub":
            raise KilnError(f"{where}: input {spec['name']!r} has dtype {x.dtype} but the model's input is "
                            f"{dtype} (expected {'a float' if is_float else 'an integer'} array)")
        ok = x.ndim == len(want) + 1 and all(w is None or w == d for w, d in zip(want, x.shape[1:]))
        if not ok:
            raise KilnError(f"{where}: input {spec['name']!r} has shape {tuple(x.shape)}; the model expects "
                            f"{expected}, a leading axis of N samples")
        if x.shape[0] == 0:
            raise KilnError(f"{where}: input {spec['name']!r} holds no samples (N = 0)")
        if n is not None and x.shape[0] != n:
            raise KilnError(f"{where}: inputs disagree on the number of samples ({n} vs {x.shape[0]})")
        n = x.shape[0]
        if is_float and x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise KilnError(f"{where}: input {spec['name']!r} contains inf or NaN")
        out.append(x)
    return out


# --------------------------------------------------------------------------------------------
# running ONNX Runtime


def _load_model(model):
    """A ModelProto, or the ONNX file read by the frontend's reader (its checks and messages)."""
    from kiln.frontend.onnx_loader import read_onnx

    return read_onnx(model)[0]


def _dynamic_values(proto) -> list[str]:
    """Names of the node outputs that depend on a graph input, in graph order."""
    initializers = {t.name for t in proto.graph.initializer}
    dynamic = {i.name for i in proto.graph.input if i.name not in initializers}
    order = []
    for node in proto.graph.node:
        if any(i in dynamic for i in node.input if i):
            for o in node.output:
                if o and o not in dynamic:
                    dynamic.add(o)
                    order.append(o)
    return order


class _Runner:
    """An ONNX Runtime session with extra tensors exposed, fed whole batches when the batch
    axis is symbolic and the model accepts them, one sample per run otherwise."""

    def __init__(self, proto, specs: list[dict], extra_outputs: list[str], optimize: bool, label: str):
        self.session = ort_session(proto, f"ONNX Runtime cannot load {label}", extra_outputs, optimize)
        self.label = label
        self.specs = specs
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.types = {i.name: numpy_type(i.type) for i in self.session.get_inputs()}
        self.batched = all(s.get("batch_axis") and s.get("symbolic_batch", True) for s in specs) and bool(specs)

    def _feed(self, arrays, lo: int, hi: int, batched: bool) -> dict:
        feed = {}
        for spec, x in zip(self.specs, arrays):
            part = x[lo:hi] if batched or spec.get("batch_axis") else x[lo]
            feed[spec["name"]] = np.ascontiguousarray(part, dtype=self.types.get(spec["name"], np.float32))
        return feed

    def run(self, arrays, lo: int, hi: int, batched: bool) -> list[np.ndarray]:
        try:
            return self.session.run(None, self._feed(arrays, lo, hi, batched))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ort_error(f"ONNX Runtime failed on {self.label}", exc) from None

    def chunks(self, arrays, batch_size: int = BATCH_SIZE, lead=()):
        """Yield (n, batched, results) over all samples, whole batches where the model allows.

        The first batch decides, against a run of sample 0 alone: every float value must hold
        either batch-size times one sample's elements (in any layout: torch's
        MultiheadAttention puts the batch on axis 1) or, batch-independent, the same values as
        the one-sample run; the ``lead`` values (graph outputs) must hold the batch on axis 0
        and sample 0's values. Otherwise (or if the batch fails, e.g. a Reshape with batch
        size 1 baked in) every sample runs alone. ``self.sample_shapes``: one sample's shape
        of every output."""
        n = arrays[0].shape[0]
        lo = 0
        self.sample_shapes = {}
        if self.batched and n > 1:
            hi = min(n, batch_size)
            try:
                results = self.session.run(None, self._feed(arrays, 0, hi, True))
                single = self.session.run(None, self._feed(arrays, 0, 1, False))
                keeps = self._consistent(results, single, hi, set(lead))
            except Exception:  # onnxruntime raises its own exception types
                keeps = False
            if keeps:
                self.sample_shapes = {name: list(np.shape(v)) for name, v in zip(self.output_names, single)}
                yield hi, True, results
                lo = hi
                while lo < n:
                    hi = min(n, lo + batch_size)
                    yield hi - lo, True, self.run(arrays, lo, hi, True)
                    lo = hi
                return
        for s in range(lo, n):
            results = self.run(arrays, s, s + 1, False)
            if not self.sample_shapes:
                self.sample_shapes = {name: list(np.shape(v)) for name, v in zip(self.output_names, results)}
            yield 1, False, results

    def _consistent(self, results, single, hi: int, lead: set) -> bool:
        for name, b, s in zip(self.output_names, results, single):
            b, s = np.asarray(b), np.asarray(s)
            if b.dtype.kind != "f":
                continue
            tol = 1e-6 + 1e-4 * float(np.max(np.abs(s))) if s.size else 1e-6
            if name in lead:
                if not (b.ndim and b.shape[0] == hi and b[:1].shape == s.shape
                        and np.allclose(b[:1], s, rtol=1e-4, atol=tol, equal_nan=True)):
                    return False
            elif b.size == hi * s.size:
                continue
            elif not (b.shape == s.shape and np.allclose(b, s, rtol=1e-4, atol=tol, equal_nan=True)):
                return False
        return True


def _outputs_as_samples(runner: _Runner, arrays, names: list[str]) -> list[np.ndarray]:
    """The named outputs for every sample, as (N, *one sample's shape without batch axis)."""
    idx = [runner.output_names.index(n) for n in names]
    per = [[] for _ in names]
    batch_fed = any(s.get("batch_axis") for s in runner.specs)
    for _, batched, results in runner.chunks(arrays, lead=names):
        for k, i in enumerate(idx):
            y = np.asarray(results[i])
            if batched:
                per[k].append(y)
            else:
                per[k].append(y if batch_fed and y.ndim and y.shape[0] == 1 else y[None])
    return [np.concatenate(p).astype(np.float64) for p in per]


def run_model(model, arrays, input_specs: list[dict] | None = None, optimize: bool = True) -> list[np.ndarray]:
    """ONNX Runtime's outputs of ``model`` on N samples: (N, ...) float64 arrays, in graph
    output order, batched where the model allows it."""
    proto = _load_model(model)
    specs = input_specs or model_input_specs(proto)
    arrays = load_samples(arrays, specs)
    runner = _Runner(proto, specs, [], optimize=optimize, label=_label(model))
    return _outputs_as_samples(runner, arrays, [o.name for o in proto.graph.output])


def _label(model) -> str:
    return "the model" if not isinstance(model, (str, os.PathLike)) else str(model)


# --------------------------------------------------------------------------------------------
# profiling


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
            pct = {_pct_key(p): float(q) for p, q in zip(PERCENTILES, qs)}
            mags = np.abs(kept[kept != 0])
            if mags.size:
                abs_pct = {_pct_key(p): float(q) for p, q in zip(PERCENTILES, np.percentile(mags, PERCENTILES))}
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
    proto = _load_model(model)
    specs = input_specs if input_specs is not None else model_input_specs(proto)
    specs = _with_symbolic_batch(proto, specs)
    arrays = load_samples(arrays, specs)
    n = arrays[0].shape[0]
    graph_inputs = [s["name"] for s in specs]
    graph_outputs = [o.name for o in proto.graph.output]
    produced = _dynamic_values(proto)
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
            raise KilnError(f"{_label(model)} computes no value named {', '.join(map(repr, unknown[:5]))}"
                            f"{' ...' if len(unknown) > 5 else ''}")
    computed = [w for w in wanted if w not in graph_inputs]
    runner = _Runner(proto, specs, computed, optimize=False, label=_label(model))
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


def _with_symbolic_batch(proto, specs: list[dict]) -> list[dict]:
    """Manifest specs say nothing of whether the batch axis is symbolic in the ONNX file."""
    found = {s["name"]: s for s in model_input_specs(proto)}
    out = []
    for s in specs:
        s = dict(s)
        if "symbolic_batch" not in s:
            s["symbolic_batch"] = found.get(s["name"], {}).get("symbolic_batch", False)
        out.append(s)
    return out


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


# --------------------------------------------------------------------------------------------
# fixed-point types from ranges


def choose_fixed(stats, bits: int, margin_bits: int = 1) -> FixedType:
    """A signed ``fixed<bits, I>`` that holds the observed range with ``margin_bits`` to spare.

    Rule: I0 is the fewest integer bits (sign included) with which a signed type holds
    [min, max]: 2**(I0-1) >= -min and 2**(I0-1) > max, at least 1 (a sign bit only).
    I = I0 + margin_bits, and one more if ``max`` still exceeds the type's largest value
    ``2**(I-1) - lsb`` (possible only with margin 0 and very few fractional bits). The
    fractional bits are the rest: bits - I. So max 5.0 needs I0 = 4 (range [-8, 8)) and
    gets I = 5 with the default margin: fixed<16,5> for 16 bits.

    * All zero (or no finite value seen): I = 1 + margin_bits, i.e. a small range of
      +-2**margin_bits; the values carry no information on the type they need.
    * Always signed: an unsigned type would save one bit on values >= 0 (ReLU outputs), but a
      signed one stays correct when a deployment input drives such a value below zero where
      the calibration set did not; one bit of ``bits`` is the price.
    * I is capped at ``bits`` (no fractional bits): a range that needs more integer bits
      than ``bits`` does not fit, ``fits`` says so.

    ``stats``: a ``ValueStats`` or a mapping with "min" and "max".
    """
    if bits < 1:
        raise KilnError(f"fixed-point width {bits} must be at least 1")
    if margin_bits < 0:
        raise KilnError(f"margin_bits {margin_bits} must be >= 0")
    lo, hi = _range_of(stats)
    if lo == 0 and hi == 0:
        return FixedType(bits, min(bits, 1 + margin_bits))
    need = 1
    if hi > 0:
        need = max(need, math.floor(math.log2(hi)) + 2)       # 2**(I0-1) > hi
    if lo < 0:
        need = max(need, math.ceil(math.log2(-lo)) + 1)       # 2**(I0-1) >= -lo
    integer = min(bits, need + margin_bits)
    t = FixedType(bits, integer)
    while integer < bits and hi > t.max_value:
        integer += 1
        t = FixedType(bits, integer)
    return t


def fits(stats, t) -> bool:
    """Whether every observed value of ``stats`` lies in the range of fixed type ``t``."""
    lo, hi = _range_of(stats)
    return t.min_value <= lo and hi <= t.max_value


def _range_of(stats) -> tuple[float, float]:
    if isinstance(stats, ValueStats):
        lo, hi = stats.min, stats.max
    else:
        lo, hi = stats["min"], stats["max"]
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise KilnError(f"cannot choose a fixed-point type for a range [{lo}, {hi}]")
    return lo, hi


# --------------------------------------------------------------------------------------------
# int8 Q/DQ


def write_int8_qdq(model_path, arrays, out_path, per_channel: bool = False, activation: str = "uint8",
                   input_specs: list[dict] | None = None, preprocess: bool = True) -> Path:
    """Write an int8 QuantizeLinear/DequantizeLinear ONNX model of ``model_path``, calibrated
    (min/max) on ``arrays`` with ONNX Runtime's ``quantize_static``: QDQ format, weights
    QInt8 (per output channel with ``per_channel``), activations QUInt8 (``activation=
    "uint8"``, asymmetric, the default of ONNX Runtime on x86) or QInt8 (``"int8"``). The
    model is first run through ``quant_pre_process`` (shape inference and graph cleanup),
    skipped if that fails. ``out_path`` is written atomically; returns it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}.get(str(activation).lower())
    if act is None:
        raise KilnError(f"activation type {activation!r}: use 'uint8' or 'int8'")
    model_path = Path(model_path)
    out_path = Path(out_path)
    proto = _load_model(model_path)
    specs = _with_symbolic_batch(proto, input_specs if input_specs is not None else model_input_specs(proto))
    samples = load_samples(arrays, specs)
    if not out_path.parent.is_dir():
        raise KilnError(f"cannot write {out_path}: directory {out_path.parent} does not exist")
    # calibrate on whole batches where the float model gives the same results that way
    runner = _Runner(proto, specs, [], optimize=True, label=str(model_path))
    _, batched, _ = next(runner.chunks(samples, lead=[o.name for o in proto.graph.output]))
    feeds_types = runner.types

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = samples[0].shape[0]
            step = BATCH_SIZE if batched else 1
            self.bounds = iter([(lo, min(n, lo + step)) for lo in range(0, n, step)])

        def get_next(self):
            b = next(self.bounds, None)
            if b is None:
                return None
            lo, hi = b
            return {s["name"]: np.ascontiguousarray(x[lo:hi] if batched or s.get("batch_axis") else x[lo],
                                                    dtype=feeds_types.get(s["name"], np.float32))
                    for s, x in zip(specs, samples)}

    try:
        with tempfile.TemporaryDirectory(prefix=".kiln-qdq-", dir=out_path.resolve().parent) as tmp:
            source = Path(tmp) / "float.onnx"
            import onnx

            onnx.save(proto, str(source))
            if preprocess:
                pre = Path(tmp) / "preprocessed.onnx"
                try:
                    from onnxruntime.quantization.shape_inference import quant_pre_process

                    _quiet(quant_pre_process, str(source), str(pre))
                    if pre.is_file():
                        source = pre
                except Exception:  # optional step: quantize the model as given
                    pass
            staged = Path(tmp) / "qdq.onnx"
            try:
                _quiet(quantize_static, str(source), str(staged), Reader(), quant_format=QuantFormat.QDQ,
                       per_channel=per_channel, activation_type=act, weight_type=QuantType.QInt8)
            except KilnError:
                raise
            except Exception as exc:  # the quantizer raises many exception types
                raise ort_error(f"int8 quantization of {model_path} failed", exc) from None
            os.chmod(staged, 0o666 & ~_umask())
            os.replace(staged, out_path)
    except OSError as exc:
        raise KilnError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return out_path


def _quiet(fn, *args, **kwargs):
    """Run an onnxruntime.quantization call without its logging noise on the console."""
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    finally:
        root.setLevel(level)


def count_qdq_nodes(model) -> dict[str, int]:
    """Number of QuantizeLinear and DequantizeLinear nodes of an ONNX model."""
    proto = _load_model(model)
    ops = [n.op_type for n in proto.graph.node]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear")}


def compare_models(reference_model, candidate_model, arrays, input_specs: list[dict] | None = None):
    """Per output of ``reference_model``: max abs error, relative error and argmax agreement
    (for (N, classes) outputs) of ``candidate_model``'s outputs on the same samples
    (``kiln.reference.OutputComparison`` rows)."""
    from kiln.reference import compare_outputs

    ref_proto = _load_model(reference_model)
    specs = input_specs if input_specs is not None else model_input_specs(ref_proto)
    samples = load_samples(arrays, _with_symbolic_batch(ref_proto, specs))
    ref = run_model(ref_proto, samples, _with_symbolic_batch(ref_proto, specs))
    cand_proto = _load_model(candidate_model)
    got = run_model(cand_proto, samples, _with_symbolic_batch(cand_proto, specs))
    outputs = [{"name": o.name} for o in ref_proto.graph.output]
    return compare_outputs(outputs, got, ref)
