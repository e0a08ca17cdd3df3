"""Rule-based schedules (backends/tvm/schedules.py): every kernel of the untuned build gets
parallel outer loops and vectorized inner loops at the board's vector width, the numbers stay
those of ONNX Runtime, the rpi4 cross build carries the same schedules, and a rule that
raises falls back (per kernel) instead of failing the build."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

from kiln.backends.tvm import compile_tvm, schedules  # noqa: E402
from kiln.backends.tvm.importer import to_relax  # noqa: E402
from kiln.backends.tvm.target import resolve_target  # noqa: E402
from kiln.board import get_board  # noqa: E402
from kiln.frontend import load_model  # noqa: E402


def _save(path, nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("sched")
    rng = np.random.default_rng(3)
    w = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)  # noqa: E731
    f32 = TensorProto.FLOAT
    matmul = _save(d / "matmul.onnx",
                   [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
                    helper.make_node("Relu", ["a"], ["y"])],
                   [helper.make_tensor_value_info("x", f32, [1, 32, 64])],
                   [helper.make_tensor_value_info("y", f32, [1, 32, 96])], [w("w", 64, 96), w("b", 96)])
    conv = _save(d / "conv.onnx",
                 [helper.make_node("Conv", ["x", "k", "c"], ["h"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["h"], ["r"]),
                  helper.make_node("Conv", ["r", "dw"], ["g"], pads=[1, 1, 1, 1], group=16),
                  helper.make_node("Conv", ["g", "pw"], ["y"])],
                 [helper.make_tensor_value_info("x", f32, [1, 8, 32, 32])],
                 [helper.make_tensor_value_info("y", f32, [1, 24, 32, 32])],
                 [w("k", 16, 8, 3, 3), w("c", 16), w("dw", 16, 1, 3, 3), w("pw", 24, 16, 1, 1)])
    return {"matmul": matmul, "conv": conv}


def _scheduled(path, board):
    target = resolve_target(get_board(board))
    loaded = load_model(str(path), quantizers=False)
    mod = schedules.legalize(to_relax(loaded.model, loaded.source), target)
    return schedules.schedule_module(mod, target)


def _kernels(mod):
    from tvm import tirx

    return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


@pytest.mark.parametrize("name,kernel", [("matmul", "matmul"), ("conv", "conv2d")])
def test_main_kernels_are_parallel_and_vectorized(models, name, kernel):
    mod, counts = _scheduled(models[name], "x86-host")
    lanes = counts["vector_lanes"]
    assert lanes in (8, 16) and counts["default"] == 0
    texts = [t for n, t in _kernels(mod).items() if kernel in n]
    assert texts
    for text in texts:
        assert "T.parallel(" in text and "T.vectorized(" in text, text
        assert '"local"' in text  # the accumulator tile


def test_llvm_code_has_vector_ops_and_a_parallel_launch(models, tmp_path):
    import tvm

    target = resolve_target(get_board("x86-host"))
    loaded = load_model(str(models["matmul"]), quantizers=False)
    ex = tvm.compile(to_relax(loaded.model, loaded.source), target=tvm.target.Target(target),
                     relax_pipeline=schedules.scheduled_pipeline(target))
    lanes = schedules.vector_lanes(target)
    ll = "".join(m.inspect_source("ll") for m in ex.mod.imports if m.kind == "llvm")
    widths = {int(n) for n in re.findall(r"<(\d+) x float>", ll)}
    assert any(n % lanes == 0 for n in widths), widths  # whole vectors of the board's width
    assert "TVMBackendParallelLaunch" in ll


@pytest.mark.parametrize("name", ["matmul", "conv"])
def test_scheduled_build_matches_onnxruntime(models, name, tmp_path):
    art = compile_tvm(models[name], board="x86-host", output_dir=tmp_path / name)
    counts = art.manifest["schedules"]
    assert counts["tile"] >= 1 and counts["default"] == 0
    x = np.random.default_rng(1).standard_normal((2, *art.inputs[0]["shape"][1:])).astype(np.float32)
    (result,) = art.compare(x)
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale)
    table = json.loads((art.path / "kernels.json").read_text())
    assert sum(k["calls"] for k in table) >= 1 and {k["rule"] for k in table} <= {"tile", "rows", "plain", "default"}


def test_rpi4_carries_the_same_schedules_at_neon_width(models, tmp_path):
    host_mod, host = _scheduled(models["conv"], "x86-host")
    arm_mod, arm = _scheduled(models["conv"], "rpi4")
    assert arm["vector_lanes"] == 4 and arm["cores"] == 4
    assert {k: host[k] for k in ("tile", "rows", "plain", "default")} == {k: arm[k] for k in ("tile", "rows", "plain", "default")}
    for text in _kernels(arm_mod).values():
        if "conv2d" in text:
            assert "T.parallel(" in text and "T.vectorized(" in text
    art = compile_tvm(models["conv"], board="rpi4", output_dir=tmp_path / "rpi4", lib_format="tar")
    assert art.manifest["library"]["format"] == "tar"
    assert art.manifest["schedules"]["vector_lanes"] == 4 and art.manifest["schedules"]["tile"] == arm["tile"]


def test_a_rule_that_raises_falls_back_per_kernel(models, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("rule broken on purpose")

    monkeypatch.setattr(schedules, "_tile_main", broken)
    _, counts = _scheduled(models["matmul"], "x86-host")
    assert counts["tile"] == 0 and counts["plain"] >= 1
    monkeypatch.setattr(schedules, "_schedule_plain", broken)
    art = compile_tvm(models["matmul"], board="x86-host", output_dir=tmp_path / "fallback")
    assert art.manifest["schedules"]["default"] == art.manifest["schedules"]["kernels"]
    x = np.random.default_rng(2).standard_normal((1, 32, 64)).astype(np.float32)
    (result,) = art.compare(x)
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale)


def test_bench_json_lists_the_kernels_by_share(models, tmp_path):
    from tests.helpers import run_kiln

    out = tmp_path / "conv"
    assert run_kiln("compile", models["conv"], "--board", "x86-host", "-o", out).returncode == 0
    result = run_kiln("bench", out, "--repeat", "5", "--warmup", "1", "--kernels", "3", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tvm_over_onnxruntime"] > 0 and {e["engine"] for e in data["engines"]} >= {"tvm", "onnxruntime"}
    kernels = data["kernels"]
    assert 1 <= len(kernels) <= 3 and all(k["ms"] > 0 and k["calls"] >= 1 for k in kernels)
    assert [k["ms"] for k in kernels] == sorted((k["ms"] for k in kernels), reverse=True)
    assert any("conv2d" in k["kernel"] and k["rule"] == "tile" for k in kernels)


def test_runtime_thread_pool_gets_every_physical_core(models, monkeypatch, tmp_path):
    """TVM 0.27 alone sizes its pool to half the logical CPUs on x86 (one thread on a 2-core
    VM without SMT, while the schedules' parallel loops are sized for the board's cores):
    Kiln gives it the physical cores, and leaves a user's TVM_NUM_THREADS/OMP_NUM_THREADS.
    The library runs on that pool (the suite's xdist workers have one thread each) and
    agrees with ONNX Runtime."""
    import os
    import subprocess
    import sys

    from kiln.backends.tvm.target import host_cpu_count, runtime_threads

    clean = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    compile_tvm(models["conv"], board="x86-host", output_dir=tmp_path / "conv")
    code = ("import sys, numpy as np; from kiln.backends.tvm import open_artifact; "
            "from kiln.backends.tvm.target import require_tvm; tvm = require_tvm(); art = open_artifact(sys.argv[1]); "
            "x = np.random.default_rng(3).standard_normal((2, *art.inputs[0]['shape'][1:])).astype(np.float32); "
            "(r,) = art.compare(x); print(tvm.runtime.num_threads(), r.max_abs_error / max(1.0, r.scale))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "conv")], env=clean, capture_output=True,
                         text=True, check=True)
    cores = host_cpu_count()
    assert 1 <= cores <= (os.cpu_count() or 1)
    threads, error = out.stdout.split()[-2:]
    assert int(threads) == cores and float(error) <= 1e-5, out.stdout
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv(name, "3")
        assert runtime_threads() == 3
    monkeypatch.setenv("TVM_NUM_THREADS", "zero")
    assert runtime_threads() == cores and os.environ["TVM_NUM_THREADS"] == str(cores)
