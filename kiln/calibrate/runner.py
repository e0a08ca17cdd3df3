"""ONNX Runtime over N samples: whole batches where the model allows, one sample per run otherwise."""

from __future__ import annotations

import os

import numpy as np

from kiln.calibrate.samples import load_model, load_samples, model_input_specs
from kiln.reference import numpy_type, ort_error, ort_session

BATCH_SIZE = 256


def dynamic_values(proto) -> list[str]:
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


class Runner:
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


def _outputs_as_samples(runner: Runner, arrays, names: list[str]) -> list[np.ndarray]:
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
    proto = load_model(model)
    specs = input_specs or model_input_specs(proto)
    arrays = load_samples(arrays, specs)
    runner = Runner(proto, specs, [], optimize=optimize, label=label_of(model))
    return _outputs_as_samples(runner, arrays, [o.name for o in proto.graph.output])


def label_of(model) -> str:
    return "the model" if not isinstance(model, (str, os.PathLike)) else str(model)
