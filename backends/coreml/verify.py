"""What can be checked about a CoreML package where CoreML cannot predict (Linux).

- ``check_package``: the saved .mlpackage reloads (``skip_model_load``: the spec, not the
  compiled model) and each output's shape and dtype in its spec match the ONNX model's.
- ``value_inference_check``: the program built again with one sample as constant inputs;
  coremltools' value inference computes every MIL op that has it, in fp32 numpy, and the
  outputs are compared with ONNX Runtime on the same sample. Where an op has no value
  inference (conv, pooling, instance_norm), the outputs stay unknown: the check reports them
  as unverified on this machine, naming the ONNX ops, rather than a number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.errors import KilnError

ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}  # ArrayFeatureType.dataType


def check_package(pkg: Path, outputs: list[dict]) -> dict:
    import coremltools as ct

    try:
        model = ct.models.MLModel(str(pkg), skip_model_load=True)
    except Exception as exc:  # noqa: BLE001
        raise KilnError(f"the saved package {pkg.name} does not reload: {exc}") from None
    spec = model.get_spec()
    got = {o.name: o for o in spec.description.output}
    rows = []
    for p in outputs:
        o = got.get(p["coreml_name"])
        if o is None:
            raise KilnError(f"{pkg.name}: output {p['name']!r} is missing from the package ({sorted(got)})")
        shape = [int(d) for d in o.type.multiArrayType.shape]
        dtype = ARRAY_DTYPES.get(o.type.multiArrayType.dataType, str(o.type.multiArrayType.dataType))
        want_dtype = "float32" if p["dtype"].startswith("float") else "int32"
        if shape != p["shape"] or dtype not in (want_dtype, "float16" if want_dtype == "float32" else want_dtype):
            raise KilnError(f"{pkg.name}: output {p['name']!r} is {dtype}{shape} in the package, ONNX says "
                            f"{p['dtype']}{p['shape']}")
        rows.append({"name": p["name"], "shape": shape, "dtype": dtype})
    return {"reloaded": True, "spec_version": int(spec.specificationVersion), "outputs": rows}


def sample_inputs(inputs: list[dict], original, seed: int = 0) -> list[np.ndarray]:
    """One sample per input (batch 1): standard normal floats; integer ids within the indexed axis."""
    from kiln.compiled import gather_index_bounds

    import tempfile

    import onnx

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(original, path)
        bounds = gather_index_bounds(path, {p["name"] for p in inputs if not p["dtype"].startswith("float")})
    out = []
    for p in inputs:
        if p["dtype"].startswith("float"):
            out.append(rng.standard_normal(p["shape"]).astype(np.float32))
        else:
            out.append(rng.integers(0, bounds.get(p["name"], 2), p["shape"]).astype(np.int64))
    return out


def value_inference_check(model, original, inputs: list[dict], outputs: list[dict], target: str) -> dict:
    """{"verified": bool, "max_relative_error", per output errors, "unverified_ops": {op: [nodes]}}."""
    from kiln.backends.coreml.program import fold_with_constants
    from kiln.reference import ort_session

    sample = sample_inputs(inputs, original)
    values, blocked = fold_with_constants(model, inputs, sample, target)
    session = ort_session(original, "ONNX Runtime cannot load the model as the reference")
    types = {i.name: i.type for i in session.get_inputs()}
    feed = {p["name"]: x.astype(np.int64 if "int64" in types.get(p["name"], "") else
                                 np.int32 if "int32" in types.get(p["name"], "") else np.float32)
            .reshape([1, *p["shape"][1:]] if p["batch_axis"] else p["shape"])
            for p, x in zip(inputs, sample)}
    names = [o.name for o in session.get_outputs()]
    refs = dict(zip(names, session.run(None, feed)))
    rows = []
    for p, got in zip(outputs, values):
        ref = np.asarray(refs[p["name"]], np.float64).reshape(p["shape"])
        if got is None:
            rows.append({"name": p["name"], "checked": False})
            continue
        got = np.asarray(got, np.float64).reshape(p["shape"])
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        rows.append({"name": p["name"], "checked": True, "max_abs_error": err,
                     "relative_error": err / scale if scale > 0 else err})
    checked = [r for r in rows if r["checked"]]
    return {"method": "coremltools value inference (fp32 numpy) vs ONNX Runtime, one sample",
            "verified": len(checked) == len(rows),
            "max_relative_error": max((r["relative_error"] for r in checked), default=None),
            "outputs": rows, "unverified_ops": {op: nodes for op, nodes in sorted(blocked.items())}}
