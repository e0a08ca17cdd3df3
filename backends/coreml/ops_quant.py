"""Q/DQ ops and QONNX weight quantizers on the CoreML backend.

- ``DequantizeLinear`` of a constant int8/uint8 tensor becomes ``constexpr_affine_dequantize``:
  the package stores the integers and the scale, CoreML dequantizes at load time. (int32
  biases are dequantized here: constexpr_affine_dequantize takes 8-bit data only.)
- ``QuantizeLinear`` -> ``DequantizeLinear`` on a computed tensor (an activation) is the same
  fake quantization ONNX Runtime computes: round(x / s) + zp clipped to the integer range, then
  (q - zp) * s, in float MIL ops.
- QONNX ``Quant`` on an initializer is folded to float weights by Kiln's frontend; the original
  model says which integers they came from (``qonnx_weight_grid``), so those constants are
  stored as integers too, when they lie exactly on the quantizer's 8-bit grid.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from kiln.backends.coreml.lower import attr, lowers

_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int32): (-2 ** 31, 2 ** 31 - 1)}


def _mb():
    from coremltools.converters.mil import Builder as mb

    return mb


def _params(lw, node, rank):
    """(scale, zero point, axis, broadcast shape) of a Q/DQ node."""
    scale = lw.static(node.inputs[1], "scale", node).astype(np.float32)
    zp = lw.static(node.inputs[2], "zero point", node) if len(node.inputs) > 2 and node.inputs[2] else None
    axis = int(attr(node, "axis", 1)) % max(rank, 1)
    shape = [1] * rank
    if scale.size > 1:
        shape[axis] = scale.size
    return scale, zp, axis, shape


def _qdq_check(node):
    return "blocked quantization (block_size)" if attr(node, "block_size", 0) else None


@lowers("DequantizeLinear", check=_qdq_check)
def dequantize(lw, node):
    mb = _mb()
    x = lw.value(node.inputs[0])
    rank = len(lw.shape(node.inputs[0]))
    scale, zp, axis, shape = _params(lw, node, rank)
    if isinstance(x, np.ndarray):
        zp = np.zeros((), x.dtype) if zp is None else zp.astype(x.dtype)
        if x.dtype in (np.int8, np.uint8) and not lw.constant_inputs:
            return [mb.constexpr_affine_dequantize(quantized_data=x, zero_point=zp.reshape(-1) if zp.size > 1 else
                                                   zp.reshape(()), scale=scale.reshape(-1) if scale.size > 1 else
                                                   scale.reshape(()), axis=axis)]
        real = (x.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)
        return [real.astype(np.float32)]  # a constant (an int32 bias, or the value-inference walk)
    zp = np.zeros(shape, np.float32) if zp is None else zp.astype(np.float32).reshape(shape)
    y = mb.sub(x=x, y=zp) if np.any(zp) else x
    return [mb.mul(x=y, y=scale.reshape(shape))]


@lowers("QuantizeLinear", check=_qdq_check)
def quantize(lw, node):
    """The integers as float values (exact up to 2**24); DequantizeLinear takes them back."""
    mb = _mb()
    rank = len(lw.shape(node.inputs[0]))
    scale, zp, axis, shape = _params(lw, node, rank)
    out_dtype = node.outputs[0].dtype.numpy() if node.outputs[0].dtype is not None else np.dtype(np.uint8)
    lo, hi = _RANGE.get(np.dtype(out_dtype), (0, 255))
    y = mb.round(x=mb.real_div(x=lw.var(node.inputs[0]), y=scale.reshape(shape)))
    if zp is not None and np.any(zp):
        y = mb.add(x=y, y=zp.astype(np.float32).reshape(shape))
    return [mb.clip(x=y, alpha=np.float32(lo), beta=np.float32(hi))]


def qonnx_weight_grid(original: onnx.ModelProto) -> dict:
    """Output name of each QONNX ``Quant`` applied to an initializer -> (int8/uint8 integers,
    scale, zero point, axis), for quantizers of at most 8 bits whose dequantized values are
    what Kiln folded (the caller checks that against the IR constant)."""
    inits = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    grid = {}
    for node in original.graph.node:
        if node.op_type != "Quant" or not node.domain.startswith("qonnx") or node.input[0] not in inits:
            continue
        try:
            w, s, z, bits = (inits[n] for n in node.input[:4])
        except KeyError:
            continue
        if float(bits) > 8 or s.size != 1 or z.size != 1:
            continue
        signed = next((a.i for a in node.attribute if a.name == "signed"), 1)
        narrow = next((a.i for a in node.attribute if a.name == "narrow"), 0)
        b = int(bits)
        lo, hi = (-(2 ** (b - 1)) + narrow, 2 ** (b - 1) - 1) if signed else (0, 2 ** b - 1 - narrow)
        dtype = np.int8 if signed else np.uint8
        grid[node.output[0]] = (float(s), float(z), lo, hi, dtype)
    return grid


def integer_weights(model, original: onnx.ModelProto) -> dict:
    """IR initializer name -> (q, scale, zero point, axis) for QONNX weights on an exact 8-bit grid."""
    out = {}
    for name, (s, z, lo, hi, dtype) in qonnx_weight_grid(original).items():
        v = model.graph.initializers.get(name)
        if v is None or v.const_value is None:
            continue
        w = v.const_value.numpy().astype(np.float64)
        q = np.round(w / s + z)
        if q.min() < lo or q.max() > hi or not np.array_equal(((q - z) * s).astype(np.float32), w.astype(np.float32)):
            continue
        out[name] = (q.astype(dtype), np.float32(s), np.array(z, dtype=dtype).reshape(()), 0)
    return out
