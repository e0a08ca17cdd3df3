"""QKeras -> QONNX converter (frontend/qkeras_loader.py): bit-exact against QKeras itself.

The reference is ``model.predict`` of the QKeras model; the converted graph runs in QONNX's
own executor (``execute_onnx``: ``Quant`` in numpy, the standard ops node by node in ONNX
Runtime).  All weights and activations sit on power-of-two grids small enough that every
product and partial sum is exact in float32, so the two must agree bit for bit
(``np.array_equal``, no tolerance), ties of the round-half-to-even included.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TF/QKeras are imported

import subprocess
import sys

import numpy as np
import onnx
import pytest

qk = pytest.importorskip("qkeras")
pytest.importorskip("qonnx")
keras = pytest.importorskip("tf_keras")

from qonnx.core import onnx_exec  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402

from examples import make_qkeras_model  # noqa: E402
from examples.make_qkeras_model import build_qkeras_model, make_samples  # noqa: E402
from kiln.errors import KilnError  # noqa: E402
from kiln.frontend.qkeras_loader import QONNX_DOMAIN, activation_quant, qkeras_to_qonnx  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # QKeras/tf_keras noise
    "ignore::DeprecationWarning", "ignore:You are saving your model as an HDF5 file:UserWarning",
    "ignore:The `keras.constraints.serialize\\(\\)` API:UserWarning")

N = 256


def run_qonnx(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run with qonnx's executor.  Its per-node models get onnx 1.23's default IR version 14,
    which onnxruntime 1.31 refuses (max 13), so lower it to what the opsets need."""
    make_model = onnx_exec.qonnx_make_model

    def make_model_loadable(graph, **kwargs):
        model = make_model(graph, **kwargs)
        model.ir_version = onnx.helper.find_min_ir_version_for(model.opset_import, ignore_unknown=True)
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_exec, "qonnx_make_model", make_model_loadable)
        out = onnx_exec.execute_onnx(ModelWrapper(proto), {proto.graph.input[0].name: x})
    return out[proto.graph.output[0].name]


@pytest.fixture(scope="module")
def example():
    model = build_qkeras_model(seed=0)
    x = make_samples(N)
    return model, x, model.predict(x, batch_size=N, verbose=0)


def test_example_bit_exact(example):
    model, x, ref = example
    got = run_qonnx(qkeras_to_qonnx(model, batch_size=N), x)
    assert got.dtype == np.float32 and got.shape == ref.shape == (N, 5)
    np.testing.assert_array_equal(got, ref)
    # not a degenerate comparison: many distinct outputs, every class predicted
    assert np.unique(ref).size > 200 and np.unique(ref.argmax(1)).size == 5


def test_example_graph_is_valid_qonnx(example):
    model, _, _ = example
    proto = qkeras_to_qonnx(model)
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["out_quant"]
    in_dims = graph.input[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "N" and [d.dim_value for d in in_dims[1:]] == [8, 8, 1]
    assert {o.domain: o.version for o in proto.opset_import} == {"": 13, QONNX_DOMAIN: 1}
    quants = [n for n in graph.node if n.op_type == "Quant"]
    assert all(n.domain == QONNX_DOMAIN for n in quants)
    assert len(quants) == 4 + 6  # activations + (kernel, bias) x 3
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in quants[0].attribute}
    assert attrs == {"signed": 1, "narrow": 0, "rounding_mode": b"ROUND"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    assert inits["in_quant_scale"] == 2.0 ** -5 and inits["in_quant_bitwidth"] == 8
    assert inits["conv/kernel"].shape == (4, 1, 3, 3)  # OIHW, float (Quant node in front)
    ops = [n.op_type for n in graph.node if n.op_type != "Quant"]
    assert ops == ["Transpose", "Conv", "Relu", "Transpose", "Flatten", "MatMul", "Add", "Relu", "MatMul", "Add"]


def test_h5_and_keras_files_round_trip(example, tmp_path):
    model, x, ref = example
    in_memory = qkeras_to_qonnx(model).SerializeToString()
    for name in ("model.h5", "model.keras"):
        model.save(tmp_path / name)
        from_file = qkeras_to_qonnx(tmp_path / name)
        assert from_file.SerializeToString() == in_memory, name
    np.testing.assert_array_equal(run_qonnx(qkeras_to_qonnx(str(tmp_path / "model.h5"), batch_size=N), x), ref)


def test_cli_writes_qonnx(tmp_path):
    out = tmp_path / "m.onnx"
    assert make_qkeras_model.main([str(out), "--keras", str(tmp_path / "m.h5")]) == 0  # in-process: no 2nd TF import
    onnx.checker.check_model(onnx.load(out))
    assert (tmp_path / "m.h5").is_file()


@pytest.mark.parametrize("quantizer", [
    "quantized_bits(8,2)", "quantized_bits(8,2,1)", "quantized_bits(6,0,alpha=1)", "quantized_bits(4,3)",
    "quantized_bits(5,1,keep_negative=False)", "quantized_bits(5,1,1,keep_negative=False)",
    "quantized_relu(6,2)", "quantized_relu(3,0)", "quantized_relu(4,4)",
])
def test_quantizer_formula_matches_qkeras(quantizer):
    """Quant(scale, bits, signed, narrow) == the QKeras quantizer on a fine grid through and past
    its range, every tie (x exactly halfway between two steps) included."""
    q = qk.quantizers.get_quantizer(quantizer)
    params = activation_quant(q, quantizer)
    step = float(params.scale)
    x = (np.arange(-(2 ** 11), 2 ** 11) * step / 4).astype(np.float32)  # 4 points per step, +-2**9 steps
    np.testing.assert_array_equal(params.apply(x), np.asarray(q(x)))


def _random_weights(model, seed=0, sigma=0.5):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.normal(0, sigma, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def test_strides_same_padding_pooling_auto_po2_bit_exact():
    """Odd sizes with stride 2 and padding="same" (asymmetric ONNX pads), pooling, a quantizer as a
    layer activation, QDense's implicit alpha="auto_po2" (per-channel power-of-two scales),
    keep_negative=False, symmetric, a bias-free layer, a model that ends NCHW-side."""
    inp = keras.Input((9, 10, 2), name="img")
    x = qk.QActivation("quantized_bits(6,2,1)", name="q0")(inp)
    x = qk.QConv2D(6, 3, strides=2, padding="same", kernel_quantizer=qk.quantized_bits(4, 0),  # -> auto_po2
                   bias_quantizer=qk.quantized_bits(8, 3, alpha=1), activation=qk.quantized_relu(5, 2), name="c1")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="mp")(x)
    x = qk.QConv2D(5, 2, padding="same", kernel_quantizer=qk.quantized_bits(5, 1, symmetric=1, alpha=1),
                   bias_quantizer=qk.quantized_bits(8, 3, alpha=1), name="c2")(x)
    x = qk.QActivation("quantized_relu(4,1)", name="r2")(x)
    x = keras.layers.AveragePooling2D(2, padding="same", name="ap")(x)  # divides by 4, 2 or 1: exact
    x = keras.layers.Dropout(0.3, name="drop")(x)
    branch_end = x
    x = keras.layers.Flatten(name="fl")(x)
    x = qk.QDense(7, kernel_quantizer=qk.quantized_bits(6, 0, alpha="auto_po2"),
                  bias_quantizer=qk.quantized_bits(6, 2, alpha=1), name="d1")(x)
    x = qk.QActivation(qk.quantized_bits(8, 3, keep_negative=False), name="r3")(x)
    x = qk.QDense(3, kernel_quantizer=qk.quantized_bits(6, 0, alpha=1), use_bias=False, name="d2")(x)
    xs = np.random.default_rng(1).uniform(-4, 4, (N, 9, 10, 2)).astype(np.float32)
    for outputs in (x, branch_end):
        model = _random_weights(keras.Model(inp, outputs))
        proto = qkeras_to_qonnx(model, batch_size=N)
        onnx.checker.check_model(proto, full_check=True)
        np.testing.assert_array_equal(run_qonnx(proto, xs), model.predict(xs, batch_size=N, verbose=0))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    assert next(a.ints for a in conv.attribute if a.name == "pads") == [1, 0, 1, 1]  # TF: extra pad after


def test_float_layers_match_to_float32_rounding():
    """Unquantized float layers convert too, but are not bit-exact: TF and ONNX Runtime evaluate
    tanh/softmax (and sum float products) with different kernels; measured max difference 1.2e-7
    (1 ulp of values near 1), 1e-6 absolute leaves room for a few ulp."""
    inp = keras.Input((6,), name="v")
    x = keras.layers.Dense(4, activation="tanh", name="a")(inp)
    x = keras.layers.Activation("softmax", name="sm")(x)
    model = _random_weights(keras.Model(inp, x))
    xs = np.random.default_rng(2).normal(size=(N, 6)).astype(np.float32)
    np.testing.assert_allclose(run_qonnx(qkeras_to_qonnx(model, batch_size=N), xs),
                               model.predict(xs, batch_size=N, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer, name", ids=["LSTM", "Conv1D", "auto_po2-activation", "leaky-relu", "quantized_tanh",
                                           "alpha=0.5"], argvalues=[
    (lambda: keras.layers.LSTM(4, name="lstm_1"), r"layer 'lstm_1' \(LSTM\) is not supported; supported: .*QDense"),
    (lambda: keras.layers.Conv1D(2, 3, name="c1d"), r"layer 'c1d' \(Conv1D\) is not supported"),
    (lambda: qk.QActivation(qk.quantized_bits(4, 0, alpha="auto_po2"), name="qa"),
     r"layer 'qa' \(QActivation\).*alpha='auto_po2'.*activations"),
    (lambda: qk.QActivation(qk.quantized_relu(4, 0, negative_slope=0.25), name="lrelu"),
     r"layer 'lrelu' \(QActivation\).*negative_slope"),
    (lambda: qk.QActivation("quantized_tanh(4)", name="qt"), r"layer 'qt' \(QActivation\).*quantized_tanh"),
    (lambda: qk.QDense(3, kernel_quantizer=qk.quantized_bits(4, 0, alpha=0.5), name="qd"),
     r"layer 'qd' \(QDense\) kernel_quantizer.*alpha=0.5"),
])
def test_unsupported_raises_kiln_error_naming_layer(layer, name):
    inp = keras.Input((10, 3))
    model = keras.Model(inp, layer()(inp))
    with pytest.raises(KilnError, match=name):
        qkeras_to_qonnx(model)


def test_auto_po2_ties_are_refused_not_converted_wrongly():
    """Weights exactly halfway between two steps: QKeras's auto_po2 rounds them half away from
    zero, Quant half to even; the converter must notice instead of changing the model."""
    inp = keras.Input((16,))
    model = keras.Model(inp, qk.QDense(8, kernel_quantizer=qk.quantized_bits(6, 0, alpha="auto_po2"),
                                       use_bias=False, name="tied")(inp))
    kernel = np.random.default_rng(3).integers(-30, 30, (16, 8)) * 2.0 ** -5 + 2.0 ** -6
    model.layers[1].set_weights([np.clip(kernel, -0.9, 0.9).astype(np.float32)])
    with pytest.raises(KilnError, match=r"layer 'tied' \(QDense\) kernel_quantizer.*cannot be reproduced exactly"):
        qkeras_to_qonnx(model)


def test_bad_paths(tmp_path):
    with pytest.raises(KilnError, match="no such model file"):
        qkeras_to_qonnx(tmp_path / "missing.h5")
    with pytest.raises(KilnError, match="not a Keras model file"):
        qkeras_to_qonnx(tmp_path / "model.onnx")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(KilnError, match="could not load the Keras model"):
        qkeras_to_qonnx(tmp_path / "junk.h5")


def test_importing_kiln_does_not_import_tensorflow():
    code = "import sys, kiln, kiln.frontend.qkeras_loader; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
