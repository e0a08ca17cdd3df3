"""Third-party ONNX files (tests/data/thirdparty, unmodified) through Kiln, against ONNX Runtime.

hls4ml's example-models and the QONNX model zoo, read as published (issue 12): Brevitas /
FINN / QONNX domains and channels-last wrappers (frontend/qonnx_compat.py), PyTorch 0.3
exports with the batch baked in at 789,444 rows (frontend/fixed_batch.py), Brevitas' symbolic
value_info, an invalid BatchNormalization, Keras' SELU (passes/decompose_elu.py).

Every file is loaded; C-simulation runs on one file per export family (float: relative error
<= 1e-5 of the output scale; fixed<16,6> and --calibrate --bits 16: <= 1e-2 with >= 90% argmax
agreement on 16 standard-normal samples) and TVM on two. ``KILN_LONG_TESTS=1`` runs the
float C-sim and TVM checks on every accepted file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.errors import KilnError
from kiln.frontend import load_model
from tests.helpers import argmax_agreement, assert_clean_error, relative_error, run_kiln

DATA = Path(__file__).parent / "data" / "thirdparty"
FILES = {p.stem: p for p in sorted(DATA.rglob("*.onnx"))}
INVALID = {"three_layer_bn_keras"}
HLS_UNSUPPORTED = {"tiny_unet_ch_last", "branched_model_ch_last"}  # Resize over NHWC's H, W (axes 1, 2)
LARGE = {"tiny_unet_ch_last", "branched_model_ch_last", "separable_conv_model_ch_last"}  # 256x256 / 512x512 images
ACCEPTED = sorted(set(FILES) - INVALID - HLS_UNSUPPORTED - LARGE)
LONG = os.environ.get("KILN_LONG_TESTS") == "1"
# one file per export pattern: PyTorch 0.3 fixed batch, Keras SELU conv, Brevitas (opset 9, onnx.brevitas),
# FINN domain with INT64 quantizer parameters, Brevitas symbolic value_info
FLOAT_CSIM = ACCEPTED if LONG else ["two_layer_pytorch", "conv2d_small_mp_keras", "TFC_2W2A", "qkeras_jettagging",
                                    "unsw_nb15-mlp-w2a2"]
TVM = ACCEPTED if LONG else ["three_layer_bn_pytorch", "kwsmlp_w3a3"]
N = 16


def test_the_data_is_all_there():
    assert len(FILES) == 20


def _samples(project, n=N, seed=0):
    spec = project.inputs[0]
    shape = spec["shape"][1:] if spec.get("batch_axis") else spec["shape"]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(set(FILES) - INVALID))
def test_every_valid_file_loads_with_static_shapes(name):
    loaded = load_model(str(FILES[name]))
    for value in loaded.model.graph.inputs:
        assert all(isinstance(d, int) for d in value.shape), (value.name, value.shape)
        assert loaded.batch_axis[value.name] and value.shape[0] == 1
    for node in loaded.model.graph:
        for out in node.outputs:
            assert out.shape is not None and all(isinstance(d, int) for d in out.shape), (node.name, out.name)


def test_invalid_batchnorm_is_refused_with_its_node_named(tmp_path):
    result = run_kiln("compile", FILES["three_layer_bn_keras"], "--precision", "float", "-o", tmp_path / "x")
    assert_clean_error(result, "three_layer_bn_keras.onnx", "BatchNormalization node 'BatchNormalization__'",
                       "scale", "[64]", "1 channel(s)")
    assert not (tmp_path / "x").exists()


def test_nhwc_resize_is_refused_for_hls_with_its_nodes_named():
    with pytest.raises(KilnError, match=r"Resize \(only the last two axes may be resized\): 'Resize_0'"):
        kiln.compile(str(FILES["tiny_unet_ch_last"]), precision="float")


def test_fixed_batch_axis_becomes_the_batch(capfd):
    loaded = load_model(str(FILES["three_layer_pytorch"]))
    err = capfd.readouterr().err
    assert "kiln: info:" in err and "fixed leading axis of 789444 that is the batch axis" in err
    assert loaded.batch_axis == {"0": True}
    assert list(loaded.model.graph.inputs[0].shape) == [1, 16]
    assert loaded.original.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def _fixed_batch_model(op: str, rows: int = 2048) -> onnx.ModelProto:
    """(rows, 3) -> op -> (rows, 3): Relu is row by row; a CumSum along axis 0 (each row a running
    sum of the rows before it, which agrees on the first rows) and a Softmax over it are not."""
    axis = numpy_helper.from_array(np.array(0, np.int64), "axis")
    node = {"Relu": helper.make_node("Relu", ["x"], ["y"]), "Softmax": helper.make_node("Softmax", ["x"], ["y"], axis=0),
            "CumSum": helper.make_node("CumSum", ["x", "axis"], ["y"])}[op]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 3])],
                              [axis] if op == "CumSum" else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("op,rows", [("Softmax", 2048), ("CumSum", 2048), ("Relu", 4)])
def test_fixed_leading_axis_stays_unless_it_is_a_batch(op, rows, capfd):
    kept = load_model(_fixed_batch_model(op, rows))
    assert "kiln: info:" not in capfd.readouterr().err
    assert list(kept.model.graph.inputs[0].shape) == [rows, 3] and kept.batch_axis == {"x": False}


def test_fixed_leading_axis_of_independent_rows_becomes_the_batch(capfd):
    relaxed = load_model(_fixed_batch_model("Relu"))
    assert "fixed leading axis of 2048" in capfd.readouterr().err
    assert list(relaxed.model.graph.inputs[0].shape) == [1, 3] and relaxed.batch_axis == {"x": True}


def test_channels_last_wrappers_match_qonnx_execution():
    """qonnx.custom_op.channels_last Conv + MaxPool (weights channels-last too) without an opset
    import for the domain: Kiln's reference computes what qonnx's ChannelsLastWrappedOp does
    (NHWC -> NCHW, the standard op, back; qonnx's own executor cannot run here: its per-node
    models get an IR version ONNX Runtime 1.31 refuses)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 2)).astype(np.float32), "w")  # (O, kH, kW, I)
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", domain="qonnx.custom_op.channels_last",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", domain="qonnx.custom_op.channels_last",
                              kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 6, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 4])], [w, b],
                              value_info=[helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 6, 6, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    nchw = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    w_nchw = numpy_helper.from_array(numpy_helper.to_array(w).transpose(0, 3, 1, 2).copy(), "w")
    plain = helper.make_model(helper.make_graph(
        nchw, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], [w_nchw, b]),
        opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    want = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.transpose(0, 3, 1, 2).copy()})[0].transpose(0, 2, 3, 1)
    loaded = load_model(proto)
    got = ort.InferenceSession(loaded.original.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not any(n.domain for n in loaded.original.graph.node)


@pytest.mark.parametrize("name", FLOAT_CSIM)
def test_float_csim_matches_onnxruntime(name, tmp_path):
    project = kiln.compile(str(FILES[name]), output_dir=tmp_path / "p", precision="float")
    x = _samples(project)
    got, ref = project.csim(x), project.reference(x)[0]
    assert got.shape == ref.shape
    assert relative_error(got, ref) <= 1e-5


@pytest.fixture(scope="module")
def three_layer_keras():
    """hls4ml's Keras 16-64-32-32-5 MLP (MatMul + Add, softmax): small builds for the fixed-point paths."""
    return str(FILES["three_layer_keras"])


def test_fixed_default_csim_within_bound(three_layer_keras, tmp_path):
    """fixed<16,6> everywhere: 10 fractional bits, error ~1e-3 of a softmax output."""
    project = kiln.compile(three_layer_keras, output_dir=tmp_path / "p")
    x = _samples(project)
    got, ref = project.csim(x), project.reference(x)[0]
    assert relative_error(got, ref) <= 1e-2 and argmax_agreement(got, ref) >= 0.9


def test_calibrated_16_bit_csim_within_bound(three_layer_keras, tmp_path):
    project = kiln.compile(three_layer_keras, output_dir=tmp_path / "p",
                           calibrate=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32), bits=16)
    x = _samples(project)
    got, ref = project.csim(x), project.reference(x)[0]
    assert relative_error(got, ref) <= 1e-2 and argmax_agreement(got, ref) >= 0.9


@pytest.mark.parametrize("name", TVM)
def test_tvm_matches_onnxruntime(name, tmp_path):
    pytest.importorskip("tvm")
    artifact = kiln.compile(str(FILES[name]), board="x86-host", output_dir=tmp_path / "t")
    x = _samples(artifact)
    rows = artifact.compare(x)
    assert all(r.relative_error <= 1e-5 for r in rows), rows


def test_other_qonnx_ops_are_refused_by_name(tmp_path):
    """Trunc (QONNX) without an opset import for its domain: one error naming op and node."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in
              {"s": 0.5, "z": 0.0, "ib": 8.0, "ob": 4.0}.items()]
    node = helper.make_node("Trunc", ["x", "s", "z", "ib", "ob"], ["y"], domain="qonnx.custom_op.general",
                            name="trunc0", rounding_mode="FLOOR")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10),
              tmp_path / "trunc.onnx")
    assert_clean_error(run_kiln("compile", tmp_path / "trunc.onnx", "-o", tmp_path / "p"), "trunc.onnx",
                       "Kiln does not support", "Trunc: 'trunc0'")
