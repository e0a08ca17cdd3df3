"""CPU boards -> TVM targets and the C toolchain that links the library.

A CPU board file (``boards/<name>.toml``, ``kind = "cpu"``) holds the TVM target in dict
form (TVM 0.27 rejects target strings) and the compiler that links ``model.so``::

    [target]
    kind = "llvm"
    mtriple = "aarch64-linux-gnu"
    mcpu = "cortex-a72"
    mattr = ["+neon"]
    num-cores = 4

    [toolchain]
    cc = "aarch64-linux-gnu-gcc"
    install = "apt-get install -y gcc-aarch64-linux-gnu"

``mcpu = "host"`` / ``num-cores = "host"`` (the x86-host board) are resolved here, at
compile time, to LLVM's explicit name for this machine's CPU and its CPU count, never to
``-mcpu=native`` (which TVM 0.27 turns into generic x86-64).
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from kiln.board import Board
from kiln.errors import KilnError

# mtriple architecture -> ELF e_machine, and the names platform.machine() uses for it.
ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "arm": 40, "riscv64": 243}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def require_tvm():
    """Import tvm, or one clear message saying how to install the optional extra; and give
    TVM's thread pool this machine's cores (``runtime_threads``)."""
    runtime_threads()
    try:
        import tvm  # noqa: F401
    except ImportError as exc:
        raise KilnError(f"the TVM backend needs apache-tvm ({exc}); install it with "
                        "`pip install -e '.[tvm]'` (see `kiln doctor`)") from None
    return tvm


def triple_arch(mtriple: str) -> str:
    return mtriple.split("-", 1)[0]


def host_arch() -> str:
    machine = platform.machine().lower()
    return _MACHINE_ALIASES.get(machine, machine)


def runs_here(target: dict) -> bool:
    """Can a library for ``target`` be loaded in this process (same architecture and OS)?"""
    triple = target.get("mtriple", "")
    return triple_arch(triple) == host_arch() and "android" not in triple and platform.system() == "Linux"


def host_cpu_count() -> int:
    """Physical cores this process may run on (hyper-threads of one core counted once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def runtime_threads() -> int:
    """Threads of TVM's runtime pool in this process: $TVM_NUM_THREADS (or $OMP_NUM_THREADS) when set, else this
    machine's physical cores, set in $TVM_NUM_THREADS before the pool starts (and so passed
    to MetaSchedule's measuring workers).

    Left alone, TVM 0.27 sizes the pool to half the logical CPUs on every x86 machine (it
    assumes two hyper-threads a core): on a 2-core VM without SMT one thread, and every
    parallel loop of the schedules ran on one core while ONNX Runtime used two (a 1x1 conv:
    1.08 ms on one thread, 0.54 ms on two)."""
    value = os.environ.get("TVM_NUM_THREADS", "") or os.environ.get("OMP_NUM_THREADS", "")  # TVM's own order
    if not value.strip().isdigit() or int(value) < 1:
        value = str(host_cpu_count())
        os.environ["TVM_NUM_THREADS"] = value
    return int(value)


def resolve_target(board: Board) -> dict:
    """The board's TVM target as a plain dict with every "host" placeholder resolved."""
    if board.kind != "cpu":
        raise KilnError(f"board {board.name!r} is a {board.kind} target; the TVM backend needs a CPU board "
                        "(see `kiln boards`)")
    target = dict(board.target)
    for key in ("kind", "mtriple", "mcpu"):
        if not target.get(key):
            raise KilnError(f"board {board.name!r}: [target] has no {key!r} (boards/{board.name}.toml)")
    if target["kind"] != "llvm":
        raise KilnError(f"board {board.name!r}: target kind {target['kind']!r} is not supported (CPU boards use 'llvm')")
    tvm = require_tvm()
    from tvm.target import codegen

    if target["mcpu"] == "native":
        raise KilnError(f"board {board.name!r}: mcpu = 'native' compiles for generic x86-64 in TVM 0.27; "
                        "use mcpu = 'host' (resolved to this CPU's name) or name the CPU")
    if target["mcpu"] == "host":
        if triple_arch(target["mtriple"]) != host_arch():
            raise KilnError(f"board {board.name!r}: mcpu = 'host' needs a {host_arch()} mtriple, "
                            f"not {target['mtriple']!r}")
        target["mcpu"] = str(codegen.llvm_get_system_cpu())
    if target.get("num-cores") == "host":
        target["num-cores"] = host_cpu_count()
    if not codegen.llvm_is_valid_cpu(target["mcpu"], target["mtriple"]):
        raise KilnError(f"board {board.name!r}: LLVM {codegen.llvm_version_major()} does not know CPU "
                        f"{target['mcpu']!r} for {target['mtriple']!r}")
    try:
        tvm.target.Target(target)
    except Exception as exc:  # TVM raises its own error types
        raise KilnError(f"board {board.name!r}: TVM rejects the target {target}: {short_error(exc)}") from None
    return target


def target_summary(target: dict) -> str:
    parts = [f"-mtriple={target['mtriple']}", f"-mcpu={target['mcpu']}"]
    if target.get("mattr"):
        parts.append("-mattr=" + ",".join(target["mattr"]))
    if target.get("num-cores"):
        parts.append(f"-num-cores={target['num-cores']}")
    return "llvm " + " ".join(parts)


def find_compiler(board: Board) -> str | None:
    """Path of the C compiler that links this board's ``model.so``, or None."""
    cc = board.toolchain.get("cc", "")
    if not cc:
        return None
    found = shutil.which(cc)
    if found:
        return found
    if board.toolchain.get("ndk"):
        env = os.environ.get("TVM_NDK_CC")
        if env and shutil.which(env):
            return shutil.which(env)
        ndk = os.environ.get("ANDROID_NDK_HOME") or os.environ.get("ANDROID_NDK_ROOT")
        if ndk:
            for cand in sorted(Path(ndk).glob(f"toolchains/llvm/prebuilt/*/bin/{cc}")):
                if os.access(cand, os.X_OK):
                    return str(cand)
    return None


def missing_toolchain_message(board: Board, tar_hint: bool = True) -> str:
    cc = board.toolchain.get("cc") or "a C compiler"
    how = board.toolchain.get("install", "")
    return (f"linking model.so for {board.name} needs {cc}, which is not installed"
            + (f" ({how})" if how else "")
            + ("; or compile with --format tar and let the device link the objects" if tar_hint else ""))


def short_error(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
