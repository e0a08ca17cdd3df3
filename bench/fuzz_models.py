#!/usr/bin/env python
"""Seeded mutation fuzzer: bad ONNX models must give exit 0 or a clean ``kiln: error`` (exit 2).

Not a test (tests/test_bad_models.py runs a small seeded sample of it). Run from the repo root::

    .venv/bin/python bench/fuzz_models.py [--count 5000] [--seed 0] [--jobs 2] [--tvm-every 3]
                                          [--timeout 60] [--run-every 40] [--show 5]

Seeds are built in-process: torch exports of a small MLP, CNN and attention block, a QONNX
``Quant`` model (Brevitas style, written with onnx.helper) and an ONNX Runtime style Q/DQ
model. Each mutant is one to three structural mutations of a seed's protobuf (dims, element
types, raw_data truncation, typed-field data, attribute values, node inputs rewired, hostile
or non-UTF-8 names, huge dims, ConstantOfShape/Expand blow-ups) or byte corruption of the
serialized file. It goes through ``kiln compile`` for an HLS board (vu13p, --precision float:
no g++) and, every ``--tvm-every``-th, a TVM board (x86-host); every ``--run-every``-th
accepted TVM compile also goes through ``kiln run`` (and HLS ones through ``kiln csim``
with ``--csim``: that builds with g++).

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
import copy
import io
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
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HOSTILE_NAMES = ["", " ", "../../etc/passwd", "a\"b'c;`rm -rf`", "名前", "x" * 300, "\x00nul", "-o",
                 "con", "a/b\\c", "$(echo hi)", "%s%n", "\n", "#include <x>", "weights"]
HUGE = [2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 40, 2 ** 62, 10 ** 5, -1, -2 ** 31, 0]


# ---------------------------------------------------------------- seeds

def _torch_seeds() -> list[tuple[str, onnx.ModelProto]]:
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(0)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x + self.mha(x, x, x, need_weights=False)[0])

    models = [("torch_mlp", nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), (1, 6)),
              ("torch_cnn", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(2 * 3 * 3, 4)), (1, 1, 8, 8)),
              ("torch_attn", Attn(), (1, 4, 8))]
    seeds = []
    for name, module, shape in models:
        module.eval()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, torch.randn(*shape), buf, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
        seeds.append((name, onnx.load_from_string(buf.getvalue())))
    return seeds


def _qonnx_seed() -> onnx.ModelProto:
    """x[N,6] -> Quant(4 bit) -> MatMul(W quantized 4 bit) -> Add -> Relu -> Quant(8 bit) -> y."""
    rng = np.random.default_rng(0)
    dom = "qonnx.custom_op.general"
    inits = [numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "B"),
             numpy_helper.from_array(np.array(0.125, np.float32), "s_a"),
             numpy_helper.from_array(np.array(0.25, np.float32), "s_w"),
             numpy_helper.from_array(np.array(0.0625, np.float32), "s_o"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zp"),
             numpy_helper.from_array(np.array(4.0, np.float32), "b4"),
             numpy_helper.from_array(np.array(8.0, np.float32), "b8")]
    q = dict(domain=dom, signed=1, narrow=0, rounding_mode="ROUND")
    nodes = [helper.make_node("Quant", ["x", "s_a", "zp", "b4"], ["xq"], name="quant_in", **q),
             helper.make_node("Quant", ["W", "s_w", "zp", "b4"], ["Wq"], name="quant_w", **q),
             helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "B"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Quant", ["r", "s_o", "zp", "b8"], ["y"], name="quant_out", **q)]
    graph = helper.make_graph(nodes, "qonnx_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)],
                             ir_version=8)


def _qdq_seed() -> onnx.ModelProto:
    """x -> Q/DQ -> MatMul(DQ(int8 W, per channel)) -> Q/DQ -> y (quantize_static's layout)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "Wq"),
             numpy_helper.from_array(np.full(3, 0.02, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
             numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"], name="dq_w", axis=1),
             helper.make_node("MatMul", ["xd", "W"], ["h"], name="matmul"),
             helper.make_node("QuantizeLinear", ["h", "y_scale", "y_zp"], ["hq"], name="q_y"),
             helper.make_node("DequantizeLinear", ["hq", "y_scale", "y_zp"], ["y"], name="dq_y")]
    graph = helper.make_graph(nodes, "qdq_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def build_seeds(torch_seeds: bool = True) -> list[tuple[str, onnx.ModelProto]]:
    seeds = _torch_seeds() if torch_seeds else []
    return seeds + [("qonnx_mlp", _qonnx_seed()), ("qdq_mlp", _qdq_seed())]


# ---------------------------------------------------------------- mutations

def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return found


def _value_infos(model: onnx.ModelProto):
    g = model.graph
    return [v for v in (*g.input, *g.output, *g.value_info) if v.type.HasField("tensor_type")]


def _names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(n.output)
    return sorted(names)


def m_dims(model, rng):
    t = rng.choice(_tensors(model) or [None])
    if t is None:
        return
    dims = list(t.dims)
    choice = rng.random()
    if not dims or choice < 0.3:
        dims.append(rng.choice([1, 2, 3, 8]))
    elif choice < 0.5:
        dims.pop(rng.randrange(len(dims)))
    else:
        dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2, 3, 7, 16, -1, -3] + HUGE)
    del t.dims[:]
    t.dims.extend(dims)


def m_dtype(model, rng):
    target = rng.random()
    value = rng.choice([999, -3, 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 21, 22, 23, 24, 40])
    if target < 0.6 and _tensors(model):
        rng.choice(_tensors(model)).data_type = value
    else:
        rng.choice(_value_infos(model)).type.tensor_type.elem_type = value


def m_raw_data(model, rng):
    ts = [t for t in _tensors(model) if t.raw_data]
    if not ts:
        return
    t = rng.choice(ts)
    raw = t.raw_data
    r = rng.random()
    if r < 0.4:
        t.raw_data = raw[: rng.randrange(len(raw))]
    elif r < 0.6:
        t.raw_data = raw + bytes(rng.randrange(1, 9))
    elif r < 0.8:  # move the data into a typed field of the wrong length
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.randrange(0, 20))
        t.int64_data.extend([1] * rng.randrange(0, 3))
    else:
        t.raw_data = bytes(rng.randrange(256) for _ in range(len(raw)))


def m_attribute(model, rng):
    attrs = [(n, a) for n in model.graph.node for a in n.attribute]
    if not attrs:
        return
    node, a = rng.choice(attrs)
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice([-1, 0, 1, 2, 5, 100, 2 ** 31, -2 ** 62, 2 ** 62])
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([0.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e38, 1e-45])
    elif a.type == onnx.AttributeProto.INTS:
        vals = list(a.ints)
        if vals and rng.random() < 0.6:
            vals[rng.randrange(len(vals))] = rng.choice([-1, 0, 7, 2 ** 31, -2 ** 40])
        else:
            vals = vals[:-1] if vals else [1]
        del a.ints[:]
        a.ints.extend(vals)
    elif a.type == onnx.AttributeProto.STRING:
        a.s = rng.choice([b"", b"nonsense", b"\xff\xfe", b"ROUND", b"FLOOR"])
    elif a.type == onnx.AttributeProto.TENSOR:
        m_dims(model, rng)
    if rng.random() < 0.15:  # an attribute of a type the op does not expect
        a.type = rng.choice([1, 2, 3, 7, 99])


def m_rewire(model, rng):
    nodes = list(model.graph.node)
    if not nodes:
        return
    node = rng.choice(nodes)
    names = _names(model)
    r = rng.random()
    if node.input and r < 0.6:
        node.input[rng.randrange(len(node.input))] = rng.choice(names + ["", "nonexistent"])
    elif r < 0.8:
        node.input.append(rng.choice(names))
    elif node.output:
        node.output[rng.randrange(len(node.output))] = rng.choice(names + [""])
    if rng.random() < 0.1:  # a node moved (graph order broken)
        model.graph.node.remove(node)
        model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), node)


def m_hostile_name(model, rng):
    g = model.graph
    pool = [("node", n) for n in g.node] + [("init", t) for t in g.initializer] + [("graph", g)]
    kind, obj = rng.choice(pool)
    new = rng.choice(HOSTILE_NAMES)
    if kind == "init" and rng.random() < 0.7:  # rename everywhere, keeping the graph connected
        old = obj.name
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new
        obj.name = new
    else:
        obj.name = new


def m_huge_input(model, rng):
    vi = rng.choice(list(model.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = dims[rng.randrange(len(dims))]
        d.Clear()
        d.dim_value = rng.choice(HUGE)


def m_blowup(model, rng):
    """Route the output through ConstantOfShape/Expand to a huge shape (Add keeps it used)."""
    g = model.graph
    out = g.output[0]
    side = rng.choice([100000, 2 ** 20, 46341, 3])
    shape = numpy_helper.from_array(np.array([side, side], np.int64), "kiln_fuzz_shape")
    g.initializer.append(shape)
    old = out.name
    for n in g.node:
        for i, name in enumerate(n.output):
            if name == old:
                n.output[i] = "kiln_fuzz_pre"
    if rng.random() < 0.5:
        g.node.append(helper.make_node("ConstantOfShape", ["kiln_fuzz_shape"], ["kiln_fuzz_big"], name="cos",
                                       value=numpy_helper.from_array(np.array([1.0], np.float32))))
        g.node.append(helper.make_node("ReduceSum", ["kiln_fuzz_big"], ["kiln_fuzz_s"], name="rs", keepdims=0))
        g.node.append(helper.make_node("Add", ["kiln_fuzz_pre", "kiln_fuzz_s"], [old], name="addbig"))
    else:
        g.node.append(helper.make_node("Expand", ["kiln_fuzz_pre", "kiln_fuzz_shape"], [old], name="expand"))
        del out.type.tensor_type.shape.dim[:]


def m_opset(model, rng):
    op = model.opset_import[0]
    op.version = rng.choice([1, 6, 9, 11, 13, 17, 21, 23, 25, 99, -1])
    if rng.random() < 0.3:
        model.ir_version = rng.choice([0, 1, 3, 99])


STRUCTURAL = [m_dims, m_dtype, m_raw_data, m_attribute, m_rewire, m_hostile_name, m_huge_input, m_blowup, m_opset]
WEIGHTS = [3, 3, 3, 3, 3, 2, 1, 1, 1]


def _non_utf8(data: bytes, model: onnx.ModelProto, rng) -> bytes:
    """Replace one name's bytes in the serialized file with invalid UTF-8 of the same length."""
    names = [n for n in _names(model) + [n.name for n in model.graph.node] if len(n) >= 2]
    if not names:
        return data
    raw = rng.choice(names).encode()
    bad = bytes([0xff, 0xfe] + [0x80] * (len(raw) - 2))
    return data.replace(raw, bad, rng.choice([1, -1]))


def _corrupt(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    r = rng.random()
    if r < 0.5:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif r < 0.75:
        del buf[rng.randrange(len(buf)):]
    else:
        start = rng.randrange(len(buf))
        buf[start:start] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(buf)


def make_mutant(seed: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """(serialized mutant, description of the mutations)."""
    model = copy.deepcopy(seed)
    done = []
    for fn in rng.choices(STRUCTURAL, WEIGHTS, k=rng.choice([1, 1, 2, 3])):
        try:
            fn(model, rng)
        except (ValueError, TypeError, IndexError):  # the protobuf refused the value: skip it
            continue
        done.append(fn.__name__[2:])
    try:
        data = model.SerializeToString()
    except Exception:  # noqa: BLE001 - a mutation protobuf cannot serialize: fall back to the seed
        data, done = seed.SerializeToString(), []
    r = rng.random()
    if r < 0.08:
        data, done = _non_utf8(data, model, rng), done + ["non_utf8"]
    elif r < 0.16:
        data, done = _corrupt(data, rng), done + ["corrupt"]
    return data, "+".join(done) or "none"


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
         csim: bool = False, keep: Path | None = None, mem_gb: float = 6.0, torch_seeds: bool = True,
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
            if run_every and (kind == "tvm" or csim) and counts[f"{kind} 0"] % run_every == 0:
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
    p.add_argument("--csim", action="store_true", help="also C-simulate every --run-every-th accepted HLS compile")
    p.add_argument("--mem-gb", type=float, default=6.0, help="address space per case above the parent's (0: none)")
    p.add_argument("--keep", type=Path, help="save one reproducer per crash class here")
    p.add_argument("--show", type=int, default=20, help="crash classes to print")
    p.add_argument("--jobs", type=int, default=2, help="cases at a time")
    p.add_argument("--no-torch", action="store_true", help="only the helper-built seeds (no torch export)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    result = fuzz(a.count, a.seed, a.tvm_every, a.timeout, a.run_every, a.csim, a.keep, a.mem_gb,
                  not a.no_torch, a.jobs, a.verbose, log=lambda s: print(s, flush=True))
    print(summary(result, a.show), flush=True)
    c = result["counts"]
    return 1 if c["traceback"] or c["hang"] or c["follow-up traceback"] or c["follow-up hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
