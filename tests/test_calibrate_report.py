"""Calibration (kiln/calibrate/): profiles, fixed-point types from ranges, int8 QDQ models;
`kiln report --data` profiling plots and table; `kiln quantize`."""

from __future__ import annotations

import functools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln
from kiln.calibrate import (PERCENTILES, PROFILE_FILE, Profile, choose_fixed, compare_models, count_qdq_nodes,
                            fits, load_profile, load_samples, model_input_specs, profile, write_int8_qdq)
from kiln.errors import KilnError
from kiln.precision import FixedType

from .helpers import assert_clean_error, run_kiln



@functools.lru_cache(maxsize=None)
def _jet_files() -> tuple[Path, Path]:
    """The jet MLP and its samples, exported once per test process (a clean clone has no
    examples/jet_mlp.onnx until the demo runs)."""
    from examples.make_jet_mlp import export, make_samples

    root = Path(tempfile.mkdtemp(prefix="kiln-jet-mlp-"))
    np.save(root / "jet_mlp_x.npy", make_samples())
    return export(root / "jet_mlp.onnx"), root / "jet_mlp_x.npy"


def jet_mlp() -> Path:
    return _jet_files()[0]


def jet_x() -> Path:
    return _jet_files()[1]

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32) * 2
B = np.array([0.5, -1.0, 0.0], dtype=np.float32)


def small_model(batch="N") -> onnx.ModelProto:
    """y = tanh(relu(x @ W + b) * 3) - x[:, :3]; also a Shape (int64) value and a constant."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "b"], ["lin"], name="add"),
        helper.make_node("Relu", ["lin"], ["act"], name="relu"),
        helper.make_node("Constant", [], ["three"], value=numpy_helper.from_array(np.array(3.0, np.float32))),
        helper.make_node("Mul", ["act", "three"], ["scaled"], name="mul"),
        helper.make_node("Tanh", ["scaled"], ["th"], name="tanh"),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["xs"], name="slice"),
        helper.make_node("Sub", ["th", "xs"], ["y"], name="sub"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
    ]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b"),
             numpy_helper.from_array(np.array([0], np.int64), "starts"),
             numpy_helper.from_array(np.array([3], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def numpy_values(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float32)
    mm = x @ W
    lin = mm + B
    act = np.maximum(lin, 0)
    scaled = act * np.float32(3)
    th = np.tanh(scaled)
    return {"x": x, "mm": mm, "lin": lin, "act": act, "scaled": scaled, "th": th, "xs": x[:, :3], "y": th - x[:, :3]}


def test_profile_equals_numpy_batched_and_per_sample():
    x = RNG.standard_normal((300, 4)).astype(np.float32) * 3
    expected = numpy_values(x)
    batched = profile(small_model(), x)
    per_sample = profile(small_model(batch=1), x)  # batch axis fixed at 1: one sample per run
    assert batched.batched and not per_sample.batched
    assert batched.n_samples == per_sample.n_samples == 300
    # float values that depend on the input only: no weights, constants, int64 Shape
    assert list(batched.values) == ["x", "mm", "lin", "act", "scaled", "th", "xs", "y"]
    assert list(per_sample.values) == list(batched.values)
    for prof in (batched, per_sample):
        for name, ref in expected.items():
            s = prof[name]
            ref = ref.astype(np.float64)
            assert s.count == ref.size
            assert s.min == pytest.approx(ref.min(), rel=1e-6, abs=1e-6), name
            assert s.max == pytest.approx(ref.max(), rel=1e-6, abs=1e-6), name
            assert s.abs_max == pytest.approx(np.abs(ref).max(), rel=1e-6, abs=1e-6), name
            assert s.mean == pytest.approx(ref.mean(), rel=1e-4, abs=1e-5), name
            assert s.zeros == int(np.sum(ref == 0)), name
            assert s.exact_percentiles
            for p in PERCENTILES:
                assert s.percentiles[f"{p:g}"] == pytest.approx(np.percentile(ref, p), rel=1e-5, abs=1e-5)
            mags = np.abs(ref[ref != 0])
            assert s.abs_percentiles["50"] == pytest.approx(np.median(mags), rel=1e-5)
            exps = np.floor(np.log2(mags)).astype(int)
            assert sum(s.hist) == mags.size
            if name not in ("th", "y"):  # ORT's tanh rounds some values near 1 up to 1.0, numpy's not
                assert s.hist_lo == exps.min()
                assert s.hist == np.bincount(exps - exps.min()).tolist(), name
    assert batched["act"].zeros > 100  # the ReLU clips about half
    assert batched["x"].shape == [1, 4] and batched["mm"].shape == [1, 3]
    # JSON round trip keeps everything
    again = Profile.from_json(batched.to_json())
    assert again.to_dict() == json.loads(batched.to_json())
    assert again["th"].hist == batched["th"].hist and again.n_samples == 300


def test_profile_falls_back_to_one_sample_per_run():
    """A symbolic batch axis is not enough: a baked-in batch size, or an op that mixes the
    samples of a batch, must not change the statistics."""
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),  # batch size 1 baked in
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[0], keepdims=1),  # mean over the batch axis
             helper.make_node("Sub", ["r", "m"], ["c"]),
             helper.make_node("Add", ["r", "c"], ["y"])]
    baked = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[shape]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    mixing = helper.make_model(helper.make_graph(
        nodes[1:3] + [helper.make_node("Add", ["r", "c"], ["y"])], "g",
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = RNG.standard_normal((50, 4)).astype(np.float32)
    for model in (baked, mixing):
        prof = profile(model, x)
        assert not prof.batched
        # one sample per run: the mean over a batch of one is the sample itself, c == 0, y == x
        assert prof["c"].abs_max == 0 and prof["c"].zeros == x.size
        assert prof["y"].min == pytest.approx(float(x.min())) and prof["y"].max == pytest.approx(float(x.max()))


def test_choose_fixed_rule_and_observed_values_fit():
    cases = [  # (min, max, bits, margin) -> integer bits
        ((-1.0, 5.0, 16, 1), 5),   # 5 needs [-8, 8): I0 = 4, + 1 margin
        ((-1.0, 5.0, 16, 0), 4),
        ((0.0, 4.0, 16, 0), 4),    # 4 is not below 2**2: needs [-8, 8)
        ((0.0, 3.99, 16, 0), 3),   # [-4, 4 - 2**-13)
        ((-8.0, 3.0, 16, 0), 4),   # -8 fits [-8, 8) exactly
        ((-8.01, 3.0, 16, 0), 5),
        ((-0.3, 0.2, 16, 1), 2),   # at least a sign bit, + margin
        ((0.0, 0.0, 16, 1), 2),    # all zero: a small range
        ((0.0, 3.999, 4, 0), 4),   # [-4, 3.5] misses 3.999 at 4 bits: one more integer bit
        ((-100.0, 0.0, 16, 1), 9),
    ]
    for (lo, hi, bits, margin), integer in cases:
        t = choose_fixed({"min": lo, "max": hi}, bits, margin_bits=margin)
        assert (t.width, t.integer, t.signed) == (bits, integer, True), (lo, hi, bits, margin, t)
        assert fits({"min": lo, "max": hi}, t)
    huge = choose_fixed({"min": 0.0, "max": 1e6}, 16)
    assert huge.integer == 16 and not fits({"min": 0.0, "max": 1e6}, huge)
    with pytest.raises(KilnError):
        choose_fixed({"min": 0.0, "max": math.inf}, 16)

    x = RNG.standard_normal((200, 4)).astype(np.float32) * 5
    prof = profile(small_model(), x)
    for name, values in numpy_values(x).items():
        stats = prof[name]
        t = choose_fixed(stats, 12)
        assert t.min_value <= values.min() and values.max() <= t.max_value, (name, t)
        tight = choose_fixed(stats, 12, margin_bits=0)
        assert tight.integer == t.integer - 1
        assert tight.min_value <= values.min() and values.max() <= tight.max_value
        if tight.integer > 1:  # one integer bit fewer would overflow: the rule is tight
            smaller = FixedType(12, tight.integer - 1)
            assert values.min() < smaller.min_value or values.max() > smaller.max_value, name


def test_load_samples_checks(tmp_path):
    specs = [{"name": "a", "shape": [1, 3], "batch_axis": True, "dtype": "float32"},
             {"name": "b", "shape": [2], "batch_axis": False, "dtype": "float32"}]
    a = np.ones((5, 3), np.float32)
    b = np.zeros((5, 2), np.float32)
    np.savez(tmp_path / "named.npz", b=b, a=a)
    np.savez(tmp_path / "ordered.npz", a, b)
    for f in ("named.npz", "ordered.npz"):
        got = load_samples(tmp_path / f, specs)
        assert [g.shape for g in got] == [(5, 3), (5, 2)]
    np.save(tmp_path / "one.npy", a)
    with pytest.raises(KilnError, match=r"one\.npy: the model has 2 input\(s\)"):
        load_samples(tmp_path / "one.npy", specs)
    np.savez(tmp_path / "wrong.npz", a=a, c=b)
    with pytest.raises(KilnError, match=r"wrong\.npz: .*missing \['b'\]"):
        load_samples(tmp_path / "wrong.npz", specs)
    np.savez(tmp_path / "shape.npz", a=a, b=np.zeros((5, 3), np.float32))
    with pytest.raises(KilnError, match=r"shape\.npz: input 'b' has shape \(5, 3\); the model expects \(N, 2\)"):
        load_samples(tmp_path / "shape.npz", specs)
    np.savez(tmp_path / "count.npz", a=a, b=np.zeros((4, 2), np.float32))
    with pytest.raises(KilnError, match="disagree on the number of samples"):
        load_samples(tmp_path / "count.npz", specs)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(KilnError, match=r"junk\.npy: not a readable"):
        load_samples(tmp_path / "junk.npy", specs)
    assert model_input_specs(small_model())[0] == {"name": "x", "shape": [1, 4], "dtype": "float32",
                                                  "batch_axis": True, "symbolic_batch": True}


def test_profile_transformer_jet_tagger_batched(tmp_path):
    pytest.importorskip("torch")
    from examples.zoo import export_model, samples
    from kiln.reference import run_onnxruntime_intermediates

    path = export_model("jet_tagger", tmp_path / "jet_tagger.onnx")
    x = samples("jet_tagger", 300)
    prof = profile(path, x)
    assert prof.batched and prof.n_samples == 300
    names = [n for n in prof.values if n != "x"]
    assert len(names) > 80
    # the one-sample-per-run reference of `kiln csim --trace`
    ref = run_onnxruntime_intermediates(path, [{"name": "x", "batch_axis": True}], [x], names)
    for name in names:
        assert prof[name].min == pytest.approx(ref[name].min(), rel=1e-4, abs=1e-5), name
        assert prof[name].max == pytest.approx(ref[name].max(), rel=1e-4, abs=1e-5), name
        assert prof[name].count == ref[name].size
    assert prof["/blocks/blocks.0/attn/Softmax_output_0"].shape == [1, 2, 15, 15]
    softmax = prof["y"]
    assert softmax.shape == [1, 3] and 0 < softmax.min and softmax.max < 1


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # fixed<8,2> holds [-2, 1.98]: the first Dense layer's outputs (up to ~2.7) overflow it
    return kiln.compile(jet_mlp(), board="vu13p", output_dir=tmp_path_factory.mktemp("rep") / "prj",
                        precision="fixed<8,2>")


def test_report_profiling_plot_table_and_json(project, tmp_path):
    from PIL import Image

    prj = project.path
    r = run_kiln("report", prj)
    assert r.returncode == 0, r.stderr
    page = (prj / "report" / "report.html").read_text()
    assert "No profile yet" in page and "--data" in page and not (prj / "report" / "profile.png").exists()

    r = run_kiln("report", prj, "--data", jet_x())
    assert r.returncode == 0, r.stderr
    assert "profile.png" in r.stdout
    png = prj / "report" / "profile.png"
    image = np.asarray(Image.open(png).convert("RGB")).astype(np.float64)
    assert image.shape[1] >= 300 and image.shape[0] >= 200
    assert image.std() > 20  # not one flat colour
    red = (image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 50  # the overflowing layers are drawn red
    page = (prj / "report" / "report.html").read_text()
    assert '<img src="profile.png"' in page and '<table id="profile">' in page
    assert "OVERFLOW" in page and "headroom bits" in page and "latency_cycles.png" in page

    prof = load_profile(prj / PROFILE_FILE)
    x = np.load(jet_x())
    assert prof.n_samples == len(x)
    assert prof["x"].max == pytest.approx(float(x.max())) and prof["x"].min == pytest.approx(float(x.min()))

    r = run_kiln("report", prj, "--json")  # the saved profile, no --data
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["estimate"] is True and data["profile"]["n_samples"] == len(x)
    rows = {row["value"]: row for row in data["profile"]["rows"]}
    assert len(rows) == 1 + len(project.manifest["trace"])
    for value, row in rows.items():
        stats = prof[value]
        assert row["precision"] == "fixed<8,2>" and row["type_max"] == pytest.approx(2 - 2 ** -6)
        assert row["observed_max"] == pytest.approx(stats.max)
        assert row["overflow"] == (stats.max > 2 - 2 ** -6 or stats.min < -2)
        assert row["headroom_bits"] == pytest.approx(math.log2((2 - 2 ** -6) / stats.abs_max))
        assert (row["headroom_bits"] < 0) == (stats.abs_max > 2 - 2 ** -6)
    assert rows["/0/Gemm_output_0"]["overflow"] and rows["/0/Gemm_output_0"]["layer"] == "/0/Gemm"
    assert not rows["y"]["overflow"] and rows["y"]["headroom_bits"] > 0  # softmax in (0, 1)
    # below-lsb share from the histogram equals numpy's on the input
    nonzero = np.abs(x[x != 0])
    assert rows["x"]["below_lsb_fraction"] == pytest.approx(np.mean(nonzero < 2 ** -6))

    # a corrupt saved profile does not stop the report; its section says what is wrong
    (prj / PROFILE_FILE).write_text('{"n_samples": ')
    r = run_kiln("report", prj)
    assert r.returncode == 0, r.stderr
    page = (prj / "report" / "report.html").read_text()
    assert "is not a valid Kiln profile" in page and not png.exists()


def test_report_bad_data_is_a_clean_error(project, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 15), np.float32))  # the model takes 16 features
    r = run_kiln("report", project.path, "--data", bad)
    assert_clean_error(r, "bad.npy", "shape (10, 15)", "(N, 16)")
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_kiln("report", project.path, "--data", tmp_path / "missing.npy")
    assert_clean_error(r, "missing.npy", "no such sample file")


def test_write_int8_qdq_jet_mlp(tmp_path):
    from examples.make_jet_mlp import make_samples

    x = np.load(jet_x())
    out = write_int8_qdq(jet_mlp(), x, tmp_path / "jet_qdq.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jet_qdq.onnx"]  # no temporaries left
    counts = count_qdq_nodes(out)
    assert counts["QuantizeLinear"] >= 5 and counts["DequantizeLinear"] >= 8  # activations + 4 weights
    weights = [t for t in onnx.load(str(out)).graph.initializer
               if t.data_type == TensorProto.INT8 and not t.name.endswith("zero_point")]
    assert sum(int(np.prod(t.dims)) for t in weights) == 16 * 64 + 64 * 32 + 32 * 32 + 32 * 5
    held_out = make_samples(1000, seed=1)
    for samples in (x, held_out):
        (row,) = compare_models(jet_mlp(), out, samples)
        # int8 weights and activations on a softmax output: within 5 % of the output scale and
        # >= 95 % argmax agreement (measured: 1.3 % / 99.6 % on the calibration set)
        assert row.relative_error < 0.05 and row.max_abs_error > 0
        assert row.argmax_agreement >= 0.95
    per_channel = write_int8_qdq(jet_mlp(), x, tmp_path / "pc.onnx", per_channel=True, activation="int8")
    (row,) = compare_models(jet_mlp(), per_channel, held_out)
    assert row.argmax_agreement >= 0.95 and row.relative_error < 0.05
    with pytest.raises(KilnError, match="activation type"):
        write_int8_qdq(jet_mlp(), x, tmp_path / "z.onnx", activation="int4")


def test_cli_quantize(tmp_path):
    out = tmp_path / "q.onnx"
    r = run_kiln("quantize", jet_mlp(), "--calibrate", jet_x(), "-o", out, "--per-channel")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "argmax agreement" in r.stdout
    agreement = float(r.stdout.split("│")[-2].strip().rstrip("%"))
    assert agreement >= 95.0
    assert count_qdq_nodes(out)["QuantizeLinear"] >= 5
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5), np.float32))
    r = run_kiln("quantize", jet_mlp(), "--calibrate", bad, "-o", tmp_path / "q2.onnx")
    assert_clean_error(r, "bad.npy", "(N, 16)")
    assert not (tmp_path / "q2.onnx").exists()
