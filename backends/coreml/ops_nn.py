"""Lowerings of the layer ops: Gemm/MatMul, Conv, pooling, LayerNorm/BatchNorm/InstanceNorm.

Gemm with a constant 2-D weight becomes MIL ``linear``; BatchNormalization (inference) is a
constant per-channel ``mul`` + ``add`` (so value inference covers it); Conv and the pools
have no value inference in coremltools, which the Linux check reports.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.coreml.lower import attr, lowers


def _mb():
    from coremltools.converters.mil import Builder as mb

    return mb


@lowers("Gemm")
def gemm(lw, node):
    mb = _mb()
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    trans_a, trans_b = bool(attr(node, "transA", 0)), bool(attr(node, "transB", 0))
    bval = lw.value(b)
    cval = lw.value(c) if c is not None else None
    if (isinstance(bval, np.ndarray) and not trans_a and alpha == 1.0 and beta == 1.0
            and (cval is None or isinstance(cval, np.ndarray) and cval.size == bval.shape[0 if trans_b else 1])):
        weight = bval if trans_b else bval.T
        if b.name in lw.quantized_weights:
            w = lw.var(b)  # a dequantized constexpr keeps its integer storage
            if not trans_b:
                w = mb.transpose(x=w, perm=[1, 0])
        else:
            w = mb.const(val=np.ascontiguousarray(weight.astype(np.float32)))
        bias = np.zeros(weight.shape[0], np.float32) if cval is None else cval.reshape(-1).astype(np.float32)
        return [mb.linear(x=lw.var(a), weight=w, bias=bias)]
    y = mb.matmul(x=lw.var(a), y=lw.var(b), transpose_x=trans_a, transpose_y=trans_b)
    if alpha != 1.0:
        y = mb.mul(x=y, y=np.float32(alpha))
    if c is not None:
        cv = lw.var(c)
        y = mb.add(x=y, y=cv if beta == 1.0 else mb.mul(x=cv, y=np.float32(beta)))
    return [y]


@lowers("MatMul")
def matmul(lw, node):
    return [_mb().matmul(x=lw.var(node.inputs[0]), y=lw.var(node.inputs[1]))]


def _auto_pad(node):
    return None if attr(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID") else "auto_pad SAME_* (export with explicit pads)"


def _pads(node, spatial: int) -> list[int]:
    pads = list(attr(node, "pads", None) or [0] * (2 * spatial))
    out = []
    for i in range(spatial):  # ONNX: all begins, then all ends; MIL: begin, end per axis
        out += [int(pads[i]), int(pads[i + spatial])]
    return out


@lowers("Conv", check=_auto_pad)
def conv(lw, node):
    mb = _mb()
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    spatial = len(lw.shape(x)) - 2
    kwargs = dict(x=lw.var(x), weight=lw.var(w), strides=[int(s) for s in attr(node, "strides", None) or [1] * spatial],
                  pad_type="custom", pad=_pads(node, spatial),
                  dilations=[int(d) for d in attr(node, "dilations", None) or [1] * spatial],
                  groups=int(attr(node, "group", 1)))
    if b is not None:
        kwargs["bias"] = lw.var(b)
    return [mb.conv(**kwargs)]


def _pool_check(node):
    reason = _auto_pad(node)
    if reason:
        return reason
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        return "MaxPool indices output"
    if any(d != 1 for d in attr(node, "dilations", None) or []):
        return "dilated pooling"
    return None


@lowers("AveragePool", "MaxPool", check=_pool_check)
def pool(lw, node):
    mb = _mb()
    x = node.inputs[0]
    spatial = len(lw.shape(x)) - 2
    kernel = [int(k) for k in attr(node, "kernel_shape")]
    kwargs = dict(x=lw.var(x), kernel_sizes=kernel, strides=[int(s) for s in attr(node, "strides", None) or [1] * spatial],
                  pad_type="custom", pad=_pads(node, spatial), ceil_mode=bool(attr(node, "ceil_mode", 0)))
    if node.op_type == "AveragePool":
        return [mb.avg_pool(exclude_padding_from_average=not attr(node, "count_include_pad", 0), **kwargs)]
    return [mb.max_pool(**kwargs)]


@lowers("GlobalAveragePool", "GlobalMaxPool")
def global_pool(lw, node):
    mb = _mb()
    axes = list(range(2, len(lw.shape(node.inputs[0]))))
    op = mb.reduce_mean if node.op_type == "GlobalAveragePool" else mb.reduce_max
    return [op(x=lw.var(node.inputs[0]), axes=axes, keep_dims=True)]


@lowers("LayerNormalization")
def layer_norm(lw, node):
    mb = _mb()
    x = node.inputs[0]
    rank = len(lw.shape(x))
    axis = int(attr(node, "axis", -1)) % rank
    norm_shape = lw.shape(x)[axis:]
    gamma = lw.static(node.inputs[1], "scale", node)
    beta = lw.static(node.inputs[2], "bias", node) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(norm_shape)
    y = mb.layer_norm(x=lw.var(x), axes=list(range(axis, rank)),
                      gamma=np.broadcast_to(gamma, norm_shape).astype(np.float32),
                      beta=np.broadcast_to(beta, norm_shape).astype(np.float32),
                      epsilon=float(attr(node, "epsilon", 1e-5)))
    return [y] + [None] * (len(node.outputs) - 1)


@lowers("BatchNormalization")
def batch_norm(lw, node):
    mb = _mb()
    x = node.inputs[0]
    scale, bias, mean, var = (lw.static(v, what, node).astype(np.float64)
                              for v, what in zip(node.inputs[1:5], ("scale", "bias", "mean", "var")))
    mul = scale / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
    add = bias - mean * mul
    shape = [1, -1] + [1] * (len(lw.shape(x)) - 2)
    y = mb.mul(x=lw.var(x), y=mul.reshape(shape).astype(np.float32))
    return [mb.add(x=y, y=add.reshape(shape).astype(np.float32))] + [None] * (len(node.outputs) - 1)


@lowers("InstanceNormalization")
def instance_norm(lw, node):
    mb = _mb()
    gamma = lw.static(node.inputs[1], "scale", node).astype(np.float32)
    beta = lw.static(node.inputs[2], "bias", node).astype(np.float32)
    return [mb.instance_norm(x=lw.var(node.inputs[0]), gamma=gamma, beta=beta,
                             epsilon=float(attr(node, "epsilon", 1e-5)))]
