"""--calibrate: fixed-point types from observed ranges (the acceptance on the transformer jet tagger)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from examples.zoo import export_model, samples
from kiln.calibrate import PROFILE_FILE, load_profile
from tests.helpers import assert_clean_error, run_kiln

N = 1000


@pytest.fixture(scope="module")
def calibrated_jet_tagger(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrated")
    model = export_model("jet_tagger", root / "jet_tagger.onnx")
    x = samples("jet_tagger", N, seed=0)
    np.save(root / "x.npy", x)
    project = kiln.compile(model, output_dir=root / "prj", calibrate=root / "x.npy", bits=16)
    return project, x, root


def test_calibrated_16_bit_jet_tagger_keeps_argmax_and_never_overflows(calibrated_jet_tagger):
    project, x, _ = calibrated_jet_tagger
    (y,), rows = project.csim_overflow(x)
    ref = project.reference(x)[0]
    agreement = np.mean(np.argmax(y, 1) == np.argmax(ref, 1))
    assert agreement >= 0.995, agreement
    assert np.abs(y - ref).max() < 0.01
    assert rows and all(r["count"] == 0 for r in rows), [r for r in rows if r["count"]]
    # every computed value got a calibrated fixed<16, I>
    assert {r["source"] for r in rows} == {"calibrated"}
    assert all(r["precision"].startswith("fixed<16,") for r in rows)


def test_calibrated_types_hold_the_observed_range(calibrated_jet_tagger):
    project, _, _ = calibrated_jet_tagger
    observed = load_profile(project.path / PROFILE_FILE)
    assert observed.n_samples == N
    from kiln.precision import parse_precision

    checked = 0
    for t in project.manifest["trace"]:
        stats = observed.values.get(t["name"])
        if stats is None:
            continue
        p = parse_precision(t["precision"])
        assert p.min_value <= stats.min and stats.max <= p.max_value, (t["name"], t["precision"], stats.min, stats.max)
        # one bit of margin: the range needs at least half of the type's range
        assert max(abs(stats.min), abs(stats.max)) >= p.max_value / 8 or max(abs(stats.min), abs(stats.max)) < 0.5
        checked += 1
    assert checked >= 10


def test_cli_calibrate_then_csim_reports_no_overflows(calibrated_jet_tagger, tmp_path):
    _, x, root = calibrated_jet_tagger
    np.save(tmp_path / "x.npy", x[:200])
    result = run_kiln("compile", root / "jet_tagger.onnx", "-o", tmp_path / "prj", "--calibrate", root / "x.npy",
                      "--bits", "14")
    assert result.returncode == 0, result.stderr
    result = run_kiln("csim", tmp_path / "prj", "--input", tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
    assert "overflows: none in" in result.stdout
    assert "fixed<14," in (tmp_path / "prj" / "kiln_manifest.json").read_text()


def test_calibrate_errors(tmp_path, calibrated_jet_tagger):
    _, _, root = calibrated_jet_tagger
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), np.float32))
    result = run_kiln("compile", root / "jet_tagger.onnx", "-o", tmp_path / "out", "--calibrate", tmp_path / "bad.npy")
    assert_clean_error(result, "bad.npy")
    assert not (tmp_path / "out").exists()
    result = run_kiln("compile", root / "jet_tagger.onnx", "-o", tmp_path / "out", "--bits", "12")
    assert_clean_error(result, "--calibrate")


def test_report_plots_the_stored_calibration_profile(calibrated_jet_tagger):
    """`kiln report` on a calibrated project: observed ranges against the chosen types, as a
    real image (not blank) and an HTML table with one row per profiled value."""
    import matplotlib.image

    project, _, _ = calibrated_jet_tagger
    result = run_kiln("report", project.path)
    assert result.returncode == 0, result.stderr
    png = project.path / "report" / "profile.png"
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert image[..., :3].std() > 0.05  # drawn boxes and bands, not one flat colour
    page = (project.path / "report" / "report.html").read_text()
    assert "profile.png" in page and "calibrated" in page and "OVERFLOW" not in page


def test_calibrate_to_a_target_error(calibrated_jet_tagger, tmp_path):
    """--max-error: every calibrated value rounds to within E (lsb <= 2E), widths follow the ranges."""
    from kiln.precision import parse_precision

    _, x, root = calibrated_jet_tagger
    project = kiln.compile(root / "jet_tagger.onnx", output_dir=tmp_path / "prj", calibrate=x[:300],
                           max_error=2 ** -11)
    types = [parse_precision(t["precision"]) for t in project.manifest["trace"]
             if t["precision_source"] == "calibrated"]
    assert types and all(t.lsb <= 2 * 2 ** -11 for t in types)
    assert len({t.width for t in types}) > 1  # integer bits differ per value, the fraction does not
    (y,), rows = project.csim_overflow(x[:300])
    ref = project.reference(x[:300])[0]
    assert np.mean(np.argmax(y, 1) == np.argmax(ref, 1)) >= 0.995
    assert all(r["count"] == 0 for r in rows)
    result = run_kiln("compile", root / "jet_tagger.onnx", "-o", tmp_path / "o2", "--calibrate", root / "x.npy",
                      "--bits", "12", "--max-error", "0.01")
    assert_clean_error(result, "either --bits")


def _large_weight_head(path):
    """A classifier head whose weights (up to ~140) exceed the model precision fixed<16,6> (+-32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(0).standard_normal((8, 4)) * 60).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="head")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_calibrated_weights_get_a_type_that_holds_them(tmp_path, capfd):
    path = _large_weight_head(tmp_path / "head.onnx")
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (64, 8)).astype(np.float32)
    kiln.compile(path, output_dir=tmp_path / "uniform", precision="fixed<16,6>", fit_check=False)
    err = capfd.readouterr().err
    assert "layer 'head': 18 of 32 weight values lie outside fixed<16,6> (largest magnitude 139.5) and saturate" in err
    project = kiln.compile(path, output_dir=tmp_path / "cal", calibrate=x[:32], bits=16, fit_check=False)
    assert "saturate" not in capfd.readouterr().err
    got, ref = project.csim(x), project.reference(x)[0]
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()  # measured 1.3e-2 / 123.5 = 1.0e-4
