"""The csynth XML parser on real Vitis HLS reports (tests/data/vitis_reports, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.backends.hls.vitis_report import parse_csynth_xml
from kiln.errors import KilnError

DATA = Path(__file__).parent / "data" / "vitis_reports"


def test_zynq7020_dataflow_report():
    r = parse_csynth_xml(DATA / "zynq7020_cnn_dataflow_csynth.xml")
    assert (r.top, r.part, r.version) == ("myproject", "xc7z020-clg400-1", "2019.2.1")
    assert r.target_clock_ns == 5.0 and r.estimated_clock_ns == pytest.approx(4.429)
    assert (r.latency_best, r.latency_worst, r.interval_min, r.interval_max) == (96014, 96165, 4625, 95949)
    assert r.resources == {"dsp": 118, "lut": 33365, "ff": 51414, "bram_18k": 285, "uram": 0}
    assert r.available["dsp"] == 220 and r.available["bram_18k"] == 280  # BRAM over budget, as the README says
    assert r.latency_ns == pytest.approx(96165 * 5.0)


def test_zu9eg_stream_report():
    r = parse_csynth_xml(DATA / "zu9eg_stream_csynth.xml")
    assert r.part == "xczu9eg-ffvb1156-2-e" and r.latency_worst == 345 and r.interval_min == 346
    assert r.resources["lut"] == 209 and r.available["dsp"] == 2520


def test_newer_vitis_dsp_tag(tmp_path):
    text = (DATA / "zu9eg_stream_csynth.xml").read_text().replace("DSP48E>", "DSP>")
    (tmp_path / "new.xml").write_text(text)
    r = parse_csynth_xml(tmp_path / "new.xml")
    assert r.resources["dsp"] == 0 and r.available["dsp"] == 2520


def test_not_a_report(tmp_path):
    (tmp_path / "x.xml").write_text("<profile><foo/></profile>")
    with pytest.raises(KilnError, match="not a Vitis HLS csynth report"):
        parse_csynth_xml(tmp_path / "x.xml")
    (tmp_path / "y.xml").write_text("<profile>")
    with pytest.raises(KilnError, match="cannot read"):
        parse_csynth_xml(tmp_path / "y.xml")
