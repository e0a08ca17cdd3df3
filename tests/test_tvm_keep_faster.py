"""keep_faster.py: after tuning, the faster whole-model build is the one shipped.

Two builds of one 256-wide dense model that differ by an order of magnitude in speed (TVM's
default loop nests: one scalar thread; Kiln's rule-based schedules: tiled, vectorized,
parallel) stand in for a tuned and an untuned build: the check must keep the fast one
whichever side it is on. Then a tuned compile whose database prefers a kernel's naive loop
nest (a record "measured" at 1 ns) ships the rule-based build instead, says so in its
manifest, and agrees with ONNX Runtime within 1e-5. About 60 s on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")
for _dep in ("psutil", "cloudpickle", "xgboost"):
    pytest.importorskip(_dep, reason="MetaSchedule tuning needs psutil, cloudpickle and xgboost (the tvm extra)")

from tests.helpers import relative_error  # noqa: E402

from kiln.backends.tvm import compile_tvm  # noqa: E402
from kiln.backends.tvm.importer import to_relax  # noqa: E402
from kiln.backends.tvm.keep_faster import keep_faster, random_sample  # noqa: E402
from kiln.backends.tvm.schedules import scheduled_pipeline  # noqa: E402
from kiln.backends.tvm.target import resolve_target  # noqa: E402
from kiln.board import get_board  # noqa: E402
from kiln.frontend import load_model  # noqa: E402

WIDTH = 256


def _dense(path, layers: int = 3):
    rng = np.random.default_rng(5)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) / 16, f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, WIDTH])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [64, WIDTH])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_the_faster_build_is_kept_whichever_side_it_is_on(tmp_path):
    path = _dense(tmp_path / "dense.onnx")
    loaded = load_model(path, quantizers=False)
    mod = to_relax(loaded.model, loaded.source)
    target = tvm.target.Target(resolve_target(get_board("x86-host")))
    fast = tvm.compile(mod, target=target, relax_pipeline=scheduled_pipeline(resolve_target(get_board("x86-host")), {}))
    slow = tvm.compile(mod, target=target)  # TVM's default pipeline: naive loop nests
    inputs = [{"name": "x", "shape": [64, WIDTH], "dtype": "float32"}]
    kept, record = keep_faster(tvm, tuned=slow, rule_based=fast, inputs=inputs)
    assert kept == "rule-based" and record["kept"] == kept, record
    assert record["tuned_ms"] > 2 * record["rule_based_ms"], record
    kept, record = keep_faster(tvm, tuned=fast, rule_based=slow, inputs=inputs)
    assert kept == "tuned" and record["rule_based_ms"] > 2 * record["tuned_ms"], record


def test_random_sample_follows_the_ports():
    sample = random_sample([{"shape": [2, 3], "dtype": "float32"}, {"shape": [4], "dtype": "int64"}])
    assert sample[0].shape == (2, 3) and sample[0].dtype == np.float32 and sample[0].std() > 0
    assert sample[1].dtype == np.int64 and not sample[1].any()  # indices: 0 is in range on every axis


def test_a_record_faster_alone_but_slower_in_the_model_is_not_shipped(tmp_path):
    """The database is told (a record measured at 1 ns) that the dense kernel's naive loop nest
    beats its rule-based schedule: the tuned build uses it, the whole-model check times both
    builds, and the compile ships the rule-based one, saying so in the manifest."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.database import TuningRecord

    from kiln.backends.tvm.schedules import legalize
    from kiln.backends.tvm.tuning_db import _identity_trace, kernels, open_database

    path = _dense(tmp_path / "dense.onnx")
    target = resolve_target(get_board("x86-host"))
    loaded = load_model(path, quantizers=False)
    (k,) = [k for k in kernels(legalize(to_relax(loaded.model, loaded.source), target), target) if k.calls == 3]
    db = open_database(tmp_path / "db", create=True, target=target)
    db.commit_tuning_record(TuningRecord(_identity_trace(k.workload), db.commit_workload(k.workload), [1e-9],
                                         tvm.target.Target(target), ArgInfo.from_prim_func(k.workload["main"])))
    del db
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / "tuned", tune=2, tuning_db=tmp_path / "db")
    check = art.manifest["tuning"]["whole_model"]
    assert check["kept"] == "rule-based" and check["tuned_ms"] > 2 * check["rule_based_ms"], check
    kernels_shipped = json.loads((tmp_path / "tuned" / "kernels.json").read_text())
    assert not any(row["rule"] == "tuned" for row in kernels_shipped)
    assert art.manifest["schedules"].get("tuned", 0) == 0
    x = np.random.default_rng(2).standard_normal((1, 64, WIDTH)).astype(np.float32)
    assert relative_error(art.run(x), art.reference(x)[0]) <= 1e-5
