#!/usr/bin/env python
"""Benchmark: hls4ml 1.3.0 vs Kiln, model -> HLS C++ project -> g++ C-simulation.

Not a test. Run from the repo root::

    .venv/bin/python bench/bench_compile_csim.py [--repeat N] [--keep DIR] [-v]

Exit status: 0, or 1 if kiln is importable but compile/csim raised (kiln not
available yet -> "kiln not available" and status 0). hls4ml errors propagate.

Network: the jet-tagging MLP of ``examples/make_jet_mlp.py``
(16-64-32-32-5, ReLU, Softmax), 256 standard-normal samples (seed 0).

(a) hls4ml: ``config_from_pytorch_model`` -> ``convert_from_pytorch_model``
    (backend 'Vitis', io_parallel, ap_fixed<16,6>) -> ``compile()`` (writes the
    project and builds it with g++ into a shared lib) -> ``predict(x)``.
(b) Kiln: ``kiln.compile(onnx, board="vu13p", precision="fixed<16,6>")`` ->
    ``project.csim(x)`` (see ``kiln_compile_and_csim``).

Both sides start from a fresh temp dir and report the wall time of each
stage; ``total`` is the sum of the stages (package imports are shown
separately and not counted). Accuracy is measured against ONNX Runtime on the
exported ONNX model. With ``--repeat N`` every stage reports the median of N
cold runs (each in a new output dir).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from examples.make_jet_mlp import build_jet_mlp, export, make_samples, torch_reference  # noqa: E402

HLS4ML_PRECISION = "ap_fixed<16,6>"
KILN_PRECISION = "fixed<16,6>"
KILN_BOARD = "vu13p"


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def quiet(log_path: Path | None, enabled: bool = True):
    """Redirect fd 1/2 (Python prints *and* subprocess / C-level output) to ``log_path``."""
    if not enabled or log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with open(log_path, "ab") as f:
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class Stopwatch:
    """Collects named stage durations (seconds), in insertion order."""

    def __init__(self):
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + (time.perf_counter() - t0)


def accuracy(y: np.ndarray, y_ref: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64).reshape(y_ref.shape)
    err = np.abs(y - y_ref)
    return {
        "max_abs": float(err.max()),
        "mean_abs": float(err.mean()),
        "argmax_agree": float(np.mean(y.argmax(-1) == y_ref.argmax(-1))),
    }


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- (a) hls4ml
def hls4ml_compile_and_predict(model, x: np.ndarray, workdir: Path, timings: dict | None = None,
                               verbose: bool = False, input_shape: tuple | None = None,
                               granularity: str = "model") -> np.ndarray:
    """hls4ml 1.3.0 PyTorch path; fills ``timings`` with per-stage seconds, returns y (N, ...) as hls4ml
    gives it (flattened per sample). ``input_shape`` excludes the batch dim (default ``x.shape[1:]``);
    ``granularity`` is passed to ``config_from_pytorch_model`` ("name": per-layer default types/tables)."""
    import hls4ml  # imported by the caller first (timed there); cheap here

    sw = Stopwatch()
    log = workdir / "hls4ml.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with quiet(log, enabled=not verbose):
        with sw.stage("config_from_pytorch_model"):
            cfg = hls4ml.utils.config_from_pytorch_model(
                model,
                input_shape=tuple(input_shape) if input_shape is not None else tuple(x.shape[1:]),
                granularity=granularity,
                backend="Vitis",
                default_precision=HLS4ML_PRECISION,
                default_reuse_factor=1,
            )
        with sw.stage("convert_from_pytorch_model"):
            hls_model = hls4ml.converters.convert_from_pytorch_model(
                model,
                output_dir=str(workdir / "hls4ml_prj"),
                project_name="myproject",
                backend="Vitis",
                io_type="io_parallel",
                hls_config=cfg,
            )
        # compile() == write() (emit C++ project) + _compile() (build_lib.sh: g++ -O3 -> .so, dlopen).
        # Wrap the instance methods so we can also report that split without changing behaviour.
        sub = Stopwatch()
        orig_write, orig_build = hls_model.write, hls_model._compile

        def _timed_write():
            with sub.stage("write"):
                return orig_write()

        def _timed_build():
            with sub.stage("g++"):
                return orig_build()

        hls_model.write, hls_model._compile = _timed_write, _timed_build
        with sw.stage("compile"):
            hls_model.compile()
        hls_model.write, hls_model._compile = orig_write, orig_build
        with sw.stage("predict"):
            y = hls_model.predict(np.ascontiguousarray(x, dtype=np.float32))
    if timings is not None:
        timings.update(sw.times)
        timings["compile:write"] = sub.times.get("write", float("nan"))
        timings["compile:g++"] = sub.times.get("g++", float("nan"))
    return np.asarray(y)


# --------------------------------------------------------------------------- (b) Kiln
class KilnUnavailable(RuntimeError):
    pass


def kiln_compile_and_csim(onnx_path, x: np.ndarray, workdir, timings: dict | None = None) -> np.ndarray:
    """Kiln: ONNX -> HLS project (``kiln.compile``) -> bit-accurate C-sim (``project.csim``).

    Returns y as a numpy array (N, 5). Raises ``KilnUnavailable`` if the kiln
    package (or the part of it this needs) does not exist yet.
    """
    try:
        import kiln
    except ImportError as e:
        raise KilnUnavailable(f"import kiln failed: {e}") from e
    if not callable(getattr(kiln, "compile", None)):
        raise KilnUnavailable("kiln.compile is missing")

    sw = Stopwatch()
    workdir = Path(workdir)
    try:
        with sw.stage("kiln.compile"):
            project = kiln.compile(str(onnx_path), board=KILN_BOARD, output_dir=str(workdir),
                                   precision=KILN_PRECISION)
    except ModuleNotFoundError as e:  # core package still being written
        if (e.name or "").split(".")[0] == "kiln":
            raise KilnUnavailable(f"{e}") from e
        raise
    with sw.stage("project.csim"):
        y = project.csim(np.ascontiguousarray(x, dtype=np.float32))
    if timings is not None:
        timings.update(sw.times)
    return np.asarray(y)


# --------------------------------------------------------------------------- driver
def median_times(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(runs[0])
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def tool_versions() -> dict[str, str]:
    import onnxruntime
    import torch

    v = {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
         "onnxruntime": onnxruntime.__version__}
    try:
        gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        gxx = gxx.removeprefix("g++ ")
    except (OSError, IndexError):
        gxx = "not found"
    v["g++"] = gxx
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hls4ml vs Kiln compile + C-sim benchmark")
    ap.add_argument("--repeat", type=int, default=1, help="cold runs per side; stage times are medians")
    ap.add_argument("--samples", type=Path, default=None,
                    help="input .npy (float32 (N,16)); default: 256 standard-normal samples, seed 0")
    ap.add_argument("--keep", type=Path, default=None, help="work in this dir and keep it (default: temp dir)")
    ap.add_argument("--skip-hls4ml", action="store_true")
    ap.add_argument("--skip-kiln", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="do not hide hls4ml/kiln output")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 110)

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root_ctx = contextlib.nullcontext(str(args.keep.resolve()))
    else:
        root_ctx = tempfile.TemporaryDirectory(prefix="kiln_bench_")

    with root_ctx as root_s:
        root = Path(root_s)

        # ---- reference: torch model -> ONNX -> ONNX Runtime
        import onnxruntime as ort

        model = build_jet_mlp()
        onnx_path = export(root / "jet_mlp.onnx")
        x = np.load(args.samples).astype(np.float32) if args.samples else make_samples()
        x = np.ascontiguousarray(x)
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        y_ort = sess.run(None, {"x": x})[0]
        ort_vs_torch = float(np.abs(y_ort - torch_reference(model, x)).max())
        console.print(f"[bold]jet MLP[/] 16-64-32-32-5, x {x.shape} {x.dtype}; "
                      f"ONNX Runtime vs torch max|diff| = {ort_vs_torch:.2e}; workdir {root}")

        results: dict[str, dict] = {}
        kiln_failed = False  # importable but raised: exit status 1 (unavailable: 0)

        # ---- (a) hls4ml
        if not args.skip_hls4ml:
            t0 = time.perf_counter()
            with quiet(root / "hls4ml.log", enabled=not args.verbose):
                import hls4ml
            import_s = time.perf_counter() - t0
            runs, y = [], None
            for i in range(args.repeat):
                t: dict[str, float] = {}
                wd = root / f"hls4ml_run{i}"
                try:
                    y = hls4ml_compile_and_predict(model, x, wd, t, verbose=args.verbose)
                except Exception:
                    console.print("[red]hls4ml failed[/]; log tail:\n" + tail(wd / "hls4ml.log"))
                    raise
                runs.append(t)
            times = median_times(runs)
            stages = ["config_from_pytorch_model", "convert_from_pytorch_model", "compile", "predict"]
            results["hls4ml"] = dict(
                version=hls4ml.__version__, import_s=import_s, times=times, stages=stages,
                total=sum(times[s] for s in stages), acc=accuracy(y, y_ort),
                totals=[sum(r[s] for s in stages) for r in runs],
            )

        # ---- (b) Kiln
        if not args.skip_kiln:
            t0 = time.perf_counter()
            try:
                import kiln

                kiln_import_s = time.perf_counter() - t0
                kiln_version = getattr(kiln, "__version__", "?")
            except ImportError:
                kiln_import_s, kiln_version = float("nan"), None
            runs, y = [], None
            try:
                if kiln_version is None:
                    raise KilnUnavailable("import kiln failed")
                for i in range(args.repeat):
                    t = {}
                    wd = root / f"kiln_run{i}"
                    with quiet(root / "kiln.log", enabled=not args.verbose):
                        y = kiln_compile_and_csim(onnx_path, x, wd, t)
                    runs.append(t)
            except KilnUnavailable as e:
                console.print(f"[yellow]kiln not available[/] ({e})")
            except Exception:
                kiln_failed = True
                console.print("[red]kiln failed:[/]\n" + traceback.format_exc()
                              + "\nkiln.log tail:\n" + tail(root / "kiln.log"))
            else:
                times = median_times(runs)
                stages = ["kiln.compile", "project.csim"]
                results["kiln"] = dict(
                    version=kiln_version, import_s=kiln_import_s, times=times, stages=stages,
                    total=sum(times[s] for s in stages), acc=accuracy(y, y_ort),
                    totals=[sum(r[s] for s in stages) for r in runs],
                )

        # ---- report
        med = " (median of %d runs)" % args.repeat if args.repeat > 1 else ""
        table = Table(title=f"compile + C-sim, 256-sample jet MLP{med}")
        table.add_column("tool")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for tool, r in results.items():
            table.add_row(f"{tool} {r['version']}", "[dim]import (not counted)[/]", f"[dim]{r['import_s']:.3f}[/]")
            for s in r["stages"]:
                table.add_row("", s, f"{r['times'][s]:.3f}")
                if tool == "hls4ml" and s == "compile":
                    table.add_row("", "[dim]  write project[/]", f"[dim]{r['times']['compile:write']:.3f}[/]")
                    table.add_row("", "[dim]  g++ build + dlopen[/]", f"[dim]{r['times']['compile:g++']:.3f}[/]")
            table.add_row("", "[bold]total[/]", f"[bold]{r['total']:.3f}[/]", end_section=True)
        if "hls4ml" in results and "kiln" in results:
            ratio = results["hls4ml"]["total"] / results["kiln"]["total"]
            table.add_row("[bold]ratio[/]", "hls4ml_total / kiln_total", f"[bold]{ratio:.2f}x[/]")
        console.print(table)

        acc = Table(title="accuracy vs ONNX Runtime (float32)")
        acc.add_column("tool")
        acc.add_column("precision")
        acc.add_column("max |err|", justify="right")
        acc.add_column("mean |err|", justify="right")
        acc.add_column("argmax agreement", justify="right")
        for tool, r in results.items():
            a = r["acc"]
            acc.add_row(tool, HLS4ML_PRECISION if tool == "hls4ml" else KILN_PRECISION,
                        f"{a['max_abs']:.3e}", f"{a['mean_abs']:.3e}",
                        f"{a['argmax_agree'] * 100:.2f}% ({round(a['argmax_agree'] * x.shape[0])}/{x.shape[0]})")
        console.print(acc)
        console.print("[dim]" + ", ".join(f"{k} {v}" for k, v in tool_versions().items())
                      + f", {os.cpu_count()} CPUs[/]")
        if args.keep is not None:
            console.print(f"outputs kept in {root}")
    return 1 if kiln_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
