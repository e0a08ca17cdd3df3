"""Kiln: a deployment compiler from ONNX to edge hardware (Vitis HLS C++ first).

Python API::

    import kiln
    project = kiln.compile("model.onnx", board="vu13p", output_dir="build/m", precision="fixed<16,6>")
    y = project.csim(x)                # bit-accurate C simulation, x has a leading batch axis
    project = kiln.open_project("build/m")
"""

from kiln.errors import KilnError

__version__ = "0.1.0"


def compile(model, board: str = "vu13p", output_dir=None, precision=None, config=None, reuse_factor=None,
            fuse: bool = True, budget=None, calibrate=None, bits=None, max_error=None, fit_check: bool = True,
            example_inputs=None, io=None, target_fps=None, tune=None, tune_minutes=None, tuning_db=None):
    """Compile a model into an HLS project (an ``HLSProject``) or, for CPU boards, a TVM library.

    ``model``: an ONNX/QONNX file or ModelProto (quantizers become fixed-point types), or a
    Keras/QKeras model (in memory, .h5, .keras), or a ``torch.nn.Module`` with
    ``example_inputs=(x,)`` (exported by torch.onnx, dynamo first, legacy fallback; the exporter
    used is said on stderr; frontend/torch_export.py). ``calibrate``: samples (.npy/.npz or arrays)
    from which every value's integer bits are chosen, with ``bits`` (default 16) in all, or
    ``max_error``: as many fractional bits as rounding to within it takes.
    The project holds the lowered IR as ``kiln_ir.onnx`` (open it in Netron).
    A fixed-point design whose estimate exceeds ``budget`` (default 0.7) x any of the board's
    DSP, LUT, FF or BRAM is a KilnError; ``fit_check=False`` writes it anyway (warning on stderr).
    ``io="stream"``: layers joined by hls::stream FIFOs under DATAFLOW (default "parallel", or
    the config's ``[model] io``). ``target_fps`` (stream designs): fold every layer so that its II
    is <= clock / target_fps at the least resources (an error names the layer that cannot);
    without it a stream design gets the fastest folding that fits ``budget``.
    CPU boards (TVM): ``tune`` trials or ``tune_minutes`` of MetaSchedule tuning, recorded in
    the board's tuning database ``tuning_db`` (default ~/.cache/kiln/tvm-db/<board>/), whose
    best records every compile for the board uses.
    """
    from kiln.driver import compile_model
    from kiln.frontend.torch_export import prepare_model

    model = prepare_model(model, example_inputs)  # a torch.nn.Module -> its exported ModelProto
    return compile_model(model, board=board, output_dir=output_dir, precision=precision, config=config,
                         reuse_factor=reuse_factor, fuse=fuse, budget=budget, calibrate=calibrate, bits=bits,
                         max_error=max_error, fit_check=fit_check, io=io, target_fps=target_fps,
                         tune=tune, tune_minutes=tune_minutes, tuning_db=tuning_db)


def open_project(path):
    """Open a directory written by ``kiln.compile``: an ``HLSProject`` (FPGA boards) or a
    ``TVMArtifact`` (CPU boards)."""
    import json
    from pathlib import Path

    from kiln.fsutil import MANIFEST

    try:
        backend = json.loads((Path(path) / MANIFEST).read_text()).get("backend")
    except (OSError, ValueError):
        backend = "hls"  # HLSProject.open gives the clear error
    if backend == "tvm":
        from kiln.backends.tvm.artifact import TVMArtifact

        return TVMArtifact.open(path)
    from kiln.backends.hls.project import HLSProject

    return HLSProject.open(path)


__all__ = ["KilnError", "compile", "open_project", "__version__"]
