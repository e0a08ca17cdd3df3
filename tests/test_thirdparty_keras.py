"""hls4ml's QKeras example models (tests/data/thirdparty/hls4ml_example_models/keras/, unmodified)
through Kiln: C-sim against ``model.predict`` on 256 inputs, and TVM against it.

The files: ``qkeras_3layer`` (jet tagging MLP 16-64-32-32-5, 6-bit quantized_bits weights,
quantized_relu(6,0)), ``qkeras_mnist_dense`` (784-20-10, input quantized_relu(2), a
``quantized_po2(4,1)`` kernel, quantized_relu(3,1)), ``qkeras_mnist_cnn`` (two 6-bit QConv2D
+ max pooling + QDense), each as Keras JSON + HDF5 weights, and ``qkeras-v3_3layer.keras``
(a Keras 3 archive of a 3-layer jet MLP). All four end with a float softmax.

What is exact and what is bounded:

* Up to the softmax ("logits": the model without its last layer), every weight and activation
  is a quantizer Kiln maps to an exact ap_fixed type and every accumulator is exact, so the
  C-sim equals QKeras bit for bit when the graph input reaches the first layer unchanged:
  - ``qkeras_mnist_dense`` quantizes its input itself (quantized_relu(2)): the input takes that
    quantizer's type, so any float input gives identical outputs;
  - the other three feed the float input to a quantized Dense/Conv; Kiln reads it as the model
    precision fixed<16,6> (and says so on stderr). Inputs on that grid (multiples of 2^-10)
    are identical; float inputs are identical once the input is given a type that holds them
    (``[layers."<input>"] precision``, 24+ fractional bits); with the default type, measured:
    3layer max |error| 0.1196 on the logits (269 of 1280 values, argmax 255/256), CNN 0.1504.
* The softmax is computed in fixed<16,6> (output lsb 2^-10, truncated): asserted within
  2 lsb = 2^-9 of QKeras's float softmax (measured 1.36e-3, 1.04e-3, 9.7e-4, 1.36e-3).
* TVM compiles the QONNX graph in float32 (the Quant nodes become float ops): within 1e-5 of
  ``model.predict`` (measured 8.9e-8 on qkeras_mnist_dense).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
pytest.importorskip("qkeras")

import kiln  # noqa: E402
from kiln.errors import KilnError  # noqa: E402

KERAS_DIR = Path(__file__).parent / "data" / "thirdparty" / "hls4ml_example_models" / "keras"
MODELS = ["qkeras_3layer", "qkeras_mnist_dense", "qkeras_mnist_cnn", "qkeras-v3_3layer.keras"]
N = 256
LSB = 2.0 ** -10  # fixed<16,6>
SOFTMAX_BOUND = 2 * LSB
WIDE_INPUT = {"qkeras_3layer": "fixed<32,8,RND_CONV,SAT>", "qkeras_mnist_cnn": "ufixed<26,1,RND_CONV,SAT>"}


def load(stem: str):
    import qkeras.utils
    import tf_keras

    if stem.endswith(".keras"):
        from kiln.frontend.qkeras_loader import _load_keras_model

        return _load_keras_model(KERAS_DIR / stem)
    custom: dict = {}
    qkeras.utils._add_supported_quantized_objects(custom)
    model = tf_keras.models.model_from_json((KERAS_DIR / f"{stem}.json").read_text(), custom_objects=custom)
    model.load_weights(KERAS_DIR / f"{stem}_weights.h5")
    return model


@pytest.fixture(scope="module")
def models():
    return {stem: load(stem) for stem in MODELS}


def logits_model(model):
    import tf_keras

    assert type(model.layers[-1]).__name__ == "Activation"  # the final softmax
    return tf_keras.Model(model.inputs, model.layers[-2].output)


def float_inputs(model, seed: int = 0) -> np.ndarray:
    """Jet features: standard normal; MNIST pixels: uniform [0, 1)."""
    shape = model.input_shape[1:]
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, *shape)) if shape == (16,) else rng.uniform(0, 1, (N, *shape))
    return x.astype(np.float32)


def grid_inputs(model) -> np.ndarray:
    return (np.round(float_inputs(model) / LSB) * LSB).astype(np.float32)


@pytest.mark.parametrize("stem", MODELS)
def test_logits_bit_identical_to_predict(models, stem, tmp_path, capfd):
    model = logits_model(models[stem])
    x = float_inputs(model) if stem == "qkeras_mnist_dense" else grid_inputs(model)
    expected = model.predict(x, verbose=0)
    project = kiln.compile(model, output_dir=tmp_path / "prj")
    note = capfd.readouterr().err
    got = project.csim(x)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), (float(np.abs(got - expected).max()), int(np.sum(got != expected)))
    input_name = model.input_names[0]
    if stem == "qkeras_mnist_dense":  # the input quantizer is the input's type: no note
        assert "not quantized by the model" not in note
        assert project.manifest["trace"][0]["precision"] == "ufixed<2,0,RND_CONV,SAT>"
    else:
        assert f"input {input_name!r} is not quantized by the model; it is read as fixed<16,6>" in note


@pytest.mark.parametrize("stem", ["qkeras_3layer", "qkeras_mnist_cnn"])
def test_float_inputs_bit_identical_with_a_wide_input_type(models, stem, tmp_path):
    model = logits_model(models[stem])
    x = float_inputs(model)
    expected = model.predict(x, verbose=0)
    default = kiln.compile(model, output_dir=tmp_path / "default").csim(x)
    assert not np.array_equal(default, expected)  # fixed<16,6> rounds the float input (stated on stderr)
    assert np.abs(default - expected).max() <= 0.16  # measured 0.1196 (3layer), 0.1504 (CNN)
    config = {"layers": {model.input_names[0]: {"precision": WIDE_INPUT[stem]}}}
    got = kiln.compile(model, output_dir=tmp_path / "wide", config=config).csim(x)
    assert np.array_equal(got, expected), (float(np.abs(got - expected).max()), int(np.sum(got != expected)))


@pytest.mark.parametrize("stem", MODELS)
def test_softmax_output_within_two_lsb(models, stem, tmp_path):
    model = models[stem]
    x = float_inputs(model) if stem == "qkeras_mnist_dense" else grid_inputs(model)
    expected = model.predict(x, verbose=0)
    got = kiln.compile(model, output_dir=tmp_path / "prj").csim(x)
    err = np.abs(got - expected)
    assert err.max() <= SOFTMAX_BOUND, float(err.max())
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) >= 0.99


@pytest.mark.parametrize("stem", MODELS)
def test_tvm_matches_predict(models, stem, tmp_path):
    pytest.importorskip("tvm")
    model = models[stem]
    x = float_inputs(model)[:32]
    expected = model.predict(x, verbose=0)
    artifact = kiln.compile(model, board="x86-host", output_dir=tmp_path / "tvm")
    got = artifact.run(x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_quantized_po2_kernel_is_qkeras_powers_of_two(models):
    import tensorflow as tf
    from onnx import numpy_helper

    from kiln.frontend.qkeras_loader import qkeras_to_qonnx

    model = models["qkeras_mnist_dense"]
    layer = model.get_layer("q_dense_2")
    expected = np.asarray(layer.kernel_quantizer_internal(tf.constant(layer.kernel.numpy())))
    proto = qkeras_to_qonnx(model)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    kernel = inits["q_dense_2/kernel"]
    assert np.array_equal(kernel, expected)
    exponents = np.log2(np.abs(kernel))
    assert np.array_equal(exponents, np.round(exponents)) and exponents.max() <= 0  # max_value=1
    quant = next(n for n in proto.graph.node if n.input and n.input[0] == "q_dense_2/kernel")
    scale, bits = inits[quant.input[1]], inits[quant.input[3]]
    assert scale == 2.0 ** exponents.min() and bits == exponents.max() - exponents.min() + 2


def test_quantized_po2_on_an_activation_is_refused():
    import qkeras
    import tf_keras

    inp = tf_keras.Input((4,))
    model = tf_keras.Model(inp, qkeras.QActivation(qkeras.quantized_po2(4), name="po2_act")(inp))
    with pytest.raises(KilnError, match=r"layer 'po2_act' \(QActivation\).*powers of two.*weights and biases only"):
        kiln.compile(model)


def test_keras3_archive_compiles_from_the_cli(tmp_path):
    from tests.helpers import run_kiln

    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = run_kiln("compile", KERAS_DIR / "qkeras-v3_3layer.keras", "-o", tmp_path / "prj", env=env)
    assert result.returncode == 0, result.stderr
    assert "input 'fc1_input' is not quantized by the model" in result.stderr


def test_keras3_config_translation():
    from kiln.frontend.keras3_archive import translate

    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "dtype": "float32",
                                                            "keras_history": ["x", 0, 0]}}
    config = {"module": "keras", "class_name": "Functional", "registered_name": None, "config": {
        "name": "m", "input_layers": ["x", 0, 0], "output_layers": ["d", 0, 0], "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "name": "x", "inbound_nodes": [],
             "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "x", "optional": False}},
            {"module": "qkeras.qlayers", "class_name": "QDense", "registered_name": "qkeras>QDense", "name": "d",
             "inbound_nodes": [{"args": [tensor], "kwargs": {}}],
             "config": {"name": "d", "units": 2, "dtype": policy, "quantization_config": None}}]}}
    out = translate(config, "m.keras")
    layers = out["config"]["layers"]
    assert out["config"]["input_layers"] == [["x", 0, 0]]
    assert layers[0]["config"] == {"batch_input_shape": [None, 4], "dtype": "float32", "name": "x"}
    assert layers[1] == {"class_name": "QDense", "name": "d", "inbound_nodes": [[["x", 0, 0, {}]]],
                         "config": {"name": "d", "units": 2, "dtype": "float32"}}
    scaled = {"class_name": "quantized_bits", "config": {"bits": 4, "post_training_scale": [0.5]}}
    with pytest.raises(KilnError, match=r"m.keras: quantized_bits .*post-training scale"):
        translate(scaled, "m.keras")
