"""TVM backend (apache-tvm, Relax): ONNX -> a deployable library for a CPU board.

    from kiln.backends.tvm import compile_tvm, open_artifact
    art = compile_tvm("model.onnx", board="x86-host", output_dir="build/host", tune=None)
    y = art.run(x)                      # x: leading axis of N samples
    report = art.bench(repeat=200)      # latency here, with ONNX Runtime beside it

TVM itself is imported lazily: this package imports without the optional ``tvm`` extra.
"""

from __future__ import annotations


def compile_tvm(model, board="x86-host", output_dir=None, tune=None, tracker=None, key=None, lib_format="auto",
                progress=None, schedules=True, tune_minutes=None, tuning_db=None):
    from kiln.backends.tvm.compiler import compile_tvm as _compile

    return _compile(model, board=board, output_dir=output_dir, tune=tune, tracker=tracker, key=key,
                    lib_format=lib_format, progress=progress, schedules=schedules,
                    tune_minutes=tune_minutes, tuning_db=tuning_db)


def open_artifact(path):
    from kiln.backends.tvm.artifact import TVMArtifact

    return TVMArtifact.open(path)


__all__ = ["compile_tvm", "open_artifact"]
