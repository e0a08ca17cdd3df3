"""Stream-mode (--io stream) figures for the MLPerf Tiny ResNet-8 (examples/resnet8.py) and timm's
MobileNetV3-small (mobilenetv3_small_050 at 64x64, examples/timm_zoo.py), calibrated 16-bit, folded
for each board by the stream folding (backends/hls/stream_fold.py): estimated frames/s, resources
against 70% of the board, and the C-sim argmax agreement with float (ONNX Runtime) on N inputs
(default 256; the test suite uses fewer). All Kiln figures are estimates (no synthesis here), at the
board's clock in boards/*.toml (pynq-z2: 100 MHz, zcu102: 200 MHz).

Published MLPerf Tiny v0.7 image-classification results on the same board (open division,
hls4ml-finn submission, mlcommons/tiny_results_v0.7, open/hls4ml-finn/results/pynq-z2/ic/*/),
synthesised, quantized and measured on the board through the MLPerf Tiny harness; Borras et al.,
"Open-source FPGA-ML codesign for the MLPerf Tiny Benchmark", arXiv:2206.11791 (2022):

    hls4ml RN07 (ResNet)   Pynq-Z2: median throughput 36.596 inf./s, Top-1 83.5%
    FINN CNV-W1A1          Pynq-Z2: median throughput 661.473 inf./s, Top-1 84.5%

Kiln's ResNet-8 here has seeded random weights (no CIFAR-10 training: no Top-1), 16-bit types,
and an estimated (not measured) rate: a comparison of scale, not a benchmark result.

    python bench/bench_stream.py [N] [resnet8|mobilenetv3|mobilenetv3_10|deit32|deit32p16|mobilevit ...]

mobilenetv3_10: the same MobileNetV3-small with num_classes=10 (a CIFAR-size head: 578,474
weights, 9.3 Mbit at 16 bits, where the 1,000-class head alone is 1.32M weights).
DeiT-tiny at 32x32 (timm deit_tiny_patch16_224 with patch_size=4, img_size=32: 65 tokens x 192) and
MobileViT-XXS at 64x64 (timm mobilevit_xxs, dynamo export) are compiled for alveo-u250 (URAM:
backends/hls/memory.py) and zcu102; their C-sim is compared on N inputs (default 16 for these) by argmax
and by the largest error over the float logits' scale (max |logit|).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import kiln
from kiln.board import get_board

PUBLISHED = [
    ("hls4ml RN07 (ResNet), MLPerf Tiny v0.7, Pynq-Z2, measured", 36.596, "83.5%"),
    ("FINN CNV-W1A1, MLPerf Tiny v0.7, Pynq-Z2, measured", 661.473, "84.5%"),
]
CITATION = ("Borras et al., \"Open-source FPGA-ML codesign for the MLPerf Tiny Benchmark\", arXiv:2206.11791 "
            "(2022); mlcommons/tiny_results_v0.7 open/hls4ml-finn/results/pynq-z2/ic/")
BOARDS = ("zcu102", "pynq-z2")


def resnet8(tmp: Path):
    from examples.resnet8 import export, samples

    return "ResNet-8", str(export(tmp / "resnet8.onnx")), samples(64, seed=7), lambda n: samples(n, seed=3)


def mobilenetv3(tmp: Path):
    from examples.timm_zoo import export, samples

    src = str(export("mobilenetv3_small_050", tmp / "mnv3.onnx", size=64, sharpen=True))
    return "MobileNetV3-small-050 64x64", src, samples(64, 64, seed=7), lambda n: samples(64, n, seed=3)


def mobilenetv3_10(tmp: Path):
    from examples.timm_zoo import export, samples

    src = str(export("mobilenetv3_small_050", tmp / "mnv3_10.onnx", size=64, sharpen=True, num_classes=10))
    return "MobileNetV3-small-050/10-class 64x64", src, samples(64, 64, seed=7), lambda n: samples(64, n, seed=3)


def deit32(tmp: Path, patch: int = 4):
    """DeiT-tiny at 32x32: patch 4 (8 x 8 patches + CLS = 65 tokens, issue 13's case) or timm's 16 (5 tokens)."""
    from dataclasses import replace

    import examples.timm_zoo as zoo

    spec = zoo.ZOO["deit_tiny_patch16_224"]
    zoo.ZOO[spec.name] = replace(spec, kwargs=(("patch_size", patch),))
    try:
        src = str(zoo.export(spec.name, tmp / f"deit32p{patch}.onnx", size=32, sharpen=True))
    finally:
        zoo.ZOO[spec.name] = spec
    return (f"DeiT-tiny 32x32 (patch {patch})", src, zoo.samples(32, 64, seed=7),
            lambda n: zoo.samples(32, n, seed=3), (("alveo-u250", True),))


def mobilevit(tmp: Path):
    from examples.timm_zoo import export, samples

    src = str(export("mobilevit_xxs", tmp / "mobilevit.onnx", size=64, sharpen=True, dynamo=True))
    return ("MobileViT-XXS 64x64", src, samples(64, 64, seed=7), lambda n: samples(64, n, seed=3),
            (("alveo-u250", True), ("zcu102", False)))   # (board, C-sim it)


def weight_bits(src: str, bits: int = 16) -> int:
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).size for t in onnx.load(src).graph.initializer) * bits


def run(model, n: int, tmp: Path) -> None:
    name, src, cal, inputs, *boards = model(tmp)
    x = inputs(n)
    for board, simulate in (boards[0] if boards else [(b, True) for b in BOARDS]):
        out = tmp / f"{name.split()[0].replace('/', '_')}-{board}"
        fits = True
        try:
            p = kiln.compile(src, board=board, calibrate=cal, bits=16, io="stream", output_dir=out)
        except kiln.KilnError as err:
            fits = False
            print(f"{name} {board}: does not fit (estimate): {str(err).splitlines()[0][:300]}")
            p = kiln.compile(src, board=board, calibrate=cal, bits=16, io="stream", output_dir=out, fit_check=False)
        total = json.loads((p.path / "kiln_estimate.json").read_text())["total"]
        bram_bits = get_board(board).resources["bram_36k"] * 36864
        if not simulate:
            print(f"{name} {board} stream 16-bit{'' if fits else ' (over budget)'}: II {total['ii']:,} cycles, "
                  f"{total['frames_per_s']:,.1f} frames/s; DSP {total['dsp']:,}, LUT {total['lut']:,}, FF "
                  f"{total['ff']:,}, BRAM18K {total['bram']:,}, URAM {total.get('uram', 0):,} (estimates; limits "
                  f"{total['limits']}); not C-simulated")
            continue
        t = time.time()
        y, ref = p.csim(x), p.reference(x)[0]
        agree = np.mean(y.reshape(len(x), -1).argmax(1) == ref.reshape(len(x), -1).argmax(1))
        scaled = float(np.max(np.abs(y.reshape(ref.shape) - ref)) / np.max(np.abs(ref)))
        print(f"{name} {board} stream 16-bit{'' if fits else ' (over budget: --no-fit-check)'}: II {total['ii']:,} "
              f"cycles, {total['frames_per_s']:,.1f} frames/s at {total['clock_mhz']:g} MHz, latency "
              f"{total['latency_ns'] / 1e3:,.1f} us; DSP {total['dsp']:,}, LUT {total['lut']:,}, FF {total['ff']:,}, "
              f"BRAM18K {total['bram']:,}, URAM {total.get('uram', 0):,} (estimates; limits {total['limits']}); argmax "
              f"agreement {agree:.2%} on {n} inputs, max error / max |logit| {scaled:.2e} (C-sim {time.time() - t:.0f} s)")
        if not fits:
            print(f"  weights: {weight_bits(src) / 1e6:.2f} Mbit at 16 bits; the board's BRAM: {bram_bits / 1e6:.2f} Mbit "
                  f"({0.7 * bram_bits / 1e6:.2f} Mbit in the 70% budget)")


def main(argv: list[str]) -> None:
    names = [a for a in argv if not a.isdigit()] or ["resnet8", "mobilenetv3", "mobilenetv3_10"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    models = {"resnet8": resnet8, "mobilenetv3": mobilenetv3, "mobilenetv3_10": mobilenetv3_10, "deit32": deit32,
              "mobilevit": mobilevit, "deit32p16": lambda tmp: deit32(tmp, 16)}
    for name in names:
        default = 16 if name in ("deit32", "deit32p16", "mobilevit") else 256
        run(models[name], int(argv[0]) if argv and argv[0].isdigit() else default, tmp)
    for what, fps, top1 in PUBLISHED:
        print(f"{what}: {fps:,.3f} inf./s, Top-1 {top1}")
    print(CITATION)


if __name__ == "__main__":
    main(sys.argv[1:])
