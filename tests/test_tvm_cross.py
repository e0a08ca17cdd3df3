"""Cross-compiled artifacts for the Arm CPU boards, checked by their ELF headers.

rpi4 builds an aarch64 ELF shared object when gcc-aarch64-linux-gnu is installed (CI
installs it: see .ci/run); without it the artifact is a .tar of aarch64 ELF objects that
the device links, and that is what gets checked. Every CPU board gets a .tar check (no
toolchain needed) so a wrong triple in a board file shows up here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

import numpy as np  # noqa: E402

from kiln.backends.tvm import compile_tvm  # noqa: E402
from kiln.backends.tvm.compiler import elf_header  # noqa: E402
from kiln.board import list_boards  # noqa: E402
from tests.helpers import assert_clean_error  # noqa: E402

EM_X86_64, EM_AARCH64 = 62, 183
CPU_BOARDS = sorted(b.name for b in list_boards() if b.kind == "cpu")


@pytest.fixture(scope="module")
def tiny_mlp(tmp_path_factory):
    """x[N,8] -> Gemm(8x16) -> Relu -> Gemm(16x4)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 16)), ("b1", (16,)), ("w2", (16, 4)), ("b2", (4,)))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    path = tmp_path_factory.mktemp("cross") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_cpu_boards_exist():
    assert {"x86-host", "rpi4", "rpi5", "jetson-orin-cpu", "android-arm64"} <= set(CPU_BOARDS)


def test_rpi4_builds_an_aarch64_shared_object(tiny_mlp, tmp_path):
    art = compile_tvm(tiny_mlp, board="rpi4", output_dir=tmp_path / "rpi4")
    lib = art.manifest["library"]
    assert art.manifest["target"]["mcpu"] == "cortex-a72" and art.manifest["target"]["mtriple"] == "aarch64-linux-gnu"
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        assert lib["format"] == "tar"
        _check_tar(art.library, EM_AARCH64)
        pytest.skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu): "
                    "checked the .tar of aarch64 objects instead of a linked .so")
    assert lib["format"] == "so" and art.library.name == "model.so"
    header = elf_header(art.library.read_bytes()[:64])
    assert header == {"class": 64, "endian": "little", "type": "shared object", "machine": EM_AARCH64}


@pytest.mark.parametrize("board", CPU_BOARDS)
def test_every_cpu_board_compiles_for_its_architecture(tiny_mlp, tmp_path, board):
    art = compile_tvm(tiny_mlp, board=board, output_dir=tmp_path / board, lib_format="tar")
    arch = art.manifest["library"]["arch"]
    _check_tar(art.library, {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}[arch])
    assert art.manifest["target"]["mcpu"] not in ("native", "host")


def test_missing_cross_toolchain_is_one_clear_message(tiny_mlp, tmp_path):
    """--format so without aarch64-linux-gnu-gcc on PATH: exit 2, one message naming the package."""
    bin_dir = tmp_path / "bin"  # a PATH with only what TVM's .tar export runs
    bin_dir.mkdir()
    for tool in ("tar", "gzip"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = dict(os.environ, PATH=str(bin_dir))
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "compile", str(tiny_mlp), "--board", "rpi4",
                        "--format", "so", "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert_clean_error(r, "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")  # progress lines, then the one error
    assert not (tmp_path / "out").exists()
    # auto: falls back to the .tar and says how to get a .so
    r = subprocess.run([sys.executable, "-m", "kiln.cli", "compile", str(tiny_mlp), "--board", "rpi4",
                        "-o", str(tmp_path / "auto")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "model.tar" in r.stdout and "gcc-aarch64-linux-gnu" in r.stdout
    _check_tar(tmp_path / "auto" / "model.tar", EM_AARCH64)


def _check_tar(path, machine: int) -> None:
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert members, f"{path} is empty"
        for m in members:
            header = elf_header(tar.extractfile(m).read(64))
            assert header["class"] == 64 and header["endian"] == "little"
            assert header["type"] == "relocatable" and header["machine"] == machine, (m.name, header)
