"""Read a ``.keras`` archive saved by Keras 3 into a tf_keras (Keras 2) model.

QKeras runs on tf_keras (``TF_USE_LEGACY_KERAS=1``), whose ``load_model`` cannot read what
Keras 3 writes: a ``.keras`` file is a zip of ``metadata.json`` (``keras_version``),
``config.json`` (the model config) and ``model.weights.h5``, and Keras 3's config differs
from Keras 2's in a few mechanical ways. This module translates the config and loads the
weights itself:

* every serialized object is wrapped as ``{"module", "class_name", "config",
  "registered_name"}`` (``registered_name`` ``"qkeras>QDense"`` for custom objects): the
  wrapper is reduced to Keras 2's ``{"class_name", "config"}``;
* ``dtype`` is a ``DTypePolicy`` object: it becomes its name (``"float32"``);
* ``InputLayer`` has ``batch_shape`` (Keras 2: ``batch_input_shape``) and ``optional``;
  ``Dense``-like layers have ``quantization_config`` (Keras 3's own quantization) and the
  QKeras of Keras 3 gives ``quantized_bits`` a ``post_training_scale``: only ``None`` (off)
  is accepted, and dropped;
* a functional model's ``inbound_nodes`` are ``{"args": [<__keras_tensor__ with
  keras_history [layer, node, tensor]>], "kwargs": {}}``: they become Keras 2's
  ``[[layer, node, tensor, kwargs]]``;
* ``model.weights.h5`` holds ``layers/<path>/vars/<i>`` with the layer's name in the
  ``name`` attribute of ``vars``: each layer gets its variables in that order (the order
  of ``layer.weights``, the same in both versions).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from kiln.errors import KilnError

KERAS3_ONLY_KEYS = {"optional"}  # InputLayer: Keras 2 has no optional inputs
# settings newer than tf_keras / QKeras 0.9: only their "off" value (None) has a Keras 2 meaning
KERAS3_NONE_KEYS = {"quantization_config": "Keras 3 quantization",
                    "post_training_scale": "a post-training scale (newer QKeras)"}


def keras_version(path: Path) -> str | None:
    """The ``keras_version`` in a ``.keras`` archive's metadata, or None when it is not an archive."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return None
        return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))


def is_keras3_archive(path: Path) -> bool:
    version = keras_version(path)
    return version is not None and version.split(".")[0] == "3"


def load_keras3_archive(path: Path, custom_objects: dict):
    """The tf_keras model stored in the Keras 3 archive ``path`` (weights loaded)."""
    import tf_keras

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        for needed in ("config.json", "model.weights.h5"):
            if needed not in names:
                raise KilnError(f"{path}: a Keras 3 archive without {needed} (has {', '.join(names)})")
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    legacy = translate(config, str(path))
    try:
        model = tf_keras.models.model_from_json(json.dumps(legacy), custom_objects=custom_objects)
    except Exception as exc:  # Keras raises many types for a config it cannot build
        raise KilnError(f"{path}: could not build the Keras 3 model with tf_keras "
                        f"({type(exc).__name__}: {exc})") from None
    _load_weights(model, weights, path)
    return model


# --------------------------------------------------------------------------- config


def translate(obj, where: str):
    """Keras 3 serialized config -> Keras 2 (recursively)."""
    if isinstance(obj, list):
        return [translate(v, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "class_name" in obj and "config" in obj:
        class_name, config = obj["class_name"], obj["config"]
        if class_name in ("DTypePolicy", "Policy") and isinstance(config, dict):
            return config.get("name", "float32")
        if class_name == "__keras_tensor__":
            return obj  # handled by _inbound_nodes
        out = {"class_name": class_name, "config": _layer_config(class_name, config, where)}
        for key in ("name", "inbound_nodes"):  # functional models keep these beside config
            if key in obj:
                out[key] = obj[key] if key == "name" else _inbound_nodes(obj[key], where)
        return out
    return {k: translate(v, where) for k, v in obj.items()}


def _layer_config(class_name: str, config, where: str):
    if not isinstance(config, dict):
        return translate(config, where)
    config = dict(config)
    if class_name == "InputLayer" and "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    for key, what in KERAS3_NONE_KEYS.items():
        if config.get(key) is not None:
            raise KilnError(f"{where}: {class_name} {config.get('name', '')!r} uses {what} "
                            f"({key}={config[key]}); not supported")
        config.pop(key, None)
    for key in KERAS3_ONLY_KEYS:
        config.pop(key, None)
    if class_name in ("Functional", "Model") and "layers" in config:
        for key in ("input_layers", "output_layers"):
            if key in config:
                config[key] = _tensor_refs(config[key])
    return {k: translate(v, where) for k, v in config.items()}


def _tensor_refs(refs):
    """``[name, node, tensor]`` or a list of them (Keras 3 may store a single one flat)."""
    if refs and isinstance(refs[0], str):
        return [refs]
    return refs


def _inbound_nodes(nodes, where: str):
    """Keras 3 ``[{"args": [...], "kwargs": {...}}]`` -> Keras 2 ``[[[layer, node, tensor, {}], ...]]``."""
    out = []
    for node in nodes:
        if not isinstance(node, dict):
            out.append(node)  # already Keras 2
            continue
        refs: list = []
        _collect_history(node.get("args", []), refs)
        if not refs:
            raise KilnError(f"{where}: an inbound node with no input tensor ({node}); not supported")
        out.append([[*ref, {}] for ref in refs])
    return out


def _collect_history(obj, refs: list) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            refs.append(list(obj["config"]["keras_history"]))
            return
        for v in obj.values():
            _collect_history(v, refs)
    elif isinstance(obj, list):
        for v in obj:
            _collect_history(v, refs)


# --------------------------------------------------------------------------- weights


def _load_weights(model, data: bytes, path: Path) -> None:
    import io

    import h5py

    stored: dict[str, list] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and name.endswith("vars") and "name" in obj.attrs:
                keys = sorted(obj.keys(), key=int)
                stored[str(obj.attrs["name"])] = [obj[k][()] for k in keys]
        f.visititems(visit)
    for layer in model.layers:
        if not layer.weights:
            continue
        values = stored.get(layer.name)
        if values is None or len(values) != len(layer.weights):
            have = "none" if values is None else f"{len(values)}"
            raise KilnError(f"{path}: model.weights.h5 has {have} variables for layer {layer.name!r}, "
                            f"which has {len(layer.weights)}")
        try:
            layer.set_weights(values)
        except ValueError as exc:
            raise KilnError(f"{path}: layer {layer.name!r}: {exc}") from None
