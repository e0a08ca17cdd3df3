"""The fit check: every resource (DSP, LUT, FF, BRAM18K) against --budget x the board, whatever chose
the reuse factors; its advice works; --no-fit-check; the compile summary; `kiln report` highlights."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from examples.make_jet_mlp import export
from kiln.backends.hls.fit import BOARD_KEYS, RESOURCES
from kiln.backends.hls.reuse import divisors
from kiln.board import get_board
from kiln.report import load_estimate

import kiln

PYNQ = get_board("pynq-z2")


@pytest.fixture(scope="module")
def jet_mlp(tmp_path_factory):
    return export(tmp_path_factory.mktemp("mlp") / "jet_mlp.onnx", opset=17)


def kiln_cli(*args):
    return subprocess.run([sys.executable, "-m", "kiln.cli", *map(str, args)], capture_output=True, text=True)


def assert_fits(est, board=PYNQ, budget=0.7):
    for r in RESOURCES:
        assert est["total"][r] <= budget * board.resources[BOARD_KEYS[r]], (r, est["total"])


def test_divisors_exact_and_fast_for_huge_dims():
    for n in range(1, 400):
        assert divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
    start = time.perf_counter()
    assert divisors(2**31 - 1) == [1, 2**31 - 1]  # a prime: counting to n would take minutes
    assert divisors(2**40) == [2**k for k in range(41)]
    assert time.perf_counter() - start < 1.0


def test_model_wide_reuse_over_budget_is_refused_and_each_tip_works(tmp_path, jet_mlp):
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--reuse", "1", "-o", tmp_path / "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
    err = r.stderr
    assert "cannot fit 70% of pynq-z2's DSP, LUT, FF (at --reuse 1" in err and "BRAM18K" not in err.split("\n")[0]
    assert "DSP 4,266 estimated > 154 (70% of 220); dominated by '/2/Gemm' (Dense, R=1: 2,048)" in err
    assert "LUT 163,067 estimated > 37,240" in err and "FF 167,218 estimated > 74,480" in err
    assert "drop --reuse 1: --reuse auto" in err and "--no-fit-check" in err
    assert "--board alveo-u250 or vu13p" in err and "--budget" not in err  # 0.7 -> 1 would not help
    # tip: --reuse auto (the default) fits all four resources
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "-o", tmp_path / "auto")
    assert r.returncode == 0, r.stderr
    assert_fits(load_estimate(tmp_path / "auto"))
    # tip: a larger board, same --reuse 1
    r = kiln_cli("compile", jet_mlp, "--board", "alveo-u250", "--reuse", "1", "-o", tmp_path / "u250")
    assert r.returncode == 0, r.stderr
    assert_fits(load_estimate(tmp_path / "u250"), get_board("alveo-u250"))
    # tip: narrower types: products of <= 10-bit operands leave the DSPs (LUTs instead)
    project = kiln.compile(jet_mlp, board="pynq-z2", reuse_factor=1, precision="fixed<8,3>",
                           output_dir=tmp_path / "narrow", fit_check=False)
    narrow = load_estimate(project.path)["total"]
    assert narrow["dsp"] < 154 < 4266 and narrow["ff"] < 167_218


def test_config_reuse_over_budget_tips_work(tmp_path, jet_mlp):
    """A per-layer reuse_factor from the config is checked too; the --budget and reuse_factor tips work."""
    cfg = tmp_path / "kiln.toml"
    cfg.write_text('[layers."/2/Gemm"]\nreuse_factor = 16\n')
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--config", cfg, "--budget", "0.5", "-o", tmp_path / "x")
    assert r.returncode == 2 and not (tmp_path / "x").exists()
    assert "cannot fit 50% of pynq-z2's DSP (" in r.stderr and "'/2/Gemm' (Dense, R=16: 128)" in r.stderr
    assert '[layers."/2/Gemm"] reuse_factor in the --config file' in r.stderr
    budget = float(r.stderr.split("--budget ")[1].split()[0])
    assert 0.5 < budget <= 1
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--config", cfg, "--budget", budget, "-o", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    est = load_estimate(tmp_path / "b")
    assert_fits(est, budget=budget) and est["total"]["budget_fraction"] == budget
    assert next(layer["reuse"] for layer in est["layers"] if layer["name"] == "/2/Gemm") == 16
    cfg.write_text('[layers."/2/Gemm"]\nreuse_factor = 64\n')
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--config", cfg, "--budget", "0.5", "-o", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert_fits(load_estimate(tmp_path / "r"), budget=0.5)


def test_no_fit_check_writes_the_project_warns_and_report_highlights(tmp_path, jet_mlp):
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--reuse", "1", "--no-fit-check", "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    assert "kiln: warning: --no-fit-check" in r.stderr
    assert "DSP 4,266 > 154, LUT 163,067 > 37,240, FF 167,218 > 74,480" in r.stderr and "BRAM18K" not in r.stderr
    est = load_estimate(tmp_path / "p")
    assert est["total"]["budget_fraction"] == 0.7 and est["total"]["bram_unit"] == "BRAM18K"
    assert est["total"]["limits"] == {"dsp": 154, "lut": 37240, "ff": 74480, "bram": 196}
    assert set(est["total"]["over"]) == {"dsp", "lut", "ff"} and est["fit"]["skipped"] == "--no-fit-check"
    assert est["total"]["over"]["dsp"]["layers"][0] == "/2/Gemm"
    manifest = json.loads((tmp_path / "p" / "kiln_manifest.json").read_text())
    assert manifest["fit"]["budget_fraction"] == 0.7
    assert "OVER" in r.stdout and "not enforced: --no-fit-check" in r.stdout
    # the numerics of the design that does not fit can still be C-simulated
    project = kiln.open_project(tmp_path / "p")
    x = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    assert np.mean(np.argmax(project.csim(x), 1) == np.argmax(project.reference(x)[0], 1)) >= 0.95
    r = kiln_cli("report", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "p" / "report" / "report.html").read_text()
    assert "Over budget: DSP, LUT, FF</b> (written with --no-fit-check)" in html
    rows = html.split('<table id="budget">')[1].split("</table>")[0].split("<tr")[2:]
    assert [("OVER budget" in row) for row in rows] == [True, True, True, False]  # DSP LUT FF BRAM18K
    assert "<td>154</td><td>220</td>" in rows[0]  # budget line at 70% of the board, not at 100%
    for chart in ("dsp", "lut", "ff", "bram"):
        assert (tmp_path / "p" / "report" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"


def test_compile_prints_reuse_ii_latency_and_resources(tmp_path, jet_mlp):
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    est = load_estimate(tmp_path / "p")
    total, layers = est["total"], est["layers"]
    rs = [layer["reuse"] for layer in layers]
    out = r.stdout
    assert f"reuse {min(rs)}..{max(rs)} (--reuse auto chose)" in out
    assert f"II {total['ii']} cycles, latency {total['latency_cycles']} cycles = {total['latency_ns']:,.0f} ns" in out
    for label, key in (("DSP", "dsp"), ("LUT", "lut"), ("FF", "ff"), ("BRAM18K", "bram")):
        assert f"{label} {total[key]:,} / {total['limits'][key]:,} (" in out
    assert "OVER" not in out and "resources vs budget (70% of the board)" in out
    kiln_cli("report", tmp_path / "p")
    assert "Fits the budget of 70% of the board." in (tmp_path / "p" / "report" / "report.html").read_text()


def test_float_designs_skip_the_fit_check_with_a_note(tmp_path, jet_mlp):
    r = kiln_cli("compile", jet_mlp, "--board", "pynq-z2", "--precision", "float", "-o", tmp_path / "f")
    assert r.returncode == 0, r.stderr
    assert "kiln: note: float precision designs are for functional checks" in r.stderr and "DSP" in r.stderr
    est = load_estimate(tmp_path / "f")
    assert est["fit"]["skipped"] == "float design" and all(layer["reuse"] == 1 for layer in est["layers"])


def test_ff_bound_transformer_jet_tagger_on_pynq_z2(tmp_path):
    """DSP/LUT fit with large reuse factors, but every layer output is a register: FF cannot fit."""
    pytest.importorskip("torch")
    from examples.zoo import export_model

    model = export_model("jet_tagger", tmp_path / "jet_tagger.onnx")
    try:
        project = kiln.compile(model, board="pynq-z2", output_dir=tmp_path / "t")
    except kiln.KilnError as exc:
        text = str(exc)
        assert "cannot fit 70% of pynq-z2's FF (" in text and "MultiHeadAttention" in text
        assert not (tmp_path / "t").exists()
        board = text.split("--board ")[1].split()[0]  # the first board the advice names
        assert_fits(load_estimate(kiln.compile(model, board=board, output_dir=tmp_path / "b").path), get_board(board))
    else:
        assert_fits(load_estimate(project.path))
