"""An HLS project on disk: build its C-simulation with g++ and run it as a separate process.

The testbench runs in its own process so a crash in generated code cannot take Python
down. ``csim`` returns outputs in the batch-major layout ONNX Runtime gives;
``compare`` runs ONNX Runtime on the project's copy of the user's model.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kiln.backends.hls.csim_process import csim_timeout, run_csim_binary
from kiln.backends.hls.toolchain import ap_types_dir, gxx
from kiln.compiled import CompiledModel
from kiln.errors import KilnError
from kiln.reference import OutputComparison, run_onnxruntime_intermediates, sample_shape


class HLSProject(CompiledModel):
    backend = "hls"
    last_run: dict | None = None  # the latest C-sim: {"seconds", "peak_rss_mb", "samples"}

    def ops_per_sample(self) -> int:
        """Operations of one sample (the emitters' estimate; older manifests: weights + activations)."""
        ops = self.manifest.get("ops_per_sample")
        if ops is None:
            ops = self.manifest.get("n_weights", 0) + sum(t["size"] for t in self.manifest.get("trace", []))
        return int(ops)

    def run_summary(self) -> str:
        """One line on the latest C-sim: samples, wall time, peak memory of the testbench."""
        r = self.last_run
        return f"C-sim: {r['samples']} samples in {r['seconds']:.2f} s, peak memory {r['peak_rss_mb']:.1f} MB"

    # --- build -------------------------------------------------------------------------
    def build(self, weights: str = "files", trace: bool = False, overflow: bool = False) -> Path:
        """g++ build of the testbench (make: rebuilds only what changed).

        ``weights="files"`` reads weights/*.bin at start-up (fast to build);
        ``weights="headers"`` compiles in the synthesis headers (same values).
        ``trace=True`` builds the variant that dumps every layer's output;
        ``overflow=True`` the one that counts saturations/wraps per layer output.
        """
        if gxx() is None:
            raise KilnError("g++ not found on PATH; install a C++ compiler to run C-simulation")
        variant = weights + ("-trace" if trace else "") + ("-overflow" if overflow else "")
        cmd = ["make", "-s", "-j2", f"AP_TYPES={ap_types_dir()}", f"WEIGHTS={weights}", f"TRACE={int(trace)}",
               f"OVERFLOW={int(overflow)}", f"build/{variant}/kiln_csim"]
        result = subprocess.run(cmd, cwd=self.path, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
            raise KilnError(f"C-simulation build failed in {self.path}:\n{tail}")
        return self.path / "build" / variant / "kiln_csim"

    # --- run ---------------------------------------------------------------------------
    def csim(self, inputs, return_all: bool = False, weights: str = "files", timeout: float | None = None):
        """Run the C-simulation on N samples; returns the output array (or a list, several outputs).

        ``timeout`` (seconds) replaces the limit scaled to the samples and the model's operations
        (csim_process.csim_timeout); ``last_run`` then holds the run's wall time and peak memory."""
        results, _, _ = self._run(inputs, weights, trace=False, timeout=timeout)
        return results if (return_all or len(results) > 1) else results[0]

    def csim_overflow(self, inputs, timeout: float | None = None) -> tuple[list[np.ndarray], list[dict]]:
        """C-simulation with overflow counting: (outputs, one row per checked layer output with
        "layer", "value", "precision", "source" and "count": values that saturated or wrapped,
        out of "total" = elements x samples)."""
        results, _, rows = self._run(inputs, "files", trace=False, overflow=True, timeout=timeout)
        return results, rows

    def csim_trace(self, inputs, timeout: float | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """C-simulation that also returns every layer's output: {value name: (N, *shape)}."""
        results, traced, _ = self._run(inputs, "files", trace=True, timeout=timeout)
        return results, traced

    def _run(self, inputs, weights: str, trace: bool, overflow: bool = False, timeout: float | None = None):
        arrays = self.check_inputs(inputs)
        binary = self.build(weights, trace, overflow)
        n = arrays[0].shape[0]
        packed = np.concatenate([a.reshape(n, -1).astype(np.float64) for a in arrays], axis=1)
        limit = timeout if timeout is not None else csim_timeout(n, self.ops_per_sample())
        run_dir = self.path / "csim"
        run_dir.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
            in_file, out_file, trace_file = Path(tmp) / "input.bin", Path(tmp) / "output.bin", Path(tmp) / "trace.bin"
            packed.astype("<f8").tofile(in_file)
            argv = [str(binary.resolve()), str(in_file), str(out_file), str(self.path / "weights")]
            run = run_csim_binary(argv + ([str(trace_file)] if trace else []), limit,
                                  f"C-simulation of {self.path} ({n} samples)")
            self.last_run = {"seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb, "samples": n}
            flat = np.fromfile(out_file, dtype="<f8")
            traced = self._read_trace(trace_file, n) if trace else {}
            counts = self._read_overflow(run.stdout, n) if overflow else []
        per_sample = sum(p["size"] for p in self.outputs)
        if flat.size != n * per_sample:
            raise KilnError(f"C-simulation wrote {flat.size} values, expected {n * per_sample}")
        flat = flat.reshape(n, per_sample)
        results, offset = [], 0
        for spec in self.outputs:
            results.append(flat[:, offset:offset + spec["size"]].reshape((n, *sample_shape(spec))).astype(np.float32))
            offset += spec["size"]
        return results, traced, counts

    def _read_overflow(self, stdout: str, n: int) -> list[dict]:
        lines = (line.split() for line in stdout.splitlines() if line.startswith("kiln_overflow "))
        counts = {int(k): int(c) for _, k, c in lines}
        checks = self.manifest.get("overflow_checks", [])
        sizes = {t["name"]: t["size"] for t in self.manifest["trace"]}
        if len(counts) != len(checks):
            raise KilnError(f"overflow-counting C-simulation reported {len(counts)} layer outputs, "
                            f"the manifest lists {len(checks)}")
        return [{**c, "count": counts[c["index"]], "total": sizes.get(c["value"], 0) * n} for c in checks]

    def _read_trace(self, path: Path, n: int) -> dict[str, np.ndarray]:
        specs = self.manifest["trace"]
        per_sample = sum(t["size"] for t in specs)
        flat = np.fromfile(path, dtype="<f8")
        if flat.size != n * per_sample:
            raise KilnError(f"trace holds {flat.size} values, expected {n * per_sample}")
        flat = flat.reshape(n, per_sample)
        out, offset = {}, 0
        for t in specs:
            out[t["name"]] = flat[:, offset:offset + t["size"]].reshape((n, *t["shape"])).astype(np.float32)
            offset += t["size"]
        return out

    def trace_compare(self, inputs) -> list[dict]:
        """Per layer: Kiln's output against ONNX Runtime's value of the same name (where the
        model has one; fused layers keep the name of the last op they replace)."""
        _, traced = self.csim_trace(inputs)
        arrays = self.check_inputs(inputs)
        reference = run_onnxruntime_intermediates(self.path / "model.onnx", self.inputs, arrays, list(traced))
        rows = []
        for t in self.manifest["trace"]:
            got = traced[t["name"]].reshape(len(arrays[0]), -1).astype(np.float64)
            ref = reference.get(t["name"])
            row = {"layer": t["layer"], "op": t.get("op", ""), "value": t["name"], "max_abs_error": None,
                   "relative_error": None}
            if ref is not None and ref.reshape(len(got), -1).shape == got.shape:
                err = float(np.max(np.abs(got - ref.reshape(len(got), -1))))
                scale = float(np.max(np.abs(ref))) or 1.0
                row.update(max_abs_error=err, relative_error=err / scale)
            rows.append(row)
        return rows

    def compare(self, inputs, outputs=None) -> list[OutputComparison]:
        outputs = outputs if outputs is not None else self.csim(inputs, return_all=True)
        return self._compare(outputs, inputs)
