"""Malformed models (the classes bench/fuzz_models.py found) are one clean error, exit 2, for the
HLS and the TVM backend: no traceback, no huge allocation, nothing left behind."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln.cli

from kiln.fsutil import MANIFEST, clean_stale
from kiln.progress import LINE
from tests.helpers import assert_clean_error, run_kiln

REPO = Path(__file__).resolve().parents[1]
HLS = ("--board", "vu13p", "--precision", "float")
TVM = ("--board", "x86-host")
BOARDS = [pytest.param(HLS, id="hls"), pytest.param(TVM, id="tvm")]


def dense_model(w=None, b=None) -> onnx.ModelProto:
    """x[N,4] -> MatMul(W[4,3]) -> Add(B[3]) -> Relu -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W") if w is None else w
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B") if b is None else b
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "B"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def qdq_model(w_raw: bytes | None = None) -> onnx.ModelProto:
    """x -> MatMul(DequantizeLinear(int8 W[4,3])) -> y, the weight's raw_data replaceable."""
    wq = numpy_helper.from_array(np.arange(12, dtype=np.int8).reshape(4, 3), "Wq")
    if w_raw is not None:
        wq.raw_data = w_raw
    inits = [wq, numpy_helper.from_array(np.array(0.5, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"], name="dq_w"),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def compile_file(tmp_path, model, board, name="m.onnx", data: bytes | None = None):
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    else:
        onnx.save(model, path)
    result = run_kiln("compile", path, *board, "-o", tmp_path / "out")
    return result, path


def assert_nothing_left(tmp_path):
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if ".kiln-" in p.name] == []


@pytest.mark.parametrize("board", BOARDS)
def test_initializer_dims_disagree_with_raw_data(tmp_path, board):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    del w.dims[:]
    w.dims.extend([4, 2])  # 8 floats declared, 12 stored
    result, _ = compile_file(tmp_path, dense_model(w=w), board)
    assert_clean_error(result, "m.onnx", "initializer 'W'", "raw_data holds 48 bytes", "need 32")
    assert_nothing_left(tmp_path)


def test_initializer_dims_disagree_with_typed_data(tmp_path):
    b = helper.make_tensor("B", TensorProto.FLOAT, [1], [1.0])
    b.float_data.extend([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert_clean_error(compile_file(tmp_path, dense_model(b=b), HLS)[0], "initializer 'B'", "float_data holds 8 values",
                       "need 1")


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("dtype", [999, -3, 0])
def test_unknown_initializer_element_type(tmp_path, board, dtype):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    w.data_type = dtype
    assert_clean_error(compile_file(tmp_path, dense_model(w=w), board)[0], "initializer 'W'",
                       f"unknown element type {dtype}")


def test_unknown_input_element_type(tmp_path):
    model = dense_model()
    model.graph.input[0].type.tensor_type.elem_type = 999
    assert_clean_error(compile_file(tmp_path, model, HLS)[0], "graph input 'x'", "unknown element type 999")


@pytest.mark.parametrize("board", BOARDS)
def test_quantized_weight_raw_data_of_wrong_length(tmp_path, board):
    """The quantizer frontend would read it with numpy (quantizers.py); the loader refuses it first."""
    result, _ = compile_file(tmp_path, qdq_model(w_raw=bytes(7)), board)
    assert_clean_error(result, "initializer 'Wq'", "raw_data holds 7 bytes", "need 12")


@pytest.mark.parametrize("board", BOARDS)
def test_non_utf8_node_name(tmp_path, board):
    data = dense_model().SerializeToString().replace(b"matmul", b"\xff\xfe\x80mul")
    result, _ = compile_file(tmp_path, None, board, data=data)
    assert_clean_error(result, "m.onnx", "not valid UTF-8")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("board", BOARDS)
def test_declared_dimension_of_2_to_31(tmp_path, board):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    del w.dims[:]
    w.dims.extend([4, 2 ** 31])
    assert_clean_error(compile_file(tmp_path, dense_model(w=w), board)[0], "initializer 'W'", "too large")


@pytest.mark.parametrize("board", BOARDS)
def test_huge_graph_input_is_refused_before_any_allocation(tmp_path, board):
    """[1, 2**31]: the HLS writer would build a 16 GB random test input."""
    model = dense_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2 ** 31
    assert_clean_error(compile_file(tmp_path, model, board)[0], "graph input 'x'", "too large", "[N, 2147483648]")


@pytest.mark.parametrize("board", BOARDS)
def test_axis_attribute_out_of_range(tmp_path, board):
    """ONNX shape inference lets Softmax's axis 2**62 through; the HLS emitter indexed the shape with it."""
    model = dense_model()
    model.graph.node[2].op_type = "Softmax"
    model.graph.node[2].attribute.append(helper.make_attribute("axis", 2 ** 62))
    assert_clean_error(compile_file(tmp_path, model, board)[0], "Softmax node 'relu'", f"axis {2 ** 62}",
                       "out of range", "rank-2")


@pytest.mark.parametrize("value, needle", [(1e38, "zero point 1e+38 is out of range"), (np.inf, "not finite")])
def test_qonnx_zero_point_that_no_attribute_can_hold(tmp_path, value, needle):
    """A QONNX Quant zero point of 1e38 became a kiln.Quantize attribute onnx_ir could not save."""
    dom = "qonnx.custom_op.general"
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("s", 0.125), ("zp", value), ("b", 4.0))]
    nodes = [helper.make_node("Quant", ["x", "s", "zp", "b"], ["xq"], name="quant_in", domain=dom, signed=1,
                              narrow=0, rounding_mode="ROUND"),
             helper.make_node("Relu", ["xq"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)],
                              ir_version=8)
    onnx.save(model, tmp_path / "q.onnx")
    assert_clean_error(run_kiln("compile", tmp_path / "q.onnx", "-o", tmp_path / "out"), "Quant node 'quant_in'", needle)


def _blowup(op: str) -> onnx.ModelProto:
    """y = x + sum(ConstantOfShape([100000, 100000])), or x expanded to [100000, 100000]."""
    shape = numpy_helper.from_array(np.array([100000, 100000], np.int64), "shape")
    if op == "ConstantOfShape":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill",
                                  value=numpy_helper.from_array(np.array([1.0], np.float32))),
                 helper.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
                 helper.make_node("Add", ["x", "s"], ["y"], name="add")]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    else:
        nodes = [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 100000])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])], [out],
                              [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand"])
def test_constant_of_shape_and_expand_blowup_refused_at_compile(tmp_path, op):
    """TVM compiled these and `kiln run` died with std::bad_alloc; now the compile refuses them."""
    node = "fill" if op == "ConstantOfShape" else "expand"
    assert_clean_error(compile_file(tmp_path, _blowup(op), TVM)[0], f"{op} node '{node}'", "[100000, 100000]",
                       "too large")
    assert_nothing_left(tmp_path)


def _external_model(tmp_path, declared_dims, file_bytes: int, length: int | None = None) -> Path:
    """dense_model whose W lives in w.bin (a sparse file of ``file_bytes``) with ``declared_dims``."""
    model = dense_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    del w.dims[:]
    w.dims.extend(declared_dims)
    w.data_location = TensorProto.EXTERNAL
    n = int(np.prod(declared_dims)) * 4
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(n if length is None else length))):
        w.external_data.add(key=key, value=value)
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(file_bytes)  # sparse: takes no disk space
    path = tmp_path / "ext.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("board", BOARDS)
def test_40_gb_external_weight_refused_without_reading_it(tmp_path, board):
    path = _external_model(tmp_path, [4, 2_500_000_000], 40_000_000_000)
    assert_clean_error(run_kiln("compile", path, *board, "-o", tmp_path / "out"), "initializer 'W'", "too large")


def test_external_data_file_shorter_than_declared(tmp_path):
    path = _external_model(tmp_path, [4, 3], 20)
    assert_clean_error(run_kiln("compile", path, *HLS, "-o", tmp_path / "out"), "initializer 'W'", "w.bin",
                       "holds 20 bytes", "needs 48")


def test_external_data_length_disagrees_with_dims(tmp_path):
    path = _external_model(tmp_path, [4, 3], 48, length=16)
    assert_clean_error(run_kiln("compile", path, *HLS, "-o", tmp_path / "out"), "initializer 'W'",
                       "declares 16 bytes", "need 48")


@pytest.mark.parametrize("board", BOARDS)
def test_model_onnx_runtime_cannot_load_is_refused_at_compile(tmp_path, board):
    """An initializer also listed as a graph input with another element type: ONNX Runtime
    refuses it (only `kiln csim` used to); the compile now says so with ORT's reason."""
    model = dense_model()
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.DOUBLE, [4, 3]))
    result = compile_file(tmp_path, model, board)[0]
    assert_clean_error(result, "m.onnx", "ONNX Runtime cannot load the model", "W")
    assert_nothing_left(tmp_path)


def test_disk_full_while_saving_is_a_clean_error(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(dense_model(), path)
    assert kiln.cli.main(["compile", str(path), *HLS, "-o", str(tmp_path / "out")]) == 0
    before = (tmp_path / "out" / MANIFEST).read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "model.onnx")

    monkeypatch.setattr(onnx, "save", full)
    capsys.readouterr()
    for board in (HLS, TVM):
        assert kiln.cli.main(["compile", str(path), *board, "-o", str(tmp_path / "out")]) == 2
        err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True) if not LINE.match(line))
        assert err.startswith("kiln: error: cannot write") and "No space left on device" in err, err  # after progress
        assert (tmp_path / "out" / MANIFEST).read_text() == before  # the good project is untouched
        assert [p.name for p in tmp_path.iterdir() if ".kiln-" in p.name] == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folders_of_killed_compiles_are_cleaned(tmp_path):
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_tmp = tmp_path / f".out.kiln-tmp-{dead}-abcd1234"
        live_tmp = tmp_path / f".out.kiln-tmp-{alive.pid}-efgh5678"
        other = tmp_path / f".other.kiln-tmp-{dead}-abcd1234"   # another output's: not ours to touch
        legacy_new = tmp_path / ".out.kiln-tmp-x1y2z3w4"         # no pid, recent: may be running
        legacy_old = tmp_path / ".out.kiln-tmp-q9r8s7t6"         # no pid, two hours old: stale
        for d in (stale_tmp, live_tmp, other, legacy_new, legacy_old):
            d.mkdir()
            (d / "part.cpp").write_text("half written")
        os.utime(legacy_old, (os.path.getmtime(legacy_old) - 7200,) * 2)
        # a kill between the two renames: the previous project swapped out, no project in its place
        swapped = tmp_path / f".out.kiln-old-{dead}"
        swapped.mkdir()
        (swapped / MANIFEST).write_text('{"backend": "hls"}')
        cleaned = clean_stale(tmp_path / "out")
        assert sorted(p.name for p in cleaned) == sorted([stale_tmp.name, legacy_old.name, swapped.name])
        assert not stale_tmp.exists() and not legacy_old.exists() and not swapped.exists()
        assert live_tmp.exists() and other.exists() and legacy_new.exists()
        assert (tmp_path / "out" / MANIFEST).read_text() == '{"backend": "hls"}'  # restored
        # with a project in place, a stale swapped-out copy is just removed, by the next compile
        swapped.mkdir()
        (swapped / MANIFEST).write_text("{}")
        path = tmp_path / "m.onnx"
        onnx.save(dense_model(), path)
        assert run_kiln("compile", path, *HLS, "-o", tmp_path / "out").returncode == 0
        assert not swapped.exists()
        assert sorted(p.name for p in tmp_path.iterdir() if ".kiln-" in p.name) == sorted(
            [live_tmp.name, other.name, legacy_new.name])
    finally:
        alive.kill()
        alive.wait()


def test_seeded_fuzz_sample_has_no_tracebacks_or_hangs():
    """100 mutants of the fuzzer's seeds through compile (HLS and TVM) and a few TVM runs."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "fuzz_models.py"), "--count", "100", "--seed", "3",
                             "--timeout", "300", "--run-every", "3", "--show", "10"], capture_output=True, text=True,
                            cwd=REPO)
    out = result.stdout
    total = re.search(r"^total (\d+) \(hls (\d+), tvm (\d+)\)", out, re.M)
    assert total and total.groups() == ("100", "67", "33"), out + result.stderr
    assert re.search(r"^TOTAL tracebacks 0, hangs 0, other 0$", out, re.M), out + result.stderr
    follow = re.search(r"^follow-ups .*?: (\d+): exit 0 (\d+)", out, re.M)
    assert follow and int(follow.group(1)) >= 1, out
    assert result.returncode == 0, out + result.stderr
