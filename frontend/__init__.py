"""Frontends: turn a user's model into the IR (an ``onnx_ir.Model`` with static shapes).

``load_model`` takes an ONNX/QONNX file or ModelProto, or a Keras/QKeras model (in memory,
``.h5`` or ``.keras``), which Kiln converts to QONNX itself (frontend/qkeras_loader.py).
"""

from pathlib import Path

from kiln.frontend.onnx_loader import LoadedModel, load_onnx

KERAS_SUFFIXES = (".h5", ".keras")


def is_keras(src) -> bool:
    """A Keras model object or a path to a saved one (checked without importing TensorFlow)."""
    if isinstance(src, (str, Path)):
        return Path(src).suffix.lower() in KERAS_SUFFIXES
    return type(src).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow", "qkeras")


def load_model(src, quantizers: bool = True) -> LoadedModel:
    """Any supported model into the IR; Keras/QKeras through Kiln's QKeras -> QONNX converter.
    ``quantizers``: see ``load_onnx``."""
    if is_keras(src):
        from kiln.frontend.qkeras_loader import qkeras_to_qonnx

        name = Path(src).stem if isinstance(src, (str, Path)) else (getattr(src, "name", None) or "keras_model")
        loaded = load_onnx(qkeras_to_qonnx(src), quantizers=quantizers)
        loaded.source = name
        return loaded
    return load_onnx(src, quantizers=quantizers)


__all__ = ["LoadedModel", "is_keras", "load_model", "load_onnx"]
