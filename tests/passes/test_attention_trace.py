"""passes/attention_trace.py: element indices pushed through layout/scale ops agree with ONNX Runtime."""

from __future__ import annotations

import numpy as np
from onnx import helper

from kiln.ir_utils import KILN_DOMAIN
from kiln.passes.attention_trace import (LayoutPath, back_to_dense, head_split_columns, head_split_offset, scalar_factor,
                                         split_sequences)
from tests.passes.graphs import const, model, node, run

SHAPE = (1, 6, 12)


def _layout_chain():
    """x -> Reshape [1,6,3,4] -> Transpose -> Mul 0.5 -> Slice (heads 1.., end past the last: clamped) -> Gather(index -1: the last) -> y."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Mul", ["half", "t"], ["m"]),
             helper.make_node("Slice", ["m", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Gather", ["s", "index"], ["y"], axis=1)]
    inits = [const("shape", np.array([1, 6, 3, 4], np.int64)), const("half", 0.5),
             const("starts", np.array([1], np.int64)), const("ends", np.array([9], np.int64)),
             const("axes", np.array([1], np.int64)), const("index", np.array(-1, np.int64))]
    return model(nodes, {"x": SHAPE}, {"y": (1, 4, 6)}, inits)


def test_traced_indices_match_onnxruntime():
    m = _layout_chain()
    flat = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    expected = run(m, {"x": flat})[0] / 0.5  # ORT applies the 0.5 scale; the trace returns it as the factor
    steps = [(n, n.outputs[0]) for n in m.graph]
    idx, factor = LayoutPath(m.graph.inputs[0], steps).trace()
    assert factor == 0.5
    np.testing.assert_array_equal(idx, expected.astype(np.int64))


def test_scalar_factor_of_mul_and_div():
    m = model([helper.make_node("Div", ["x", "c"], ["d"]), helper.make_node("Mul", ["d", "c"], ["y"])],
              {"x": (2, 3)}, {"y": (2, 3)}, [const("c", 4.0)])
    div, mul = list(m.graph)
    assert scalar_factor(div, m.graph.inputs[0]) == 0.25 and scalar_factor(mul, div.outputs[0]) == 4.0
    assert scalar_factor(div, div.inputs[1]) is None  # c / x is not a scaling of x


def test_head_split_offset():
    tokens, heads, width, row = 5, 2, 3, 12  # a [5, 12] projection; heads at columns 6..11
    idx = (np.arange(tokens)[None, :, None] * row + 6 + np.arange(heads)[:, None, None] * width
           + np.arange(width)[None, None, :])
    assert head_split_offset(idx, heads, tokens, width, row, transposed=False) == 6
    assert head_split_offset(idx.transpose(0, 2, 1), heads, tokens, width, row, transposed=True) == 6
    assert head_split_offset(idx[::-1].copy(), heads, tokens, width, row, transposed=False) is None


def test_head_split_columns_any_per_head_columns():
    """EfficientFormer/LeViT: reshape(N, H, kd + kd + vd) then split: head h's q columns are h * 20 + (0..3)."""
    tokens, heads, kd, vd, row = 5, 2, 4, 12, 40  # [5, 40] = 2 heads x (q 4 | k 4 | v 12)
    cols = (np.arange(heads)[:, None] * (2 * kd + vd) + np.arange(kd)[None, :])
    idx = np.arange(tokens)[None, :, None] * row + cols[:, None, :]
    np.testing.assert_array_equal(head_split_columns(idx, heads, tokens, kd, row, transposed=False), cols.reshape(-1))
    np.testing.assert_array_equal(head_split_columns(idx.transpose(0, 2, 1), heads, tokens, kd, row, transposed=True),
                                  cols.reshape(-1))
    mixed = idx.copy()
    mixed[0, 1, 0] += 1  # token 1 of head 0 reads another column than token 0: not a head split
    assert head_split_columns(mixed, heads, tokens, kd, row, transposed=False) is None
    assert head_split_columns(idx + tokens * row, heads, tokens, kd, row, transposed=False) is None  # out of range


def test_split_sequences_windows_in_the_batch_axis():
    """Swin/MobileViT: S sequences of T rows side by side, q.reshape(S, T, H, d).transpose(0, 2, 1, 3): the leading
    S*H slices split into S sequences (sequence-major) of H heads reading the same columns; heads-major slices (the
    sequences inside each head) or a sequence that reads another's rows are not this split."""
    seqs, tokens, heads, width = 3, 4, 2, 5
    row = heads * width
    idx = np.arange(seqs * tokens * row).reshape(seqs, tokens, heads, width).transpose(0, 2, 1, 3)
    s, cols = split_sequences(idx, seqs * heads, tokens, width, row, transposed=False)
    assert s == seqs
    np.testing.assert_array_equal(cols, np.arange(row))
    s, cols = split_sequences(idx.transpose(0, 1, 3, 2), seqs * heads, tokens, width, row, transposed=True)
    assert s == seqs
    np.testing.assert_array_equal(cols, np.arange(row))
    assert split_sequences(idx[:1], heads, tokens, width, row, transposed=False)[0] == 1  # one sequence
    assert split_sequences(idx.transpose(1, 0, 2, 3), seqs * heads, tokens, width, row, transposed=False) is None
    swapped = idx[[1, 0, 2]]  # sequence 0 reads rows of sequence 1: the rows are not s * T + t
    assert split_sequences(swapped, seqs * heads, tokens, width, row, transposed=False) is None


def test_back_to_dense_stops_at_other_producers():
    m = _layout_chain()
    assert back_to_dense(m.graph.outputs[0]) is None  # the chain starts at a graph input, not a Dense
    dense = m.graph.node(0)
    dense.domain, dense.op_type = KILN_DOMAIN, "Dense"  # pretend the Reshape is the projection
    found = back_to_dense(node(m, "Gather").outputs[0])
    assert found is not None and found[0] is dense and [n.op_type for n in found[1].nodes] == [
        "Transpose", "Mul", "Slice", "Gather"]
