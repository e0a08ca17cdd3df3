#!/usr/bin/env python
"""Benchmark: Kiln on transformer models (jet tagger end to end) and fixed-point LayerNorm / softmax
accuracy across input scales, Kiln vs hls4ml 1.3.0, in one run.

Not a test. Run from the repo root::

    .venv/bin/python bench/bench_transformer.py [--keep DIR] [--skip-hls4ml] [-v]

1. Jet tagger (``examples/zoo.py``: 15 particles x 6 features, 3 encoder blocks, 90-32-16-8-3 head):
   ``kiln.compile(onnx, precision="fixed<16,6>")`` -> ``project.build()`` (g++ C-sim build) ->
   ``project.csim(x)`` on 1000 samples (``samples("jet_tagger", 1000)``). Stage times, their total
   against the 120 s target, argmax agreement and max |err| against ONNX Runtime
   (``project.reference(x)[0]``), and a Vitis HLS completeness check of the generated project:
   ``build_prj.tcl`` and the files it names, and for every layer call in ``firmware/kiln_top.cpp`` the
   template it lands on in the ``firmware/nnet/`` headers that are (transitively) included, with the
   ``#pragma HLS PIPELINE`` it carries.
2. LayerNorm (32 features on [15, 32], input std 0.3 / 1 / 3, target: mean |err| <= 0.01) and
   Softmax (15 logits, logit std 1 / 3, target: max |err| <= 0.01) in 16-bit fixed point.
   Kiln: the one-op ONNX models of ``tests/test_transformer_ops.py`` in ``fixed<16,6>``, same inputs as
   that test. hls4ml: ``nn.LayerNorm(32)`` (same gamma/beta) and ``nn.Softmax(dim=-1)`` in tiny torch
   modules through ``config_from_pytorch_model(default_precision="ap_fixed<16,6>")`` ->
   ``convert_from_pytorch_model(backend="Vitis", io_type="io_parallel")`` -> ``compile`` -> ``predict``
   (``bench_compile_csim.hls4ml_compile_and_predict``), default table settings, with granularity
   "name" (hls4ml's per-layer default accum/table types) and "model" (config_from_pytorch_model's
   default granularity). hls4ml's softmax is fed rows of 15 logits; a [4, 15] tensor as-is is shown too
   (hls4ml normalizes it over all 60 values). Everything is compared with ONNX Runtime on the Kiln
   one-op model.

Exit status 1 if a Kiln stage raised; hls4ml failures are reported in the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
for p in (REPO_ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_compile_csim import (  # noqa: E402
    HLS4ML_PRECISION, KILN_PRECISION, Stopwatch, accuracy, hls4ml_compile_and_predict, quiet, tail, tool_versions,
)

JET_SAMPLES = 1000
JET_TARGET_S = 120.0
LN_FEATURES, LN_ROWS, LN_STDS, LN_TARGET = 32, 15, (0.3, 1.0, 3.0), 0.01
SM_LOGITS, SM_ROWS, SM_STDS, SM_TARGET = 15, 4, (1.0, 3.0), 0.01
# figures for hls4ml quoted in the issue (LayerNorm mean |err| at unit variance, softmax max |err| at std 3)
ISSUE_HLS4ML = {("LayerNorm", (1.0, False)): 0.77, ("Softmax", (3.0, False)): 0.97}
# input sets: (std, row offset); LayerNorm as the test (rows shifted by an offset) and with zero-mean rows
LN_KEYS = [(s, True) for s in LN_STDS] + [(s, False) for s in LN_STDS]
SM_KEYS = [(s, False) for s in SM_STDS]


# --------------------------------------------------------------------------- 1. jet tagger
def jet_tagger(root: Path, console, verbose: bool) -> dict:
    from examples.zoo import export_model, samples

    import kiln

    sw = Stopwatch()
    with quiet(root / "kiln.log", enabled=not verbose):
        with sw.stage("export"):
            onnx_path = export_model("jet_tagger", root / "jet_tagger.onnx")
        x = samples("jet_tagger", JET_SAMPLES)
        with sw.stage("kiln.compile"):
            project = kiln.compile(str(onnx_path), output_dir=str(root / "jet_tagger"), precision=KILN_PRECISION)
        with sw.stage("project.build"):
            project.build()
        with sw.stage("project.csim"):
            y = project.csim(x)
        y_ref = project.reference(x)[0]
    return dict(times=sw.times, acc=accuracy(y, y_ref), project=project.path, n=len(x))


INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)
PIPELINE_RE = re.compile(r"#pragma\s+HLS\s+PIPELINE\b[^\n]*", re.I)
INLINE_RE = re.compile(r"#pragma\s+HLS\s+INLINE\b(?![ \t]+off)", re.I)
EXTERNAL_HEADERS = {"ap_fixed.h", "ap_int.h", "hls_stream.h", "hls_math.h"}  # Vitis HLS (C-sim: hls4ml's ap_types)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _body(text: str, open_brace: int) -> str:
    """The text between the brace at ``open_brace`` and its match."""
    depth = 0
    for i in range(open_brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_brace + 1:i]
    raise ValueError("unbalanced braces")


def _function_body(text: str, name: str, template: bool) -> str | None:
    head = (r"template\s*<[^;{]*?>\s*" if template else "") + r"void\s+" + re.escape(name) + r"\s*\("
    m = re.search(head, text)
    if m is None:
        return None
    return _body(text, text.index("{", m.end()))


def _included_headers(firmware: Path) -> tuple[list[Path], list[str], list[str]]:
    """Quoted includes reached from firmware/kiln_top.cpp: (files, external names, missing names)."""
    seen, external, missing, todo = [], set(), set(), [firmware / "kiln_top.cpp"]
    while todo:
        f = todo.pop()
        for inc in INCLUDE_RE.findall(_strip_comments(f.read_text())):
            cands = [f.parent / inc, firmware / inc]
            hit = next((c.resolve() for c in cands if c.is_file()), None)
            if hit is None:
                (external if Path(inc).name in EXTERNAL_HEADERS else missing).add(inc)
            elif hit not in seen:
                seen.append(hit)
                todo.append(hit)
    return seen, sorted(external), sorted(missing)


def vitis_check(project: Path) -> dict:
    """build_prj.tcl and the files it names; every layer call of kiln_top -> template -> PIPELINE pragma."""
    fw = project / "firmware"
    tcl_path = project / "build_prj.tcl"
    tcl = tcl_path.read_text() if tcl_path.is_file() else ""
    part = re.search(r"set_part\s+\{?([^}\s]+)", tcl)
    clock = re.search(r"create_clock\s+-period\s+(\S+)", tcl)
    files = [
        ("build_prj.tcl", tcl_path.is_file()),
        ("set_top kiln_top", bool(re.search(r"^\s*set_top\s+kiln_top\b", tcl, re.M))),
        ("add_files firmware/kiln_top.cpp", "firmware/kiln_top.cpp" in tcl and (fw / "kiln_top.cpp").is_file()),
        ("add_files -tb tb/kiln_tb.cpp",
         "-tb $root/tb/kiln_tb.cpp" in tcl and (project / "tb" / "kiln_tb.cpp").is_file()),
        ("tb_data/input.bin (csim/cosim argv)", (project / "tb_data" / "input.bin").is_file()),
        (f"set_part {part.group(1) if part else '?'}; clock {clock.group(1) if clock else '?'} ns",
         bool(part and clock)),
        ("csim_design / csynth_design / cosim_design / export_design",
         all(k in tcl for k in ("csim_design", "csynth_design", "cosim_design", "export_design"))),
    ]
    headers, external, missing = _included_headers(fw)
    files.append((f"quoted includes resolve ({len(headers)} in firmware/; external: {', '.join(external) or '-'})",
                  not missing))
    if missing:
        files.append((f"missing includes: {', '.join(missing)}", False))

    top_src = _strip_comments((fw / "kiln_top.cpp").read_text())
    top = _function_body(top_src, "kiln_top", template=False) or ""
    top_pipelined = bool(PIPELINE_RE.search(top))
    calls: dict[str, int] = {}
    for name in re.findall(r"\bkiln::(\w+)\s*<", top):
        calls[name] = calls.get(name, 0) + 1
    nnet = [h for h in headers if h.parent.name == "nnet"]
    sources = {h: _strip_comments(h.read_text()) for h in nnet}
    rows = []
    for name, count in calls.items():
        where, body = None, None
        for h, src in sources.items():
            body = _function_body(src, name, template=True)
            if body is not None:
                where = h.name
                break
        if body is None:
            rows.append(dict(template=name, calls=count, header="NOT FOUND", pragma="-", ok=False))
            continue
        m = PIPELINE_RE.search(body)
        if m:
            before = body[:m.start()]
            depth = before.count("{") - before.count("}")
            loop = re.findall(r"(\w+):\s*for\b", before)
            scope = "function" if depth == 0 else f"loop {loop[-1] if loop else '?'}"
            rows.append(dict(template=name, calls=count, header=where, pragma=f"{m.group(0).strip()} ({scope})",
                             ok=True, own=True))
        elif INLINE_RE.search(body):
            rows.append(dict(template=name, calls=count, header=where, ok=top_pipelined, own=False,
                             pragma="none; #pragma HLS INLINE into kiln_top"
                                    + (" (PIPELINE)" if top_pipelined else " (not pipelined)")))
        else:
            rows.append(dict(template=name, calls=count, header=where, pragma="none", ok=False, own=False))
    return dict(files=files, rows=rows, top_pipelined=top_pipelined, n_calls=sum(calls.values()))


# --------------------------------------------------------------------------- 2. LayerNorm / softmax
def ln_params():
    rng = np.random.default_rng(0)  # as tests/test_transformer_ops.py's layernorm_project
    gamma = rng.uniform(0.5, 1.5, LN_FEATURES).astype(np.float32)
    return gamma, rng.uniform(-0.5, 0.5, LN_FEATURES).astype(np.float32)


def ln_inputs(std: float, row_offset: bool = True) -> np.ndarray:
    """As test_layernorm_mean_abs_error_across_scales (each row also shifted by an offset of the same std);
    ``row_offset=False``: zero-mean rows of variance std**2 (the issue's "unit-variance input" at std 1)."""
    rng = np.random.default_rng(int(std * 10))
    x = rng.standard_normal((128, LN_ROWS, LN_FEATURES)) * std
    if row_offset:
        x = x + rng.standard_normal((128, LN_ROWS, 1)) * std
    return x.astype(np.float32)


def sm_inputs(std: float) -> np.ndarray:  # as test_softmax_max_abs_error_across_scales
    return (np.random.default_rng(int(std)).standard_normal((256, SM_ROWS, SM_LOGITS)) * std).astype(np.float32)


def onnx_models():
    from onnx import TensorProto, helper
    from examples.op_models import one_op_model

    g, b = ln_params()
    params = [helper.make_tensor("g", TensorProto.FLOAT, [LN_FEATURES], g),
              helper.make_tensor("b", TensorProto.FLOAT, [LN_FEATURES], b)]
    ln = one_op_model(helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1, epsilon=1e-5),
                      [LN_ROWS, LN_FEATURES], initializers=params)
    sm = one_op_model(helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=-1), [SM_ROWS, SM_LOGITS])
    return {"LayerNorm": ln, "Softmax": sm}


def torch_modules():
    import torch
    from torch import nn

    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(LN_FEATURES, eps=1e-5)

        def forward(self, x):
            return self.ln(x)

    class SM(nn.Module):
        def __init__(self):
            super().__init__()
            self.sm = nn.Softmax(dim=-1)

        def forward(self, x):
            return self.sm(x)

    ln = LN().eval()
    g, b = ln_params()
    with torch.no_grad():
        ln.ln.weight.copy_(torch.from_numpy(g))
        ln.ln.bias.copy_(torch.from_numpy(b))
    return {"LayerNorm": ln, "Softmax": SM().eval()}


def errors(y, ref) -> dict:
    err = np.abs(np.asarray(y, dtype=np.float64).reshape(ref.shape) - ref)
    return {"mean": float(err.mean()), "max": float(err.max())}


def hls4ml_layer_types(prj: Path) -> str:
    """The layer's internal types and table sizes as hls4ml wrote them (defines.h / parameters.h)."""
    fw = prj / "hls4ml_prj" / "firmware"
    try:
        defines, params = (fw / "defines.h").read_text(), (fw / "parameters.h").read_text()
    except OSError:
        return "?"
    types = re.findall(r"typedef\s+(.+?)\s+(?:ln|sm)_(\w+)_t;", defines)
    default = re.findall(r"typedef\s+(.+?)\s+model_default_t;", defines)
    if default:
        types.append((default[0], "other internal types (model default)"))
    sizes = re.findall(r"static const unsigned (\w*table\w*|n_in|n_slice|n_outer|n_inner|seq_len) = ([\w*]+);", params)
    impl = re.findall(r"softmax_implementation::(\w+)", params)
    return ", ".join([f"{n} {t}" for t, n in types] + [f"{k}={v}" for k, v in sizes]
                     + [f"implementation={i}" for i in impl])


def accuracy_sweep(root: Path, console, verbose: bool, skip_hls4ml: bool) -> tuple[dict, dict, bool]:
    """results[op][tool][(std, row_offset)] = {"mean", "max"} (or an error string instead of the dict);
    notes[tool/op] = timing and hls4ml's layer types."""
    import kiln

    inputs = {"LayerNorm": {k: ln_inputs(*k) for k in LN_KEYS}, "Softmax": {k: sm_inputs(k[0]) for k in SM_KEYS}}
    results: dict = {op: {} for op in inputs}
    notes: dict[str, str] = {}
    refs: dict = {op: {} for op in inputs}
    kiln_failed = False

    # Kiln (and the ONNX Runtime reference both tools are measured against)
    for op, model in onnx_models().items():
        sw = Stopwatch()
        try:
            with quiet(root / "kiln.log", enabled=not verbose):
                with sw.stage("compile"):
                    project = kiln.compile(model, output_dir=str(root / f"kiln_{op}"), precision=KILN_PRECISION)
                with sw.stage("build"):
                    project.build()
                res = {}
                for key, x in inputs[op].items():
                    refs[op][key] = project.reference(x)[0].astype(np.float64)
                    with sw.stage("csim"):
                        res[key] = errors(project.csim(x), refs[op][key])
            results[op]["kiln"] = res
            notes[f"kiln {op}"] = ", ".join(f"{k} {v:.2f} s" for k, v in sw.times.items())
        except Exception as e:
            kiln_failed = True
            console.print(f"[red]kiln {op} failed[/]:\n{traceback.format_exc()}\n"
                          f"kiln.log tail:\n{tail(root / 'kiln.log')}")
            results[op]["kiln"] = f"{type(e).__name__}: {e}"
    if skip_hls4ml:
        return results, notes, kiln_failed

    with quiet(root / "hls4ml.log", enabled=not verbose):
        import hls4ml
    notes["hls4ml version"] = hls4ml.__version__
    modules = torch_modules()
    # one hls4ml compile per configuration: all scales concatenated into one predict call, split after
    runs = [("LayerNorm", "hls4ml name", "name", (LN_ROWS, LN_FEATURES), lambda x: x),
            ("LayerNorm", "hls4ml model", "model", (LN_ROWS, LN_FEATURES), lambda x: x),
            ("Softmax", "hls4ml name", "name", (SM_LOGITS,), lambda x: x.reshape(-1, SM_LOGITS)),
            ("Softmax", "hls4ml model", "model", (SM_LOGITS,), lambda x: x.reshape(-1, SM_LOGITS)),
            ("Softmax", "hls4ml [4,15]", "name", (SM_ROWS, SM_LOGITS), lambda x: x)]
    for op, tool, granularity, shape, feed in runs:
        stds = list(inputs[op])
        xs = [feed(inputs[op][s]) for s in stds]
        wd = root / f"{tool.replace(' ', '_').replace('[', '').replace(']', '').replace(',', 'x')}_{op}"
        t: dict[str, float] = {}
        try:
            y = hls4ml_compile_and_predict(modules[op], np.concatenate(xs), wd, t, verbose=verbose,
                                           input_shape=shape, granularity=granularity)
        except Exception as e:
            lines = [ln for ln in traceback.format_exception_only(type(e), e)[-1].strip().splitlines() if ln]
            results[op][tool] = f"{type(e).__name__}: {lines[-1] if lines else e}"[:200]
            notes[f"{tool} {op}"] = "failed; log tail:\n" + tail(wd / "hls4ml.log", 15)
            continue
        y = np.asarray(y).reshape(len(y), -1)
        res, offset = {}, 0
        for s, x in zip(stds, xs):
            res[s] = errors(y[offset:offset + len(x)], refs[op][s]) if s in refs[op] else "no reference"
            offset += len(x)
        results[op][tool] = res
        stages = ("config_from_pytorch_model", "convert_from_pytorch_model", "compile", "predict")
        notes[f"{tool} {op}"] = f"{sum(t[k] for k in stages):.1f} s; " + hls4ml_layer_types(wd)
    return results, notes, kiln_failed


# --------------------------------------------------------------------------- report
def fmt(v, primary: str) -> str:
    if isinstance(v, str):
        return f"[red]{v}[/]"
    other = "max" if primary == "mean" else "mean"
    return f"[bold]{v[primary]:.4f}[/] [dim]({other} {v[other]:.2g})[/]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Kiln transformer benchmark (jet tagger; LayerNorm/softmax vs hls4ml)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this dir and keep it (default: temp dir)")
    ap.add_argument("--skip-hls4ml", action="store_true")
    ap.add_argument("--skip-jet", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="do not hide hls4ml/kiln output")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    t_bench = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root_ctx = contextlib.nullcontext(str(args.keep.resolve()))
    else:
        root_ctx = tempfile.TemporaryDirectory(prefix="kiln_bench_tf_")
    failed = False

    with root_ctx as root_s:
        root = Path(root_s)
        console.print(f"workdir {root}; {os.cpu_count()} CPUs")

        # ---- 1. jet tagger
        if not args.skip_jet:
            try:
                jet = jet_tagger(root, console, args.verbose)
            except Exception:
                failed = True
                console.print("[red]jet tagger failed:[/]\n" + traceback.format_exc()
                              + "\nkiln.log tail:\n" + tail(root / "kiln.log"))
            else:
                t = jet["times"]
                total = t["kiln.compile"] + t["project.build"] + t["project.csim"]
                tab = Table(title=f"jet tagger, {KILN_PRECISION}, {jet['n']} samples, {os.cpu_count()} CPUs")
                tab.add_column("stage")
                tab.add_column("seconds", justify="right")
                tab.add_row("[dim]torch -> ONNX export (not counted)[/]", f"[dim]{t['export']:.2f}[/]")
                tab.add_row("kiln.compile", f"{t['kiln.compile']:.2f}")
                tab.add_row("project.build (g++ C-sim)", f"{t['project.build']:.2f}")
                tab.add_row(f"project.csim ({jet['n']} samples)", f"{t['project.csim']:.2f}")
                ok = total < JET_TARGET_S
                tab.add_row("[bold]total[/]", f"[bold]{total:.2f}[/]", end_section=True)
                tab.add_row(f"target < {JET_TARGET_S:.0f} s", "[green]met[/]" if ok else "[red]MISSED[/]")
                a = jet["acc"]
                tab.add_row("argmax agreement vs ONNX Runtime",
                            f"{a['argmax_agree'] * 100:.1f}% ({round(a['argmax_agree'] * jet['n'])}/{jet['n']})")
                tab.add_row("max |err| vs ONNX Runtime", f"{a['max_abs']:.3e}")
                tab.add_row("mean |err| vs ONNX Runtime", f"{a['mean_abs']:.3e}")
                console.print(tab)

                chk = vitis_check(Path(jet["project"]))
                ft = Table(title="generated project: Vitis HLS completeness")
                ft.add_column("check")
                ft.add_column("", justify="center")
                for what, good in chk["files"]:
                    ft.add_row(what, "[green]yes[/]" if good else "[red]NO[/]")
                ft.add_row("kiln_top: #pragma HLS PIPELINE", "[green]yes[/]" if chk["top_pipelined"] else "[red]NO[/]")
                console.print(ft)
                pt = Table(title=f"layer calls in firmware/kiln_top.cpp ({chk['n_calls']}) -> "
                                 "templates in firmware/nnet/")
                pt.add_column("template")
                pt.add_column("calls", justify="right")
                pt.add_column("header")
                pt.add_column("pipelining")
                for r in chk["rows"]:
                    pt.add_row(f"kiln::{r['template']}", str(r["calls"]), r["header"],
                               r["pragma"] if r["ok"] else f"[red]{r['pragma']}[/]")
                console.print(pt)
                own = sum(r["calls"] for r in chk["rows"] if r.get("own"))
                inl = [r for r in chk["rows"] if r["ok"] and not r.get("own")]
                complete = (all(g for _, g in chk["files"]) and chk["top_pipelined"]
                            and all(r["ok"] for r in chk["rows"]))
                console.print(f"{own}/{chk['n_calls']} layer calls land on a template with its own "
                              "#pragma HLS PIPELINE"
                              + (f"; {sum(r['calls'] for r in inl)} on INLINE templates "
                                 f"({', '.join('kiln::' + r['template'] for r in inl)}) absorbed by kiln_top's PIPELINE"
                                 if inl else "")
                              + f". Project complete for Vitis HLS: {'[green]yes[/]' if complete else '[red]NO[/]'}")

        # ---- 2. LayerNorm / softmax accuracy
        results, notes, kiln_failed = accuracy_sweep(root, console, args.verbose, args.skip_hls4ml)
        failed |= kiln_failed
        for op, keys, primary, target in (("LayerNorm", LN_KEYS, "mean", LN_TARGET),
                                          ("Softmax", SM_KEYS, "max", SM_TARGET)):
            tools = list(results[op])
            desc = (f"LayerNorm over {LN_FEATURES} features, [{LN_ROWS}, {LN_FEATURES}] inputs x 128"
                    if op == "LayerNorm" else f"Softmax over {SM_LOGITS} logits, [{SM_ROWS}, {SM_LOGITS}] inputs x 256")
            tab = Table(title=f"{desc}: [bold]{primary} |err|[/] vs ONNX Runtime "
                              f"({KILN_PRECISION} / {HLS4ML_PRECISION})")
            tab.add_column("input std", justify="right")
            labels = {"kiln": f"Kiln {KILN_PRECISION}", "hls4ml name": "hls4ml gran=name",
                      "hls4ml model": "hls4ml gran=model", "hls4ml [4,15]": "hls4ml [4,15] as-is"}
            for tool in tools:
                tab.add_column(labels.get(tool, tool), justify="right")
            tab.add_column("issue: hls4ml", justify="right")
            tab.add_column(f"Kiln target {primary} <= {target}", justify="center")
            for s in keys:
                cells = []
                for tool in tools:
                    r = results[op][tool]
                    cells.append(fmt(r if isinstance(r, str) else r[s], primary))
                kr = results[op].get("kiln")
                met = (not isinstance(kr, str)) and kr is not None and kr[s][primary] <= target
                issue = ISSUE_HLS4ML.get((op, s))
                label = f"{s[0]:g}" + ((" + row offset" if s[1] else " zero-mean rows") if op == "LayerNorm" else "")
                tab.add_row(label, *cells, f"{issue:.2f}" if issue is not None else "-",
                            "[green]met[/]" if met else "[red]MISSED[/]")
            console.print(tab)
        console.print("[dim]cells: the target metric in bold, the other in brackets; reference: ONNX Runtime on "
                      "Kiln's one-op model. hls4ml softmax gets rows of 15 logits (input_shape (15,)) except "
                      "'[4,15] as-is' (input_shape (4, 15)).[/]")
        for k, v in notes.items():
            console.print(f"[dim]{k}: {v}[/]")

        console.print("[dim]" + ", ".join(f"{k} {v}" for k, v in tool_versions().items()) + "[/]")
        if args.keep is not None:
            console.print(f"outputs kept in {root}")
    console.print(f"bench wall time {time.perf_counter() - t_bench:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
