"""Sessions on a device through TVM RPC: a server directly (``--rpc HOST:PORT``) or a tracker
(``--tracker HOST:PORT --key KEY``). Every connection problem is one KilnError.

On the device::

    python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090                       # direct
    python -m tvm.exec.rpc_server --tracker TRACKER:9190 --key rpi4                # via a tracker

A server takes 10-20 s after start before it binds (it logs "bind to HOST:PORT").
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from kiln.errors import KilnError

PROBE_TIMEOUT_S = 5.0
SESSION_TIMEOUT_S = 600

SERVER_HINT = "start one on the device: python -m tvm.exec.rpc_server --host 0.0.0.0 --port 9090"


@dataclass(frozen=True)
class RemoteSpec:
    rpc: tuple[str, int] | None = None
    tracker: tuple[str, int] | None = None
    key: str | None = None

    @property
    def label(self) -> str:
        if self.rpc:
            return f"rpc {self.rpc[0]}:{self.rpc[1]}"
        return f"tracker {self.tracker[0]}:{self.tracker[1]} key {self.key}"


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KilnError(f"{what} {text!r} is not HOST:PORT (e.g. 10.0.0.7:9090)")
    return host.strip("[]"), int(port)


def remote_spec(rpc: str | None = None, tracker: str | None = None, key: str | None = None) -> RemoteSpec | None:
    """From CLI-style strings; None when neither --rpc nor --tracker was given."""
    if rpc and tracker:
        raise KilnError("give either --rpc HOST:PORT or --tracker HOST:PORT --key KEY, not both")
    if rpc:
        return RemoteSpec(rpc=parse_address(rpc, "--rpc"))
    if tracker:
        if not key:
            raise KilnError("--tracker needs --key (the key the device's RPC server registered with)")
        return RemoteSpec(tracker=parse_address(tracker, "--tracker"), key=key)
    if key:
        raise KilnError("--key only makes sense with --tracker HOST:PORT")
    return None


def _probe(addr: tuple[str, int], what: str, hint: str) -> None:
    """A plain TCP connect first: TVM retries a refused tracker for 60 s and reports an
    unreachable server as an internal error."""
    try:
        with socket.create_connection(addr, timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {PROBE_TIMEOUT_S:g} s"
        raise KilnError(f"cannot reach the {what} at {addr[0]}:{addr[1]} ({reason}); {hint}") from None


def connect(spec: RemoteSpec):
    """An RPC session on the device."""
    from tvm import rpc

    if spec.rpc:
        _probe(spec.rpc, "TVM RPC server", SERVER_HINT)
        try:
            return rpc.connect(spec.rpc[0], spec.rpc[1], session_timeout=SESSION_TIMEOUT_S)
        except Exception as exc:  # TVMError / RuntimeError
            raise KilnError(f"cannot open a session with the TVM RPC server at {spec.rpc[0]}:{spec.rpc[1]} "
                            f"({_short(exc)}); is it a TVM RPC server? {SERVER_HINT}") from None
    host, port = spec.tracker
    tracker = check_tracker(spec.tracker, spec.key)
    try:
        return tracker.request(spec.key, priority=1, session_timeout=SESSION_TIMEOUT_S, max_retry=2)
    except Exception as exc:
        raise KilnError(f"the TVM RPC tracker at {host}:{port} gave no session for key {spec.key!r} "
                        f"({_short(exc)})") from None


def check_tracker(addr: tuple[str, int], key: str):
    """The tracker answers and has a device registered under ``key``; returns the tracker session."""
    from tvm import rpc

    host, port = addr
    _probe(addr, "TVM RPC tracker", "start one with: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190")
    try:
        tracker = rpc.connect_tracker(host, port)
        summary = tracker.summary()
    except Exception as exc:
        raise KilnError(f"cannot talk to the TVM RPC tracker at {host}:{port} ({_short(exc)})") from None
    keys = sorted({item["key"].split(":", 1)[-1] for item in summary.get("server_info", [])})
    if key not in keys:
        have = ", ".join(repr(k) for k in keys) or "none"
        raise KilnError(f"the TVM RPC tracker at {host}:{port} has no device with key {key!r} "
                        f"(registered keys: {have}); on the device run: python -m tvm.exec.rpc_server "
                        f"--tracker {host}:{port} --key {key}")
    return tracker


def _short(exc: BaseException) -> str:
    from kiln.backends.tvm.target import short_error

    return short_error(exc)
