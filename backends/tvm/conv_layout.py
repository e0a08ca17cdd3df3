"""Relax passes: every conv2d in the NHWC / OHWI layout, the layout CPU boards favour.

In ONNX's NCHW a conv kernel's contiguous output axis is a row of pixels (14 at a 14x14
stage: a 7-wide vector at AVX2's 8 lanes, a ragged tile) and its weight is a broadcast per
output channel: PoolFormer's 320 -> 1280 MLP conv ran at ~30 GMAC/s (2.6 ms on two cores).
In NHWC the vector axis is the output channels (whole vectors in every timm model) and the
weight, a constant, is read along them: ``pack_weights.py`` packs it into panels as it does a
dense's (the conv then 1.9 ms). Relax's ``ConvertLayout`` carries the layout through the
elementwise, pooling and normalization ops that follow and inserts a transpose where an op
cannot follow (a reshape into tokens); ``FoldConstant`` transposes the weights once, at
compile time. Measured untuned on this 2-core AVX2 machine (one bench_tvm run, TVM / ORT):
PoolFormer-S12 1.85 -> 1.19x, EfficientFormer-L1 1.72 -> 1.13x, ConvNeXt-atto 1.61 -> 1.13x,
MobileNetV3 1.61 -> 0.83x; MobileViT-XXS 1.82 -> 1.98x (its unfold/fold reshapes each take
a transpose). The sums are the same products in the same order; outputs stay within 1e-6
of ONNX Runtime relative to their scale.
"""

from __future__ import annotations


def conv_layout_passes(layout: str | None = "NHWC") -> list:
    """ConvertLayout (conv2d to NHWC / OHWI), then Normalize and FoldConstant; [] for
    ``layout=None`` (ONNX's NCHW kept)."""
    from tvm import relax

    if layout is None:
        return []
    if layout != "NHWC":
        raise ValueError(f"conv layout {layout!r}: only NHWC (or None, ONNX's NCHW)")
    return [relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
            relax.transform.Normalize(), relax.transform.FoldConstant()]
