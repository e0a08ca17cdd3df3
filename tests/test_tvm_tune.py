"""kiln compile --tune: MetaSchedule on the x86-host target with a tiny trial budget.

A few trials say nothing about speed; this proves that the tuner runs here (apache-tvm-ffi
0.1.14.post0, CPU-only tensor intrinsics, one builder pool), keeps its log next to the
artifact, and that the tuned library still agrees with ONNX Runtime. About 30-60 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")
for _dep in ("psutil", "cloudpickle", "xgboost"):
    pytest.importorskip(_dep, reason="MetaSchedule tuning needs psutil, cloudpickle and xgboost (the tvm extra)")

from tests.helpers import long_test, relative_error  # noqa: E402

from kiln.backends.tvm import open_artifact  # noqa: E402

TRIALS = 4


@long_test("~25 s (a tuning run of its own; tests/test_tvm_tuning_db.py tunes through the same code in CI, "
           "and its CLI case checks --tune's argument handling)")
def test_tune_tiny_budget_keeps_log_and_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc"),
                               helper.make_node("Relu", ["h"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    model = tmp_path / "fc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), model)
    out = tmp_path / "tuned"
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "compile", str(model), "--board", "x86-host",
                        "--tune", str(TRIALS), "-o", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "KILN_TUNING_DB": str(tmp_path / "db")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tuned:" in r.stdout
    tuning = json.loads((out / "kiln_manifest.json").read_text())["tuning"]
    assert tuning["trials"] == TRIALS and 1 <= tuning["measured"] <= TRIALS and tuning["records"] >= 1
    assert tuning["untuned_measured"] == tuning["tasks"]  # the untuned kernels are candidates too
    records = (out / "tuning" / "database_tuning_record.json").read_text().splitlines()
    assert records and (out / "tuning" / "database_workload.json").is_file()
    assert any((out / "tuning" / "logs").iterdir())
    x = rng.standard_normal((16, 32)).astype(np.float32)
    art = open_artifact(out)
    assert relative_error(art.run(x), art.reference(x)[0]) <= 1e-4


def test_only_the_target_architectures_intrinsics_are_registered():
    """The tuner registers x86's tensor intrinsics for an x86 board and arm_cpu's for an Arm one
    (parsing the Arm module alone takes ~12 s, once in the tuner and once in every builder)."""
    import tvm

    from kiln.backends.tvm.tune import intrinsics_module

    assert intrinsics_module({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}) == "arm_cpu"
    assert intrinsics_module("armv7a-linux-gnueabihf") == "arm_cpu"
    assert intrinsics_module({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}) == "x86"
    assert intrinsics_module(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                                "mcpu": "cortex-a72"})) == "arm_cpu"
