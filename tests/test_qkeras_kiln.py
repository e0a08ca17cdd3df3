"""QKeras model -> Kiln (through Kiln's QKeras -> QONNX converter) -> C-sim, against QKeras.

The example model quantizes its input, every weight, bias and activation with power-of-two
quantized_bits / quantized_relu, so each quantizer is an exact ap_fixed conversion and the
accumulators are derived wide enough to be exact: C-sim must equal QKeras's own predictions
bit for bit (QKeras computes in float32, which is exact for these few-bit products and sums).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.helpers import long_test

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
pytest.importorskip("qkeras")

import kiln  # noqa: E402
from examples.make_qkeras_model import build_qkeras_model, make_samples  # noqa: E402

N = 256


@pytest.fixture(scope="module")
def qkeras_model():
    return build_qkeras_model(seed=0)


def test_qkeras_csim_bit_identical_to_qkeras_predict(qkeras_model, tmp_path):
    x = make_samples(N, seed=1)
    expected = qkeras_model.predict(x, verbose=0)
    project = kiln.compile(qkeras_model, output_dir=tmp_path / "prj")
    got = project.csim(x)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected), (np.abs(got - expected).max(), np.sum(got != expected))
    # all weight and activation quantizers landed exactly on ap_fixed types
    sources = {t["precision_source"] for t in project.manifest["trace"]}
    assert sources <= {"quant", "inferred"}, sources


@long_test("~20 s (TensorFlow start-up twice; the in-process case above and "
           "test_thirdparty_keras.py::test_keras3_archive_compiles_from_the_cli stay in CI)")
def test_qkeras_h5_file_compiles_from_the_cli(qkeras_model, tmp_path):
    from tests.helpers import run_kiln

    path = tmp_path / "qmodel.h5"
    qkeras_model.save(path)
    x = make_samples(32, seed=2)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = run_kiln("compile", path, "-o", tmp_path / "prj", env=env)
    assert result.returncode == 0, result.stderr
    result = run_kiln("csim", tmp_path / "prj", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy", env=env)
    assert result.returncode == 0, result.stderr
    assert "overflow" in result.stdout  # the overflow summary (quantizers saturating are expected)
    assert np.array_equal(np.load(tmp_path / "y.npy"), qkeras_model.predict(x, verbose=0))
