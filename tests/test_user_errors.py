"""Bad input gives one clear message and exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import kiln
from kiln.backends.hls import writer
from tests.helpers import assert_clean_error, op_chain, run_kiln


def small_model(op_types=("Relu",)) -> onnx.ModelProto:
    return op_chain(op_types)


@pytest.fixture
def relu_file(tmp_path) -> Path:
    path = tmp_path / "relu.onnx"
    onnx.save(small_model(), path)
    return path


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 10)
    assert_clean_error(run_kiln("compile", bad, "-o", tmp_path / "out"), "notes.onnx", "not a valid ONNX file")
    assert not (tmp_path / "out").exists()


def test_truncated_file(tmp_path, relu_file):
    data = relu_file.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    assert_clean_error(run_kiln("compile", cut, "-o", tmp_path / "out"), "cut.onnx")
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path):
    assert_clean_error(run_kiln("compile", tmp_path / "nope.onnx", "-o", tmp_path / "out"), "no such model file")


def test_all_unsupported_ops_listed_at_once(tmp_path):
    path = tmp_path / "trig.onnx"
    onnx.save(small_model(("Acos", "Relu", "Asin", "Acos")), path)  # (Sin and Cos are supported now)
    result = run_kiln("compile", path, "-o", tmp_path / "out")
    assert_clean_error(result, "3 node(s)", "Acos", "Asin", "'acos_0'", "'asin_2'", "'acos_3'")
    assert "relu_1" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_board_and_bad_precision(tmp_path, relu_file):
    assert_clean_error(run_kiln("compile", relu_file, "--board", "nope", "-o", tmp_path / "o"), "unknown board 'nope'")
    assert_clean_error(run_kiln("compile", relu_file, "--precision", "fixed<8>", "-o", tmp_path / "o"),
                       "cannot parse precision")


def test_bad_config(tmp_path, relu_file):
    cfg = tmp_path / "kiln.toml"
    cfg.write_text('[layers."no_such_layer"]\nreuse_factor = 2\n')
    assert_clean_error(run_kiln("compile", relu_file, "--config", cfg, "-o", tmp_path / "o"),
                       "no_such_layer", "relu_0")
    cfg.write_text("[model\nprecision=")
    assert_clean_error(run_kiln("compile", relu_file, "--config", cfg, "-o", tmp_path / "o"), "not valid TOML")


def test_unwritable_output_dir(tmp_path, relu_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_clean_error(run_kiln("compile", relu_file, "-o", blocker / "sub" / "prj"), "cannot write to")


def test_output_dir_that_is_not_a_project_is_not_clobbered(tmp_path, relu_file):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    assert_clean_error(run_kiln("compile", relu_file, "-o", other), "is not a Kiln project")
    assert (other / "precious.txt").read_text() == "keep me"


def test_csim_input_wrong_shape_and_dtype(tmp_path, relu_file):
    prj = tmp_path / "prj"
    assert run_kiln("compile", relu_file, "--precision", "float", "-o", prj).returncode == 0
    np.save(tmp_path / "bad_shape.npy", np.zeros((8, 5), np.float32))
    assert_clean_error(run_kiln("csim", prj, "--input", tmp_path / "bad_shape.npy"), "shape (8, 5)", "(N, 4)")
    np.save(tmp_path / "bad_dtype.npy", np.zeros((8, 4), np.int32))
    assert_clean_error(run_kiln("csim", prj, "--input", tmp_path / "bad_dtype.npy"), "dtype int32")
    (tmp_path / "garbage.npy").write_text("nope")
    assert_clean_error(run_kiln("csim", prj, "--input", tmp_path / "garbage.npy"), "garbage.npy")
    assert_clean_error(run_kiln("csim", tmp_path / "nothing", "--input", tmp_path / "bad_dtype.npy"),
                       "not a Kiln project")
    # an output of the other backend is named as such
    assert_clean_error(run_kiln("run", prj, "--input", tmp_path / "bad_dtype.npy"), "was written by the HLS backend", "kiln csim")


def test_failed_compile_keeps_previous_project(tmp_path, relu_file, monkeypatch):
    prj = tmp_path / "prj"
    kiln.compile(relu_file, output_dir=prj, precision="float")
    before = sorted(p.relative_to(prj) for p in prj.rglob("*"))
    top = (prj / "firmware" / "kiln_top.cpp").read_text()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer.ir, "save", broken_save)
    with pytest.raises(OSError):
        kiln.compile(relu_file, output_dir=prj, precision="fixed<8,3>")
    assert sorted(p.relative_to(prj) for p in prj.rglob("*")) == before
    assert (prj / "firmware" / "kiln_top.cpp").read_text() == top
    assert [p.name for p in tmp_path.iterdir() if "kiln-tmp" in p.name] == []
    # and an unsupported model over it leaves it alone too
    bad = tmp_path / "bad.onnx"
    onnx.save(small_model(("Acos",)), bad)
    with pytest.raises(kiln.KilnError):
        kiln.compile(bad, output_dir=prj)
    assert (prj / "firmware" / "kiln_top.cpp").read_text() == top


def test_invalid_reuse_factor_names_layer(tmp_path):
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=r"layer 'fc' .*reuse_factor 5 does not divide its 12"):
        kiln.compile(model, output_dir=tmp_path / "p", config={"layers": {"fc": {"reuse_factor": 5}}})


def test_external_data_is_loaded_and_a_missing_data_file_is_a_clean_error(tmp_path):
    """Models saved with their weights in a side file (.onnx.data, torch's dynamo exporter
    default) compile with those weights; without the side file: exit 2 naming the model."""
    from examples.make_jet_mlp import export

    model = onnx.load(export(tmp_path / "jet.onnx"))
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    project = kiln.compile(tmp_path / "ext.onnx", output_dir=tmp_path / "prj", precision="float")
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    assert np.abs(project.csim(x) - project.reference(x)[0]).max() < 1e-5
    (tmp_path / "ext.onnx.data").unlink()
    result = run_kiln("compile", tmp_path / "ext.onnx", "-o", tmp_path / "out")
    assert_clean_error(result, "ext.onnx", "external data")
    assert not (tmp_path / "out").exists()
