"""Shared test helpers: export torch modules, compile + C-sim, compare with ONNX Runtime."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import kiln


def export_torch(*args, **kwargs) -> Path:
    """torch.onnx.export with a symbolic batch axis (examples/torch_models.export_torch)."""
    from examples.torch_models import export_torch as export

    return export(*args, **kwargs)


def compile_and_compare(model, x, tmp_path: Path, precision: str = "float", name: str = "prj", **kwargs):
    """Compile, run C-sim and ONNX Runtime on x; returns (project, csim outputs, reference outputs)."""
    project = kiln.compile(model, board="vu13p", output_dir=tmp_path / name, precision=precision, **kwargs)
    got = project.csim(x, return_all=True)
    ref = project.reference(x)
    return project, got, ref


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| relative to the output scale (max |ref|)."""
    scale = max(float(np.max(np.abs(ref))), 1e-12)
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / scale


def argmax_agreement(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean(np.argmax(got.reshape(len(got), -1), 1) == np.argmax(ref.reshape(len(ref), -1), 1)))


def model_bytes(proto: onnx.ModelProto) -> bytes:
    buf = io.BytesIO()
    onnx.save(proto, buf)
    return buf.getvalue()


def run_kiln(*args, env=None):
    """The ``kiln`` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "kiln.cli", *map(str, args)], capture_output=True, text=True, env=env)


def assert_clean_error(result, *needles):
    """A user error: exit 2, one ``kiln: error:`` message containing every needle, no traceback."""
    from kiln.progress import LINE

    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    # the progress lines of the steps that ran before the error (kiln/progress.py), then the error
    stderr = "".join(line for line in result.stderr.splitlines(True) if not LINE.match(line))
    assert stderr.startswith("kiln: error: "), result.stderr
    for needle in needles:
        assert needle in stderr, result.stderr


def op_chain(op_types=("Relu",)) -> onnx.ModelProto:
    """x[N,4] -> op -> op ... -> y, node names '<op>_<i>'."""
    nodes, prev = [], "x"
    for i, op in enumerate(op_types):
        out = "y" if i == len(op_types) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev], [out], name=f"{op.lower()}_{i}"))
        prev = out
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def header_text(name: str) -> str:
    """The text of one of Kiln's nnet headers (hls_templates/nnet/NAME)."""
    from importlib import resources

    return (resources.files("kiln.hls_templates") / "nnet" / name).read_text()


def header_enumerators(header: str, enum: str) -> list[str]:
    """The enumerators of ``enum class ENUM { ... }`` in an nnet header, in order."""
    import re

    body = re.search(rf"enum class {enum} \{{([^}}]*)\}}", header_text(header)).group(1)
    return [e.strip() for e in body.split(",") if e.strip()]


def stand_in_vitis_hls(tmp_path: Path, script: str) -> dict:
    """The environment of a `kiln synth` run whose PATH starts with a ``vitis_hls`` shell script (body ``script``).
    The machines here have no Vitis HLS: the script copies a stored csynth report where Vitis writes it, so that
    what is tested is Kiln's call and its parsing of a real report, not synthesis."""
    fake = tmp_path / "bin" / "vitis_hls"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}


def long_test(seconds: str):
    """Skip unless KILN_LONG_TESTS is set: a case of ``seconds`` of one core that would take the suite past CI's
    20-minute budget on 2 cores. What such a case checks is also covered in CI by a shorter sibling (named in
    its module); `KILN_LONG_TESTS=1 bash scripts/test.sh` runs everything."""
    return pytest.mark.skipif(not os.environ.get("KILN_LONG_TESTS"),
                              reason=f"one core for {seconds}: beyond CI's 20-minute budget for the suite; "
                                     "set KILN_LONG_TESTS=1 to run")
