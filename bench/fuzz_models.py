#!/usr/bin/env python
"""Seeded mutation fuzzer: bad ONNX models must give exit 0 or a clean ``kiln: error`` (exit 2).

Not a test (tests/test_bad_models.py runs a small seeded sample of it). Run from the repo root::

    .venv/bin/python bench/fuzz_models.py [--count 5000] [--seed 0] [--jobs 2] [--tvm-every 3]
                                          [--timeout 60] [--run-every 40] [--csim-every 0] [--show 20]

Seeds are built in-process: torch exports of a small MLP, CNN and attention block, a QONNX
``Quant`` model (Brevitas style, written with onnx.helper) and an ONNX Runtime style Q/DQ
model. Each mutant is one to three structural mutations of a seed's protobuf (dims, element
types, raw_data truncation, typed-field data, attribute values, node inputs rewired, hostile
or non-UTF-8 names, huge dims, ConstantOfShape/Expand blow-ups) or byte corruption of the
serialized file. It goes through ``kiln compile`` for an HLS board (vu13p, --precision float:
no g++) and, every ``--tvm-every``-th, a TVM board (x86-host); every ``--run-every``-th
accepted TVM compile also goes through ``kiln run``, every ``--csim-every``-th accepted HLS
one through ``kiln csim`` (that builds with g++).

Kiln is called in-process (``kiln.cli.main(argv)``) in a process forked per case from a
parent that has imported Kiln, so a case costs the compile and not the interpreter start;
a case that does not finish within ``--timeout`` seconds is killed and counted as a hang.
A traceback is any exception other than KilnError escaping ``main``. Each child has an
address-space limit (``--mem-gb`` above what the parent holds) so a huge allocation is a
MemoryError (a traceback) and not the machine's memory.

Prints: total, exit 0, exit 2, tracebacks, hangs, other, and the distinct traceback /
hang classes with one reproducer each (saved under ``--keep DIR`` if given).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from bench.fuzz_mutations import build_seeds, make_mutant  # noqa: E402

# ---------------------------------------------------------------- running

def _child(argv: list[str], log: Path, mem_bytes: int | None) -> None:
    """In the forked child: kiln.cli.main(argv); exit 0/2/..., or 99 with the traceback in log."""
    import kiln.cli

    if mem_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        rc = kiln.cli.main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - this is what the fuzzer looks for
        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 1)


def start_case(argv: list[str], log: Path, mem_bytes: int | None) -> int:
    """Fork a child that runs ``kiln`` with ``argv``; its pid (a process group of its own)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            _child(argv, log, mem_bytes)
        finally:
            os._exit(98)
    return pid


def verdict_of(status: int, log: Path) -> str:
    """'0', '2', 'traceback' or 'other:<rc>' of a finished child."""
    if os.WIFSIGNALED(status):
        return f"other:signal{os.WTERMSIG(status)}"
    rc = os.WEXITSTATUS(status)
    if rc == 99 or "Traceback (most recent call last)" in log.read_text(errors="replace"):
        return "traceback"
    return str(rc) if rc in (0, 2) else f"other:{rc}"


def run_case(argv: list[str], log: Path, timeout: float, mem_bytes: int | None) -> str:
    """One case, waited for: a verdict, or 'hang' when it ran past ``timeout`` (then killed)."""
    pid = start_case(argv, log, mem_bytes)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return verdict_of(status, log)
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang"
        time.sleep(0.02)


def traceback_class(text: str) -> str:
    """The last line of the traceback and the innermost Kiln frame: a class of crash."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1][:120] if lines else "?"
    frames = [ln.strip() for ln in lines if ln.strip().startswith("File ") and "/kiln" in ln or "wt-" in ln]
    kiln_frames = [f for f in frames if "site-packages" not in f]
    where = kiln_frames[-1].split(",")[0:2] if kiln_frames else ["?"]
    return f"{last.split(':')[0]} at {' '.join(where)}"


def _sample_input(manifest: dict, path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in manifest["inputs"]:
        shape = [2, *spec["shape"][1:]] if spec.get("batch_axis") else spec["shape"]
        arrays[spec["name"]] = rng.standard_normal(shape).astype(spec.get("dtype") or "float32")
    np.savez(path, **arrays)


def _followup_argv(kind: str, out: Path, work: Path) -> list[str] | None:
    """``kiln run``/``kiln csim`` of an accepted compile on random float inputs (None: not float inputs)."""
    import json

    try:
        manifest = json.loads((out / "kiln_manifest.json").read_text())
        if any(not np.issubdtype(np.dtype(s.get("dtype") or "float32"), np.floating) for s in manifest["inputs"]):
            return None
        _sample_input(manifest, work / "x.npz")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ["run" if kind == "tvm" else "csim", str(out), "--input", str(work / "x.npz")]


def fuzz(count: int, seed: int = 0, tvm_every: int = 3, timeout: float = 60.0, run_every: int = 40,
         csim_every: int = 0, keep: Path | None = None, mem_gb: float = 6.0, torch_seeds: bool = True,
         jobs: int = 2, verbose: bool = False, log=print) -> dict:
    """Run ``count`` mutants, ``jobs`` at a time; returns {"counts": Counter, "classes": {class: (argv, log, desc)}}."""
    import shutil

    import kiln.cli  # noqa: F401 - imported once in the parent: the forked children share it
    import kiln.driver  # noqa: F401
    try:
        import kiln.backends.tvm.compiler  # noqa: F401
        import tvm  # noqa: F401
    except ImportError:
        tvm_every = 0
    seeds = build_seeds(torch_seeds)
    rng = random.Random(seed)
    vsz = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    mem = int(vsz + mem_gb * 2 ** 30) if mem_gb else None
    counts: Counter = Counter()
    classes: dict = {}
    started = time.monotonic()
    pending: list[dict] = []   # cases ready to start (follow-ups first)
    running: dict[int, dict] = {}
    made = 0

    def record(case: dict, verdict: str) -> None:
        kind, prefix = case["kind"], "follow-up " if case["follow"] else ""
        counts[prefix + verdict] += 1
        if case["follow"]:
            counts[f"{kind} follow-up"] += 1
        else:
            counts["total"] += 1
            counts[f"{kind} total"] += 1
        if verdict not in ("0", "2"):
            text = case["log"].read_text(errors="replace") if case["log"].exists() else ""
            cls = traceback_class(text) if verdict == "traceback" else f"{verdict} ({case['argv'][0]} {kind})"
            if cls not in classes:
                classes[cls] = (case["argv"], text[-3000:], case["desc"])
                if keep:
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(case["model"], keep / f"case{case['i']}_{case['model'].name}")
                if verbose:
                    log(f"[{case['i']}] new class {cls}: {case['desc']}")
        follow = None
        if verdict == "0" and not case["follow"]:
            counts[f"{kind} 0"] += 1
            every = run_every if kind == "tvm" else csim_every
            if every and counts[f"{kind} 0"] % every == 0:
                follow = _followup_argv(kind, case["out"], case["work"])
        if follow:
            pending.insert(0, {**case, "argv": follow, "follow": True, "log": case["work"] / "follow.log",
                               "timeout": timeout * 3})
        else:
            shutil.rmtree(case["work"], ignore_errors=True)

    with tempfile.TemporaryDirectory(prefix="kiln-fuzz-") as tmpdir:
        while made < count or pending or running:
            while len(running) < jobs and (pending or made < count):
                if not pending:
                    i, made = made, made + 1
                    name, proto = seeds[i % len(seeds)]
                    data, desc = make_mutant(proto, rng)
                    work = Path(tmpdir) / f"c{i}"
                    work.mkdir()
                    model = work / f"{name}.onnx"
                    model.write_bytes(data)
                    kind = "tvm" if tvm_every and i % tvm_every == tvm_every - 1 else "hls"
                    out = work / "out"
                    argv = ["compile", str(model), "-o", str(out)]
                    argv += ["--board", "x86-host"] if kind == "tvm" else ["--board", "vu13p", "--precision", "float"]
                    pending.append({"i": i, "kind": kind, "argv": argv, "work": work, "out": out, "model": model,
                                    "log": work / "log.txt", "desc": f"{name}: {desc}", "follow": False,
                                    "timeout": timeout})
                case = pending.pop(0)
                case["deadline"] = time.monotonic() + case["timeout"]
                running[start_case(case["argv"], case["log"], mem)] = case
            pid, status = os.waitpid(-1, os.WNOHANG) if running else (0, 0)
            if pid in running:
                case = running.pop(pid)
                record(case, verdict_of(status, case["log"]))
            now = time.monotonic()
            for p_, case in list(running.items()):
                if now > case["deadline"]:
                    os.killpg(p_, signal.SIGKILL)
                    os.waitpid(p_, 0)
                    record(running.pop(p_), "hang")
            if not pid:
                time.sleep(0.02)
            if verbose and counts["total"] and counts["total"] % 100 == 0 and not counts.get("_shown") == counts["total"]:
                counts["_shown"] = counts["total"]
                log(f"[{counts['total']}/{count}] {time.monotonic() - started:.0f}s "
                    f"{ {k: v for k, v in counts.items() if k != '_shown'} }")
    counts.pop("_shown", None)
    return {"counts": counts, "classes": classes}


def summary(result: dict, show: int = 5) -> str:
    c = result["counts"]
    tracebacks = c["traceback"] + c["follow-up traceback"]
    hangs = c["hang"] + c["follow-up hang"]
    other = sum(v for k, v in c.items() if k.startswith("other") or k.startswith("follow-up other"))
    lines = [f"total {c['total']} (hls {c['hls total']}, tvm {c['tvm total']}): exit 0 {c['0']}, exit 2 {c['2']}, "
             f"tracebacks {c['traceback']}, hangs {c['hang']}, other {sum(v for k, v in c.items() if k.startswith('other'))}",
             f"follow-ups (csim/run of accepted models): {c['hls follow-up'] + c['tvm follow-up']}: "
             f"exit 0 {c['follow-up 0']}, exit 2 {c['follow-up 2']}, tracebacks {c['follow-up traceback']}, "
             f"hangs {c['follow-up hang']}",
             f"TOTAL tracebacks {tracebacks}, hangs {hangs}, other {other}"]
    for cls, (argv, text, desc) in list(result["classes"].items())[: show if show >= 0 else None]:
        lines.append(f"--- {cls}  [{desc}]  kiln {' '.join(argv[:1] + argv[2:])}")
        lines += ["    " + ln for ln in text.strip().splitlines()[-6:]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tvm-every", type=int, default=3, help="every N-th mutant compiles for x86-host (0: none)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per compile before it counts as a hang")
    p.add_argument("--run-every", type=int, default=40, help="every N-th accepted TVM compile also runs")
    p.add_argument("--csim-every", type=int, default=0, help="every N-th accepted HLS compile is C-simulated "
                   "(builds with g++; 0: none)")
    p.add_argument("--mem-gb", type=float, default=6.0, help="address space per case above the parent's (0: none)")
    p.add_argument("--keep", type=Path, help="save one reproducer per crash class here")
    p.add_argument("--show", type=int, default=20, help="crash classes to print")
    p.add_argument("--jobs", type=int, default=2, help="cases at a time")
    p.add_argument("--no-torch", action="store_true", help="only the helper-built seeds (no torch export)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    result = fuzz(a.count, a.seed, a.tvm_every, a.timeout, a.run_every, a.csim_every, a.keep, a.mem_gb,
                  not a.no_torch, a.jobs, a.verbose, log=lambda s: print(s, flush=True))
    print(summary(result, a.show), flush=True)
    c = result["counts"]
    return 1 if c["traceback"] or c["hang"] or c["follow-up traceback"] or c["follow-up hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
