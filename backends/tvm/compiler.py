"""Compile an ONNX model for a CPU board with TVM (Relax) and write the artifact directory.

    <output>/model.so            the library (host, or aarch64 linked with the board's cross gcc)
    <output>/model.tar           ... or its objects, when the cross toolchain is missing (the
                                 device links them: TVM's RPC server and load_module do)
    <output>/kiln_manifest.json  inputs/outputs (names, shapes, dtypes), target, TVM version
    <output>/model.onnx          the user's model (the ONNX Runtime reference for run/bench)
    <output>/kiln_ir.onnx        the model as TVM imported it (batch 1, constants folded)
    <output>/tuning/             with --tune: MetaSchedule's database and logs

Running the library needs only the library and the manifest.
"""

from __future__ import annotations

import json
import struct
import tempfile
import time
from pathlib import Path

import onnx
import onnx_ir as ir

import kiln
from kiln.backends.tvm.importer import to_relax
from kiln.backends.tvm.target import (ELF_MACHINE, find_compiler, missing_toolchain_message, require_tvm,
                                      resolve_target, runs_here, short_error, target_summary, triple_arch)
from kiln.annotations import is_op
from kiln.board import Board, get_board
from kiln.errors import KilnError
from kiln.frontend import load_model
from kiln.fsutil import MANIFEST, check_output_dir, staged_dir
from kiln.ir_utils import static_shape

LIB_FORMATS = ("auto", "so", "tar")


def elf_header(data: bytes) -> dict:
    """The fields of an ELF header that say what a binary is for."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    ei_class, ei_data = data[4], data[5]
    endian = "<" if ei_data == 1 else ">"
    e_type, e_machine = struct.unpack(endian + "HH", data[16:20])
    return {"class": {1: 32, 2: 64}.get(ei_class), "endian": "little" if ei_data == 1 else "big",
            "type": {1: "relocatable", 2: "executable", 3: "shared object"}.get(e_type, str(e_type)),
            "machine": e_machine}


def _ports(model: ir.Model, batch_axis: dict[str, bool]) -> tuple[list[dict], list[dict]]:
    def spec(value, batch):
        shape = [int(d) for d in static_shape(value)]
        dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
        size = 1
        for d in shape:
            size *= d
        return {"name": value.name, "shape": shape, "size": size, "dtype": dtype, "batch_axis": bool(batch)}

    inputs = [spec(v, batch_axis.get(v.name, False)) for v in model.graph.inputs]
    any_batch = any(batch_axis.values())
    outputs = []
    for v in model.graph.outputs:
        shape = list(static_shape(v))
        outputs.append(spec(v, any_batch and len(shape) > 0 and shape[0] == 1))
    return inputs, outputs


def _index_bounds(model: ir.Model) -> dict[str, int]:
    """Integer graph inputs used directly as Gather indices -> the size of the gathered axis.

    TVM's importer lowers Gather in "fast" mode: an index out of range reads out of bounds
    (a crash, not an error), where ONNX Runtime reports it. run/bench check such inputs first.
    """
    bounds: dict[str, int] = {}
    inputs = {v.name for v in model.graph.inputs}
    for node in model.graph:
        if not is_op(node, "Gather") or len(node.inputs) < 2:
            continue
        indices, data = node.inputs[1], node.inputs[0]
        if indices is None or indices.name not in inputs or data is None or data.shape is None:
            continue
        axis = node.attributes.get_int("axis", 0)
        dims = list(data.shape)
        dim = dims[axis] if -len(dims) <= axis < len(dims) else None
        if isinstance(dim, int):
            bounds[indices.name] = min(bounds.get(indices.name, dim), dim)
    return bounds


def _choose_format(board: Board, target: dict, lib_format: str) -> tuple[str, str | None]:
    if lib_format not in LIB_FORMATS:
        raise KilnError(f"--format must be one of {', '.join(LIB_FORMATS)}, not {lib_format!r}")
    cc = find_compiler(board)
    if runs_here(target):
        if lib_format == "tar":
            return "tar", None
        if cc is None:
            raise KilnError(missing_toolchain_message(board, tar_hint=False))
        return "so", cc
    if lib_format == "so" and cc is None:
        raise KilnError(missing_toolchain_message(board))
    if lib_format == "tar" or cc is None:
        return "tar", None
    return "so", cc


def compile_tvm(model, board="x86-host", output_dir=None, tune: int | None = None, tracker=None, key=None,
                lib_format: str = "auto", progress=None, schedules: bool = True, tune_minutes: float | None = None,
                tuning_db=None):
    """Compile an ONNX file or ModelProto for a CPU board; returns a ``TVMArtifact``.

    ``tune``: MetaSchedule trial budget (None/0: untuned); ``tune_minutes``: a time budget
    instead, spent on the kernels with the largest share of the time first. Tuning a board
    that is not this machine measures on the device through ``tracker=(host, port)`` and ``key``.
    Records go to the board's tuning database (``tuning_db``, else $KILN_TUNING_DB, else
    ~/.cache/kiln/tvm-db/<board>/), and every compile uses its best records (tuning_db.py).
    A tuned compile that runs here ships the tuned build only where the whole model runs
    faster with it than with the rule-based schedules alone (keep_faster.py; the manifest's
    ``tuning.whole_model`` says which it kept and both medians).
    ``progress(message)`` reports tuning progress. ``schedules``: give every kernel not
    tuned a rule-based schedule (backends/tvm/schedules.py); False: TVM's default loop nests
    (and no database).
    """
    from kiln.backends.tvm.artifact import TVMArtifact

    board = board if isinstance(board, Board) else get_board(board)
    target = resolve_target(board)
    tvm = require_tvm()
    if tune is not None and (not isinstance(tune, int) or tune < 0):
        raise KilnError(f"--tune takes a number of trials (a positive integer), not {tune!r}")
    if tune_minutes is not None:
        if isinstance(tune_minutes, bool) or not isinstance(tune_minutes, (int, float)) or not tune_minutes > 0:
            raise KilnError(f"--tune-minutes takes a positive number of minutes, not {tune_minutes!r}")
        if tune:
            raise KilnError("give --tune TRIALS or --tune-minutes MINUTES, not both")
    if (tracker or key) and not (tune or tune_minutes):
        raise KilnError("--tracker/--key on `kiln compile` choose the device that measures --tune trials; "
                        "give --tune TRIALS (to run or bench on a device: kiln bench/run --tracker ...)")
    if tune or tune_minutes:
        if tracker is None and not runs_here(target):
            raise KilnError(f"tuning for {board.name} ({target['mtriple']}) measures candidates on the device: "
                            "pass --tracker HOST:PORT --key KEY (a TVM RPC tracker the device's RPC server "
                            "registered with)")
        if tracker is not None:
            from kiln.backends.tvm.remote import check_tracker

            if not key:
                raise KilnError("--tracker needs --key (the key the device's RPC server registered with)")
            check_tracker(tracker, key)
    fmt, cc = _choose_format(board, target, lib_format)
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="kiln-")) / "artifact"
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    started = time.perf_counter()
    loaded = load_model(model, quantizers=False)  # TVM takes Q/DQ ops itself
    mod = to_relax(loaded.model, loaded.source)
    inputs, outputs = _ports(loaded.model, loaded.batch_axis)
    for spec in inputs:
        bound = _index_bounds(loaded.model).get(spec["name"])
        if bound is not None:
            spec["index_bound"] = bound
    name = Path(loaded.source).stem if loaded.source != "<ModelProto>" else (loaded.model.graph.name or "model")
    db_dir, database = None, None
    if schedules:
        from kiln.backends.tvm.tuning_db import database_dir, open_database

        db_dir = database_dir(board.name, tuning_db)
        database = open_database(db_dir, create=bool(tune or tune_minutes), target=target)
    with staged_dir(output_dir) as tmp:
        tuning = None
        if tune or tune_minutes:
            from kiln.backends.tvm.tune import tune as run_tuning

            tuning = run_tuning(mod, target, tmp / "tuning", database, trials=tune or None, minutes=tune_minutes,
                                tracker=tracker, key=key, runs_here=runs_here(target), progress=progress)
            tuning["database"] = str(db_dir)
        executable, schedule_counts = _build(tvm, mod, target, schedules, f"{loaded.source}", board.name, database)
        if tuning is not None and runs_here(target) and tracker is None and (schedule_counts or {}).get("tuned"):
            executable, schedule_counts, tuning["whole_model"] = _faster_of(
                tvm, mod, target, loaded.source, board.name, (executable, schedule_counts), inputs)
        if schedule_counts is not None:
            from kiln.backends.tvm.kernels import KERNELS_FILE

            (tmp / KERNELS_FILE).write_text(json.dumps(schedule_counts.pop("table", []), indent=1))
            schedule_counts.pop("rules", None)
        lib = tmp / f"model.{fmt}"
        try:
            if fmt == "tar":
                executable.export_library(str(lib))
            else:
                executable.export_library(str(lib), fcompile=_linker(cc))
        except Exception as exc:
            raise KilnError(f"linking {lib.name} for {board.name} failed: {short_error(exc)}") from None
        onnx.save(loaded.original, tmp / "model.onnx")
        ir.save(loaded.model, tmp / "kiln_ir.onnx")
        manifest = {
            "kiln_version": kiln.__version__, "backend": "tvm", "model_name": name,
            "board": board.name, "target": target, "target_summary": target_summary(target),
            "tvm_version": tvm.__version__, "tvm_ffi_version": _version("apache-tvm-ffi"),
            "library": {"file": lib.name, "format": fmt, "arch": triple_arch(target["mtriple"]),
                        "linked_with": Path(cc).name if cc else None,
                        "elf_machine": ELF_MACHINE.get(triple_arch(target["mtriple"]))},
            "tuning": tuning, "schedules": schedule_counts,
            "tuning_db": str(db_dir) if database is not None else None, "compile_seconds": round(time.perf_counter() - started, 3),
            "inputs": inputs, "outputs": outputs,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return TVMArtifact.open(output_dir)


def _faster_of(tvm, mod, target: dict, source: str, board: str, tuned, inputs: list[dict]):
    """The tuned build or the rule-based one, whichever runs the whole model faster here
    (keep_faster.py): (executable, rule counts, the check's record)."""
    from kiln.backends.tvm.keep_faster import keep_faster

    rule_based = _build(tvm, mod, target, True, source, board, database=None)
    if rule_based[1] is None:  # the rule-based build fell back to TVM's defaults: keep the tuned one
        return (*tuned, {"kept": "tuned", "reason": "the rule-based build failed"})
    kept, record = keep_faster(tvm, tuned[0], rule_based[0], inputs)
    executable, counts = tuned if kept == "tuned" else rule_based
    return executable, counts, record


def _build(tvm, mod, target: dict, schedules: bool, source: str, board: str, database=None):
    """tvm.compile with the rule-based schedules; if that build fails, the default pipeline
    (a schedule must never cost the user a library). Returns (executable, rule counts or None)."""
    from kiln.backends.tvm.schedules import log as schedule_log, scheduled_pipeline

    tvm_target = tvm.target.Target(target)
    if schedules:
        counts: dict = {}
        try:
            return tvm.compile(mod, target=tvm_target, relax_pipeline=scheduled_pipeline(target, counts, database)), counts
        except Exception as exc:  # a schedule that lowering or codegen rejects
            schedule_log.warning("scheduled build failed (%s); building with TVM's default schedules",
                                 short_error(exc))
    try:
        return tvm.compile(mod, target=tvm_target), None
    except Exception as exc:  # TVMError from legalization / codegen
        raise KilnError(f"{source}: TVM could not compile the model for {board}: {short_error(exc)}") from None


def _linker(cc: str):
    """TVM's create_shared with the board's compiler, libm last on the command line (the
    kernels call expf/erff; g++ links libm by itself, a cross gcc does not, and a -lm placed
    before the objects is dropped by --as-needed)."""
    from tvm.support import cc as tvm_cc

    def link(output, objects, options=None):
        objects = [objects] if isinstance(objects, str) else list(objects)
        tvm_cc.create_shared(output, objects + ["-lm"], options, cc=cc)

    link.output_format = "so"
    return link


def _version(pkg: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None
