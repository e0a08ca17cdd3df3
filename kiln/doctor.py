"""``kiln doctor``: which toolchains the backends Kiln has need, and which are installed here.

Only backends that exist in this installation are listed (a ``kiln.backends.<name>``
module): today HLS (g++, make, the ap_types headers from hls4ml, vitis_hls for synthesis)
TVM (apache-tvm, its FFI, the aarch64 cross gcc, MetaSchedule's Python dependencies) and
TensorRT (engine.onnx and scripts need only ONNX Runtime; engines need TensorRT + an NVIDIA GPU).
``kiln doctor --json`` prints the same as one object (``doctor_json``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil

TVM_FFI_FOR_TUNING = "0.1.14.post0"


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check(name: str, found: str | None, needed: bool, what: str, problem: str | None = None) -> dict:
    """``needed``: the backend does not work without it (else it only enables ``what``)."""
    return {"name": name, "found": found, "needed": needed, "for": what, "problem": problem}


def _hls_checks() -> list[dict]:
    from kiln.backends.hls.toolchain import ap_types_dir, gxx, vitis_hls

    try:
        ap, problem = str(ap_types_dir()), None
    except Exception as exc:  # noqa: BLE001 - report whatever is wrong
        ap, problem = None, str(exc)
    return [
        _check("g++", gxx(), True, "C-simulation builds"),
        _check("make", shutil.which("make"), True, "C-simulation builds"),
        _check("hls4ml", _version("hls4ml"), True, "ships Xilinx's ap_fixed/ap_int headers"),
        _check("ap_types headers", ap, True, "ap_fixed.h, ap_int.h (from the hls4ml wheel)", problem),
        _check("vitis_hls", vitis_hls(), False, "kiln synth (synthesis reports)"),
    ]


def _tvm_checks() -> list[dict]:
    ffi = _version("apache-tvm-ffi")
    ffi_problem = (f"MetaSchedule tuning segfaults with other versions (0.1.15.post2); kiln pins "
                   f"{TVM_FFI_FOR_TUNING}" if ffi and ffi != TVM_FFI_FOR_TUNING else None)
    deps = {p: _version(p) for p in ("psutil", "cloudpickle")}
    deps["xgboost"] = _version("xgboost-cpu") or _version("xgboost")
    return [
        _check("apache-tvm", _version("apache-tvm"), True, "compiling for CPU boards (Relax)"),
        _check("apache-tvm-ffi", ffi, True, "TVM's runtime", ffi_problem),
        _check("g++", shutil.which("g++"), True, "linking host .so libraries"),
        _check("aarch64-linux-gnu-gcc", shutil.which("aarch64-linux-gnu-gcc"), False,
               ".so for Arm Linux boards (else a .tar the device links; apt-get install gcc-aarch64-linux-gnu)"),
        *(_check(p, v, False, "kiln compile --tune (MetaSchedule)") for p, v in deps.items()),
    ]


def _tensorrt_checks() -> list[dict]:
    from kiln.backends.tensorrt.artifact import tensorrt_status

    usable, what = tensorrt_status()
    gpu = shutil.which("nvidia-smi")
    return [
        _check("onnx + onnxruntime", _version("onnxruntime"), True, "engine.onnx, build_engine.py, trtexec.sh and "
               "the ONNX Runtime checks of engine.onnx"),
        _check("polygraphy", _version("polygraphy"), False, "run_checks.sh, `polygraphy check lint` (pip install "
               "'.[tensorrt]')"),
        _check("onnx-graphsurgeon", _version("onnx-graphsurgeon"), False, "Polygraphy's graph tools"),
        _check("tensorrt", what if usable else None, False, "kiln build-engine, and run/bench of the engine "
               "(with an NVIDIA GPU; JetPack on Jetson)", None if usable else what),
        _check("trtexec", shutil.which("trtexec"), False, "trtexec.sh, kiln bench (CUDA-event timing)"),
        _check("nvidia-smi (NVIDIA GPU)", gpu, False, "building and running engines"),
    ]


def _frontend_checks() -> list[dict]:
    keras = _version("tf_keras") and _version("tensorflow")
    return [
        _check("onnx", _version("onnx"), True, "reading models"),
        _check("onnx-ir", _version("onnx-ir"), True, "the IR"),
        _check("onnxscript", _version("onnxscript"), True, "constant folding, fusion rewrites"),
        _check("onnxruntime", _version("onnxruntime"), True, "the reference every comparison uses"),
        _check("torch", _version("torch"), False, "PyTorch models (exported with torch.onnx)"),
        _check("qkeras", _version("qkeras"), False, "QKeras models (pip install '.[qkeras]')"),
        _check("tensorflow + tf_keras", keras, False, "QKeras models (TF 2.21)"),
    ]


def _coreml_checks() -> list[dict]:
    import sys

    return [
        _check("coremltools", _version("coremltools"), True,
               "building .mlpackage (MIL builder), reload + value-inference check on any OS"),
        _check("macOS (CoreML runtime)", sys.platform if sys.platform == "darwin" else None, False,
               "kiln run / kiln bench on CoreML packages (predictions run only on macOS)"),
    ]


BACKENDS = {"hls": ("HLS backend (compile + C-sim)", _hls_checks),
            "tvm": ("TVM backend (CPU boards)", _tvm_checks),
            "coreml": ("CoreML backend (Apple boards: build + Linux checks; predict on macOS)", _coreml_checks),
            "tensorrt": (lambda: _tensorrt_title(), _tensorrt_checks)}


def _tensorrt_title() -> str:
    from kiln.backends.tensorrt.artifact import tensorrt_status

    usable, what = tensorrt_status()
    engines = f"engines with {what}" if usable else "engine build needs TensorRT + an NVIDIA GPU: not installed"
    return f"TensorRT backend (NVIDIA boards; engine.onnx + build scripts here; {engines})"


def _installed_backends() -> dict:
    """The backends of BACKENDS whose module exists in this installation."""
    return {k: v for k, v in BACKENDS.items() if importlib.util.find_spec(f"kiln.backends.{k}") is not None}


def _ready(checks: list[dict]) -> tuple[bool, list[str]]:
    missing = [c["name"] for c in checks if c["needed"] and not c["found"]]
    return not missing, missing


def doctor_json() -> dict:
    """{"kiln": version, "frontend": [checks], "backends": {name: {"ready", "missing", "checks"}}}."""
    from kiln.cli import kiln_version

    backends = {}
    for key, (title, checks_of) in _installed_backends().items():
        checks = checks_of()
        title = title() if callable(title) else title
        ready, missing = _ready(checks)
        backends[key] = {"title": title, "ready": ready, "missing": missing, "checks": checks}
    frontend = _frontend_checks()
    return {"kiln": kiln_version(), "core_ready": _ready(frontend)[0], "frontend": frontend, "backends": backends}


def report() -> str:
    data = doctor_json()
    sections = [("Kiln core and frontends", data["frontend"], None)]
    sections += [(b["title"], b["checks"], b) for b in data["backends"].values()]
    width = max(len(c["name"]) for _, checks, _ in sections for c in checks)
    lines = [f"Kiln doctor (kiln {data['kiln']})"]
    for title, checks, backend in sections:
        lines += ["", title + ("" if backend is None else
                               ": ready" if backend["ready"] else f": NOT ready (missing {', '.join(backend['missing'])})")]
        for c in checks:
            found = c["found"] or ("not found" if c["needed"] else "not found (optional)")
            note = f"; {c['problem']}" if c["problem"] else ""
            lines.append(f"  {c['name'].ljust(width)}  {found}  [{c['for']}{note}]")
    if "tvm" in data["backends"] and not data["backends"]["tvm"]["ready"]:
        lines += ["", "TVM backend: pip install '.[tvm]' (apache-tvm and MetaSchedule's dependencies, pinned)"]
    return "\n".join(lines)
