"""TVM backend user errors: one clear message, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

from kiln.backends.tvm import compile_tvm  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from tests.helpers import assert_clean_error, op_chain, run_kiln  # noqa: E402


def chain(ops, path):
    """x[N,4] -> op -> op ... -> y saved at ``path``, node names '<op>_<i>'."""
    onnx.save(op_chain(ops), path)
    return path


def test_unsupported_ops_listed_at_once_with_node_names(tmp_path):
    model = chain(["Relu", "Celu", "LpNormalization", "Celu"], tmp_path / "m.onnx")
    r = run_kiln("compile", model, "--board", "x86-host", "-o", tmp_path / "out")
    assert_clean_error(r, "3 node(s) cannot be imported by TVM", "Celu", "'celu_1', 'celu_3'",
                       "LpNormalization", "'lpnormalization_2'")
    assert "relu_0" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_failed_compile_keeps_the_previous_artifact(tmp_path):
    good = compile_tvm(chain(["Relu"], tmp_path / "good.onnx"), board="x86-host", output_dir=tmp_path / "out")
    before = good.library.read_bytes()
    with pytest.raises(KilnError, match="cannot be imported"):
        compile_tvm(chain(["Celu"], tmp_path / "bad.onnx"), board="x86-host", output_dir=tmp_path / "out")
    assert good.library.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if "kiln-tmp" in p.name]


def test_unreachable_rpc_server_is_one_clear_message(tmp_path):
    art = compile_tvm(chain(["Relu"], tmp_path / "m.onnx"), board="x86-host", output_dir=tmp_path / "host")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_kiln("bench", art.path, "--rpc", f"127.0.0.1:{port}")
    assert_clean_error(r, f"cannot reach the TVM RPC server at 127.0.0.1:{port}", "tvm.exec.rpc_server")
    assert_clean_error(run_kiln("bench", art.path, "--rpc", "nohostport"), "not HOST:PORT")
    assert_clean_error(run_kiln("bench", art.path, "--tracker", "127.0.0.1:1"), "--tracker needs --key")


def test_arm_artifact_does_not_run_here_and_hls_options_are_refused(tmp_path):
    model = chain(["Relu"], tmp_path / "m.onnx")
    art = compile_tvm(model, board="rpi4", output_dir=tmp_path / "rpi4", lib_format="tar")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    assert_clean_error(run_kiln("run", art.path, "--input", tmp_path / "x.npy"), "compiled for aarch64-linux-gnu",
                       "--rpc HOST:PORT")
    assert_clean_error(run_kiln("compile", model, "--board", "rpi4", "--precision", "fixed<16,6>", "-o",
                                tmp_path / "q"), "--precision", "CPU board")
    assert_clean_error(run_kiln("compile", model, "--board", "vu13p", "--tune", "8", "-o", tmp_path / "h"),
                       "--tune", "CPU boards")
    assert_clean_error(run_kiln("bench", tmp_path / "nothing"), "not a Kiln project")
    assert_clean_error(run_kiln("run", art.path, "--input", tmp_path / "x.npy", "--rpc", "h:1", "--tracker", "h:2",
                                "--key", "k"), "either --rpc")
    assert not (tmp_path / "q").exists() and not (tmp_path / "h").exists()


def test_hls_project_is_not_a_tvm_artifact(tmp_path):
    import kiln
    from kiln.backends.tvm import open_artifact

    project = kiln.compile(chain(["Relu"], tmp_path / "m.onnx"), board="vu13p", output_dir=tmp_path / "hls",
                           precision="float")
    with pytest.raises(KilnError, match="written by the HLS backend .* use `kiln csim`"):
        open_artifact(project.path)


def test_out_of_range_token_ids_are_an_error_not_a_crash(tmp_path):
    """TVM lowers Gather in 'fast' mode (an out-of-range index reads out of bounds); run checks
    integer inputs that index a table first. Negative indices (ONNX semantics) work."""
    from onnx import numpy_helper

    table = np.arange(20, dtype=np.float32).reshape(5, 4)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], name="embed", axis=0)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4])],
                              [numpy_helper.from_array(table, "table")])
    path = tmp_path / "embed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / "out")
    assert art.inputs[0]["index_bound"] == 5
    ids = np.array([[0, 4, -1], [-5, 2, 3]], dtype=np.int64)
    np.testing.assert_array_equal(art.run(ids), art.reference(ids)[0])
    with pytest.raises(KilnError, match=r"indices must lie in \[-5, 4\]"):
        art.run(np.array([[0, 5, 1]], dtype=np.int64))
