"""Where the external pieces of the HLS flow are: ap_types headers, g++, vitis_hls."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from kiln.errors import KilnError


def ap_types_dir() -> Path:
    """Xilinx's ap_fixed/ap_int headers as shipped inside the hls4ml wheel (Apache-2.0)."""
    try:
        root = resources.files("hls4ml") / "templates" / "vivado" / "ap_types"
    except ModuleNotFoundError:
        raise KilnError("hls4ml is not installed; Kiln uses the ap_types headers from its wheel "
                        "(pip install hls4ml==1.3.0)") from None
    path = Path(str(root))
    if not (path / "ap_fixed.h").is_file():
        raise KilnError(f"ap_fixed.h not found under {path}; reinstall hls4ml==1.3.0")
    return path


def gxx() -> str | None:
    return shutil.which("g++")


def vitis_hls() -> str | None:
    return shutil.which("vitis_hls")
