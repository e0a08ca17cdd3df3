"""QKeras frontend: convert a QKeras (tf_keras) model into a QONNX ``ModelProto``.

Why Kiln converts QKeras itself
-------------------------------
The usual route, ``qonnx.converters.from_keras`` (QKeras -> tf2onnx -> QONNX), is gone:
qonnx 1.0, the version Kiln pins, no longer ships ``qonnx.converters``, and tf2onnx
pins protobuf 3, which cannot be installed next to onnx 1.23.  The QKeras layers Kiln
targets are few and their arithmetic is simple, so this module writes the ONNX graph
directly with ``onnx.helper``.

What comes out
--------------
Standard ONNX ops (opset ``opset``, default 13) plus QONNX ``Quant`` nodes (domain
``qonnx.custom_op.general``, version 1), which compute::

    Quant(x) = (clip(round(x / scale + zeropt), min_int, max_int) - zeropt) * scale

with ``round`` = round half to even (``rounding_mode="ROUND"``), ``zeropt = 0`` and
``[min_int, max_int]`` given by ``bitwidth``, ``signed`` and ``narrow``.

* Weights and biases stay float initializers; a ``Quant`` node on each one gives the
  consumer (MatMul / Conv) the quantized values, exactly as QKeras quantizes its
  kernel on every call.
* Activation quantizers (``QActivation``, or a quantizer used as a layer's
  ``activation``) become a ``Quant`` node on the activation tensor.
* The graph input keeps the Keras layout (NHWC for images) and name; a ``Transpose``
  to NCHW precedes the first Conv/Pool, tensors stay NCHW while convolutions follow,
  and a ``Transpose`` back to NHWC precedes ``Flatten``/``Dense`` so the flatten order
  (and every output) matches Keras.
* Every tensor gets a ``value_info`` (QONNX's executor needs all shapes).

QKeras quantizer semantics (qkeras 0.9.0, ``qkeras/quantizers.py``)
-------------------------------------------------------------------
``quantized_bits(bits, integer, symmetric, keep_negative, alpha)`` with alpha None/1::

    m = 2**(bits - keep_negative);  m_i = 2**integer
    y = m_i * clip(round(x * m / m_i), keep_negative * (symmetric - m), m - 1) / m

i.e. ``Quant(scale = 2**(integer - bits + keep_negative), bitwidth = bits,
signed = keep_negative, narrow = symmetric and keep_negative)``.  ``round`` is
``tf.round`` (half to even) and rounding before clipping equals QONNX's clipping
before rounding because the clip bounds are integers.

``quantized_relu(bits, integer)`` (no sigmoid, no negative slope)::

    y = m_i * clip(round(x * 2**bits / m_i) / 2**bits, 0, 1 - 2**-bits)

i.e. ``Relu`` followed by ``Quant(scale = 2**(integer - bits), bitwidth = bits,
signed = 0, narrow = 0)``; the Relu changes nothing numerically (the clip at 0 already
does it) but tells the backend what the layer is.

``quantized_bits(alpha="auto_po2" | "auto")`` picks a per-output-channel scale from
the weights themselves (least squares, 5 iterations for ``auto_po2``), rounds half
*up* (``floor(|x|/s + 0.5)``) and, for ``auto_po2``, multiplies the integers found
with the previous iteration's scale by the last one.  The converter therefore calls
the quantizer on the weights, reads the scale it chose (``quantizer.scale``) and checks
that ``Quant`` with that scale reproduces the QKeras weights bit for bit; if not it
raises ``KilnError`` rather than emit a model that computes something else.  Data
dependent scales on activations cannot be expressed and are rejected.

Note: QKeras returns ``x + stop_gradient(xq - x)`` (straight-through estimator), which
equals ``xq`` exactly unless ``|x|`` exceeds about ``2**24`` quantization steps (e.g.
``quantized_bits(8, 2)(1e7)`` gives 4.0, outside its own range); the QONNX graph
computes the ideal ``xq``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from kiln.errors import KilnError
from kiln.frontend.keras3_archive import is_keras3_archive, load_keras3_archive
from kiln.frontend.qkeras_graph import QONNX_DOMAIN, GraphBuilder, Value
from kiln.frontend.qkeras_quantizers import (activation_quant, is_po2, is_quantizer, po2_weights, quantizer_classes,
                                             weight_quant)

MIN_OPSET = 13  # Softmax with a single axis; Quant needs nothing newer
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
KERAS_ACTIVATIONS = {"relu": "Relu", "linear": None, "softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh"}
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
HWIO_TO_OIHW = (3, 2, 0, 1)


# --------------------------------------------------------------------------- entry point


def qkeras_to_qonnx(model_or_path, opset: int = 13, *, batch_size: int | None = None) -> onnx.ModelProto:
    """Convert a QKeras/Keras model (object, or path to ``.h5``/``.keras``) to QONNX.

    ``batch_size=None`` gives a symbolic batch axis ``"N"``; an int fixes it (QONNX's
    executor, ``qonnx.core.onnx_exec.execute_onnx``, needs static shapes).

    Raises ``KilnError`` for a layer or quantizer setting with no exact QONNX form.
    """
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise KilnError(f"QKeras model: opset {opset} is not supported "
                        f"(use {MIN_OPSET}..{onnx.defs.onnx_opset_version()})")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise KilnError(f"QKeras model: batch_size must be a positive int or None, got {batch_size!r}")
    model = _load_keras_model(model_or_path)
    return _Converter(model, opset, "N" if batch_size is None else batch_size).convert()


def _import_qkeras():
    """Import TF + QKeras with the legacy Keras 2 API (QKeras does not work with Keras 3)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import qkeras  # noqa: F401  (imports tensorflow)
        import qkeras.utils
    except ImportError as exc:
        raise KilnError(f"QKeras model: needs the qkeras and tensorflow packages ({exc})") from None
    return qkeras


def _load_keras_model(model_or_path):
    if not isinstance(model_or_path, (str, os.PathLike)):
        _import_qkeras()
        return model_or_path
    path = Path(model_or_path)
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise KilnError(f"{path}: not a Keras model file (expected {', '.join(KERAS_SUFFIXES)})")
    if not path.is_file():
        raise KilnError(f"{path}: no such model file")
    qkeras = _import_qkeras()
    import tf_keras

    custom_objects: dict = {}
    qkeras.utils._add_supported_quantized_objects(custom_objects)  # what qkeras.utils.load_qmodel uses
    custom_objects.update(_keras_v3_fixes())
    if path.suffix.lower() == ".keras" and is_keras3_archive(path):
        return load_keras3_archive(path, custom_objects)  # Keras 3's config and weight layout, translated
    try:
        return tf_keras.models.load_model(str(path), custom_objects=custom_objects, compile=False)
    except Exception as exc:  # h5py/Keras raise many types for a bad file
        raise KilnError(f"{path}: could not load the Keras model ({type(exc).__name__}: {exc})") from None


def _keras_v3_fixes() -> dict:
    """custom_objects that let ``load_qmodel`` read the ``.keras`` (v3) format too.

    In a ``.keras`` file a QActivation's quantizer is stored as a nested object
    (``{"class_name": "quantized_bits", "config": {...}}``), which
    ``QActivation.__init__`` does not deserialize; ``.h5`` stores a string.
    """
    from qkeras import QActivation
    from qkeras.quantizers import get_quantizer

    class QActivationV3(QActivation):
        @classmethod
        def from_config(cls, config):
            act = config.get("activation")
            if isinstance(act, dict):
                config = {**config, "activation": get_quantizer({"class_name": act["class_name"],
                                                                   "config": act["config"]})}
            return QActivation(**config)  # a plain QActivation, not this subclass

    return {"QActivation": QActivationV3}




# --------------------------------------------------------------------------- graph building


def _where(layer) -> str:
    """How error messages name a layer: ``QKeras model: layer 'fc1' (QDense)``."""
    return f"QKeras model: layer {layer.name!r} ({type(layer).__name__})"


class _Converter:
    """Walks a single-input, single-output chain of Keras layers and emits ONNX."""

    def __init__(self, model, opset: int, batch):
        self.model, self.opset, self.batch = model, opset, batch
        self.g = GraphBuilder()
        self.handlers = {
            "InputLayer": None, "Dropout": self._identity,
            "Dense": self._dense, "QDense": self._dense,
            "Conv2D": self._conv2d, "QConv2D": self._conv2d,
            "Activation": self._activation_layer, "QActivation": self._qactivation,
            "Flatten": self._flatten,
            "MaxPooling2D": self._pool, "AveragePooling2D": self._pool,
        }

    # ---- driver

    def convert(self) -> onnx.ModelProto:
        model = self.model
        if not getattr(model, "inputs", None) or not hasattr(model, "layers"):
            raise KilnError(f"QKeras model: {type(model).__name__} is not a Sequential or functional Keras model "
                            "with a defined input (subclassed models are not supported)")
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise KilnError(f"QKeras model: needs exactly one input and one output "
                            f"(has {len(model.inputs)} and {len(model.outputs)})")
        in_name = self.g.fresh(model.input_names[0])
        in_shape = self._shape(model.inputs[0], "input")
        self.g.shapes[in_name] = in_shape
        values = {id(model.inputs[0]): Value(in_name, in_shape)}
        for layer in model.layers:
            handler = self._handler(layer)
            if handler is None:
                continue
            x = values.get(id(self._single_input(layer)))
            if x is None:
                raise KilnError(f"{_where(layer)} does not follow the previous layers in a single chain; "
                                "not supported")
            values[id(layer.output)] = handler(layer, x)
        out = self._to_keras_layout(values[id(model.outputs[0])], "output")
        out_name = self._rename_output(out.name, model.output_names[0], in_name)
        return self._make_model(in_name, in_shape, out_name, out.shape)

    def _handler(self, layer):
        kind = type(layer).__name__  # exact class: subclasses (QConv2DBatchnorm...) compute something else
        if kind not in self.handlers:
            raise KilnError(f"{_where(layer)} is not supported; supported: {', '.join(sorted(self.handlers))}")
        return self.handlers[kind]

    @staticmethod
    def _single_input(layer):
        try:
            inp = layer.input
        except (AttributeError, RuntimeError, ValueError) as exc:
            raise KilnError(f"{_where(layer)}: {exc}") from None
        if isinstance(inp, (list, tuple)):
            raise KilnError(f"{_where(layer)} has {len(inp)} inputs; only single-input layers are supported")
        return inp

    def _shape(self, keras_tensor, what: str) -> list:
        dims = list(keras_tensor.shape)[1:]
        if any(d is None for d in dims):
            raise KilnError(f"QKeras model: {what} shape {tuple(keras_tensor.shape)} has unknown dimensions "
                            "besides the batch axis; give the model a static input shape")
        return [self.batch, *map(int, dims)]

    def _out_shape(self, layer, nchw: bool) -> list:
        shape = self._shape(layer.output, f"layer {layer.name!r} output")
        return [shape[p] for p in TO_NCHW] if nchw else shape

    def _rename_output(self, current: str, wanted: str, in_name: str) -> str:
        if current == in_name:  # nothing but identities: still need a node
            return self.g.node("Identity", [current], wanted, self.g.shapes[current]).name
        if current == wanted:
            return current
        wanted = self.g.fresh(wanted)
        for node in self.g.nodes:
            node.input[:] = [wanted if n == current else n for n in node.input]
            node.output[:] = [wanted if n == current else n for n in node.output]
        self.g.shapes[wanted] = self.g.shapes.pop(current)
        return wanted

    def _make_model(self, in_name, in_shape, out_name, out_shape) -> onnx.ModelProto:
        g = self.g
        value_info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                      for n, s in g.shapes.items() if n not in (in_name, out_name)]
        graph = helper.make_graph(
            g.nodes, f"{self.model.name}",
            [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
            initializer=g.initializers, value_info=value_info)
        opsets = [helper.make_opsetid("", self.opset), helper.make_opsetid(QONNX_DOMAIN, 1)]
        # The oldest IR version that holds these opsets: onnx 1.23 would write IR 14 by default,
        # which onnxruntime 1.31 refuses to load.
        ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
        return helper.make_model(graph, opset_imports=opsets, producer_name="kiln.qkeras_loader",
                                 ir_version=ir_version)

    # ---- layout

    def _to_nchw(self, x: Value, name: str) -> Value:
        if x.nchw:
            return x
        if len(x.shape) != 4:
            raise KilnError(f"QKeras model: layer {name!r} needs a 4-D NHWC input, got shape {x.shape}")
        out = self.g.transpose(x, TO_NCHW, f"{name}_to_nchw")
        out.nchw = True
        return out

    def _to_keras_layout(self, x: Value, name: str) -> Value:
        return self.g.transpose(x, TO_NHWC, f"{name}_to_nhwc") if x.nchw else x

    # ---- layers

    def _identity(self, layer, x: Value) -> Value:
        return x

    def _apply_activation(self, layer, fn, x: Value, out: str) -> Value:
        """A Keras activation function or a QKeras quantizer, applied to ``x``."""
        if fn is None:
            return x
        if is_quantizer(fn):
            return self._quantize_activation(fn, x, out, _where(layer))
        name = getattr(fn, "__name__", repr(fn))
        if name not in KERAS_ACTIVATIONS:
            raise KilnError(f"{_where(layer)} uses activation {name!r}; "
                            f"supported: {', '.join(KERAS_ACTIVATIONS)}, quantized_bits, quantized_relu")
        op = KERAS_ACTIVATIONS[name]
        if op is None:
            return x
        attrs = {"axis": 1 if x.nchw else len(x.shape) - 1} if op == "Softmax" else {}
        y = self.g.node(op, [x.name], out, x.shape, **attrs)
        y.nchw = x.nchw
        return y

    def _quantize_activation(self, q, x: Value, out: str, where: str) -> Value:
        _, quantized_relu = quantizer_classes()
        params = activation_quant(q, where)
        src = x.name
        if type(q) is quantized_relu:  # numerically redundant, but tells the backend it is a ReLU
            src = self.g.node("Relu", [src], f"{out}_relu", x.shape).name
        y = self.g.quant(src, params, out, x.shape)
        y.nchw = x.nchw
        return y

    def _activation_layer(self, layer, x: Value) -> Value:
        return self._apply_activation(layer, layer.activation, x, layer.name)

    def _qactivation(self, layer, x: Value) -> Value:
        q = layer.quantizer
        if not is_quantizer(q):  # QActivation("relu") holds a plain Keras function
            return self._apply_activation(layer, q, x, layer.name)
        return self._quantize_activation(q, x, layer.name, _where(layer))

    def _flatten(self, layer, x: Value) -> Value:
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise KilnError(f"{_where(layer)} uses data_format=channels_first; not supported")
        x = self._to_keras_layout(x, layer.name)
        return self.g.node("Flatten", [x.name], layer.name, self._out_shape(layer, False), axis=1)

    def _weight(self, layer, attr: str, perm: tuple | None) -> str:
        """The weight ``layer.<attr>`` as an initializer (ONNX layout), behind a Quant if quantized."""
        w = np.asarray(getattr(layer, attr).numpy(), np.float32)
        q = self._weight_quantizer(layer, attr)
        where = f"{_where(layer)} {attr}_quantizer"
        if q is not None and is_po2(q):
            w, params = po2_weights(q, w, where)  # QKeras's powers of two, on a grid that holds them
        else:
            params = weight_quant(q, w, where) if q is not None else None
        if perm is not None:
            w = w.transpose(perm)
            if params is not None and params.scale.ndim == len(perm):
                params.scale = params.scale.transpose(perm)
        name = self.g.const(f"{layer.name}/{attr}", w)
        if params is None:
            return name
        return self.g.quant(name, params, f"{layer.name}/{attr}_quant", list(w.shape)).name

    @staticmethod
    def _weight_quantizer(layer, attr: str):
        """QDense/QConv2D quantize ``<attr>`` on every call iff ``<attr>_quantizer`` was given
        (``<attr>_quantizer_internal`` is the object, possibly switched to alpha="auto_po2")."""
        if not getattr(layer, f"{attr}_quantizer", None):
            return None
        return getattr(layer, f"{attr}_quantizer_internal")

    def _dense(self, layer, x: Value) -> Value:
        x = self._to_keras_layout(x, layer.name)
        shape = self._out_shape(layer, False)
        act = self._has_activation(layer)
        y = self.g.node("MatMul", [x.name, self._weight(layer, "kernel", None)],
                        f"{layer.name}_matmul" if layer.use_bias or act else layer.name, shape)
        if layer.use_bias:
            y = self.g.node("Add", [y.name, self._weight(layer, "bias", None)],
                            f"{layer.name}_linear" if act else layer.name, shape)
        return self._apply_activation(layer, layer.activation, y, layer.name)

    @staticmethod
    def _has_activation(layer) -> bool:
        fn = layer.activation
        return fn is not None and getattr(fn, "__name__", None) != "linear"

    def _check_channels_last(self, layer) -> None:
        if layer.data_format != "channels_last":
            raise KilnError(f"{_where(layer)} uses data_format={layer.data_format}; "
                            "only channels_last is supported")

    def _pads(self, layer, in_hw, kernel, strides, dilations) -> list[int]:
        """ONNX pads [top, left, bottom, right] equal to Keras padding="valid"/"same"."""
        if layer.padding == "valid":
            return [0, 0, 0, 0]
        if layer.padding != "same":
            raise KilnError(f"{_where(layer)} uses padding={layer.padding!r}; supported: valid, same")
        before, after = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after

    def _conv2d(self, layer, x: Value) -> Value:
        self._check_channels_last(layer)
        if getattr(layer, "groups", 1) != 1:
            raise KilnError(f"{_where(layer)} uses groups={layer.groups}; only groups=1 is supported")
        x = self._to_nchw(x, layer.name)
        kernel = self._weight(layer, "kernel", HWIO_TO_OIHW)
        inputs = [x.name, kernel] + ([self._weight(layer, "bias", None)] if layer.use_bias else [])
        kh, kw = layer.kernel_size
        pads = self._pads(layer, x.shape[2:], (kh, kw), layer.strides, layer.dilation_rate)
        out = f"{layer.name}_linear" if self._has_activation(layer) else layer.name
        y = self.g.node("Conv", inputs, out, self._out_shape(layer, True), kernel_shape=[kh, kw],
                        strides=list(layer.strides), dilations=list(layer.dilation_rate), pads=pads)
        y.nchw = True
        return self._apply_activation(layer, layer.activation, y, layer.name)

    def _pool(self, layer, x: Value) -> Value:
        self._check_channels_last(layer)
        x = self._to_nchw(x, layer.name)
        pool = list(layer.pool_size)
        pads = self._pads(layer, x.shape[2:], pool, layer.strides, (1, 1))
        op = "MaxPool" if type(layer).__name__ == "MaxPooling2D" else "AveragePool"
        attrs = {"count_include_pad": 0} if op == "AveragePool" else {}  # Keras averages real pixels only
        y = self.g.node(op, [x.name], layer.name, self._out_shape(layer, True), kernel_shape=pool,
                        strides=list(layer.strides), pads=pads, **attrs)
        y.nchw = True
        return y
