"""Sample inputs for calibration and comparisons: the model's input specs, and ``.npy``/``.npz``
files (or arrays) checked against them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.fsutil import load_array_file


def model_input_specs(model) -> list[dict]:
    """The model's inputs in the form of kiln_manifest.json's "inputs": name, shape (a symbolic
    batch axis as 1, other symbolic dims as None), dtype, batch_axis (axis 0 symbolic or 1:
    the rule of Kiln's frontend)."""
    import onnx

    proto = load_model(model)
    initializers = {t.name for t in proto.graph.initializer}
    specs = []
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        batch = bool(dims) and (shape[0] is None or shape[0] == 1)
        if batch:
            shape[0] = 1
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "float32"
        specs.append({"name": inp.name, "shape": shape, "dtype": dtype, "batch_axis": batch,
                      "symbolic_batch": bool(dims) and not dims[0].HasField("dim_value")})
    return specs


def _sample_shape(spec: dict) -> list:
    return list(spec["shape"][1:] if spec.get("batch_axis") else spec["shape"])


def load_samples(path_or_array, input_specs: list[dict]) -> list[np.ndarray]:
    """Sample inputs, one (N, *sample_shape) array per model input in order.

    ``path_or_array``: a ``.npy`` file (a model with one input), a ``.npz`` file (one array per
    input, by input name, else in order), an array, a list of arrays or a dict by name.
    Shapes, dtype kinds and sample counts are checked against ``input_specs`` (dicts with
    "name", "shape", "batch_axis" and optionally "dtype", like kiln_manifest.json's
    "inputs"); every problem is a KilnError naming the file and what is wrong.
    """
    names = [s["name"] for s in input_specs]
    if not names:
        raise KilnError("the model has no inputs, so there is nothing to feed samples to")
    where = "samples"
    if isinstance(path_or_array, (str, os.PathLike)):
        path = Path(path_or_array)
        where = str(path)
        data = load_array_file(path, "sample")
        if isinstance(data, dict) and not data:
            raise KilnError(f"{path}: the .npz file holds no arrays")
    else:
        data = path_or_array
    if isinstance(data, dict):
        if all(n in data for n in names):
            arrays = [data[n] for n in names]
        elif len(data) == len(names) and not any(k in names for k in data):
            arrays = list(data.values())  # in order (np.savez(f, a, b) names them arr_0, arr_1)
        else:
            missing = [n for n in names if n not in data]
            raise KilnError(f"{where}: has arrays {sorted(data)} but the model's inputs are {names}; "
                            f"missing {missing} (name each array after its input, or give them in order)")
    elif isinstance(data, (list, tuple)):
        arrays = list(data)
    else:
        arrays = [data]
    if len(arrays) != len(names):
        hint = " (use a .npz with one array per input)" if len(names) > 1 and len(arrays) == 1 else ""
        raise KilnError(f"{where}: the model has {len(names)} input(s) {names}, got {len(arrays)} array(s){hint}")
    out, n = [], None
    for spec, x in zip(input_specs, arrays):
        x = np.asarray(x)
        want = _sample_shape(spec)
        shown = ", ".join("?" if d is None else str(d) for d in want)
        expected = f"(N{', ' if want else ''}{shown})"
        if x.dtype.kind not in "fiub":
            raise KilnError(f"{where}: input {spec['name']!r} has dtype {x.dtype}; expected a numeric array")
        dtype = spec.get("dtype", "float32")
        is_float = str(dtype).startswith(("float", "bfloat"))
        if is_float and x.dtype.kind not in "fiu" or not is_float and x.dtype.kind not in "iub":
            raise KilnError(f"{where}: input {spec['name']!r} has dtype {x.dtype} but the model's input is "
                            f"{dtype} (expected {'a float' if is_float else 'an integer'} array)")
        ok = x.ndim == len(want) + 1 and all(w is None or w == d for w, d in zip(want, x.shape[1:]))
        if not ok:
            raise KilnError(f"{where}: input {spec['name']!r} has shape {tuple(x.shape)}; the model expects "
                            f"{expected}, a leading axis of N samples")
        if x.shape[0] == 0:
            raise KilnError(f"{where}: input {spec['name']!r} holds no samples (N = 0)")
        if n is not None and x.shape[0] != n:
            raise KilnError(f"{where}: inputs disagree on the number of samples ({n} vs {x.shape[0]})")
        n = x.shape[0]
        if is_float and x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise KilnError(f"{where}: input {spec['name']!r} contains inf or NaN")
        out.append(x)
    return out


def load_model(model):
    """A ModelProto, or the ONNX file read by the frontend's reader (its checks and messages)."""
    from kiln.frontend.onnx_loader import read_onnx

    return read_onnx(model)[0]


def with_symbolic_batch(proto, specs: list[dict]) -> list[dict]:
    """Manifest specs say nothing of whether the batch axis is symbolic in the ONNX file."""
    found = {s["name"]: s for s in model_input_specs(proto)}
    out = []
    for s in specs:
        s = dict(s)
        if "symbolic_batch" not in s:
            s["symbolic_batch"] = found.get(s["name"], {}).get("symbolic_batch", False)
        out.append(s)
    return out
