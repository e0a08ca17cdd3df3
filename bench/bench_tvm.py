#!/usr/bin/env python
"""Benchmark: TVM (Kiln's x86-host artifact) vs ONNX Runtime, latency on this machine.

Not a test. Run from the repo root::

    .venv/bin/python bench/bench_tvm.py [--models a,b] [--repeat 300] [--trials-per-kernel 16] [--no-tune]
    .venv/bin/python bench/bench_tvm.py --timm [--size 224] --baseline --no-tune --repeat 20
    .venv/bin/python bench/bench_tvm.py --timm --tune-minutes 5 --repeat 20

``--timm``: the timm zoo (examples/timm_zoo.py) at ``--size`` (224). ``--baseline``: also
compile each model without Kiln's rule-based schedules (TVM's default loop nests), the
"before" column. The "untuned" build has the schedules (backends/tvm/schedules.py).

For each model: compile for x86-host untuned (no tuning database: the rule-based schedules
alone), and (unless --no-tune) tuned with MetaSchedule within ``trials-per-kernel x kernels``
trials or, with ``--tune-minutes M``, within M minutes (the kernels with the largest share of
the time first; one database for the run, in the work directory, so that a later model
starts from the records of an earlier one, as a board's database does); then, in the same process and on the same
input (batch 1), time each library ``--repeat`` times after warm-up and ONNX Runtime (CPU EP,
default threads) the same number of times. The ratio is TVM / ONNX Runtime median latency
with both timed the same way (a Python call, wall clock, in alternating blocks; > 1: TVM slower); the TVM device
timer (time_evaluator) median is printed beside it. Outputs are checked against ONNX Runtime
(max abs error relative to the output scale).

Models: the spine's MLP (examples/make_jet_mlp.py) and CNNs (examples/torch_models.py),
the transformer zoo (examples/zoo.py), and ``encoder64``, a 64-wide pre-norm encoder block
(16 tokens, 4 heads, GELU MLP 128) defined here: the block of the "3.4x slower untuned" note.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SPINE = ["JetMLP", "CNN2d", "CNN1d", "GapNet"]
ZOO = ["jet_tagger", "tiny_vit", "text_encoder"]
ALL = ["jet_mlp", *SPINE, *ZOO, "encoder64"]
TIMM_EXTRA = ["pvt_v2_b0", "edgenext_xx_small", "efficientformerv2_s0"]  # issue 16's list beyond examples/timm_zoo.py


def encoder64(path: Path) -> Path:
    import torch
    from torch import nn

    from examples.torch_models import export_torch

    class Block(nn.Module):
        def __init__(self, d=64, heads=4, ff=128):
            super().__init__()
            self.h, self.dk = heads, d // heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.f1, self.f2 = nn.Linear(d, ff), nn.Linear(ff, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = (y.reshape(b, t, self.h, self.dk).transpose(1, 2) for y in self.qkv(self.ln1(x)).split(d, -1))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk), dim=-1) @ v
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            return x + self.f2(nn.functional.gelu(self.f1(self.ln2(x))))

    torch.manual_seed(0)
    return export_torch(Block().eval(), torch.randn(2, 16, 64), path)


def export(name: str, d: Path, size: int = 224) -> Path:
    from examples.timm_zoo import ZOO as TIMM, export as export_timm

    if name in TIMM or name in TIMM_EXTRA:
        return export_timm(name, d / f"{name}_{size}.onnx", size=size)
    if name == "jet_mlp":
        from examples.make_jet_mlp import export as export_jet_mlp

        return export_jet_mlp(d / "jet_mlp.onnx", opset=17)
    if name in SPINE:
        import onnx

        from examples.torch_models import exported

        path = d / f"{name}.onnx"
        onnx.save(exported(name, 17, str(d)), path)
        return path
    if name in ZOO:
        from examples.zoo import export_model

        return export_model(name, d / f"{name}.onnx")
    if name == "encoder64":
        return encoder64(d / "encoder64.onnx")
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(ALL)}")


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated (default: all, or with --timm the timm zoo)")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--trials-per-kernel", type=int, default=16)
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--tune-minutes", type=float, help="tune each model for this many minutes instead of trials")
    parser.add_argument("--keep", help="write the artifacts here instead of a temp dir")
    parser.add_argument("--timm", action="store_true", help="the timm zoo (examples/timm_zoo.py) instead")
    parser.add_argument("--size", type=int, default=224, help="timm input size (default 224)")
    parser.add_argument("--baseline", action="store_true", help="also time TVM's default schedules")
    args = parser.parse_args()
    if args.timm and not args.models:
        from examples.timm_zoo import ZOO as TIMM

        args.models = ",".join([*TIMM, *TIMM_EXTRA])
    args.models = args.models or ",".join(ALL)

    import tvm

    from kiln.backends.tvm import compile_tvm
    from kiln.backends.tvm.importer import to_relax
    from kiln.backends.tvm.target import resolve_target
    from kiln.backends.tvm.tune import count_kernels
    from kiln.board import get_board
    from kiln.frontend import load_onnx

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kiln-bench-tvm-"))
    work.mkdir(parents=True, exist_ok=True)
    target = resolve_target(get_board("x86-host"))
    import onnxruntime

    print(f"TVM {tvm.__version__}, ONNX Runtime {onnxruntime.__version__}; x86-host target: {target}; "
          f"batch 1, {args.repeat} runs after warm-up; times in us (median)")
    rows = []
    for name in args.models.split(","):
        try:
            model = export(name, work, args.size)
        except Exception as exc:  # a timm model this torch/timm cannot export: say so, go on
            print(f"{name}: export failed: {str(exc).strip().splitlines()[-1:]}", flush=True)
            continue
        row = {"model": name}
        if args.baseline:
            base = compile_tvm(model, board="x86-host", output_dir=work / f"{name}-default", schedules=False,
                               tuning_db=work / "no-db")
            row["ratio_default"] = base.bench(repeat=args.repeat).ratio
        t0 = time.perf_counter()
        art = compile_tvm(model, board="x86-host", output_dir=work / f"{name}-untuned", tuning_db=work / "no-db")
        row["compile_s"] = time.perf_counter() - t0
        rep = art.bench(repeat=args.repeat)
        row["schedules"] = art.manifest.get("schedules") or {}
        row.update(untuned=rep.tvm_wall.median, untuned_dev=rep.tvm.median, ort=rep.onnxruntime.median,
                   ratio_untuned=rep.ratio, err=max(r.relative_error for r in rep.comparison))
        if not args.no_tune:
            loaded = load_onnx(model)
            kernels = count_kernels(to_relax(loaded.model, loaded.source), target)
            trials = None if args.tune_minutes else args.trials_per_kernel * kernels
            t0 = time.perf_counter()
            tuned = compile_tvm(model, board="x86-host", output_dir=work / f"{name}-tuned", tune=trials,
                                tune_minutes=args.tune_minutes, tuning_db=work / "tuning-db")
            row["tune_s"] = time.perf_counter() - t0
            row["kept"] = (tuned.manifest["tuning"].get("whole_model") or {}).get("kept", "tuned")
            trials = trials or f"{args.tune_minutes:g} min"
            rep_t = tuned.bench(repeat=args.repeat)
            row.update(kernels=kernels, trials=trials, measured=tuned.manifest["tuning"]["measured"],
                       tuned=rep_t.tvm_wall.median, tuned_dev=rep_t.tvm.median, ort_t=rep_t.onnxruntime.median,
                       ratio_tuned=rep_t.ratio, err_t=max(r.relative_error for r in rep_t.comparison))
        rows.append(row)
        print(_line(row), flush=True)
    print()
    print("| model | TVM untuned | TVM tuned | ORT | ratio default | ratio untuned | ratio tuned | tuning (trials, s) "
          "| kernels tile/rows/plain/default | rel. error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tuned = "-" if "tuned" not in r else f"{fmt(r['tuned'])} (dev {fmt(r['tuned_dev'])})"
        ratio_t = "-" if "ratio_tuned" not in r else f"{r['ratio_tuned']:.2f}x (ORT {fmt(r['ort_t'])})"
        tuning = "-" if "tune_s" not in r else (f"{r['measured']}/{r['trials']} over {r['kernels']} kernels, {r['tune_s']:.0f}, "
                                           f"kept {r['kept']}")
        err = f"{r['err']:.1e}" + ("" if "err_t" not in r else f" / {r['err_t']:.1e}")
        base = f"{r['ratio_default']:.2f}x" if "ratio_default" in r else "-"
        k = r["schedules"]
        kern = f"{k.get('tile', 0)}/{k.get('rows', 0)}/{k.get('plain', 0)}/{k.get('default', 0)}" if k else "-"
        print(f"| {r['model']} | {fmt(r['untuned'])} (dev {fmt(r['untuned_dev'])}) | {tuned} | {fmt(r['ort'])} | "
              f"{base} | {r['ratio_untuned']:.2f}x | {ratio_t} | {tuning} | {kern} | {err} |")
    print(f"\nartifacts in {work}")
    return 0


def _line(r: dict) -> str:
    s = (f"{r['model']:13s} untuned {fmt(r['untuned']):>8s} us (device timer {fmt(r['untuned_dev'])})  "
         f"ORT {fmt(r['ort']):>8s} us  ratio {r['ratio_untuned']:.2f}x  err {r['err']:.1e}")
    if "tuned" in r:
        s += (f"  | tuned ({r['measured']}/{r['trials']} trials, {r['tune_s']:.0f} s) {fmt(r['tuned'])} us "
              f"ratio {r['ratio_tuned']:.2f}x err {r['err_t']:.1e} (kept {r['kept']})")
    return s


if __name__ == "__main__":
    sys.exit(main())
