"""The command line a user scripts against: --version, --json (only JSON on stdout), the
--atol/--rtol/--min-agreement gate (exit 1), progress lines in logs, one spelling of layer
names, and `kiln doctor` listing only backends that exist."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.board import list_boards
from kiln.reference import run_onnxruntime_intermediates
from tests.helpers import run_kiln

LAYERS = ["/fc1/Gemm", "Relu_1", "Gemm_2"]  # the named Gemm, then <op>_<index> for the unnamed nodes
PRECISION = "fixed<8,2>"  # range [-2, 2 - 2^-6]: the first layer's outputs overflow it


def small_mlp(path, scale2: float = 1.0):
    """x[N,4] -> Gemm '/fc1/Gemm' -> Relu (unnamed) -> Gemm (unnamed) -> y[N,3]."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 4)).astype(np.float32) * 0.5
    b1 = rng.normal(size=(8,)).astype(np.float32) * 0.1
    w2 = rng.normal(size=(3, 8)).astype(np.float32) * 0.5 * scale2
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="/fc1/Gemm", transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


@pytest.fixture(scope="module")
def hls(tmp_path_factory):
    """The small MLP compiled by the CLI in fixed<8,2> with a config naming an unnamed node."""
    tmp = tmp_path_factory.mktemp("cli")
    model = small_mlp(tmp / "m.onnx")
    (tmp / "kiln.toml").write_text('[layers."Relu_1"]\nprecision = "fixed<8,2>"\n')
    r = run_kiln("compile", model, "-o", tmp / "prj", "--precision", PRECISION, "--config", tmp / "kiln.toml")
    assert r.returncode == 0, r.stderr
    x = np.round(np.random.default_rng(1).uniform(-1.9, 1.9, size=(64, 4)) * 64) / 64  # exact in fixed<8,2>
    np.save(tmp / "x.npy", x.astype(np.float32))
    return tmp, kiln.open_project(tmp / "prj"), x.astype(np.float32)


@pytest.fixture(scope="module")
def csim_json(hls):
    """One `kiln csim --json --trace --output` run (the result, the C-sim outputs, its stderr)."""
    tmp, project, _ = hls
    r = run_kiln("csim", project.path, "--input", tmp / "x.npy", "--json", "--trace", tmp / "trace",
                 "--output", tmp / "y.npy")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), np.load(tmp / "y.npy").astype(np.float64), r.stderr  # stdout is one JSON object


def test_version_is_the_package_version():
    r = run_kiln("--version")
    assert r.returncode == 0
    assert r.stdout == f"kiln {importlib.metadata.version('kiln')}\n"
    assert kiln.__version__ == importlib.metadata.version("kiln")


def test_csim_json_is_the_only_stdout_and_matches_onnxruntime(hls, csim_json):
    tmp, project, x = hls
    data, got, stderr = csim_json
    assert data["samples"] == 64 and data["precision"] == PRECISION and data["checks"] is None
    assert data["output_file"] == str(tmp / "y.npy") and "wrote" in stderr
    ref = project.reference(x)[0].astype(np.float64)
    (out,) = data["outputs"]
    assert out["name"] == "y"
    assert out["max_abs_error"] == pytest.approx(np.max(np.abs(got - ref)), rel=1e-9)
    assert out["relative_error"] == pytest.approx(np.max(np.abs(got - ref)) / np.max(np.abs(ref)), rel=1e-9)
    assert out["argmax_agreement"] == pytest.approx(np.mean(got.argmax(1) == ref.argmax(1)))
    # overflow counts per layer: the values of h that ONNX Runtime puts outside fixed<8,2>
    h = run_onnxruntime_intermediates(project.path / "model.onnx", project.inputs, [x], ["h"])["h"]
    expected = int(np.sum((h < -2) | (h > 2 - 2 ** -6)))
    first = data["overflows"][0]
    assert first["value"] == "h" and first["total"] == 64 * 8 and expected > 10
    assert abs(first["count"] - expected) <= max(3, 0.05 * expected), (first["count"], expected)
    assert set(data["seconds"]) >= {"build", "csim", "trace", "compare", "total"}
    # progress went to stderr, as lines that stay in a log: stamp, step, duration
    assert re.search(r"^\[\s*\d+\.\ds\] building C-simulation \(g\+\+\) \.\.\. done \(\d+\.\d s\)$", stderr, re.M)
    assert "running C-simulation (counting overflows) ... done (" in stderr


def test_layer_names_are_spelled_alike_everywhere(hls, csim_json):
    """Config (unnamed node by its fallback name), report --json, trace, profile and overflow rows."""
    tmp, project, x = hls
    data = csim_json[0]
    assert [row["layer"] for row in data["trace"]] == LAYERS
    assert [row["op"] for row in data["trace"]] == ["Dense", "Relu", "Dense"]
    assert [row["layer"] for row in data["overflows"]] == LAYERS
    report = run_kiln("report", project.path, "--json", "--data", tmp / "x.npy")
    assert report.returncode == 0, report.stderr
    rep = json.loads(report.stdout)
    assert [layer["name"] for layer in rep["layers"]] == LAYERS
    assert [row["layer"] for row in rep["profile"]["rows"]] == ["input x", *LAYERS]
    (tmp / "bad.toml").write_text('[layers."/fc2/Gemm"]\nreuse_factor = 2\n')
    bad = run_kiln("compile", tmp / "m.onnx", "-o", tmp / "bad", "--config", tmp / "bad.toml")
    assert bad.returncode == 2 and "'/fc2/Gemm'" in bad.stderr
    assert "layers are: " + repr(sorted(LAYERS)) in bad.stderr


def test_csim_gate_exits_1_naming_the_output_and_bound(hls, csim_json):
    tmp, project, x = hls
    got = csim_json[1]
    ref = project.reference(x)[0].astype(np.float64)
    err = float(np.max(np.abs(got - ref)))
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    assert err > 0 and agree < 1
    r = run_kiln("csim", project.path, "--input", tmp / "x.npy", "--json", "--atol", err / 2, "--rtol", 10, "--min-agreement", 1.0)
    assert r.returncode == 1, r.stderr
    assert "kiln: check failed: output 'y': max abs error" in r.stderr and "> --atol" in r.stderr
    assert "argmax agreement" in r.stderr and "< --min-agreement 100%" in r.stderr
    assert "--rtol" not in r.stderr  # that bound held
    checks = json.loads(r.stdout)["checks"]
    assert checks["passed"] is False and len(checks["failures"]) == 2
    r = run_kiln("csim", project.path, "--input", tmp / "x.npy", "--atol", err * 1.01, "--min-agreement", agree)
    assert r.returncode == 0, r.stderr
    assert "kiln: checks passed" in r.stderr and "argmax agreement" in r.stdout  # the table still prints
    assert "warning: layer '/fc1/Gemm' (Dense) overflowed" in r.stdout  # the layer's name as in the config
    assert '[layers."/fc1/Gemm"]' in r.stdout


def test_user_errors_with_json_exit_2_with_an_error_object(hls, tmp_path):
    tmp, project, _ = hls
    r = run_kiln("csim", tmp_path / "nowhere", "--input", tmp / "x.npy", "--json")
    assert r.returncode == 2 and r.stderr.startswith("kiln: error: ") and "Traceback" not in r.stderr
    assert json.loads(r.stdout) == {"error": r.stderr.strip()[len("kiln: error: "):], "exit_code": 2}
    for flags, needle in ((["--min-agreement", "1.5"], "--min-agreement 1.5 is a fraction"),
                          (["--atol", "-1"], "--atol -1.0 must be"),
                          (["--atol", "1", "--no-compare"], "drop --no-compare")):
        r = run_kiln("csim", project.path, "--input", tmp / "x.npy", *flags)
        assert r.returncode == 2 and needle in r.stderr and "building" not in r.stderr, r.stderr
    r = run_kiln("csim", project.path, "--json")  # argparse's errors follow the same contract
    assert r.returncode == 2 and "kiln: error: the following arguments are required: --input" in r.stderr
    assert json.loads(r.stdout)["exit_code"] == 2


def test_boards_json():
    r = run_kiln("boards", "--json")
    assert r.returncode == 0, r.stderr
    boards = {b["name"]: b for b in json.loads(r.stdout)["boards"]}
    assert list(boards) == [b.name for b in list_boards()]
    for b in list_boards():
        row = boards[b.name]
        assert (row["kind"], row["part"] or "", row["clock_mhz"] or 0, row["resources"]) == \
            (b.kind, b.part, b.clock_mhz, b.resources)
    assert boards["vu13p"]["kind"] == "fpga" and boards["vu13p"]["resources"]["dsp"] > 0
    assert boards["rpi4"]["kind"] == "cpu" and boards["rpi4"]["target"]


def test_doctor_lists_only_backends_that_exist():
    r = run_kiln("doctor", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    existing = {k for k in ("hls", "tvm", "coreml", "tensorrt")
                if importlib.util.find_spec(f"kiln.backends.{k}") is not None}
    assert set(data["backends"]) == existing
    hls = {c["name"]: c for c in data["backends"]["hls"]["checks"]}
    assert set(hls) == {"g++", "make", "hls4ml", "ap_types headers", "vitis_hls"}
    assert hls["make"]["found"] == shutil.which("make") and hls["vitis_hls"]["needed"] is False
    assert data["backends"]["hls"]["ready"] == all(hls[n]["found"] for n in ("g++", "make", "ap_types headers"))
    tvm = {c["name"]: c for c in data["backends"]["tvm"]["checks"]}
    assert {"apache-tvm", "aarch64-linux-gnu-gcc", "psutil", "cloudpickle", "xgboost"} <= set(tvm)
    text = run_kiln("doctor").stdout
    for absent in ("coreml", "tensorrt"):
        if absent not in existing:
            assert absent not in r.stdout.lower() and absent not in text.lower()
    assert "HLS backend" in text and "TVM backend" in text


def test_progress_lines_in_a_log(monkeypatch):
    from kiln import progress as progress_mod

    log = io.StringIO()  # not a TTY: plain lines
    monkeypatch.setattr(progress_mod, "UPDATE_EVERY_S", 0.0)
    with progress_mod.progress("tuning ...", stream=log) as step:
        step.update("tuning: 3/8 trials measured")
    with pytest.raises(RuntimeError):
        with progress_mod.progress("building ...", stream=log):
            raise RuntimeError("boom")
    lines = [re.sub(r"^\[\s*\d+\.\ds\] ", "", line) for line in log.getvalue().splitlines()]
    assert len(lines) == 5 and all(re.match(r"\[\s*\d+\.\ds\] ", line) for line in log.getvalue().splitlines())
    assert lines[:2] == ["tuning ...", "tuning: 3/8 trials measured"] and lines[3] == "building ..."
    assert re.fullmatch(r"tuning \.\.\. done \(\d+\.\d s\)", lines[2])
    assert re.fullmatch(r"building \.\.\. failed \(\d+\.\d s\)", lines[4])
    monkeypatch.setattr(progress_mod, "UPDATE_EVERY_S", 1e9)  # in a log, updates are rate-limited
    log = io.StringIO()
    with progress_mod.progress("step ...", stream=log) as step:
        step.update("step: half way")
    assert "half way" not in log.getvalue() and len(log.getvalue().splitlines()) == 2


@pytest.fixture(scope="module")
def tvm_artifact(tmp_path_factory):
    pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")
    tmp = tmp_path_factory.mktemp("tvm")
    r = run_kiln("compile", small_mlp(tmp / "m.onnx"), "--board", "x86-host", "-o", tmp / "host")
    assert r.returncode == 0, r.stderr
    assert re.search(r"compiling with TVM for x86-host \.\.\. done \(\d+\.\d s\)", r.stderr)
    x = np.random.default_rng(2).normal(size=(16, 4)).astype(np.float32)
    np.save(tmp / "x.npy", x)
    return tmp, x


def test_tvm_run_json_and_gate(tvm_artifact):
    tmp, x = tvm_artifact
    r = run_kiln("run", tmp / "host", "--input", tmp / "x.npy", "--output", tmp / "y.npy", "--json",
                 "--rtol", 1e-5)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(tmp / "m.onnx")).run(None, {"x": x})[0].astype(np.float64)
    got = np.load(tmp / "y.npy").astype(np.float64)
    (out,) = data["outputs"]
    assert out["max_abs_error"] == pytest.approx(np.max(np.abs(got - ref)), rel=1e-6, abs=1e-12)
    assert out["max_abs_error"] <= 1e-5 * np.max(np.abs(ref)) and data["checks"]["passed"] is True
    assert data["output_file"] == str(tmp / "y.npy") and data["samples"] == 16
    # the artifact's reference model now computes something else: the gate fails, exit 1
    small_mlp(tmp / "host" / "model.onnx", scale2=2.0)
    r = run_kiln("run", tmp / "host", "--input", tmp / "x.npy", "--rtol", 1e-5)
    small_mlp(tmp / "host" / "model.onnx")
    assert r.returncode == 1, r.stderr
    assert "kiln: check failed: output 'y': relative error" in r.stderr and "> --rtol 1e-05" in r.stderr


def test_tvm_bench_json(tvm_artifact):
    tmp, _ = tvm_artifact
    r = run_kiln("bench", tmp / "host", "--repeat", 20, "--warmup", 2, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    engines = {e["engine"]: e for e in data["engines"]}
    assert set(engines) == {"tvm", "tvm_wall", "onnxruntime"}
    for e in engines.values():
        assert e["runs"] == 20 and 0 < e["p10_ms"] <= e["median_ms"] <= e["p90_ms"]
    assert data["tvm_over_onnxruntime"] == pytest.approx(engines["tvm_wall"]["median_ms"]
                                                         / engines["onnxruntime"]["median_ms"])
    assert data["outputs"][0]["max_abs_error"] < 1e-4
    assert "benchmarking ... done (" in r.stderr
