"""Per-kernel timing of a TVM artifact: which fused PrimFuncs the time goes to.

TVM 0.27's Relax VM has no profiler, so the compiler records each kernel's signature (its
buffers' shapes and dtypes), the schedule rule it got and how many times ``main`` calls it
in ``<artifact>/kernels.json``; ``time_kernels`` loads the library, looks every kernel up in
its compiled module and times it alone with ``time_evaluator`` on random arguments. A
kernel's share is (time per call x calls) over the sum of all kernels.
"""

from __future__ import annotations

import re

import numpy as np

KERNELS_FILE = "kernels.json"


def kernel_table(mod, rules: dict | None = None) -> list[dict]:
    """One entry per PrimFunc of a legalized, fused Relax module: name, args, calls, rule."""
    from tvm import tirx

    text = mod["main"].script() if "main" in [gv.name_hint for gv in mod.get_global_vars()] else ""
    table = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        args = []
        for param in func.params:
            buf = param if hasattr(param, "shape") else None  # 0.27: params are the buffers
            if buf is None or not all(isinstance(getattr(d, "value", None), int) for d in buf.shape):
                args = None
                break
            shape = [int(d) for d in buf.shape]
            args.append({"shape": shape, "dtype": str(buf.dtype)})
        calls = len(re.findall(rf"call_tir\((?:cls\.)?{re.escape(gv.name_hint)},", text))
        table.append({"name": gv.name_hint, "args": args, "calls": calls,
                      "rule": (rules or {}).get(gv.name_hint, "default")})
    return table


def _random_arg(tvm, spec: dict, dev, rng):
    dtype = spec["dtype"]
    if dtype.startswith("float"):
        data = rng.standard_normal(spec["shape"]).astype(dtype)
    elif dtype == "bool":
        data = rng.integers(0, 2, spec["shape"]).astype(bool)
    else:  # indices: 0 is in range for every gathered axis
        data = np.zeros(spec["shape"], dtype=dtype)
    return tvm.runtime.tensor(data, dev)


def _find(lib, name):
    stack, seen = [lib], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        try:
            f = m.get_function(name, query_imports=False)
        except Exception:
            f = None
        if f is not None:
            return m, f
        stack.extend(getattr(m, "imports", []) or getattr(m, "imported_modules", []))
    return None, None


def time_kernels(library: str, table: list[dict], repeat: int = 20, top: int | None = None) -> list[dict]:
    """Time every kernel of ``table`` in the library; sorted by total time, with shares."""
    from kiln.backends.tvm.target import require_tvm

    tvm = require_tvm()  # with the thread pool sized to this machine's cores

    lib = tvm.runtime.load_module(library)
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    rows = []
    for entry in table:
        if not entry.get("args") or entry.get("calls", 0) == 0:
            continue
        module, _func = _find(lib, entry["name"])
        if module is None:
            continue
        args = [_random_arg(tvm, a, dev, rng) for a in entry["args"]]
        evaluator = module.time_evaluator(entry["name"], dev, number=1, repeat=repeat, min_repeat_ms=1)
        times = [float(t) for t in evaluator(*args).results]
        per_call = float(np.median(times)) * 1e3
        rows.append({"kernel": entry["name"], "rule": entry.get("rule", "default"), "calls": entry["calls"],
                     "ms_per_call": round(per_call, 4), "ms": round(per_call * entry["calls"], 4)})
    total = sum(r["ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = round(r["ms"] / total, 4)
    rows.sort(key=lambda r: -r["ms"])
    return rows[:top] if top else rows
