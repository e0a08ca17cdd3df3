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

``relax.clip`` (ReLU6, HardSigmoid, HardSwish: MobileNetV3) has no layout rule: ConvertLayout
wraps each clip in two transposes, which keeps it and everything after it out of the conv's
fused epilogue (MobileNetV3-small's HardSwish kernels, transposes included: ~10% of its time).
``clip_as_min_max`` rewrites it first as ``minimum(maximum(x, lo), hi)`` against scalar
constants: elementwise ops that the layout follows (and ONNX Clip's own lowering, a
``call_tir`` of TOPI's maximum / minimum that the layout cannot see into, the same way).
"""

from __future__ import annotations


def conv_layout_passes(layout: str | None = "NHWC") -> list:
    """FoldConstant and clip_as_min_max, ConvertLayout (conv2d to NHWC / OHWI), then Normalize
    and FoldConstant; [] for ``layout=None`` (ONNX's NCHW kept)."""
    from tvm import relax

    if layout is None:
        return []
    if layout != "NHWC":
        raise ValueError(f"conv layout {layout!r}: only NHWC (or None, ONNX's NCHW)")
    return [relax.transform.FoldConstant(), clip_as_min_max(),
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
            relax.transform.Normalize(), relax.transform.FoldConstant()]


def _number(bound):
    """A clip bound's value: an IntImm / FloatImm (0.27) or a PrimValue holding one; else None."""
    value = getattr(bound, "value", None)
    if isinstance(value, (int, float)):
        return value
    value = getattr(value, "value", None)
    return value if isinstance(value, (int, float)) else None


def clip_as_min_max():
    """A module pass rewriting every ``relax.clip(x, lo, hi)`` of the Relax functions as
    ``minimum(maximum(x, lo), hi)`` with ``lo`` and ``hi`` scalar constants of x's dtype, and
    every TE-emitted maximum / minimum against a scalar constant as the Relax op."""
    import re

    import numpy as np
    import tvm

    from kiln.backends.tvm.fast_math import relax_functions_pass
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor

    @expr_functor.mutator
    class _ClipAsMinMax(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op.same_as(call_tir):
                return _te_bound_as_op(call, self.lookup_binding)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.clip"):
                return call
            x, lo, hi = call.args
            dtype = str(x.ty.dtype)
            bounds = [_number(b) for b in (lo, hi)]
            if None in bounds:
                return call
            lo, hi = (relax.const(np.array(b, dtype=dtype)) for b in bounds)
            return relax.op.minimum(relax.op.maximum(x, lo), hi)

    call_tir = tvm.ir.Op.get("relax.call_tir")

    def _te_bound_as_op(call, lookup):
        """``call_tir(maximum|minimum, (x, scalar constant))``, as TVM's ONNX importer emits an
        ONNX Clip with its bounds as inputs (ReLU6 since opset 11), as ``relax.maximum|minimum``."""
        callee, args = call.args[0], getattr(call.args[1], "fields", None)
        op = re.fullmatch(r"(maximum|minimum)\d*", getattr(callee, "name_hint", "") or "")
        if op is None or args is None or len(args) != 2:
            return call
        bound = args[1]
        if isinstance(bound, relax.Var):  # bound to a folded constant (FoldConstant runs first)
            bound = lookup(bound)
        if not isinstance(bound, tvm.ir.expr.Constant) or bound.value.numpy().ndim != 0:
            return call
        return getattr(relax.op, op.group(1))(args[0], bound)

    return relax_functions_pass(_ClipAsMinMax, "KilnClipAsMinMax")
