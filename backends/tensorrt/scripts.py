"""The scripts written beside engine.onnx: build_engine.py, trtexec.sh, run_checks.sh, README.txt.

They follow TensorRT's documented API for strongly typed networks (TensorRT 10.12+ and 11.x):

- Python builder, TensorRT 11.0 API reference "Builder" (docs.nvidia.com/deeplearning/tensorrt/
  11.0.0/_static/python-api/infer/Core/Builder.html): ``trt.Builder(logger)``,
  ``create_network(flags)``; ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is "deprecated in
  TensorRT 11.0. Strongly typed mode is always enabled ... retained for API compatibility but
  ignored", and on 10.x it is what makes the network strongly typed, so the script always sets it.
  ``trt.OnnxParser(network, logger).parse_from_file``, ``create_builder_config()``,
  ``IBuilderConfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, bytes)``,
  ``build_serialized_network(network, config)``.
- "Removed Python APIs and Replacements" (TensorRT 10.x to 11.x migration, docs.nvidia.com/
  deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html):
  BuilderFlag.FP16/INT8, int8_calibrator are gone; precision is the network's types and Q/DQ
  nodes. The script sets no precision flag.
- trtexec, "Migrating trtexec Usage from TensorRT 10.x to 11.x" (docs.nvidia.com/deeplearning/
  tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-trtexec.html): --fp16/--int8/--calib/--best
  removed, --stronglyTyped "no longer needed - it is always enabled" (kept: required on 10.x);
  "Migrating trtexec Usage from TensorRT 8.x to 10.x": --memPoolSize=workspace:<MiB> replaces
  --workspace.
- The same pages note that TensorRT 11.3/11.4 do not support JetPack (and DLA on DriveOS):
  Jetson boards build with JetPack's TensorRT 10.x, which is why both versions are handled.
- Polygraphy (docs.nvidia.com/deeplearning/tensorrt/latest/tools/polygraphy): ``polygraphy run
  model --onnxrt --trt`` compares TensorRT with ONNX Runtime; ``polygraphy check lint`` lints
  an ONNX model; ``polygraphy inspect model``.
"""

from __future__ import annotations

import json
import shlex

WORKSPACE_MIB = 1024

BUILD_ENGINE = '''\
#!/usr/bin/env python3
"""Build model.engine from engine.onnx with TensorRT's Python API (written by Kiln for {board}).

The network is strongly typed: its precision ({precision}) is in engine.onnx itself (float16
types and Cast nodes, or int8 Q/DQ nodes); no builder precision flag is set (TensorRT 11 has
none). Run it on the target GPU ({gpu}): an engine is specific to the GPU and TensorRT version
that built it.   python build_engine.py [--onnx engine.onnx] [--engine model.engine]
"""

import argparse
import sys
from pathlib import Path

SETTINGS = {settings}


def build(onnx_path, engine_path, workspace_mib, dla_core=None):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # required for strong typing on TensorRT 10.x; accepted and ignored on 11.x (always strongly typed)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        for i in range(parser.num_errors):
            print(f"TensorRT ONNX parser: {{parser.get_error(i)}}", file=sys.stderr)
        return 1
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        print("TensorRT could not build the engine (see the log above)", file=sys.stderr)
        return 1
    Path(engine_path).write_bytes(bytes(serialized))
    print(f"wrote {{engine_path}} (TensorRT {{trt.__version__}}, {{SETTINGS['precision']}})")
    return 0


def main(argv=None):
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default=str(here / "engine.onnx"))
    p.add_argument("--engine", default=str(here / "model.engine"))
    p.add_argument("--workspace-mib", type=int, default=SETTINGS["workspace_mib"])
    p.add_argument("--dla-core", type=int, default=None,
                   help="build for this DLA core, falling back to the GPU (boards with DLA: {dla})")
    args = p.parse_args(argv)
    return build(args.onnx, args.engine, args.workspace_mib, args.dla_core)


if __name__ == "__main__":
    sys.exit(main())
'''

TRTEXEC = '''\
#!/usr/bin/env bash
# Build model.engine from engine.onnx with trtexec and time it (written by Kiln for {board}, {gpu}).
# Strongly typed: the precision ({precision}) is in engine.onnx; TensorRT 11 has no --fp16/--int8 and
# always types strongly (--stronglyTyped is kept: TensorRT 10.x on JetPack needs it).
# trtexec times with CUDA events ("GPU Compute Time"); --noDataTransfers leaves host copies out.
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")"
TRTEXEC="${{TRTEXEC:-trtexec}}"
"$TRTEXEC" --onnx=engine.onnx --saveEngine=model.engine --stronglyTyped \\
    --memPoolSize=workspace:{workspace_mib} {shapes}\\
    --warmUp=500 --iterations=1000 --avgRuns=100 --noDataTransfers --useCudaGraph "$@"
'''

RUN_CHECKS = '''\
#!/usr/bin/env bash
# Polygraphy checks of this artifact (written by Kiln). Needs polygraphy; the --trt comparisons need
# TensorRT and an NVIDIA GPU. Tolerances: {tolerance}.
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")"
# 1. engine.onnx is a valid model (ONNX checker, ONNX Runtime inference, unused/empty tensors)
polygraphy check lint engine.onnx
# 2. the TensorRT engine vs ONNX Runtime on the same network (what Kiln verified here)
polygraphy run engine.onnx --onnxrt --trt {shapes_flag}--atol {atol} --rtol {rtol}
# 3. the TensorRT engine vs the user's float model in ONNX Runtime ({vs_float})
polygraphy run engine.onnx --trt --save-outputs trt_outputs.json {shapes_flag}
polygraphy run model.onnx --onnxrt {shapes_flag}--load-outputs trt_outputs.json --atol {float_atol} --rtol {float_rtol}
'''

README = '''\
Kiln TensorRT artifact: {name} for {board} ({description})
precision: {precision}{notes}

engine.onnx        the network TensorRT parses: batch {batch}, static shapes, constants folded,
                   precision written into it (strongly typed). Kiln checked it in ONNX Runtime.
model.onnx         the user's model: the reference.
build_engine.py    TensorRT Python builder -> model.engine   (or: kiln build-engine .)
trtexec.sh         the same with trtexec, plus timing
run_checks.sh      polygraphy lint + engine vs ONNX Runtime comparisons
kiln_manifest.json inputs, outputs, board, precision

No engine is in this directory unless build_engine.py or trtexec.sh ran on a machine with
TensorRT and an NVIDIA GPU ({gpu}).
'''


def _shapes(inputs: list[dict]) -> str:
    return ",".join(f"{p['name']}:{'x'.join(str(d) for d in p['shape'])}" for p in inputs)


def write_scripts(out, manifest: dict, tolerance: dict) -> None:
    """Write the four files into ``out`` from the manifest's board, precision and inputs."""
    g = manifest["gpu"]
    gpu = f"{g.get('arch', '?')} {g.get('sm', '?')}" + (f", {g['dla_cores']} DLA cores" if g.get("dla_cores") else "")
    settings = {"precision": manifest["precision"], "workspace_mib": WORKSPACE_MIB, "board": manifest["board"]}
    (out / "build_engine.py").write_text(BUILD_ENGINE.format(
        board=manifest["board"], precision=manifest["precision"], gpu=gpu, dla=g.get("dla_cores", 0),
        settings=json.dumps(settings)))
    shapes = _shapes(manifest["inputs"])
    (out / "trtexec.sh").write_text(TRTEXEC.format(
        board=manifest["board"], gpu=gpu, precision=manifest["precision"], workspace_mib=WORKSPACE_MIB,
        shapes=f"--shapes={shlex.quote(shapes)} " if shapes else ""))
    shapes_flag = "--input-shapes " + " ".join(
        shlex.quote(f"{p['name']}:{list(p['shape'])}".replace(" ", "")) for p in manifest["inputs"]) + " "
    (out / "run_checks.sh").write_text(RUN_CHECKS.format(
        tolerance=tolerance["text"], shapes_flag=shapes_flag, atol=tolerance["engine_atol"],
        rtol=tolerance["engine_rtol"], float_atol=tolerance["float_atol"], float_rtol=tolerance["float_rtol"],
        vs_float=tolerance["vs_float"]))
    for name in ("build_engine.py", "trtexec.sh", "run_checks.sh"):
        (out / name).chmod(0o755)
    notes = "".join(f"\n  {n}" for n in manifest.get("notes", []))
    (out / "README.txt").write_text(README.format(
        name=manifest["model_name"], board=manifest["board"], description=manifest["board_description"],
        precision=manifest["precision"], notes=notes, batch=1, gpu=gpu))
