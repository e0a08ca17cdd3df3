"""Index tracing through layout ops, for the attention fusion (passes/fuse_attention.py).

The data-movement ops between attention's projections and its MatMuls vary with the exporter
and opset, so they are not matched by sequence: an array of element indices is pushed through
them with numpy, exactly as ONNX defines each op, and the result is compared with the head
split / merge the fused layer computes. Also: the scalar scale factors (Mul/Div by a constant)
met on the way, and the walk from a value back to the kiln.Dense projection it comes from.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.annotations import is_op
from kiln.ir_utils import KILN_DOMAIN, attr, const_array

LAYOUT_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Gather", "Slice", "Split"}
SCALE_OPS = {"Mul", "Div"}


def std_op(node: ir.Node | None, ops) -> bool:
    return is_op(node, *ops)


def is_dense(node: ir.Node | None) -> bool:
    return is_op(node, "Dense", domain=KILN_DOMAIN)


def shape_of(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(int(d) for d in value.shape)


def scalar_factor(node: ir.Node, data: ir.Value) -> float | None:
    """The factor by which a Mul/Div with a constant scalar scales ``data``, else None."""
    if len(node.inputs) != 2 or shape_of(node.outputs[0]) != shape_of(data):
        return None
    other = node.inputs[1] if node.inputs[0] is data else node.inputs[0] if node.inputs[1] is data else None
    if other is None or other is data or (node.op_type == "Div" and other is node.inputs[0]):
        return None
    c = const_array(other)
    if c is None or c.size != 1 or not np.issubdtype(c.dtype, np.floating):
        return None
    c = float(c.reshape(-1)[0])
    if not math.isfinite(c) or c == 0.0:
        return None
    return c if node.op_type == "Mul" else 1.0 / c


def data_input(node: ir.Node) -> ir.Value | None:
    """The run-time input of a layout or scale node (None when it has none or several)."""
    if std_op(node, SCALE_OPS):
        runtime = [v for v in node.inputs if v is not None and const_array(v) is None]
        return runtime[0] if len(runtime) == 1 else None
    return node.inputs[0] if node.inputs else None


def trace_indices(node: ir.Node, idx: np.ndarray, out: ir.Value) -> np.ndarray | None:
    """Push an array of element indices through one layout/scale node (ONNX semantics)."""
    shape = shape_of(out)
    if shape is None:
        return None
    op = node.op_type
    try:
        if op in SCALE_OPS or op == "BatchNormalization":
            result = idx
        elif op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"):
            result = idx.reshape(shape) if idx.size == math.prod(shape) else None
        elif op == "Transpose":
            perm = attr(node, "perm")
            result = idx.transpose(list(perm) if perm is not None else None)
        elif op == "Gather":
            indices = const_array(node.inputs[1])
            if indices is None or not np.issubdtype(indices.dtype, np.integer):
                return None
            axis = attr(node, "axis", 0)
            axis = axis + idx.ndim if axis < 0 else axis
            n = idx.shape[axis]
            if np.any(indices < -n) or np.any(indices >= n):
                return None
            result = np.take(idx, np.where(indices < 0, indices + n, indices), axis=axis)
        elif op == "Slice":
            result = _slice(node, idx)
        elif op == "Split":
            result = _split(node, idx, out)
        else:
            return None
    except (ValueError, IndexError, TypeError):
        return None
    return result if result is not None and result.shape == shape else None


def _slice(node: ir.Node, idx: np.ndarray) -> np.ndarray | None:
    consts = [const_array(v) if v is not None else None for v in node.inputs[1:]]
    if any(v is not None and c is None for v, c in zip(node.inputs[1:], consts)) or len(consts) < 2:
        return None
    starts, ends = consts[0].reshape(-1), consts[1].reshape(-1)
    axes = consts[2].reshape(-1) if len(consts) > 2 and consts[2] is not None else np.arange(len(starts))
    steps = consts[3].reshape(-1) if len(consts) > 3 and consts[3] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * idx.ndim
    for start, end, axis, step in zip(*(map(int, a) for a in (starts, ends, axes, steps))):
        if step == 0:
            return None
        axis = axis + idx.ndim if axis < 0 else axis
        n = idx.shape[axis]
        start, end = start + n if start < 0 else start, end + n if end < 0 else end
        if step > 0:  # ONNX clamps starts/ends to [0, n] (negative steps: [0, n-1] and [-1, n-1])
            start, end = min(max(start, 0), n), min(max(end, 0), n)
        else:
            start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
        index[axis] = slice(start, end if end >= 0 else None, step)
    return idx[tuple(index)]


def _split(node: ir.Node, idx: np.ndarray, out: ir.Value) -> np.ndarray | None:
    which = next(i for i, o in enumerate(node.outputs) if o is out)
    axis = attr(node, "axis", 0)
    axis = axis + idx.ndim if axis < 0 else axis
    sizes = const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if sizes is None and attr(node, "split") is not None:
        sizes = np.array(attr(node, "split"))
    if sizes is None:
        shapes = [shape_of(o) for o in node.outputs]
        if any(s is None for s in shapes):
            return None
        sizes = np.array([s[axis] for s in shapes])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return np.take(idx, np.arange(offsets[which], offsets[which + 1]), axis=axis)


class LayoutPath:
    """A chain of layout/scale nodes from a source value to a target value: (node, its output on the path)."""

    def __init__(self, source: ir.Value, steps: list[tuple[ir.Node, ir.Value]]):
        self.source, self.steps = source, steps

    @property
    def nodes(self) -> list[ir.Node]:
        return [node for node, _ in self.steps]

    def trace(self) -> tuple[np.ndarray, float] | None:
        """(element indices of the target into the flat source, product of the scalar factors)."""
        shape = shape_of(self.source)
        if shape is None:
            return None
        idx = np.arange(math.prod(shape)).reshape(shape)
        value, scale = self.source, 1.0
        for node, out in self.steps:
            if std_op(node, SCALE_OPS):
                scale *= scalar_factor(node, value)
            idx = trace_indices(node, idx, out)
            if idx is None:
                return None
            value = out
        return idx, scale

    def column_affine(self, row_len: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(a, c) per column of the source's rows such that the BatchNormalizations on the path compute
        x * a + c (ones/zeros without any), else None: each must read the projection's columns as its
        channels ([N, C] after a flat-order Flatten, as timm's LeViT LinearNorm writes it) and come before
        every scalar factor (those are applied to the whole path)."""
        shape = shape_of(self.source)
        a, c = np.ones(row_len), np.zeros(row_len)
        if shape is None:
            return None
        idx, scaled = np.arange(math.prod(shape)).reshape(shape), False
        for node, out in self.steps:
            if std_op(node, SCALE_OPS):
                scaled = True
            elif std_op(node, {"BatchNormalization"}):
                params = [const_array(v) for v in node.inputs[1:5]]
                if scaled or idx.ndim != 2 or idx.shape[1] != row_len or len(params) != 4 or \
                        any(p is None or p.shape != (row_len,) for p in params) or \
                        not np.array_equal(idx % row_len, np.broadcast_to(np.arange(row_len), idx.shape)):
                    return None
                gamma, beta, mean, var = (p.astype(np.float64) for p in params)
                k = gamma / np.sqrt(var + float(attr(node, "epsilon", 1e-5)))
                a, c = a * k, c * k + beta - mean * k
            idx = trace_indices(node, idx, out)
            if idx is None:
                return None
        return a, c


def back_to_dense(value: ir.Value) -> tuple[ir.Node, LayoutPath] | None:
    """Walk producers from ``value`` through layout/scale nodes (and BatchNormalizations, see
    ``LayoutPath.column_affine``) to a kiln.Dense output."""
    steps, current = [], value
    while True:
        producer = current.producer()
        if is_dense(producer):
            return producer, LayoutPath(current, list(reversed(steps)))
        if not std_op(producer, LAYOUT_OPS | SCALE_OPS | {"BatchNormalization"}):
            return None
        if std_op(producer, {"BatchNormalization"}):  # inference form, constant parameters (LayoutPath.column_affine)
            data = producer.inputs[0]
            if len(producer.outputs) != 1 or len(producer.inputs) != 5 or \
                    any(const_array(v) is None for v in producer.inputs[1:]):
                return None
        elif std_op(producer, SCALE_OPS):
            data = data_input(producer)
            if data is None or scalar_factor(producer, data) is None:
                return None
        else:
            data = producer.inputs[0]
            # every other input must be a compile-time constant (shape, axes, indices)
            if data is None or any(v is not None and const_array(v) is None for v in producer.inputs[1:]):
                return None
        steps.append((producer, current))
        current = data


def head_split_offset(idx: np.ndarray, heads: int, tokens: int, width: int, row_len: int,
                       transposed: bool) -> int | None:
    """The column offset if idx is the head split of a [tokens, row_len] projection, else None.

    idx[h, t, d] (K^T: idx[h, d, t]) must equal t * row_len + off + h * width + d.
    """
    if idx.size != heads * tokens * width:
        return None
    idx = idx.reshape((heads, width, tokens) if transposed else (heads, tokens, width))
    off = int(idx.reshape(-1)[0])
    if off < 0 or off + heads * width > row_len:
        return None
    h, t, d = np.arange(heads)[:, None, None], np.arange(tokens), np.arange(width)
    if transposed:
        expected = t[None, None, :] * row_len + off + h * width + d[None, :, None]
    else:
        expected = t[None, :, None] * row_len + off + h * width + d[None, None, :]
    return off if np.array_equal(idx, expected) else None


def head_split_columns(idx: np.ndarray, heads: int, tokens: int, width: int, row_len: int,
                       transposed: bool, sequences: int = 1) -> np.ndarray | None:
    """The projection columns [heads * width] if idx is a head split of a [sequences * tokens, row_len]
    projection, else None.

    idx[s, h, t, d] (K^T: idx[s, h, d, t]) must equal (s * tokens + t) * row_len + col[h, d] for every sequence s
    and token t: each head reads the same columns of every row, in any order (timm's EfficientFormer/LeViT
    interleave q, k, v per head: reshape(B, N, H, -1).split([kd, kd, vd])). The contiguous split of
    ``head_split_offset`` is the case col[h, d] = off + h * width + d. With sequences > 1 the leading axes hold
    S independent sequences of ``tokens`` rows each, sequence-major (Swin's windows, MobileViT's patch pixels
    side by side in the batch axis): Q[s, h, t, d] = q[s * T + t, col[h, d]].
    """
    if idx.size != sequences * heads * tokens * width:
        return None
    idx = idx.reshape((sequences, heads, width, tokens) if transposed else (sequences, heads, tokens, width))
    if transposed:
        idx = idx.transpose(0, 1, 3, 2)
    cols = idx[:1, :, :1, :]
    if np.any(cols < 0) or np.any(cols >= row_len):
        return None
    rows = np.arange(sequences)[:, None, None, None] * tokens + np.arange(tokens)[None, None, :, None]
    if not np.array_equal(idx, cols + rows * row_len):
        return None
    return cols.reshape(-1)


def split_sequences(idx: np.ndarray, groups: int, tokens: int, width: int, row_len: int,
                    transposed: bool) -> tuple[int, np.ndarray] | None:
    """(sequences S, columns) for the first S dividing ``groups`` (the product of the leading axes) for which idx
    is the head split of S sequences of ``groups // S`` heads (``head_split_columns``), else None. S = 1 (one
    sequence, every leading axis a head) is tried first."""
    for sequences in (s for s in range(1, groups + 1) if groups % s == 0):
        cols = head_split_columns(idx, groups // sequences, tokens, width, row_len, transposed, sequences)
        if cols is not None:
            return sequences, cols
    return None


def flat_order_kept(idx: np.ndarray) -> bool:
    return np.array_equal(idx.reshape(-1), np.arange(idx.size))
