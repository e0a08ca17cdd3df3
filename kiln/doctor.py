"""``kiln doctor``: which toolchains and optional backends are available here."""

from __future__ import annotations

import importlib.metadata
import shutil


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tvm_ffi() -> str | None:
    v = _version("apache-tvm-ffi")
    if v and v != "0.1.14.post0":
        return f"{v} (MetaSchedule tuning segfaults with 0.1.15.post2; kiln pins 0.1.14.post0)"
    return v


def _tuning_deps() -> str | None:
    found = {p: _version(p) for p in ("psutil", "cloudpickle")}
    found["xgboost"] = _version("xgboost-cpu") or _version("xgboost")
    missing = [p for p, v in found.items() if not v]
    if len(missing) == len(found):
        return None
    return ", ".join(f"{p} {v}" for p, v in found.items() if v) + (f"; missing {', '.join(missing)}" if missing else "")


def report() -> str:
    from kiln.backends.hls.toolchain import ap_types_dir, gxx, vitis_hls

    lines = ["Kiln doctor", ""]
    try:
        ap = str(ap_types_dir())
    except Exception as exc:  # noqa: BLE001 - report whatever is wrong
        ap = f"MISSING ({exc})"
    checks = [
        ("onnx", _version("onnx")), ("onnx-ir", _version("onnx-ir")), ("onnxscript", _version("onnxscript")),
        ("onnxruntime", _version("onnxruntime")), ("hls4ml (ap_types headers)", _version("hls4ml")),
        ("ap_types", ap), ("g++ (C-simulation)", gxx()), ("make", shutil.which("make")),
        ("vitis_hls (synthesis; optional)", vitis_hls()),
        ("apache-tvm (TVM backend; optional)", _version("apache-tvm")),
        ("apache-tvm-ffi (TVM; 0.1.14.post0 for tuning)", _tvm_ffi()),
        ("psutil, cloudpickle, xgboost (TVM tuning)", _tuning_deps()),
        ("aarch64-linux-gnu-gcc (TVM .so for Arm Linux boards)", shutil.which("aarch64-linux-gnu-gcc")),
        ("coremltools (CoreML backend; optional)", _version("coremltools")),
        ("tensorrt (TensorRT backend; optional, needs an NVIDIA GPU)", _version("tensorrt")),
        ("torch (PyTorch frontend via torch.onnx; optional)", _version("torch")),
        ("qkeras (QKeras frontend; optional, extra 'qkeras')", _version("qkeras")),
        ("tensorflow + tf_keras (QKeras; 2.21)", _version("tf_keras") and _version("tensorflow")),
    ]
    width = max(len(n) for n, _ in checks)
    for name, found in checks:
        lines.append(f"  {name.ljust(width)}  {found or 'not found'}")
    lines.append("")
    lines.append("HLS backend (compile + C-sim): " + ("ready" if gxx() and "MISSING" not in ap else "NOT ready"))
    lines.append("TVM backend (CPU boards): " + (
        "ready" if _version("apache-tvm") and gxx() else "NOT ready (pip install -e '.[tvm]'; needs g++)")
        + ("" if shutil.which("aarch64-linux-gnu-gcc") else
           "; Arm boards get a .tar the device links (apt-get install -y gcc-aarch64-linux-gnu for a .so)"))
    return "\n".join(lines)
