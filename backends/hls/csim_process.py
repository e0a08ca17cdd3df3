"""Run the C-simulation testbench as a child process: a time limit scaled to the work, a crash
reported by its signal's name with what to try, and the child's wall time and peak memory.

Peak memory is the testbench's own report (VmHWM of its image, /proc/self/status); where it
gives none, ``os.wait4``'s ru_maxrss of this child (not RUSAGE_CHILDREN, where g++ counts too),
an upper bound: Linux carries the forking Python's high-water mark across exec.
Its stdout/stderr go to files and are decoded with ``errors="replace"``: generated code
that prints bytes which are not UTF-8 still gives a message, not a UnicodeDecodeError.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from kiln.errors import KilnError

# Time limit of one C-sim run: a floor for start-up (weight files, a slow shared machine)
# plus, per sample, a second and SECONDS_PER_OP for each operation the emitters estimate
# (manifest "ops_per_sample"). Measured on a 2-core EPYC (g++ -O1): 3-5 ns per operation in
# float, ~28 ns in ap_fixed<16,6>, ~57 ns in its overflow-counting variant; 500 ns leaves a
# margin of 9x or more. A limit, not a verdict on speed: it only stops endless runs.
TIMEOUT_FLOOR_S = 60.0
TIMEOUT_PER_SAMPLE_S = 1.0
SECONDS_PER_OP = 5e-7

# What a C-sim killed by a signal most likely hit, and what to try.
SIGNAL_HINTS = {
    "SIGSEGV": "stack overflow or out-of-bounds access; try `ulimit -s unlimited` and rerun, and report the model",
    "SIGBUS": "misaligned or out-of-bounds memory access; try `ulimit -s unlimited` and rerun, and report the model",
    "SIGABRT": "the program aborted (a failed assertion or an allocation that ran out of memory); "
               "see its message above, try fewer samples, and report the model",
    "SIGFPE": "an arithmetic fault (integer division by zero) in the generated code; report the model",
    "SIGILL": "an illegal instruction: the binary was built for another CPU; delete the project's build/ and rerun",
    "SIGKILL": "killed from outside, most often by the out-of-memory killer; free memory or pass fewer samples",
    "SIGTERM": "terminated from outside; rerun",
    "SIGXCPU": "it ran out of its CPU-time limit (ulimit -t); raise the limit",
}


@dataclass
class CsimRun:
    """One finished C-sim child: its output streams, wall time and peak resident memory."""

    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


def csim_timeout(n_samples: int, ops_per_sample: int) -> float:
    """Seconds a C-sim of ``n_samples`` samples may take: generous, never a verdict on speed."""
    return TIMEOUT_FLOOR_S + n_samples * (TIMEOUT_PER_SAMPLE_S + ops_per_sample * SECONDS_PER_OP)


def signal_message(returncode: int) -> str:
    """'SIGSEGV (signal 11): stack overflow or ...' for a child killed by a signal (returncode < 0)."""
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    hint = SIGNAL_HINTS.get(name, "report the model")
    return f"{name} (signal {number}): {hint}"


def run_csim_binary(argv: list[str], timeout: float, what: str) -> CsimRun:
    """Run ``argv``; a KilnError naming ``what`` if it crashes, fails or outlives ``timeout`` s."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        except OSError as exc:
            raise KilnError(f"cannot start {what} ({argv[0]}): {exc.strerror or exc}") from None
        status, usage = _wait(proc, start + timeout)
        seconds = time.monotonic() - start
        if status is None:
            raise KilnError(f"{what} did not finish within its time limit of {timeout:.4g} s "
                            f"(scaled to the samples and the model's operations) and was stopped; "
                            f"an endless loop in the generated code, or pass timeout= for a longer limit")
        proc.returncode = os.waitstatus_to_exitcode(status)
        stdout, stderr = (_read(f) for f in (out, err))
    tail = (stderr or stdout).strip()[-2000:]
    if proc.returncode < 0:
        raise KilnError(f"{what} crashed with {signal_message(proc.returncode)}" + (f"\n{tail}" if tail else ""))
    if proc.returncode != 0:
        raise KilnError(f"{what} exited with code {proc.returncode}" + (f": {tail}" if tail else ""))
    return CsimRun(stdout, stderr, seconds, _peak_rss_mb(stdout, usage))


def _wait(proc: subprocess.Popen, deadline: float):
    """(wait status, rusage) of the child, or (None, None) after killing it at ``deadline``."""
    delay = 0.001
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() >= deadline:
            proc.kill()
            _, status, _ = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return None, None
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


def _peak_rss_mb(stdout: str, usage) -> float:
    """The testbench's own report (``kiln_peak_rss_kb``: VmHWM of its image) where it gives one;
    otherwise wait4's ru_maxrss, which on Linux also holds the forking Python's high-water mark."""
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "kiln_peak_rss_kb" and parts[1].isdigit():  # -1: unknown
            return int(parts[1]) / 1024
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage.ru_maxrss / scale


def _read(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", errors="replace")
