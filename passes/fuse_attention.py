"""Fuse multi-head attention subgraphs into one ``kiln.MultiHeadAttention`` layer.

``kiln.MultiHeadAttention(x_q, x_kv, Wq, bq, Wk, bk, Wv, bv, Wo, bo[, bias]; heads, key_dim,
value_dim, scale)`` computes, for each head h (columns ``h*key_dim ..`` of the
projections), ``softmax(scale * (x_q Wq + bq)_h (x_kv Wk + bk)_h^T + bias[h]) (x_kv Wv + bv)_h``,
concatenates the heads and projects with ``Wo``, ``bo`` (both absent, empty inputs, when the
merged heads feed anything but a Dense: the layer's output is then [.., Tq, heads*value_dim]). x_q is [.., Tq, E_q] (any
leading axes of size 1), x_kv [.., Tk, E_kv]; the output is [.., Tq, dim] (the shape of
the value it replaces). Weights are [in, out] (kiln.Dense order). The optional ``bias``
[heads, Tq, Tk] is a constant added to the scaled scores: any Add of a float constant
between Q K^T and the Softmax (LeViT's attention_biases gathered by constant indices, a
relative-position bias, a constant mask), folded with the scale factors met on the way
(through Reshapes too: Swin views the scores per window to add its mask).

``sequences`` S (attribute, only when > 1): S independent sequences of Tq (Tk) rows, side by side in
x_q (x_kv) and the output, attended separately with the same weights: Swin's windows after its window
partition, MobileViT-v1's pixel positions of a patch. The head split is then
``Q[s, h, t, d] = q[s * Tq + t, col[h, d]]`` (sequence-major leading axes, ``split_sequences``); the
bias is [heads, Tq, Tk] when every sequence has the same, else [S, heads, Tq, Tk] (the shifted
windows' masks plus the per-head relative position bias, one constant). Window partition/reverse and
the shift (Slice + Concat) stay outside the layer.

Both forms torch exports are recognised:

* hand-written attention (``examples/zoo.py: HandAttention``): q/k/v ``nn.Linear``,
  Reshape to heads, Transpose, ``Q @ K^T`` (K transposed by the same Transpose or
  another), Div (or Mul) by a scalar, Softmax, ``@ V``, Transpose back, Reshape, out Linear;
* ``nn.MultiheadAttention`` as the legacy exporter writes it: one packed in-projection
  (a single Dense of width 3E followed by Reshape/Unsqueeze/Transpose/Squeeze and a
  Gather per q/k/v; or Split/Slice; or three Dense after a folded weight split), the
  scale applied as Mul by sqrt(scale) on Q and on K^T, heads folded into the batch axis
  through Reshape/Transpose chains, and the out projection as a Gemm.

The pass runs after ``FuseDensePass``: every projection is then already a ``kiln.Dense``
with a [K, N] weight and an [N] bias, whatever the exporter wrote (MatMul + Add at opset
13/17, Gemm with transB and alpha/beta, weights folded from a Split), so this pass
matches one canonical form instead of re-deriving weights from every linear-layer form.

Matching is anchored at Softmax and walks the IR in stages (``_core``: scaled Q K^T ->
Softmax -> @ V; ``_projection``: Q, K^T, V back to their Dense; ``_merge_heads``: back to
the out projection; ``_trailing_layout``; ``_closed``: nothing inside read outside). The
data-movement ops between the projections and the two MatMuls (Reshape, Transpose,
Squeeze, Unsqueeze, Flatten, Identity, Gather/Slice/Split with constant indices) are not
matched by their sequence, which varies with the exporter and opset: the pass pushes an
array of element indices through them (passes/attention_trace.py: numpy, exactly as ONNX defines the
ops) and requires the result to be exactly the head split ``Q[h, t, d] = q[t, col[h, d]]``,
the same columns for every token (``off + h * key_dim + d`` for a packed or separate projection;
per-head interleaved q|k|v columns as timm's EfficientFormer and LeViT write them), likewise K^T
and V, and the merge ``m[t, h * value_dim + d] = O[h, t, d]``.
Anything else (a run-time mask, non-constant weights, a softmax over another axis, heads mixed
across tokens, an intermediate used outside the pattern, a non-scalar or negative scale) leaves the
graph as it is; the op-by-op graph compiles as exported.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, const_array
from kiln.passes.attention_trace import (LAYOUT_OPS, SCALE_OPS, back_to_dense, flat_order_kept,
                                         is_dense, scalar_factor, shape_of, split_sequences, std_op,
                                         trace_indices)


def _core(softmax: ir.Node, opset: int):
    """scale * MatMul(Q, K^T) (+ constant bias) -> Softmax (last axis) -> MatMul(P, V) with consistent
    [.., heads, T, d] shapes: (nodes, scale, bias [heads, Tq, Tk] or None, qk, av, (heads, tq, tk, key_dim,
    value_dim)), else None."""
    s_in, s_out = softmax.inputs[0], softmax.outputs[0]
    s_shape = shape_of(s_in)
    if s_shape is None or len(s_shape) < 2:
        return None
    rank = len(s_shape)
    axis = attr(softmax, "axis", -1 if (softmax.version or opset) >= 13 else 1)
    if (axis + rank if axis < 0 else axis) != rank - 1:
        return None  # softmax over the keys (last axis) only
    # scores = scale * MatMul(Q, K^T) + bias: scalar Mul/Div and Adds of a constant between MatMul and Softmax.
    # Walking back from the Softmax, the scores are scale * value + bias; an Add of B makes bias += scale * B.
    # A Reshape on the way (Swin's per-window mask: view to [B, nW, heads, T, T], add, view back) reshapes the
    # bias gathered so far to its input's shape; the scores must be back in the Softmax's shape at the MatMul.
    nodes, scale, bias, value, shape = [softmax], 1.0, None, s_in, s_shape
    producer = value.producer()
    while std_op(producer, SCALE_OPS | {"Add", "Reshape"}):
        if producer.op_type == "Reshape":
            data = producer.inputs[0]
            new_shape = shape_of(data)
            if data is None or const_array(data) is not None or const_array(producer.inputs[1]) is None or \
                    new_shape is None or math.prod(new_shape) != math.prod(shape):
                return None
            bias = None if bias is None else np.broadcast_to(bias, shape).reshape(new_shape)
            nodes.append(producer)
            value, shape = data, new_shape
            producer = value.producer()
            continue
        runtime = [v for v in producer.inputs if v is not None and const_array(v) is None]
        data = runtime[0] if len(runtime) == 1 and len(producer.inputs) == 2 else None
        if data is None:
            return None
        if producer.op_type == "Add":
            term = _bias_term(producer, data, shape)
            if term is None:
                return None
            if shape != s_shape:
                term = np.broadcast_to(term, shape)
            bias = scale * term if bias is None else bias + scale * term
        else:
            factor = scalar_factor(producer, data)
            if factor is None:
                return None
            scale *= factor
        nodes.append(producer)
        value = data
        producer = value.producer()
    qk = producer
    if not std_op(qk, {"MatMul"}) or shape != s_shape:
        return None
    nodes.append(qk)
    # P @ V
    users = s_out.consumers()
    if s_out.is_graph_output() or len(users) != 1 or not std_op(users[0], {"MatMul"}) \
            or users[0].inputs[0] is not s_out:
        return None
    av = users[0]
    nodes.append(av)
    q_shape, kt_shape, v_shape, o_shape = (shape_of(v) for v in (*qk.inputs, av.inputs[1], av.outputs[0]))
    if None in (q_shape, kt_shape, v_shape, o_shape) or min(map(len, (q_shape, kt_shape, v_shape))) < 2:
        return None
    batch = q_shape[:-2]
    if kt_shape[:-2] != batch or v_shape[:-2] != batch or s_shape[:-2] != batch:
        return None
    heads = math.prod(batch)  # heads times sequences (split by _match from the projections' head split)
    tq, key_dim = q_shape[-2:]
    tk, value_dim = kt_shape[-1], v_shape[-1]
    if kt_shape[-2] != key_dim or v_shape[-2] != tk or s_shape[-2:] != (tq, tk) \
            or o_shape != (*batch, tq, value_dim):
        return None
    if bias is not None:
        bias = np.broadcast_to(bias, s_shape).reshape(heads, tq, tk)
    return nodes, scale, bias, qk, av, (heads, tq, tk, key_dim, value_dim)


def _bias_term(add: ir.Node, data: ir.Value, s_shape: tuple[int, ...]) -> np.ndarray | None:
    """The constant float term an Add puts on the scores (broadcast to them, not widening them), else None."""
    other = add.inputs[1] if add.inputs[0] is data else add.inputs[0]
    c = const_array(other)
    if c is None or not np.issubdtype(c.dtype, np.floating) or shape_of(add.outputs[0]) != s_shape \
            or c.ndim > len(s_shape) or not np.all(np.isfinite(c)):
        return None
    try:
        np.broadcast_to(c, s_shape)
    except ValueError:
        return None
    return c.astype(np.float64)


def _projection(operand: ir.Value, transposed: bool, groups: int, width: int, tokens: int):
    """Q, K^T or V back to the kiln.Dense it is a head split of (``groups`` = sequences x heads leading slices of
    ``tokens`` rows): (dense, W columns, b columns, scalar factor on the path, path nodes, sequences), else None."""
    found = back_to_dense(operand)
    if found is None:
        return None
    dense, path = found
    traced = path.trace()
    w = const_array(dense.inputs[1])
    b = const_array(dense.inputs[2])
    if traced is None or w is None or b is None or w.ndim != 2:
        return None
    idx, factor = traced
    row_len = w.shape[1]
    split = split_sequences(idx, groups, tokens, width, row_len, transposed)
    if split is None or shape_of(dense.inputs[0]) is None or \
            math.prod(shape_of(dense.inputs[0])) != split[0] * tokens * w.shape[0]:
        return None
    sequences, cols = split
    affine = path.column_affine(row_len)
    if affine is None:
        return None
    a, c = affine  # BatchNormalizations after the projection fold into its columns
    w, b = w * a[None, :], b.reshape(-1) * a + c
    return dense, w[:, cols], b[cols], factor, path.nodes, sequences


def _merge_heads(merged: ir.Value, heads: int, tq: int, value_dim: int, sequences: int = 1):
    """O [S, H, Tq, dv] -> layout ops -> the out projection reading [S * Tq, H*dv]: (layout nodes, out Dense, Wo, bo,
    merged heads). When the merged heads feed something else (LeViT: Hardswish, then the projection), the layer
    ends at the merge: out Dense, Wo and bo are None and the merged value is its output."""
    tail = []
    idx = np.arange(sequences * heads * tq * value_dim).reshape(shape_of(merged))
    expected = (np.arange(sequences)[:, None, None, None] * heads * tq * value_dim
                + np.arange(heads)[None, None, :, None] * tq * value_dim
                + np.arange(tq)[None, :, None, None] * value_dim
                + np.arange(value_dim)[None, None, None, :]).reshape(sequences * tq, heads * value_dim)
    out_dense = None
    while True:
        users = merged.consumers()
        if merged.is_graph_output() or len(users) != 1:
            break
        user = users[0]
        if is_dense(user) and user.inputs[0] is merged:
            out_dense = user
            break
        if not std_op(user, LAYOUT_OPS) or user.inputs[0] is not merged or len(user.outputs) != 1 or \
                any(v is not None and const_array(v) is None for v in user.inputs[1:]):
            break
        traced = trace_indices(user, idx, user.outputs[0])
        if traced is None:
            break
        idx = traced
        tail.append(user)
        merged = user.outputs[0]
    if idx.size != expected.size or not np.array_equal(idx.reshape(sequences * tq, heads * value_dim), expected):
        return None
    if out_dense is None:
        if not tail or shape_of(merged)[-1] != heads * value_dim:
            return None  # the heads merged into rows of H * dv
        return tail, None, None, None, merged
    wo, bo = const_array(out_dense.inputs[1]), const_array(out_dense.inputs[2])
    if wo is None or bo is None or wo.ndim != 2 or wo.shape[0] != heads * value_dim:
        return None
    return tail, out_dense, wo, bo, merged


def _trailing_layout(out: ir.Value, tq: int, dim: int) -> tuple[list[ir.Node], ir.Value]:
    """Flat-order-preserving layout ops after the out projection ([T, dim] -> [1, T, dim]): they join the layer."""
    nodes = []
    while True:
        users = out.consumers()
        if out.is_graph_output() or len(users) != 1:
            break
        user = users[0]
        if not std_op(user, LAYOUT_OPS - {"Gather", "Slice", "Split"}) or user.inputs[0] is not out or \
                any(v is not None and const_array(v) is None for v in user.inputs[1:]):
            break
        shape = shape_of(user.outputs[0])
        traced = trace_indices(user, np.arange(tq * dim).reshape(shape_of(out)), user.outputs[0]) if shape else None
        if traced is None or not flat_order_kept(traced) or shape[-1] != dim:
            break
        nodes.append(user)
        out = user.outputs[0]
    return nodes, out


def _sequence_bias(bias: np.ndarray, sequences: int, heads: int) -> np.ndarray:
    """The score bias [S * H, Tq, Tk] as the layer stores it: [H, Tq, Tk] when every sequence has the same
    (one sequence; Swin's unshifted windows: the relative position bias), else [S, H, Tq, Tk] (the shifted
    windows: a mask per window plus the per-head bias, one constant)."""
    per_sequence = bias.reshape(sequences, heads, *bias.shape[1:])
    if sequences == 1 or all(np.array_equal(per_sequence[0], p) for p in per_sequence[1:]):
        return per_sequence[0]
    return per_sequence


def _closed(nodes: list[ir.Node], out: ir.Value) -> bool:
    """No value computed inside the pattern (but ``out``) is read outside it."""
    inside = {id(n) for n in nodes}
    for node in nodes:
        for o in node.outputs:
            if o is out:
                continue
            if o.is_graph_output() or any(id(u.node) not in inside for u in o.uses()):
                return False
    return True


class FuseAttentionPass(ir.passes.InPlacePass):
    """Softmax-anchored multi-head attention (after FuseDensePass) -> kiln.MultiHeadAttention."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 13)
        count = 0
        for node in list(model.graph):
            if node.graph is not None and std_op(node, {"Softmax"}):
                match = self._match(node, opset)
                if match is not None:
                    self._rewrite(model, match)
                    count += 1
        if count:
            model.opset_imports.setdefault(KILN_DOMAIN, 1)
        return ir.passes.PassResult(model, count > 0)

    # --- matching ----------------------------------------------------------------------
    def _match(self, softmax: ir.Node, opset: int) -> dict | None:
        """The attention block around ``softmax`` in stages (core, projections, head merge, closure), else None."""
        core = _core(softmax, opset)
        if core is None:
            return None
        nodes, scale, bias, qk, av, dims = core
        groups, tq, tk, key_dim, value_dim = dims
        proj, sequences = {}, set()
        for role, operand, transposed, width, tokens in (("q", qk.inputs[0], False, key_dim, tq),
                                                         ("k", qk.inputs[1], True, key_dim, tk),
                                                         ("v", av.inputs[1], False, value_dim, tk)):
            found = _projection(operand, transposed, groups, width, tokens)
            if found is None:
                return None
            dense, w, b, factor, path_nodes, seqs = found
            sequences.add(seqs)
            if role != "v":
                scale *= factor
            elif factor != 1.0:
                return None  # a scaled V is not attention as the layer computes it
            proj[role] = (dense, w, b)
            nodes.extend([dense, *path_nodes])
        if not 0.0 < scale < math.inf:
            return None  # the layer scales scores by a positive constant
        if proj["k"][0].inputs[0] is not proj["v"][0].inputs[0]:
            return None  # keys and values come from the same sequence
        if len(sequences) != 1:
            return None  # q, k and v split into the same sequences
        (sequences,) = sequences
        heads = groups // sequences
        if bias is not None:
            bias = _sequence_bias(bias, sequences, heads)
        merged = _merge_heads(av.outputs[0], heads, tq, value_dim, sequences)
        if merged is None:
            return None
        tail, out_dense, wo, bo, heads_out = merged
        nodes.extend(tail)
        out = heads_out
        if out_dense is not None:
            nodes.append(out_dense)
            trailing, out = _trailing_layout(out_dense.outputs[0], sequences * tq, wo.shape[1])
            nodes.extend(trailing)
        if not _closed(nodes, out):
            return None
        skipped = [proj["q"][0].inputs[0], proj["k"][0].inputs[0]]
        x_q, x_kv = self._upstream(skipped[0]), self._upstream(skipped[1])
        return {"nodes": nodes, "out": out, "x_q": x_q, "x_kv": x_kv, "skipped": skipped, "proj": proj,
                "wo": wo, "bo": None if bo is None else bo.reshape(-1), "heads": heads, "key_dim": key_dim, "value_dim": value_dim,
                "scale": scale, "bias": bias, "sequences": sequences, "name": self._name(av)}

    @staticmethod
    def _upstream(x: ir.Value) -> ir.Value:
        """Skip layout ops before the projections that keep the flat order and the row length."""
        while True:
            producer = x.producer()
            if not std_op(producer, LAYOUT_OPS - {"Gather", "Slice", "Split"}) or producer.inputs[0] is None:
                return x
            src = producer.inputs[0]
            s, shape = shape_of(src), shape_of(x)
            if s is None or shape is None or not s or s[-1] != shape[-1] or \
                    any(v is not None and const_array(v) is None for v in producer.inputs[1:]):
                return x
            traced = trace_indices(producer, np.arange(math.prod(s)).reshape(s), x)
            if traced is None or not flat_order_kept(traced):
                return x
            x = src

    @staticmethod
    def _name(av: ir.Node) -> str:
        """The scope of the attention block in torch's node names ("/blocks/blocks.0/attn/MatMul_1" -> its folder)."""
        name = av.name or ""
        return name.rsplit("/", 1)[0] if "/" in name else ""

    # --- rewriting ---------------------------------------------------------------------
    def _rewrite(self, model: ir.Model, m: dict) -> None:
        graph = model.graph
        taken = {n.name for n in graph}
        scope, k = m["name"], 1
        while f"{scope}/MultiHeadAttention" in taken:
            scope, k = f"{m['name']}_{k}", k + 1
        node_name, prefix = f"{scope}/MultiHeadAttention", scope or "attention"
        inputs = [m["x_q"], m["x_kv"]]
        for role in ("q", "k", "v"):
            _, w, b = m["proj"][role]
            inputs.append(add_initializer(graph, f"{prefix}_W{role}", np.ascontiguousarray(w, dtype=np.float32)))
            inputs.append(add_initializer(graph, f"{prefix}_b{role}", np.ascontiguousarray(b, dtype=np.float32)))
        if m["wo"] is None:  # no out projection: the layer's output is the merged heads
            inputs += [None, None]
        else:
            inputs.append(add_initializer(graph, f"{prefix}_Wo", np.ascontiguousarray(m["wo"], dtype=np.float32)))
            inputs.append(add_initializer(graph, f"{prefix}_bo", np.ascontiguousarray(m["bo"], dtype=np.float32)))
        if m["bias"] is not None:
            inputs.append(add_initializer(graph, f"{prefix}_bias", np.ascontiguousarray(m["bias"], dtype=np.float32)))
        out = m["out"]
        fused = ir.Node(KILN_DOMAIN, "MultiHeadAttention", inputs, name=node_name,
                        attributes=[ir.AttrInt64("heads", m["heads"]), ir.AttrInt64("key_dim", m["key_dim"]),
                                    ir.AttrInt64("value_dim", m["value_dim"]),
                                    ir.AttrFloat32("scale", float(m["scale"])),
                                    *([ir.AttrInt64("sequences", m["sequences"])] if m["sequences"] > 1 else [])],
                        outputs=[ir.Value(name=f"{prefix}_mha_out", shape=out.shape, type=out.type)])
        order = {id(n): i for i, n in enumerate(graph)}
        old = sorted({id(n): n for n in m["nodes"]}.values(), key=lambda n: order[id(n)])
        ir.convenience.replace_nodes_and_values(graph, old[-1], old, [fused], [out], [fused.outputs[0]])
        # layout ops skipped in front of the projections (see _upstream), now unread
        for value in m["skipped"]:
            while value is not m["x_q"] and value is not m["x_kv"]:
                producer = value.producer()
                if producer is None or producer.graph is not graph or value.uses() or value.is_graph_output() or any(
                        o.uses() or o.is_graph_output() for o in producer.outputs):
                    break
                value = producer.inputs[0]
                graph.remove(producer, safe=True)
