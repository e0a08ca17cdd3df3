"""The int8 (ONNX Q/DQ) jet MLP on small and large boards: it fits pynq-z2 with the default
budget, costs fewer LUTs and DSPs on vu13p than the float model at fixed<16,6> (Kiln's
estimates), and keeps its numerics (C-sim within one LSB of the Q/DQ ops as written).

How: the Dense layers multiply the integers (uint8 codes, int8 weights), two products per
DSP48 (kiln::dense_packed); each integer sum is requantized with one multiply per value (the
per-output Mul multiplies by the scales / the next quantizer's scale, passes/weight_scale.py
``_requantize``), so the quantizer after it only rounds and clamps; the remaining quantizer
layers share their multipliers by their reuse factor.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir
import pytest

from examples.make_jet_mlp import export as export_jet_mlp
from kiln.backends.hls.estimate import LayerCost, estimate_layer
from kiln.backends.hls.project import HLSProject
from tests.helpers import assert_clean_error, run_kiln

N = 256
PYNQ_DSP, PYNQ_LUT, BUDGET = 220, 53200, 0.7


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    float_model = export_jet_mlp(out / "jet.onnx")
    x = (np.random.default_rng(1).standard_normal((N, 16))).astype(np.float32)
    np.save(out / "x.npy", x)
    result = run_kiln("quantize", float_model, "--calibrate", out / "x.npy", "-o", out / "jet_q.onnx")
    assert result.returncode == 0, result.stderr
    return float_model, out / "jet_q.onnx", x, out


def _estimate(project_dir) -> dict:
    result = run_kiln("report", project_dir, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _as_written(path, x):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _output_lsb(path) -> float:
    model = onnx.load(path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    return float(inits[node.input[1]])


def test_int8_costs_less_than_16_bit_on_vu13p(int8_model):
    float_model, qdq, _, out = int8_model
    for src, prj, extra in ((qdq, out / "vu_int8", ()), (float_model, out / "vu_16", ("--precision", "fixed<16,6>"))):
        result = run_kiln("compile", src, "--board", "vu13p", "-o", prj, *extra)
        assert result.returncode == 0, result.stderr
    int8, fixed16 = _estimate(out / "vu_int8")["total"], _estimate(out / "vu_16")["total"]
    print(f"vu13p estimate: int8 {int8['lut']} LUT {int8['dsp']} DSP; fixed<16,6> {fixed16['lut']} LUT "
          f"{fixed16['dsp']} DSP")
    assert int8["lut"] < fixed16["lut"] and int8["dsp"] < fixed16["dsp"], (int8, fixed16)
    # the structure that makes it so: each Dense's integer sum is requantized by one Mul (its scales /
    # the next quantizer's scale), the quantizer after it only shifts, rounds and clamps (no DSP), the
    # hidden quantizers pass integers on, and the Dense layers pack two products per DSP
    ir_model = onnx_ir.load(out / "vu_int8" / "kiln_ir.onnx")
    dense = [n for n in ir_model.graph if n.op_type == "Dense"]
    assert len(dense) == 4
    layers = {r["name"]: r for r in _estimate(out / "vu_int8")["layers"]}
    for layer in dense:
        (mul, _), = layer.outputs[0].uses()
        (quant, _), = mul.outputs[0].uses()
        assert (mul.op_type, quant.op_type, len(quant.inputs)) == ("Mul", "Quantize", 2), (mul, quant)
        assert layers[mul.name]["dsp"] == layer.outputs[0].shape[-1], layers[mul.name]  # one DSP per value
        integer = quant.attributes.get("integer_output")
        if integer is not None and integer.value == 1:
            assert layers[quant.name]["dsp"] == 0, layers[quant.name]
    readers = [q for q in ir_model.graph if q.op_type == "Quantize"
               and any(u.op_type == "Dense" for u, _ in q.outputs[0].uses())]
    assert len(readers) == 4 and all(q.attributes["integer_output"].value == 1 for q in readers)
    top = next((out / "vu_int8" / "firmware").glob("*.cpp")).read_text()
    assert "kiln::dense_packed<" in top and "kiln::dense<" not in top


def test_int8_fits_pynq_z2_and_matches_qdq_as_written(int8_model):
    """Default budget (70%): every Quantize and Dense shares its multipliers; the C-sim of that
    design (reuse factors > 1 in kiln::quantize and kiln::dense_packed) stays within one LSB of
    the Q/DQ ops as written."""
    _, qdq, x, out = int8_model
    result = run_kiln("compile", qdq, "--board", "pynq-z2", "-o", out / "pynq")
    assert result.returncode == 0, result.stderr
    est = _estimate(out / "pynq")
    total = est["total"]
    print(f"pynq-z2 estimate: {total['dsp']} DSP, {total['lut']} LUT, II {total['ii']}")
    assert total["dsp"] <= BUDGET * PYNQ_DSP and total["lut"] <= BUDGET * PYNQ_LUT, total
    reuse = {r["name"]: r["reuse"] for r in est["layers"] if r["op"] == "Quantize"}
    assert max(reuse.values()) > 1, reuse
    got = HLSProject.open(out / "pynq").csim(x).astype(np.float64)
    ref = _as_written(qdq, x).astype(np.float64)
    lsb = _output_lsb(qdq)
    err = np.abs(got - ref)
    assert err.max() <= lsb * (1 + 2 ** -8) + 1e-7, (err.max() / lsb)
    assert np.mean(err > lsb / 2) < 0.2
    assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) >= 0.97


def test_quantizer_reuse_factor_is_a_working_config_key(int8_model, tmp_path):
    """The way to make a quantizer cheaper that the emitter names: ``[layers.NAME] reuse_factor``."""
    _, qdq, _, _ = int8_model
    name = "x_DequantizeLinear"  # the input quantizer: 16 values, one multiplier each at R=1
    (tmp_path / "kiln.toml").write_text(f'[layers."{name}"]\nreuse_factor = 4\n')
    result = run_kiln("compile", qdq, "--board", "vu13p", "--config", tmp_path / "kiln.toml", "-o", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    layer = next(r for r in _estimate(tmp_path / "p")["layers"] if r["name"] == name)
    assert (layer["reuse"], layer["dsp"]) == (4, 4), layer
    (tmp_path / "kiln.toml").write_text(f'[layers."{name}"]\nreuse_factor = 3\n')
    assert_clean_error(run_kiln("compile", qdq, "--board", "vu13p", "--config", tmp_path / "kiln.toml", "-o",
                                tmp_path / "q"), name, "reuse_factor 3 does not divide")
    from kiln.backends.hls.layers.quantize import QuantizeEmitter

    assert "[layers.NAME] reuse_factor" in QuantizeEmitter.reduce_hint


def test_packed_products_estimate():
    """Two integer products per DSP48: half the DSPs, no LUT multipliers, same accumulators."""
    plain = LayerCost(mults=1024, fan_in=16, a_bits=8, b_bits=8, acc_bits=22, out_elems=64, out_bits=22)
    packed = LayerCost(**{**plain.__dict__, "packed": True})
    p, q = estimate_layer("a", "Dense", plain, []), estimate_layer("b", "Dense", packed, [])
    assert (p.dsp, q.dsp) == (0, 512)
    assert q.lut == 1024 * 22 < p.lut == int(1024 * (0.6 * 64 + 22))
