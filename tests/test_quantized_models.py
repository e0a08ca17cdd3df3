"""Quantized models in (QONNX from Brevitas, ONNX Q/DQ from ONNX Runtime), C-sim out, compared
with ONNX Runtime running the quantized graph; overflow counting of the instrumented C-sim.

The tolerance is one LSB of the model's output quantizer (its scale): with power-of-two
scales every quantizer is an exact ap_fixed conversion and the outputs are asserted
bit-identical; other scales are computed as round(x * (1/scale)) * scale in fixed point,
which can flip a rounding tie by one LSB (and holds q*scale to 2^-8 of the scale).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from examples.quantized_models import QONNX_CASES, qonnx_mlp as _qonnx_mlp, quantize_static_qdq as _quantize_static
from examples.make_jet_mlp import export as export_jet_mlp
from kiln.reference import run_onnxruntime_intermediates
from tests.helpers import assert_clean_error, run_kiln

brevitas_models = pytest.importorskip("examples.brevitas_models")
pytest.importorskip("brevitas", reason="brevitas (test extra) builds the QONNX models")

N = 256


def _output_scale(model: onnx.ModelProto) -> float:
    """Scale of the quantizer that produces the graph output (QONNX Quant or DequantizeLinear)."""
    out = model.graph.output[0].name
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if out in n.output)
    return float(inits[node.input[1]])


def _inputs(shape, scale=1.5, seed=0):
    return (np.random.default_rng(seed).standard_normal((N, *shape)) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def brevitas_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("brevitas")
    files = {}
    for name, builder, shape in (("mlp", brevitas_models.brevitas_mlp, (16,)),
                                 ("cnn", brevitas_models.brevitas_cnn, (1, 8, 8))):
        for po2 in (True, False):
            key = f"{name}_{'po2' if po2 else 'float'}"
            files[key] = (brevitas_models.export(builder(po2), out / f"{key}.onnx"), shape)
    return files


@pytest.mark.parametrize("key", ["mlp_po2", "cnn_po2"])
def test_brevitas_power_of_two_scales_are_bit_identical(brevitas_files, key, tmp_path):
    path, shape = brevitas_files[key]
    project = kiln.compile(path, output_dir=tmp_path / "prj")
    x = _inputs(shape)
    got = project.csim(x)
    ref = project.reference(x)[0]
    assert np.array_equal(got, ref.astype(np.float32)), np.abs(got - ref).max()
    # every quantizer mapped exactly onto an ap_fixed type (no multiply form)
    ir_model = onnx.load(project.path / "kiln_ir.onnx")
    quants = [n for n in ir_model.graph.node if n.op_type == "Quantize"]
    assert len(quants) >= 3
    assert all({p.key: p.value for p in n.metadata_props}["kiln.quant"].startswith("exact") for n in quants)


@pytest.mark.parametrize("key", ["mlp_float", "cnn_float"])
def test_brevitas_float_scales_within_one_lsb(brevitas_files, key, tmp_path):
    path, shape = brevitas_files[key]
    project = kiln.compile(path, output_dir=tmp_path / "prj")
    x = _inputs(shape)
    got = project.csim(x).astype(np.float64)
    ref = project.reference(x)[0]
    lsb = _output_scale(onnx.load(path))
    err = np.abs(got - ref)
    # one LSB, plus holding q*scale in fixed point (2^-8 of the scale)
    assert err.max() <= lsb * (1 + 2 ** -8) + 1e-7, (err.max(), lsb)
    flips = np.mean(err > lsb / 2)
    assert flips < 0.05, flips  # one-LSB rounding flips are rare
    assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) >= 0.97
    # the scales were folded past the sums: every Dense/Conv multiplies 4-bit integer weights
    ir_model = onnx_ir.load(project.path / "kiln_ir.onnx")
    layers = [n for n in ir_model.graph if n.op_type in ("Dense", "Conv")]
    assert layers
    for layer in layers:
        w = layer.inputs[1]
        values = w.const_value.numpy()
        assert np.array_equal(values, np.round(values)) and np.abs(values).max() <= 8, layer.name
        assert w.metadata_props["kiln.precision"] == "fixed<4,4>"
        assert any(u.op_type == "Mul" for u, _ in layer.outputs[0].uses()), layer.name


def _ort_as_written(path, x):
    """ONNX Runtime with graph optimizations off: every QuantizeLinear/DequantizeLinear runs as
    its definition says (no fused integer kernels), one sample at a time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_ort_qdq_model_within_one_lsb(per_channel, tmp_path):
    float_model = export_jet_mlp(tmp_path / "jet.onnx")
    x = _inputs((16,), scale=1.0, seed=1)
    qdq = _quantize_static(float_model, tmp_path / "jet_qdq.onnx", x[:128], per_channel)
    model = onnx.load(qdq)
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) >= 8
    project = kiln.compile(qdq, output_dir=tmp_path / "prj")
    got = project.csim(x).astype(np.float64)
    # the reference: the Q/DQ ops as written (ONNX Runtime with graph optimizations off, which
    # float-mode Kiln matches bit for bit: test_ort_qdq_semantics_exact_in_float_mode). ORT's
    # default session fuses them into integer kernels whose requantization rounding depends on
    # the CPU; that difference is reported, with its own bound, not used as the reference.
    ref = _ort_as_written(qdq, x).astype(np.float64)
    lsb = _output_scale(model)
    err = np.abs(got - ref)
    assert err.max() <= lsb * (1 + 2 ** -8) + 1e-7, (err.max(), lsb)
    assert np.mean(err > lsb / 2) < 0.2
    fused = np.abs(project.reference(x)[0] - ref)  # ONNX Runtime's default session (its integer kernels)
    print(f"kiln vs Q/DQ as written: max {err.max() / lsb:.3f} LSB, {np.mean(err > lsb / 2):.1%} flipped; "
          f"ORT fused kernels vs as written: max {fused.max() / lsb:.3f} LSB, {np.mean(fused > lsb / 2):.1%} flipped")
    assert fused.max() <= 2 * lsb * (1 + 2 ** -8) + 1e-7, (fused.max(), lsb)
    # the weights are int8 per channel/tensor: folded into fixed-point constants, said so
    ir_model = onnx_ir.load(project.path / "kiln_ir.onnx")
    notes = [v.metadata_props["kiln.quant"] for v in ir_model.graph.initializers.values()
             if "kiln.quant" in v.metadata_props]
    assert len(notes) == 8 and all(n.startswith("folded") for n in notes), notes


def test_quantizer_errors_are_clean(tmp_path):
    """A per-channel activation quantizer and a computed scale: exit 2 naming the node."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array([0.5, 0.25, 0.5, 0.5], np.float32), "s"),
             numpy_helper.from_array(np.zeros((), np.float32), "z"),
             numpy_helper.from_array(np.array(8.0, np.float32), "b")]
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="act_q", domain="qonnx.custom_op.general",
                            signed=1, narrow=0, rounding_mode="ROUND")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], inits), ir_version=10,
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("qonnx.custom_op.general", 1)])
    onnx.save(model, tmp_path / "per_channel.onnx")
    result = run_kiln("compile", tmp_path / "per_channel.onnx", "-o", tmp_path / "out")
    assert_clean_error(result, "act_q", "per-channel")
    assert not (tmp_path / "out").exists()
    # QuantizeLinear whose integer output is used as an integer
    q = helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["q"], name="q_only")
    c = helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT, name="cast")
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "qs"),
             numpy_helper.from_array(np.array(0, np.uint8), "qz")]
    model = helper.make_model(helper.make_graph([q, c], "g", [x], [y], inits), ir_version=10,
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "q_only.onnx")
    assert_clean_error(run_kiln("compile", tmp_path / "q_only.onnx", "-o", tmp_path / "out"), "q_only",
                       "DequantizeLinear")


def test_overflow_counts_match_onnx_runtime(tmp_path):
    """fixed<10,1> is too narrow for the jet MLP's first layer: the instrumented C-sim counts
    the values outside [-1, 1) as ONNX Runtime computes them, and `kiln csim` warns."""
    model = export_jet_mlp(tmp_path / "jet.onnx")
    project = kiln.compile(model, output_dir=tmp_path / "prj", precision="fixed<10,1>")
    x = np.clip(_inputs((16,), scale=1.0, seed=2), -0.99, 0.99)  # the inputs themselves fit fixed<10,1>
    _, rows = project.csim_overflow(x)
    first = rows[0]
    assert first["op"] == "Dense" and first["source"] == "default" and first["total"] == N * 64
    ref = run_onnxruntime_intermediates(project.path / "model.onnx", project.inputs, [x], [first["value"]])
    values = ref[first["value"]]
    expected = int(np.sum((values < -1.0) | (values > 1.0 - 2 ** -9)))
    assert expected > 50
    assert abs(first["count"] - expected) <= max(3, 0.02 * expected), (first["count"], expected)
    np.save(tmp_path / "x.npy", x)
    result = run_kiln("csim", project.path, "--input", tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
    assert f"warning: layer '{first['layer']}' (Dense) overflowed {first['count']} of {N * 64}" in result.stdout


def test_no_overflows_reported_for_a_wide_type(tmp_path):
    model = export_jet_mlp(tmp_path / "jet.onnx")
    project = kiln.compile(model, output_dir=tmp_path / "prj", precision="fixed<24,10>")
    _, rows = project.csim_overflow(_inputs((16,), seed=3))
    assert rows and all(r["count"] == 0 for r in rows)


def test_report_says_how_each_quantizer_was_mapped(brevitas_files, tmp_path):
    path, _ = brevitas_files["mlp_float"]
    project = kiln.compile(path, output_dir=tmp_path / "prj")
    quantizers = project.manifest["quantizers"]
    kinds = {(q["kind"], q["mapping"].split(":")[0]) for q in quantizers}
    # weights: integers, their scale after the sum; activations read by Dense layers pass their
    # integers on (folded); the output quantizer is a multiply
    assert kinds == {("weights", "folded"), ("activation", "folded"), ("activation", "multiply")}, kinds
    assert sum(q["kind"] == "weights" for q in quantizers) == 3
    assert sum(q["kind"] == "activation" for q in quantizers) == 4
    result = run_kiln("report", project.path)
    assert result.returncode == 0, result.stderr
    page = (project.path / "report" / "report.html").read_text()
    assert "<h2>Quantizers</h2>" in page and page.count("folded:") == 6 and page.count("multiply:") == 1


@pytest.mark.parametrize("case", sorted(QONNX_CASES))
def test_qonnx_quantizer_variants_match_onnx_runtime(case, tmp_path):
    """Rounding modes, narrow range, unsigned with zero point and BipolarQuant, against ONNX
    Runtime on the same graph with each quantizer written as standard ops."""
    act, weight = QONNX_CASES[case]
    model = _qonnx_mlp(act, weight, bipolar_weights=weight is None)
    project = kiln.compile(model, output_dir=tmp_path / "prj")
    x = _inputs((8,), scale=1.0, seed=4)
    got = project.csim(x).astype(np.float64)
    ref = project.reference(x)[0]
    lsb = act["scale"]
    err = np.abs(got - ref)
    if kiln.quant.QuantSpec(**{k: v for k, v in act.items()}).exact:
        assert np.array_equal(got, ref), err.max()
    else:
        assert err.max() <= lsb * (1 + 2 ** -8) + 1e-7, (err.max(), lsb)
        assert np.mean(err > lsb / 2) < 0.05
    # the quantizers are exercised, not collapsed to one value
    assert len(np.unique(ref)) == 2 if act.get("bipolar") else len(np.unique(ref)) > 4
    assert 0.2 < np.mean(ref > 0) < 0.8


@pytest.mark.parametrize("key", ["mlp_float", "cnn_po2"])
def test_quantized_models_on_the_tvm_backend(brevitas_files, key, tmp_path):
    """CPU boards take the same QONNX file: TVM runs the quantizers as standard ops."""
    pytest.importorskip("tvm")
    path, shape = brevitas_files[key]
    art = kiln.compile(path, board="x86-host", output_dir=tmp_path / "tvm")
    x = _inputs(shape, seed=5)[:32]
    got, ref = art.run(x).astype(np.float64), art.reference(x)[0]
    lsb = _output_scale(onnx.load(path))
    assert np.abs(got - ref).max() <= lsb * (1 + 1e-6), np.abs(got - ref).max()


def test_ort_qdq_semantics_exact_in_float_mode(tmp_path):
    """In a float design every Q/DQ pair is computed as its definition says, so C-sim equals
    ONNX Runtime with graph optimizations off (Q/DQ run as written) bit for bit. ONNX Runtime's
    default session fuses them into integer kernels (QGemm, QLinearSoftmax) whose requantization
    differs from that definition by one LSB on ~20% of these outputs: the fixed-point test above
    is held to one LSB for that reason."""
    float_model = export_jet_mlp(tmp_path / "jet.onnx")
    x = _inputs((16,), scale=1.0, seed=1)
    qdq = _quantize_static(float_model, tmp_path / "jet_qdq.onnx", x[:128], per_channel=False)
    as_defined = _ort_as_written(qdq, x)
    project = kiln.compile(qdq, output_dir=tmp_path / "prj", precision="float")
    assert np.array_equal(project.csim(x), as_defined)
