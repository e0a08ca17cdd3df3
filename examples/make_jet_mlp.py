#!/usr/bin/env python
"""Build the hls4ml-style jet-tagging MLP in PyTorch and export it to ONNX.

Network: Linear(16,64)-ReLU-Linear(64,32)-ReLU-Linear(32,32)-ReLU-Linear(32,5)-Softmax(dim=-1)
with deterministic weights (``torch.manual_seed(0)`` + PyTorch default init).

Usage (from the repo root)::

    python examples/make_jet_mlp.py -o examples/jet_mlp.onnx --samples examples/jet_mlp_x.npy

Importable API::

    from examples.make_jet_mlp import build_jet_mlp, export, make_samples

Exporter choice: with torch 2.13 both exporters work for this network, but the
legacy TorchScript exporter (``dynamo=False``) is the default here because it
emits opset 17 natively, one self-contained ``.onnx`` file (no ``.onnx.data``
side file), initializers in layer order and no ``value_info``/metadata noise.
The dynamo exporter only implements opset >= 18 and down-converts to 17 through
the ONNX C API, and by default writes the weights to an external ``.onnx.data``
file; it is still available with ``--exporter dynamo`` (weights kept inline).
Both produce the same graph: 4x Gemm(transB=1) + 3x Relu + Softmax(axis=-1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

IN_FEATURES = 16
HIDDEN = (64, 32, 32)
OUT_FEATURES = 5
N_SAMPLES = 256
SEED = 0
INPUT_NAME = "x"
OUTPUT_NAME = "y"
BATCH_DIM = "batch"
DEFAULT_OPSET = 17

_HERE = Path(__file__).resolve().parent
DEFAULT_ONNX = _HERE / "jet_mlp.onnx"
DEFAULT_SAMPLES = _HERE / "jet_mlp_x.npy"


def build_jet_mlp(seed: int = SEED) -> torch.nn.Module:
    """Return the jet-tagging MLP (eval mode) with deterministic default-init weights."""
    torch.manual_seed(seed)
    dims = (IN_FEATURES, *HIDDEN)
    layers: list[torch.nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
    layers += [torch.nn.Linear(dims[-1], OUT_FEATURES), torch.nn.Softmax(dim=-1)]
    return torch.nn.Sequential(*layers).eval()


def make_samples(n: int = N_SAMPLES, seed: int = SEED) -> np.ndarray:
    """Standard-normal float32 inputs of shape (n, 16)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, IN_FEATURES)).astype(np.float32)


def torch_reference(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def export(
    path: str | os.PathLike = DEFAULT_ONNX,
    opset: int = DEFAULT_OPSET,
    model: torch.nn.Module | None = None,
    exporter: str = "legacy",
    verbose: bool = False,
) -> Path:
    """Export the jet MLP to ONNX at ``path`` and check it with ``onnx.checker``.

    ``exporter`` is ``"legacy"`` (TorchScript, ``dynamo=False``; default) or ``"dynamo"``.
    Returns the path written.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = build_jet_mlp()
    model = model.eval()
    dummy = (torch.zeros(2, IN_FEATURES),)

    kwargs: dict = dict(
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
    )
    if exporter == "legacy":
        kwargs.update(
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
        )
    elif exporter == "dynamo":
        # dynamic_shapes keys must match forward()'s arg names (nn.Sequential: "input"),
        # so pass it positionally; external_data=False keeps the weights inside the file.
        kwargs.update(
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
            external_data=False,
            verbose=verbose,
        )
    else:
        raise ValueError(f"unknown exporter {exporter!r} (use 'legacy' or 'dynamo')")

    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")  # legacy-exporter DeprecationWarning etc.
        if not verbose:
            stack.enter_context(contextlib.redirect_stdout(sink))
            for name in ("torch.onnx", "torch.export", "onnxscript"):
                logger = logging.getLogger(name)
                stack.callback(logger.setLevel, logger.level)
                logger.setLevel(logging.ERROR)
        torch.onnx.export(model, dummy, str(path), **kwargs)

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    got_opset = {o.domain: o.version for o in m.opset_import}.get("", None)
    if got_opset != opset:
        raise RuntimeError(f"exported opset {got_opset}, requested {opset}")
    return path


def verify(onnx_path: str | os.PathLike, x: np.ndarray, model: torch.nn.Module | None = None,
           atol: float = 1e-6) -> float:
    """Run the ONNX model with onnxruntime on ``x``; assert it matches torch within ``atol``.

    Returns the max abs difference.
    """
    import onnxruntime as ort

    if model is None:
        model = build_jet_mlp()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y_ort,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x})
    y_ref = torch_reference(model, x)
    if y_ort.shape != (x.shape[0], OUT_FEATURES):
        raise AssertionError(f"unexpected ORT output shape {y_ort.shape}")
    err = float(np.max(np.abs(y_ort - y_ref)))
    if not err <= atol:
        raise AssertionError(f"ONNX Runtime vs torch max abs diff {err:.3e} > {atol:g}")
    return err


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default=str(DEFAULT_ONNX), help="ONNX file to write")
    ap.add_argument("--samples", default=str(DEFAULT_SAMPLES),
                    help="where to write the sample inputs (.npy, float32 (256,16))")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--n-samples", type=int, default=N_SAMPLES)
    ap.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    ap.add_argument("-v", "--verbose", action="store_true", help="show exporter output")
    args = ap.parse_args(argv)

    model = build_jet_mlp()
    onnx_path = export(args.output, opset=args.opset, model=model,
                       exporter=args.exporter, verbose=args.verbose)
    x = make_samples(args.n_samples)
    samples = Path(args.samples)
    samples.parent.mkdir(parents=True, exist_ok=True)
    np.save(samples, x)
    err = verify(onnx_path, x, model)
    print(f"wrote {onnx_path} (opset {args.opset}, {args.exporter} exporter)")
    print(f"wrote {samples} {x.dtype} {x.shape}")
    print(f"onnxruntime vs torch: max abs diff {err:.3e} (<= 1e-6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
