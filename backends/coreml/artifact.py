"""A compiled CoreML artifact on disk: predictions and latency where CoreML runs (macOS).

Off macOS, ``run`` and ``bench`` raise a KilnError saying so; the package was checked at
compile time (reload + value inference, see the manifest's ``value_inference_check``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from kiln.compiled import CompiledModel
from kiln.errors import KilnError
from kiln.reference import sample_shape

COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")


def require_macos(what: str) -> None:
    if sys.platform != "darwin":
        raise KilnError(f"{what} needs CoreML, which runs only on macOS (this is {sys.platform}); the package was "
                        "checked when it was compiled (reload, shapes, MIL value inference: see "
                        "kiln_manifest.json's value_inference_check). Copy the artifact to a Mac to run it.")


class CoreMLArtifact(CompiledModel):
    backend = "coreml"

    @property
    def package(self):
        return self.path / self.manifest["package"]["file"]

    def load(self, compute_units: str | None = None):
        require_macos("running a CoreML package")
        from kiln.backends.coreml.compiler import require_coremltools

        ct = require_coremltools()
        unit = compute_units or self.manifest.get("compute_units", "ALL")
        try:
            return ct.models.MLModel(str(self.package), compute_units=getattr(ct.ComputeUnit, unit))
        except Exception as exc:  # noqa: BLE001
            raise KilnError(f"CoreML cannot load {self.package}: {exc}") from None

    def _feed(self, arrays, s: int) -> dict:
        feed = {}
        for spec, x in zip(self.inputs, arrays):
            one = x[s:s + 1] if spec.get("batch_axis") else x[s]
            dtype = np.float32 if spec["dtype"].startswith("float") else np.int32
            feed[spec["coreml_name"]] = one.astype(dtype).reshape(spec["shape"])
        return feed

    def run(self, inputs, return_all: bool = False, compute_units: str | None = None, model=None):
        """Outputs for N samples (one prediction per sample), shaped like ONNX Runtime's."""
        arrays = self.check_inputs(inputs)
        model = model or self.load(compute_units)
        per_output = [[] for _ in self.outputs]
        for s in range(arrays[0].shape[0]):
            result = model.predict(self._feed(arrays, s))
            for k, spec in enumerate(self.outputs):
                per_output[k].append(np.asarray(result[spec["coreml_name"]]).reshape(sample_shape(spec)))
        results = [np.stack(o) for o in per_output]
        return results if (return_all or len(results) > 1) else results[0]

    def compare(self, inputs, outputs=None):
        outputs = outputs if outputs is not None else self.run(inputs, return_all=True)
        return self._compare(outputs, inputs)

    def random_inputs(self, n: int = 1, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        out = []
        for spec in self.inputs:
            shape = (n, *sample_shape(spec))
            out.append(rng.standard_normal(shape).astype(np.float32) if spec["dtype"].startswith("float")
                       else rng.integers(0, 2, shape).astype(spec["dtype"]))
        return out

    def bench(self, repeat: int = 100, warmup: int = 10, inputs=None, units=COMPUTE_UNITS) -> dict:
        """Median/p10/p90 latency (seconds, wall clock around ``predict``) per compute unit."""
        require_macos("benchmarking a CoreML package")
        if repeat < 1 or warmup < 0:
            raise KilnError("--repeat must be >= 1 and --warmup >= 0")
        arrays = self.check_inputs(inputs) if inputs is not None else self.random_inputs(1)
        feed = self._feed(arrays, 0)
        report = {}
        for unit in units:
            model = self.load(unit)
            for _ in range(warmup):
                model.predict(feed)
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter_ns()
                model.predict(feed)
                times.append((time.perf_counter_ns() - t0) * 1e-9)
            report[unit] = {"median_s": float(np.median(times)), "p10_s": float(np.percentile(times, 10)),
                            "p90_s": float(np.percentile(times, 90)), "runs": repeat}
        return report
