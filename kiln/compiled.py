"""What every backend's output directory has in common: its manifest, the input checks
and the ONNX Runtime reference on the user's model (``model.onnx`` beside the output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.annotations import is_op
from kiln.errors import KilnError
from kiln.fsutil import read_manifest
from kiln.reference import OutputComparison, compare_outputs, run_onnxruntime, sample_shape


class CompiledModel:
    """Base of HLSProject and TVMArtifact; ``backend`` names the manifest's writer."""

    backend = ""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path):
        path = Path(path)
        return cls(path, read_manifest(path, cls.backend))

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    def check_inputs(self, inputs) -> list[np.ndarray]:
        """Validate user arrays (leading axis: N samples) against the manifest: one per model
        input (a list in order, a dict by name, or one array), dtype kind, shape, index range."""
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, dict):
            missing = [p["name"] for p in self.inputs if p["name"] not in inputs]
            if missing:
                raise KilnError(f"missing input(s) {missing}; the model's inputs are {[p['name'] for p in self.inputs]}")
            inputs = [inputs[p["name"]] for p in self.inputs]
        inputs = list(inputs)
        if len(inputs) != len(self.inputs):
            raise KilnError(f"the model has {len(self.inputs)} input(s) {[p['name'] for p in self.inputs]}, "
                            f"got {len(inputs)} array(s)")
        arrays, n = [], None
        for spec, x in zip(self.inputs, inputs):
            x = np.asarray(x)
            want = sample_shape(spec)
            is_float = spec["dtype"].startswith("float")
            if not (x.dtype.kind == "f" if is_float else x.dtype.kind in "iub"):
                raise KilnError(f"input {spec['name']!r}: dtype {x.dtype} does not match the model's "
                                f"{spec['dtype']} (expected {'a float' if is_float else 'an integer'} array)")
            if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != tuple(want):
                raise KilnError(f"input {spec['name']!r}: shape {tuple(x.shape)} does not match the model; "
                                f"expected (N, {', '.join(map(str, want))}) with a leading batch axis of N samples")
            bound = spec["index_bound"] if "index_bound" in spec else self._index_bounds().get(spec["name"])
            if bound is not None and x.size and (int(x.min()) < -bound or int(x.max()) >= bound):
                raise KilnError(f"input {spec['name']!r}: indices must lie in [{-bound}, {bound - 1}] (it indexes an "
                                f"axis of size {bound}); got values from {int(x.min())} to {int(x.max())}")
            if n is not None and x.shape[0] != n:
                raise KilnError(f"inputs disagree on the number of samples ({n} vs {x.shape[0]})")
            n = x.shape[0]
            arrays.append(x)
        if n == 0:
            raise KilnError("no samples: the input has a batch axis of 0")
        return arrays

    def _index_bounds(self) -> dict[str, int]:
        """Integer inputs used directly as Gather indices -> the size of the gathered axis, read
        from model.onnx (manifests that list ``index_bound`` themselves need none of this)."""
        if getattr(self, "_bounds", None) is None:
            wanted = {p["name"] for p in self.inputs if not p["dtype"].startswith("float")}
            model = self.path / "model.onnx"
            self._bounds = gather_index_bounds(model, wanted) if wanted and model.is_file() else {}
        return self._bounds

    def reference(self, inputs) -> list[np.ndarray]:
        """ONNX Runtime on the user's model, same inputs, same (N, ...) layout as the backend's outputs."""
        model = self.path / "model.onnx"
        if not model.is_file():
            raise KilnError(f"{self.path}: model.onnx is missing, so there is no ONNX Runtime reference")
        return run_onnxruntime(model, self.inputs, self.outputs, self.check_inputs(inputs))

    def _compare(self, outputs, inputs) -> list[OutputComparison]:
        return compare_outputs(self.outputs, outputs, self.reference(inputs))


def gather_index_bounds(model_path: Path, names: set[str]) -> dict[str, int]:
    """For the graph inputs ``names`` that a Gather uses as its indices: the size of the axis
    they index (the smallest, when several Gathers read one input). Shapes come from the
    initializers and the model's value_info; weights stay on disk (external data not loaded)."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception:  # an unreadable model: no bounds; the reference reports the model itself
        return {}
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info):
        dims = info.type.tensor_type.shape.dim
        if info.name not in shapes and info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    bounds: dict[str, int] = {}
    for node in graph.node:
        if not is_op(node, "Gather") or len(node.input) < 2:
            continue
        data, indices = node.input[0], node.input[1]
        dims = shapes.get(data)
        if indices not in names or not dims:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dim = dims[axis] if -len(dims) <= axis < len(dims) else None
        if dim:
            bounds[indices] = min(bounds.get(indices, dim), dim)
    return bounds
