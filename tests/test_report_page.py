"""report.html is rendered from a Jinja2 template with autoescape: model-derived names stay text."""

import json

from kiln.report import write_report


def test_model_names_are_escaped_in_the_report(tmp_path):
    prj = tmp_path / "a&b"
    prj.mkdir()
    layer = {"name": "<script>x</script>", "op": "Dense", "reuse": 1, "ii": 1, "latency_cycles": 3, "dsp": 300,
             "lut": 10, "ff": 10, "bram": 0}
    total = {"latency_cycles": 3, "latency_ns": 30.0, "clock_mhz": 100.0, "ii": 1, "dsp": 300, "lut": 10, "ff": 10,
             "bram": 0, "budget": {"dsp": 220, "lut": 53200, "ff": 106400, "bram_18k": 280}, "budget_fraction": 0.7}
    (prj / "kiln_estimate.json").write_text(json.dumps({"layers": [layer], "total": total}))
    page = write_report(prj).read_text()
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<h1>Kiln report: a&amp;b</h1>" in page
    # DSP over 70% of 220 = 154: named with the layer that dominates it, escaped too
    assert "<b>Over budget: DSP</b>" in page and "OVER budget: &lt;script&gt;x&lt;/script&gt; (300)" in page
    assert "No readable kiln_manifest.json" in page and "<h2>Quantizers</h2>" not in page
