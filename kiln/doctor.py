"""``kiln doctor``: which toolchains and optional backends are available here."""

from __future__ import annotations

import importlib.metadata
import shutil


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


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
        ("coremltools (CoreML backend; optional)", _version("coremltools")),
        ("tensorrt (TensorRT backend; optional, needs an NVIDIA GPU)", _version("tensorrt")),
        ("torch (PyTorch frontend via torch.onnx; optional)", _version("torch")),
    ]
    width = max(len(n) for n, _ in checks)
    for name, found in checks:
        lines.append(f"  {name.ljust(width)}  {found or 'not found'}")
    lines.append("")
    lines.append("HLS backend (compile + C-sim): " + ("ready" if gxx() and "MISSING" not in ap else "NOT ready"))
    return "\n".join(lines)
