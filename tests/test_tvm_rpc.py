"""kiln bench / kiln run on a "device" through TVM RPC: a real RPC server (and a tracker) on
localhost, started as separate processes, serving this machine's CPU.

A server takes several seconds (10-20 s on a loaded machine) before it binds; the fixtures
wait for its "bind to" log line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

from examples.make_jet_mlp import export as export_jet_mlp, make_samples  # noqa: E402
from tests.helpers import relative_error  # noqa: E402

from kiln.backends.tvm import compile_tvm  # noqa: E402

BIND_TIMEOUT_S = 90
KEY = "kiln-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log_path):
    """Start a tvm.exec process and wait for its 'bind to HOST:PORT' line; returns (proc, port)."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + BIND_TIMEOUT_S
    while time.monotonic() < deadline:
        m = re.search(r"bind to [\d.]+:(\d+)", log_path.read_text())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    _stop(proc)
    pytest.fail(f"{' '.join(args)} did not bind within {BIND_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}")


def _stop(proc) -> None:
    """End the process group this fixture started (the server forks one child per session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def rpc_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("rpc")
    port = _free_port()
    proc, bound = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                          "--port-end", str(port + 20)], d / "server.log")
    yield f"127.0.0.1:{bound}"
    _stop(proc)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("rpc_model")
    model = export_jet_mlp(d / "jet_mlp.onnx", opset=17)
    x = make_samples(32)
    np.save(d / "x.npy", x)
    return compile_tvm(model, board="x86-host", output_dir=d / "host"), d / "x.npy", x


def _wait_registered(tracker_port: int, key: str, timeout: float = 30) -> None:
    """The server registers with the tracker after it binds."""
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = rpc.connect_tracker("127.0.0.1", tracker_port).summary()["server_info"]
        if any(item["key"].endswith(f":{key}") for item in info):
            return
        time.sleep(0.3)
    pytest.fail(f"no RPC server registered with key {key!r} within {timeout} s")


def _kiln(*args):
    return subprocess.run([sys.executable, "-m", "kiln.cli", *map(str, args)], capture_output=True, text=True)


def _device_timer_median_s(stdout: str) -> float:
    row = next(line for line in stdout.splitlines() if "device timer" in line)
    value, unit = re.search(r"│\s*([\d.]+) (us|ms)\s*│", row).groups()
    return float(value) * (1e-6 if unit == "us" else 1e-3)


def test_bench_over_rpc(rpc_server, artifact):
    art, x_file, _ = artifact
    r = _kiln("bench", art.path, "--rpc", rpc_server, "--repeat", "50", "--input", x_file)
    assert r.returncode == 0, r.stderr
    assert f"on rpc {rpc_server}" in r.stdout
    assert _device_timer_median_s(r.stdout) > 0
    assert "wall clock" not in r.stdout  # host timings (TVM wall clock, ONNX Runtime) only on the host
    m = re.search(rf"output 'y' fetched from rpc {re.escape(rpc_server)} vs ONNX Runtime: max abs error "
                  r"(\S+), relative (\S+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(2)) <= 1e-4


def test_run_over_rpc_outputs_match_onnxruntime(rpc_server, artifact, tmp_path):
    art, x_file, x = artifact
    r = _kiln("run", art.path, "--rpc", rpc_server, "--input", x_file, "--output", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (len(x), 5)
    assert relative_error(y, art.reference(x)[0]) <= 1e-4


def test_bench_through_tracker(artifact, tmp_path):
    from kiln.backends.tvm.remote import remote_spec

    art, _, x = artifact
    port = _free_port()
    tracker, tport = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                             str(port + 20)], tmp_path / "tracker.log")
    try:
        sport = _free_port()
        server, _ = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(sport), "--port-end",
                            str(sport + 20), "--tracker", f"127.0.0.1:{tport}", "--key", KEY], tmp_path / "server.log")
        try:
            _wait_registered(tport, KEY)
            report = art.bench(repeat=20, warmup=2, inputs=x[:1], remote=remote_spec(tracker=f"127.0.0.1:{tport}",
                                                                                     key=KEY))
            assert report.tvm.median > 0 and report.onnxruntime is None
            assert report.comparison[0].relative_error <= 1e-4
            r = _kiln("bench", art.path, "--tracker", f"127.0.0.1:{tport}", "--key", "no-such-board")
            assert r.returncode == 2 and "Traceback" not in r.stderr
            assert "no device with key 'no-such-board'" in r.stderr and KEY in r.stderr
        finally:
            _stop(server)
    finally:
        _stop(tracker)
