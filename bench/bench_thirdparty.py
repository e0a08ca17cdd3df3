#!/usr/bin/env python
"""Benchmark: the third-party model files of tests/data/thirdparty through Kiln and hls4ml 1.3.

Not a test. Run from the repo root::

    .venv/bin/python bench/bench_thirdparty.py [--only SUBSTRING ...] [--skip SUBSTRING ...] [--samples N] [--no-hls4ml]

Every file (the ONNX files; the QKeras ones through Kiln's QKeras loader) is run, on the same
random inputs (standard normal, seed 0, N samples; calibration: 64 other samples, seed 1), in

* Kiln ``float``: HLS C-sim at ``--precision float``;
* Kiln ``fixed``: HLS C-sim at the default precision (the model's quantizers, else fixed<16,6>);
* Kiln ``cal16``: ``--calibrate`` on the calibration samples, ``--bits 16``;
* Kiln ``tvm``: the TVM library for ``x86-host``;
* hls4ml ``default``: hls4ml's default config (``config_from_*_model``, Vitis backend,
  io_parallel) -> ``compile()`` -> ``predict()``; ``legacy`` the same with
  ``Softmax: Implementation = legacy`` where the model has a softmax. ONNX files first go
  through qonnx's cleanup and ConvertToChannelsLastAndClean as hls4ml's docs say;
  Keras files through ``convert_from_keras_model``.

Each row prints the result against ONNX Runtime on the user's model (Kiln's reference; for
hls4ml the same arrays): max |error| relative to the output scale and argmax agreement on
(N, classes) outputs, or the first line of the error. One table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "thirdparty"
KILN_MODES = {"float": dict(precision="float"), "fixed": {}, "cal16": dict(bits=16), "tvm": dict(board="x86-host")}


def model_files() -> list[Path]:
    onnx_files = sorted(DATA.rglob("*.onnx"))
    keras = sorted(DATA.glob("hls4ml_example_models/keras/*.json")) + sorted(DATA.glob("hls4ml_example_models/keras/*.keras"))
    return onnx_files + keras


def load_keras(path: Path):
    """A Keras model object: JSON architecture + ``<stem>_weights.h5``, or a ``.keras`` archive."""
    from kiln.frontend.qkeras_loader import _import_qkeras, _load_keras_model

    if path.suffix == ".keras":
        return _load_keras_model(path)
    qkeras, tf_keras = _import_qkeras()
    custom: dict = {}
    qkeras.utils._add_supported_quantized_objects(custom)
    model = tf_keras.models.model_from_json(path.read_text(), custom_objects=custom)
    model.load_weights(str(path.with_name(path.stem + "_weights.h5")))
    return model


def describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text[:110]}" if text else type(exc).__name__


def score(got, ref) -> str:
    got = np.asarray(got, np.float64).reshape(ref.shape)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    text = f"{float(np.max(np.abs(got - ref))) / scale:.3g}"
    flat_ref, flat_got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    if flat_ref.shape[1] > 1:
        text += f" / {np.mean(np.argmax(flat_got, 1) == np.argmax(flat_ref, 1)):.0%}"
    return text


@contextlib.contextmanager
def quiet():
    """hls4ml and TF print a lot on stdout; keep the table readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def kiln_row(model, mode: str, x, calib, workdir: Path):
    import kiln

    kw = dict(KILN_MODES[mode])
    if mode == "cal16":
        kw["calibrate"] = calib
    project = kiln.compile(model, output_dir=workdir / f"kiln_{mode}", **kw)
    if mode == "tvm":
        return project.run(x)
    return project.csim(x)


def _cap_ir_version() -> None:
    """qonnx executes single nodes in ONNX Runtime through models made by ``onnx.helper.make_model``,
    which stamps onnx 1.23's IR version 14; ONNX Runtime 1.31 reads up to 13. Default it to 10."""
    import onnx.helper

    make = onnx.helper.make_model
    if getattr(make, "_kiln_capped", False):
        return

    def make_model(graph, **kwargs):
        kwargs.setdefault("ir_version", 10)
        return make(graph, **kwargs)

    make_model._kiln_capped = True
    onnx.helper.make_model = make_model


def hls4ml_onnx(path: Path, workdir: Path, legacy: bool):
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    _cap_ir_version()
    model = cleanup_model(ModelWrapper(str(path)))
    model = model.transform(ConvertToChannelsLastAndClean())
    model = model.transform(GemmToMatMul())
    model = cleanup_model(model)
    config = hls4ml.utils.config.config_from_onnx_model(model, granularity="name", backend="Vitis")
    hls = _convert(lambda c: hls4ml.converters.convert_from_onnx_model(
        model, output_dir=str(workdir), backend="Vitis", io_type="io_parallel", hls_config=c), config, legacy)
    return hls, [int(d) for d in model.get_tensor_shape(model.graph.input[0].name)]


def _convert(convert, config: dict, legacy: bool):
    """hls4ml's model from ``config``; ``legacy``: with every Softmax layer's Implementation "legacy".
    Set per layer name (granularity "name"): a ``LayerType`` entry is not applied to the Softmax layers."""
    hls = convert(config)
    if not legacy:
        return hls
    for layer in hls.get_layers():
        if layer.class_name == "Softmax":
            config["LayerName"].setdefault(layer.name, {})["Implementation"] = "legacy"
    hls = convert(config)
    assert all(layer.get_attr("implementation") == "legacy" for layer in hls.get_layers() if layer.class_name == "Softmax")
    return hls


def hls4ml_keras(keras_model, workdir: Path, legacy: bool):
    import hls4ml

    config = hls4ml.utils.config.config_from_keras_model(keras_model, granularity="name", backend="Vitis")
    hls = _convert(lambda c: hls4ml.converters.convert_from_keras_model(
        keras_model, output_dir=str(workdir), backend="Vitis", io_type="io_parallel", hls_config=c), config, legacy)
    return hls, [1, *keras_model.input_shape[1:]]


def hls4ml_row(path: Path, model, x, ref, workdir: Path, legacy: bool) -> str:
    with quiet():
        if path.suffix == ".onnx":
            hls, in_shape = hls4ml_onnx(path, workdir, legacy)
        else:
            hls, in_shape = hls4ml_keras(model, workdir, legacy)
        hls.compile()
        feed = x
        if list(feed.shape[1:]) != in_shape[1:] and feed.ndim >= 3:  # ConvertToChannelsLast made it NWC/NHWC
            feed = np.moveaxis(feed, 1, -1)
        y = hls.predict(np.ascontiguousarray(feed.astype(np.float32)))
    y = np.asarray(y)
    if y.size != ref.size:
        return f"output has {y.size} values, ORT {ref.size}"
    if y.shape != ref.shape and ref.ndim >= 3:  # channels-last output back to channels-first
        y = np.moveaxis(y.reshape(ref.shape[0], *ref.shape[2:], ref.shape[1]), -1, 1)
    return score(y, ref)


def has_softmax(path: Path, model) -> bool:
    if path.suffix == ".onnx":
        import onnx

        return any(n.op_type == "Softmax" for n in onnx.load(str(path)).graph.node)
    return any("softmax" in str(getattr(layer, "activation", "")).lower() or type(layer).__name__ == "Softmax"
               for layer in model.layers)


def run_file(path: Path, n: int, with_hls4ml: bool) -> list[tuple[str, str, str, str]]:
    import kiln

    name = path.stem
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-3p-") as tmp:
        workdir = Path(tmp)
        try:
            model = load_keras(path) if path.suffix != ".onnx" else str(path)
            base = kiln.compile(model, output_dir=workdir / "ref", precision="float")
            shape = base.inputs[0]["shape"][1:] if base.inputs[0].get("batch_axis") else base.inputs[0]["shape"]
            x = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
            calib = np.random.default_rng(1).standard_normal((64, *shape)).astype(np.float32)
            ref = base.reference(x)[0]
        except Exception as exc:  # noqa: BLE001 - the row says what failed
            return [(name, "all", f"refused: {describe(exc)}", "-")]
        results = {}
        for mode in KILN_MODES:
            t = time.perf_counter()
            try:
                results[mode] = score(kiln_row(model, mode, x, calib, workdir), ref)
            except Exception as exc:  # noqa: BLE001
                results[mode] = describe(exc)
            print(f"  {name} kiln {mode}: {results[mode]} ({time.perf_counter() - t:.1f} s)", file=sys.stderr, flush=True)
        hls = {}
        variants = ["default"] + (["legacy"] if has_softmax(path, model if path.suffix != ".onnx" else None) else [])
        for variant in variants:
            if not with_hls4ml:
                hls[variant] = "skipped"
                continue
            t = time.perf_counter()
            try:
                hls[variant] = hls4ml_row(path, model, x, ref, workdir / f"hls4ml_{variant}", variant == "legacy")
            except Exception as exc:  # noqa: BLE001
                hls[variant] = describe(exc)
            print(f"  {name} hls4ml {variant}: {hls[variant]} ({time.perf_counter() - t:.1f} s)", file=sys.stderr,
                  flush=True)
        for mode in KILN_MODES:
            rows.append((name, mode, results[mode], ""))
        for variant in variants:
            rows.append((name, f"hls4ml {variant}", "", hls[variant]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="files whose name contains one of these")
    parser.add_argument("--skip", nargs="*", default=[], help="files whose name contains one of these are left out")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--no-hls4ml", action="store_true")
    args = parser.parse_args()
    rows = []
    for path in model_files():
        if args.only and not any(s in path.name for s in args.only):
            continue
        if any(s in path.name for s in args.skip):
            continue
        print(f"{path.relative_to(ROOT)}", file=sys.stderr, flush=True)
        rows += run_file(path, args.samples, not args.no_hls4ml)
    print("error = max |result - ONNX Runtime| / max |ONNX Runtime|, then argmax agreement; "
          f"{args.samples} standard-normal samples (seed 0)")
    widths = [max(len(r[i]) for r in rows + [("model", "mode", "Kiln", "hls4ml")]) for i in range(4)]
    for r in [("model", "mode", "Kiln", "hls4ml")] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
