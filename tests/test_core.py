"""Unit tests of the core pieces: precision parsing/quantization, config, boards, names, doctor."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kiln.board import get_board, list_boards
from kiln.config import make_config
from kiln.errors import KilnError
from kiln.names import NameTable, sanitize
from kiln.precision import FixedType, FloatType, accumulator_for, parse_precision


def test_parse_precision_forms():
    assert parse_precision("float") == FloatType()
    assert parse_precision("fixed<16,6>") == FixedType(16, 6)
    assert parse_precision("ap_ufixed<8,0>") == FixedType(8, 0, signed=False)
    p = parse_precision("fixed<18,8,RND_CONV,SAT>")
    assert p.cpp() == "ap_fixed<18,8,AP_RND_CONV,AP_SAT>" and str(p) == "fixed<18,8,RND_CONV,SAT>"
    for bad in ("fixed<16>", "int8", "fixed<4,8>", "fixed<16,6,NEAREST>"):
        with pytest.raises(KilnError):
            parse_precision(bad)


def test_fixed_quantize_matches_ap_fixed_grid():
    t = FixedType(8, 3)  # lsb 2^-5, range [-4, 4 - 2^-5]
    q = t.quantize(np.array([0.0, 0.01, 0.02, 1.23456, 100.0, -100.0]))
    np.testing.assert_array_equal(q, [0.0, 0.0, 0.03125, 1.25, 4 - 2 ** -5, -4.0])


def test_accumulator_cannot_overflow():
    a, w = FixedType(16, 6), FixedType(16, 6)
    acc = accumulator_for(a, w, 64)
    worst = 64 * (2.0 ** 5) * (2.0 ** 5) + 2.0 ** 5  # 64 products of extreme values plus a bias
    assert acc.max_value >= worst and acc.frac >= a.frac + w.frac
    assert accumulator_for(FloatType(), w, 64) == FloatType()


def test_config_overrides_and_errors(tmp_path):
    cfg = tmp_path / "kiln.toml"
    cfg.write_text('[model]\nprecision = "fixed<18,8>"\nreuse_factor = 2\n'
                   '[layers."fc1"]\nweight = "fixed<8,2>"\nreuse_factor = 4\n')
    c = make_config(config=cfg)
    assert c.precision == FixedType(18, 8) and c.reuse_factor == 2
    assert c.layer("fc1").weight == FixedType(8, 2) and c.layer("fc1").reuse_factor == 4
    assert make_config(precision="float", config=cfg).precision == FloatType()
    with pytest.raises(KilnError, match="unknown key"):
        make_config(config={"layers": {"fc1": {"reuse": 2}}})
    with pytest.raises(KilnError, match="positive integer"):
        make_config(config={"model": {"reuse_factor": 0}})


def test_boards_have_budgets_and_sources():
    names = {b.name for b in list_boards()}
    assert {"vu13p", "zcu102", "pynq-z2", "alveo-u250"} <= names
    for b in list_boards():
        if b.kind == "fpga":
            assert b.part and b.clock_mhz > 0 and b.source
            assert all(b.resources[k] > 0 for k in ("dsp", "lut", "ff", "bram_36k"))
    assert get_board("pynq-z2").resources["dsp"] == 220
    with pytest.raises(KilnError, match="unknown board"):
        get_board("zx81")


def test_name_table_is_safe_and_unique():
    t = NameTable()
    a, b, c = t.make("v0", 'x"); system("id'), t.make("v0", "x_system_id"), t.make("v1", "int")
    assert a == "v0_x_system_id" and b == "v0_x_system_id_1" and c == "v1_int"
    assert sanitize("__a--b__") == "a_b" and sanitize("") == ""


def test_cli_boards_and_doctor():
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "boards"], capture_output=True, text=True)
    assert r.returncode == 0 and "xcvu13p" in r.stdout and "pynq-z2" in r.stdout
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "doctor"], capture_output=True, text=True)
    assert r.returncode == 0 and "HLS backend (compile + C-sim): ready" in r.stdout
