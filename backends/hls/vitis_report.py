"""Parse Vivado/Vitis HLS ``csynth.xml`` synthesis reports into one summary.

Reads the top-level report (``<top>_csynth.xml`` / ``csynth.xml``) written under
``<prj>/solution1/syn/report/``: timing, latency and interval in cycles, and the
resources used and available. Vitis 2019 names DSPs ``DSP48E``; newer versions
``DSP``; both are read. Module reports in the same folder (one XML per function)
give per-layer rows when present.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError

RESOURCE_TAGS = {"dsp": ("DSP", "DSP48E"), "lut": ("LUT",), "ff": ("FF",), "bram_18k": ("BRAM_18K",),
                 "uram": ("URAM",)}


@dataclass
class SynthReport:
    top: str
    part: str
    version: str
    target_clock_ns: float
    estimated_clock_ns: float | None
    latency_best: int | None
    latency_worst: int | None
    interval_min: int | None
    interval_max: int | None
    resources: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)

    @property
    def latency_ns(self) -> float | None:
        return None if self.latency_worst is None else self.latency_worst * self.target_clock_ns


def _int(node: ET.Element | None, path: str) -> int | None:
    el = node.find(path) if node is not None else None
    if el is None or el.text is None or not el.text.strip():
        return None
    text = el.text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def _float(root: ET.Element, path: str) -> float | None:
    el = root.find(path)
    try:
        return float(el.text) if el is not None and el.text else None
    except ValueError:
        return None


def _resources(node: ET.Element | None) -> dict[str, int]:
    out = {}
    if node is None:
        return out
    for key, tags in RESOURCE_TAGS.items():
        for tag in tags:
            value = _int(node, tag)
            if value is not None:
                out[key] = value
                break
    return out


def parse_csynth_xml(path) -> SynthReport:
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise KilnError(f"{path}: cannot read synthesis report ({exc})") from None
    if root.find("UserAssignments") is None:
        raise KilnError(f"{path}: not a Vitis HLS csynth report (no <UserAssignments>)")
    ua = root.find("UserAssignments")
    lat = root.find("PerformanceEstimates/SummaryOfOverallLatency")
    area = root.find("AreaEstimates")
    return SynthReport(
        top=(ua.findtext("TopModelName") or "").strip(),
        part=(ua.findtext("Part") or "").strip(),
        version=(root.findtext("ReportVersion/Version") or "").strip(),
        target_clock_ns=_float(root, "UserAssignments/TargetClockPeriod") or 0.0,
        estimated_clock_ns=_float(root, "PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod"),
        latency_best=_int(lat, "Best-caseLatency"),
        latency_worst=_int(lat, "Worst-caseLatency"),
        interval_min=_int(lat, "Interval-min"),
        interval_max=_int(lat, "Interval-max"),
        resources=_resources(area.find("Resources") if area is not None else None),
        available=_resources(area.find("AvailableResources") if area is not None else None),
    )


def find_reports(project_dir) -> tuple[SynthReport, dict[str, SynthReport]]:
    """Top report and per-module reports of a synthesised Kiln project (kiln_prj/solution1)."""
    report_dir = Path(project_dir) / "kiln_prj" / "solution1" / "syn" / "report"
    tops = ("csynth.xml", "kiln_top_axi_csynth.xml", "kiln_top_csynth.xml")
    top_file = next((report_dir / name for name in tops if (report_dir / name).is_file()), None)
    if top_file is None:
        raise KilnError(f"no csynth report under {report_dir}; run `kiln synth` first")
    modules = {}
    for xml in sorted(report_dir.glob("*_csynth.xml")):
        if xml.name not in tops:
            modules[xml.name.removesuffix("_csynth.xml")] = parse_csynth_xml(xml)
    return parse_csynth_xml(top_file), modules
