"""Lowerings of elementwise, activation and shape ONNX ops onto MIL ops.

Reshape-like ops (Reshape, Flatten, Squeeze, Unsqueeze) reshape to the output shape Kiln's
frontend inferred (static, batch 1), so 0 / -1 entries and axes need no re-derivation here.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.coreml.lower import attr, lowers

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "real_div", "Pow": "pow", "Max": "maximum",
           "Min": "minimum"}
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Sqrt": "sqrt", "Erf": "erf",
          "Abs": "abs", "Neg": None, "Round": "round", "Floor": "floor", "Ceil": "ceil", "Reciprocal": "inverse",
          "Identity": "identity"}


def _mb():
    from coremltools.converters.mil import Builder as mb

    return mb


def _float_binary(node):
    if node.op_type == "Div" and node.inputs[0].dtype is not None and not node.inputs[0].dtype.is_floating_point():
        return "integer division"
    return None


@lowers(*_BINARY, check=_float_binary)
def binary(lw, node):
    mb = _mb()
    a, b = node.inputs
    return [getattr(mb, _BINARY[node.op_type])(x=lw.var(a), y=lw.var(b))]


@lowers(*_UNARY)
def unary(lw, node):
    mb = _mb()
    x = lw.var(node.inputs[0])
    if node.op_type == "Neg":
        return [mb.mul(x=x, y=np.float32(-1))]
    return [getattr(mb, _UNARY[node.op_type])(x=x)]


@lowers("LeakyRelu")
def leaky_relu(lw, node):
    return [_mb().leaky_relu(x=lw.var(node.inputs[0]), alpha=float(attr(node, "alpha", 0.01)))]


@lowers("HardSigmoid")
def hard_sigmoid(lw, node):
    return [_mb().sigmoid_hard(x=lw.var(node.inputs[0]), alpha=float(attr(node, "alpha", 0.2)),
                               beta=float(attr(node, "beta", 0.5)))]


@lowers("HardSwish")
def hard_swish(lw, node):
    mb = _mb()
    x = lw.var(node.inputs[0])
    return [mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=1.0 / 6, beta=0.5))]


def _gelu_check(node):
    return None if attr(node, "approximate", "none") in ("none", "tanh") else "unknown approximate attribute"


@lowers("Gelu", check=_gelu_check)
def gelu(lw, node):
    mode = "TANH_APPROXIMATION" if attr(node, "approximate", "none") == "tanh" else "EXACT"
    return [_mb().gelu(x=lw.var(node.inputs[0]), mode=mode)]


@lowers("Softmax")
def softmax(lw, node):
    x = node.inputs[0]
    if lw.opset < 13:  # softmax over the flattened trailing axes: only the last axis is the same
        axis = attr(node, "axis", 1)
        if axis not in (-1, len(lw.shape(x)) - 1):
            raise_unsupported(node, "Softmax before opset 13 over several axes")
        axis = -1
    else:
        axis = attr(node, "axis", -1)
    return [_mb().softmax(x=lw.var(x), axis=axis)]


@lowers("Clip")
def clip(lw, node):
    mb = _mb()
    lo = lw.static(node.inputs[1], "min", node) if len(node.inputs) > 1 else attr(node, "min")
    hi = lw.static(node.inputs[2], "max", node) if len(node.inputs) > 2 else attr(node, "max")
    lo = -3.4e38 if lo is None else float(np.asarray(lo))
    hi = 3.4e38 if hi is None else float(np.asarray(hi))
    return [mb.clip(x=lw.var(node.inputs[0]), alpha=np.float32(lo), beta=np.float32(hi))]


@lowers("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(lw, node):
    return [_mb().reshape(x=lw.var(node.inputs[0]), shape=np.array(lw.shape(node.outputs[0]), np.int32))]


@lowers("Transpose")
def transpose(lw, node):
    rank = len(lw.shape(node.inputs[0]))
    perm = attr(node, "perm", None) or list(range(rank))[::-1]
    return [_mb().transpose(x=lw.var(node.inputs[0]), perm=[int(p) for p in perm])]


@lowers("Concat")
def concat(lw, node):
    return [_mb().concat(values=[lw.var(v) for v in node.inputs], axis=int(attr(node, "axis")))]


@lowers("Split")
def split(lw, node):
    x = node.inputs[0]
    axis = int(attr(node, "axis", 0))
    sizes = lw.static(node.inputs[1], "split sizes", node) if len(node.inputs) > 1 and node.inputs[1] else None
    if sizes is None:
        sizes = attr(node, "split", None)
    if sizes is None:
        sizes = [lw.shape(o)[axis] for o in node.outputs]
    outs = _mb().split(x=lw.var(x), split_sizes=np.array(sizes, np.int32), axis=axis)
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


@lowers("Slice")
def slice_(lw, node):
    x = node.inputs[0]
    shape = lw.shape(x)
    rank = len(shape)
    starts = lw.static(node.inputs[1], "starts", node)
    ends = lw.static(node.inputs[2], "ends", node)
    axes = lw.static(node.inputs[3], "axes", node) if len(node.inputs) > 3 and node.inputs[3] else range(len(starts))
    steps = lw.static(node.inputs[4], "steps", node) if len(node.inputs) > 4 and node.inputs[4] else [1] * len(starts)
    begin, end, stride = [0] * rank, list(shape), [1] * rank
    end_mask = [False] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) % rank
        b_, e_, st_ = slice(int(s), int(e), int(st)).indices(shape[a])
        begin[a], end[a], stride[a] = b_, e_, st_
        if st_ < 0 and e_ < 0:
            end_mask[a] = True
    return [_mb().slice_by_index(x=lw.var(x), begin=np.array(begin, np.int32), end=np.array(end, np.int32),
                                 stride=np.array(stride, np.int32), end_mask=end_mask)]


@lowers("Gather")
def gather(lw, node):
    mb = _mb()
    data, indices = node.inputs
    axis = int(attr(node, "axis", 0))
    idx = lw.value(indices)
    if isinstance(idx, np.ndarray):
        dim = lw.shape(data)[axis]
        idx = np.where(idx < 0, idx + dim, idx).astype(np.int32)
        if idx.ndim == 0:
            idx = int(idx)
    else:
        idx = lw.var(indices)
    return [mb.gather(x=lw.var(data), indices=idx, axis=axis)]


def _reduce_axes(lw, node):
    if len(node.inputs) > 1 and node.inputs[1] is not None:  # an input since opset 18 (ReduceSum: 13)
        axes = lw.static(node.inputs[1], "axes", node)
    else:
        axes = attr(node, "axes", None)
    if axes is None or len(axes) == 0:
        if attr(node, "noop_with_empty_axes", 0):
            return None
        axes = range(len(lw.shape(node.inputs[0])))
    return [int(a) for a in axes]


@lowers("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(lw, node):
    mb = _mb()
    axes = _reduce_axes(lw, node)
    x = lw.var(node.inputs[0])
    if axes is None:
        return [mb.identity(x=x)]
    op = {"ReduceMean": mb.reduce_mean, "ReduceSum": mb.reduce_sum, "ReduceMax": mb.reduce_max,
          "ReduceMin": mb.reduce_min}[node.op_type]
    return [op(x=x, axes=axes, keep_dims=bool(attr(node, "keepdims", 1)))]


def raise_unsupported(node, what):
    from kiln.errors import KilnError

    raise KilnError(f"node {node.name!r} ({node.op_type}): {what} is not supported by the CoreML backend")
