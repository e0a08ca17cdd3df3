"""C-simulation that scales and fails cleanly: activations off the stack (a model with more
than 8 MB of activations runs under the default 8 MB stack), crashes named by their signal,
a time limit scaled to the work, undecodable output, out-of-range indices, peak memory."""

from __future__ import annotations

import resource
import stat
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.backends.hls.csim_process import csim_timeout, run_csim_binary
from kiln.errors import KilnError
from kiln.reference import run_onnxruntime
from tests.helpers import assert_clean_error, op_chain, relative_error, run_kiln

STACK_8MB = 8 * 1024 * 1024


def conv_stack_224() -> onnx.ModelProto:
    """x[N,3,224,224] -> Conv 3x3 (24) -> Relu -> Conv 1x1 (24) -> Relu -> Conv 1x1 (3): two
    24x224x224 float activations alone are 9.6 MB."""
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((24, 3, 3, 3), (24, 24, 1, 1), (3, 24, 1, 1))]
    b = [rng.standard_normal(s[0]).astype(np.float32) * 0.1 for s in (w[0].shape, w[1].shape, w[2].shape)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    inits = [numpy_helper.from_array(a, f"{k}{i}") for k, arrays in (("w", w), ("b", b)) for i, a in enumerate(arrays)]
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, 224, 224]) for n in ("x", "y"))
    graph = helper.make_graph(nodes, "conv224", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _default_stack():
    """In the child: the usual 8 MB stack, whatever the parent's limit is."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    soft = STACK_8MB if hard == resource.RLIM_INFINITY else min(STACK_8MB, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))


def test_activations_over_8mb_run_under_the_default_stack(tmp_path):
    path = tmp_path / "conv224.onnx"
    onnx.save(conv_stack_224(), path)
    project = kiln.compile(str(path), board="vu13p", output_dir=tmp_path / "prj", precision="float")
    ports = {p["name"] for p in (*project.inputs, *project.outputs)}
    activation_bytes = 4 * sum(t["size"] for t in project.manifest["trace"] if t["name"] not in ports)
    assert activation_bytes > STACK_8MB  # the model is one the stack could not hold
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "csim", str(tmp_path / "prj"), "--input",
                             str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--no-compare"],
                            capture_output=True, text=True, preexec_fn=_default_stack)
    assert result.returncode == 0, result.stderr
    assert relative_error(np.load(tmp_path / "y.npy"), project.reference(x)[0]) <= 1e-5
    # the figures kiln csim prints: the static activation buffers were touched, so they count
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("C-sim: 2 samples in"))
    peak_mb = float(line.split("peak memory ")[1].split()[0])
    assert activation_bytes / 2**20 <= peak_mb < 1024, line


@pytest.fixture(scope="module")
def relu_project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("relu")
    project = kiln.compile(op_chain(("Relu",)), board="vu13p", output_dir=tmp / "prj", precision="float")
    project.build()
    return project


def _fake_binary(project, script: str):
    """Replace the built C-sim binary by a shell script (make sees it newer than its objects)."""
    binary = project.path / "build" / "files" / "kiln_csim"
    binary.write_text("#!/bin/sh\n" + script + "\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_csim_reports_peak_memory_and_time(relu_project):
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    relu_project.build()
    np.testing.assert_array_equal(relu_project.csim(x), np.maximum(x, 0))
    run = relu_project.last_run
    assert run["samples"] == 2 and run["seconds"] > 0
    assert 0 < run["peak_rss_mb"] < 64  # the testbench's own image, not the Python that started it


@pytest.mark.parametrize("sig, hint", [("SEGV", "ulimit -s unlimited"), ("ABRT", "aborted"),
                                       ("FPE", "division by zero"), ("KILL", "out-of-memory killer")])
def test_crash_is_named_by_signal(tmp_path, sig, hint):
    with pytest.raises(KilnError, match=rf"crashed with SIG{sig} \(signal \d+\): .*{hint}"):
        run_csim_binary(["sh", "-c", f"echo partial >&2; kill -{sig} $$"], 30, "C-simulation")


def test_segfaulting_csim_is_a_clean_error(tmp_path):
    project = kiln.compile(op_chain(("Relu",)), board="vu13p", output_dir=tmp_path / "prj", precision="float")
    project.build()
    _fake_binary(project, "kill -SEGV $$")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    assert_clean_error(run_kiln("csim", tmp_path / "prj", "--input", tmp_path / "x.npy"),
                       "crashed with SIGSEGV", "stack overflow or out-of-bounds access", "ulimit -s unlimited",
                       "report the model")


def test_endless_csim_stops_at_its_time_limit(tmp_path):
    project = kiln.compile(op_chain(("Relu",)), board="vu13p", output_dir=tmp_path / "prj", precision="float")
    project.build()
    _fake_binary(project, "exec sleep 60")
    start = time.monotonic()
    with pytest.raises(KilnError, match=r"did not finish within its time limit of 0.5 s"):
        project.csim(np.ones((1, 4), np.float32), timeout=0.5)
    assert time.monotonic() - start < 30  # stopped, not waited for


def test_time_limit_scales_with_samples_and_operations():
    assert csim_timeout(1, 0) >= 60
    assert csim_timeout(100, 10**6) > csim_timeout(10, 10**6) > csim_timeout(10, 10**3)
    # a DeiT-tiny-sized sample (~1.3 G operations) gets minutes, not the floor
    assert csim_timeout(1, 1_300_000_000) > 200


def test_undecodable_output_is_replaced_not_raised():
    with pytest.raises(KilnError, match="exited with code 3: bad \ufffd\ufffd bytes"):
        run_csim_binary(["sh", "-c", r"printf 'bad \377\376 bytes' >&2; exit 3"], 30, "C-simulation")
    run = run_csim_binary(["sh", "-c", r"printf 'ok \377\n'"], 30, "C-simulation")
    assert run.stdout == "ok \ufffd\n"


def embedding_model() -> onnx.ModelProto:
    table = np.arange(20, dtype=np.float32).reshape(5, 4)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], name="embed", axis=0)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])],
                              [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_csim_refuses_out_of_range_token_ids(tmp_path):
    path = tmp_path / "embed.onnx"
    onnx.save(embedding_model(), path)
    project = kiln.compile(str(path), board="vu13p", output_dir=tmp_path / "prj", precision="float")
    ids = np.array([[0, 4, -1], [-5, 2, 3]], dtype=np.int64)  # negative indices count from the end (ONNX)
    np.testing.assert_array_equal(project.csim(ids), project.reference(ids)[0])
    np.save(tmp_path / "bad.npy", np.array([[0, 7, 1]], dtype=np.int64))
    assert_clean_error(run_kiln("csim", tmp_path / "prj", "--input", tmp_path / "bad.npy"),
                       "input 'ids'", "indices must lie in [-5, 4]", "from 0 to 7")
    with pytest.raises(KilnError, match=r"input 'ids': indices must lie in \[-5, 4\]"):
        project.reference(np.array([[-6, 0, 0]], dtype=np.int64))


def test_onnxruntime_failure_in_the_reference_is_a_kiln_error(tmp_path):
    path = tmp_path / "embed.onnx"
    onnx.save(embedding_model(), path)
    spec_in = [{"name": "ids", "shape": [1, 3], "batch_axis": True}]
    spec_out = [{"name": "y", "shape": [1, 3, 4], "batch_axis": True}]
    bad = np.array([[0, 1, 2], [0, 9, 1]], dtype=np.int64)
    with pytest.raises(KilnError, match=r"ONNX Runtime failed on sample 1 of .*embed.onnx: .*out of data bounds"):
        run_onnxruntime(path, spec_in, spec_out, [bad])
