"""TVM backend (x86-host): outputs agree with ONNX Runtime to 1e-4 relative.

Models: the spine's MLPs and CNNs (examples/make_jet_mlp.py, the PyTorch models of
examples/torch_models.py) and the transformer zoo (examples/zoo.py: jet tagger, tiny ViT,
text encoder with int64 token ids), 64 inputs each, one library call per sample.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")
pytest.importorskip("torch")

from examples.make_jet_mlp import export as export_jet_mlp, make_samples  # noqa: E402
from examples.zoo import export_model, samples  # noqa: E402
from tests.helpers import relative_error  # noqa: E402
from examples.torch_models import exported, random_inputs  # noqa: E402

import kiln  # noqa: E402
from kiln.backends.tvm import compile_tvm, open_artifact  # noqa: E402

TOLERANCE = 1e-4
N = 64
SPINE = ["JetMLP", "CNN2d", "CNN1d", "GapNet", "Branches", "SeqMix", "Activations"]
ZOO = ["jet_tagger", "tiny_vit", "text_encoder"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tvm_models")
    cases = {"jet_mlp": (export_jet_mlp(d / "jet_mlp.onnx", opset=17), make_samples(N))}
    for name in SPINE:
        cases[name] = (exported(name, 17, str(d)), random_inputs(name)[:N])
    for name in ZOO:
        cases[name] = (export_model(name, d / f"{name}.onnx"), samples(name, N))
    return cases


@pytest.mark.parametrize("name", ["jet_mlp", *SPINE, *ZOO])
def test_outputs_match_onnxruntime(models, name, tmp_path):
    model, x = models[name]
    art = compile_tvm(model, board="x86-host", output_dir=tmp_path / name)
    assert art.library.name == "model.so"
    got = art.run(x, return_all=True)
    ref = art.reference(x)
    assert len(got) == len(ref) == len(art.outputs)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        err = relative_error(g, r)
        print(f"{name}: TVM vs ONNX Runtime relative error {err:.3e}")
        assert err <= TOLERANCE, f"{name}: relative error {err:.3e} > {TOLERANCE}"


def test_manifest_names_the_cpu_and_needs_no_model(models, tmp_path):
    """The manifest records an explicit CPU (never 'native'/'host') and the TVM version; run
    works with model.onnx gone (only the library and the manifest are needed)."""
    model, x = models["jet_mlp"]
    art = kiln.compile(model, board="x86-host", output_dir=tmp_path / "host")  # kiln.compile dispatches on kind
    m = json.loads((art.path / "kiln_manifest.json").read_text())
    assert m["backend"] == "tvm" and m["tvm_version"].startswith("0.27")
    assert m["target"]["mcpu"] not in ("native", "host", "") and isinstance(m["target"]["num-cores"], int)
    assert m["inputs"][0]["name"] == "x" and m["inputs"][0]["shape"] == [1, 16] and m["inputs"][0]["dtype"] == "float32"
    assert m["outputs"][0]["shape"] == [1, 5]
    ref = art.reference(x[:8])[0]
    for extra in ("model.onnx", "kiln_ir.onnx"):
        (art.path / extra).unlink()
    y = open_artifact(art.path).run(x[:8])
    assert relative_error(y, ref) <= TOLERANCE


def test_cli_compile_run_bench(models, tmp_path):
    """kiln compile --board x86-host / kiln run --output / kiln bench, as a user types them."""
    model, x = models["jet_mlp"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "host"
    kiln_cmd = [sys.executable, "-m", "kiln.cli"]
    r = subprocess.run([*kiln_cmd, "compile", str(model), "--board", "x86-host", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "model.so: x86_64 ELF shared object" in r.stdout
    r = subprocess.run([*kiln_cmd, "run", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                        str(tmp_path / "y.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "100.00%" in r.stdout  # argmax agreement column
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (N, 5)
    assert relative_error(y, open_artifact(out).reference(x)[0]) <= TOLERANCE
    r = subprocess.run([*kiln_cmd, "bench", str(out), "--repeat", "12"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "device timer" in r.stdout and "ONNX Runtime" in r.stdout
    assert "TVM / ONNX Runtime median latency:" in r.stdout
