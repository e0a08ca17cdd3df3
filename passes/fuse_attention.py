"""Fuse multi-head attention subgraphs into one ``kiln.MultiHeadAttention`` layer.

``kiln.MultiHeadAttention(x_q, x_kv, Wq, bq, Wk, bk, Wv, bv, Wo, bo; heads, key_dim,
value_dim, scale)`` computes, for each head h (columns ``h*key_dim ..`` of the
projections), ``softmax(scale * (x_q Wq + bq)_h (x_kv Wk + bk)_h^T) (x_kv Wv + bv)_h``,
concatenates the heads and projects with ``Wo``, ``bo``. x_q is [.., Tq, E_q] (any
leading axes of size 1), x_kv [.., Tk, E_kv]; the output is [.., Tq, dim] (the shape of
the value it replaces). Weights are [in, out] (kiln.Dense order).

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

Matching is anchored at Softmax and walks the IR, like the LayerNorm/GELU fusions. The
data-movement ops between the projections and the two MatMuls (Reshape, Transpose,
Squeeze, Unsqueeze, Flatten, Identity, Gather/Slice/Split with constant indices) are not
matched by their sequence, which varies with the exporter and opset: the pass pushes an
array of element indices through them (numpy semantics, exactly as ONNX defines the
ops) and requires the result to be exactly the head split ``Q[h, t, d] = q[t, off + h *
key_dim + d]`` (likewise K^T, V, and the merge ``m[t, h * value_dim + d] = O[h, t, d]``).
Anything else (a mask, non-constant weights, a softmax over another axis, heads mixed
across tokens, an intermediate used outside the pattern, a non-scalar or negative scale) leaves the
graph as it is; the op-by-op graph compiles as exported.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, const_array

LAYOUT_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Gather", "Slice", "Split"}
SCALE_OPS = {"Mul", "Div"}


def _std(node: ir.Node | None, ops) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in ops


def _is_dense(node: ir.Node | None) -> bool:
    return node is not None and node.domain == KILN_DOMAIN and node.op_type == "Dense"


def _shape(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(int(d) for d in value.shape)


def _scalar_factor(node: ir.Node, data: ir.Value) -> float | None:
    """The factor by which a Mul/Div with a constant scalar scales ``data``, else None."""
    if len(node.inputs) != 2 or _shape(node.outputs[0]) != _shape(data):
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


def _data_input(node: ir.Node) -> ir.Value | None:
    """The run-time input of a layout or scale node (None when it has none or several)."""
    if _std(node, SCALE_OPS):
        runtime = [v for v in node.inputs if v is not None and const_array(v) is None]
        return runtime[0] if len(runtime) == 1 else None
    return node.inputs[0] if node.inputs else None


def _trace(node: ir.Node, idx: np.ndarray, out: ir.Value) -> np.ndarray | None:
    """Push an array of element indices through one layout/scale node (ONNX semantics)."""
    shape = _shape(out)
    if shape is None:
        return None
    op = node.op_type
    try:
        if op in SCALE_OPS:
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
        shapes = [_shape(o) for o in node.outputs]
        if any(s is None for s in shapes):
            return None
        sizes = np.array([s[axis] for s in shapes])
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return np.take(idx, np.arange(offsets[which], offsets[which + 1]), axis=axis)


class _Path:
    """A chain of layout/scale nodes from a source value to a target value: (node, its output on the path)."""

    def __init__(self, source: ir.Value, steps: list[tuple[ir.Node, ir.Value]]):
        self.source, self.steps = source, steps

    @property
    def nodes(self) -> list[ir.Node]:
        return [node for node, _ in self.steps]

    def trace(self) -> tuple[np.ndarray, float] | None:
        """(element indices of the target into the flat source, product of the scalar factors)."""
        shape = _shape(self.source)
        if shape is None:
            return None
        idx = np.arange(math.prod(shape)).reshape(shape)
        value, scale = self.source, 1.0
        for node, out in self.steps:
            if _std(node, SCALE_OPS):
                scale *= _scalar_factor(node, value)
            idx = _trace(node, idx, out)
            if idx is None:
                return None
            value = out
        return idx, scale


def _back_to_dense(value: ir.Value) -> tuple[ir.Node, _Path] | None:
    """Walk producers from ``value`` through layout/scale nodes to a kiln.Dense output."""
    steps, current = [], value
    while True:
        producer = current.producer()
        if _is_dense(producer):
            return producer, _Path(current, list(reversed(steps)))
        if not _std(producer, LAYOUT_OPS | SCALE_OPS):
            return None
        if _std(producer, SCALE_OPS):
            data = _data_input(producer)
            if data is None or _scalar_factor(producer, data) is None:
                return None
        else:
            data = producer.inputs[0]
            # every other input must be a compile-time constant (shape, axes, indices)
            if data is None or any(v is not None and const_array(v) is None for v in producer.inputs[1:]):
                return None
        steps.append((producer, current))
        current = data


def _head_split_offset(idx: np.ndarray, heads: int, tokens: int, width: int, row_len: int,
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


def _flat_order_kept(idx: np.ndarray) -> bool:
    return np.array_equal(idx.reshape(-1), np.arange(idx.size))


class FuseAttentionPass(ir.passes.InPlacePass):
    """Softmax-anchored multi-head attention (after FuseDensePass) -> kiln.MultiHeadAttention."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 13)
        count = 0
        for node in list(model.graph):
            if node.graph is not None and _std(node, {"Softmax"}):
                match = self._match(node, opset)
                if match is not None:
                    self._rewrite(model, match)
                    count += 1
        if count:
            model.opset_imports.setdefault(KILN_DOMAIN, 1)
        return ir.passes.PassResult(model, count > 0)

    # --- matching ----------------------------------------------------------------------
    def _match(self, softmax: ir.Node, opset: int) -> dict | None:
        s_in, s_out = softmax.inputs[0], softmax.outputs[0]
        s_shape = _shape(s_in)
        if s_shape is None or len(s_shape) < 2:
            return None
        rank = len(s_shape)
        axis = attr(softmax, "axis", -1 if (softmax.version or opset) >= 13 else 1)
        if (axis + rank if axis < 0 else axis) != rank - 1:
            return None  # softmax over the keys (last axis) only
        # scores = scale * MatMul(Q, K^T): scalar Mul/Div between MatMul and Softmax
        nodes, scale, value = [softmax], 1.0, s_in
        producer = value.producer()
        while _std(producer, SCALE_OPS):
            data = _data_input(producer)
            factor = _scalar_factor(producer, data) if data is not None else None
            if factor is None:
                return None
            scale *= factor
            nodes.append(producer)
            value = data
            producer = value.producer()
        qk = producer
        if not _std(qk, {"MatMul"}):
            return None
        nodes.append(qk)
        # P @ V
        users = s_out.consumers()
        if s_out.is_graph_output() or len(users) != 1 or not _std(users[0], {"MatMul"}) \
                or users[0].inputs[0] is not s_out:
            return None
        av = users[0]
        nodes.append(av)
        q_shape, kt_shape, v_shape, o_shape = (_shape(v) for v in (*qk.inputs, av.inputs[1], av.outputs[0]))
        if None in (q_shape, kt_shape, v_shape, o_shape) or min(map(len, (q_shape, kt_shape, v_shape))) < 2:
            return None
        batch = q_shape[:-2]
        if kt_shape[:-2] != batch or v_shape[:-2] != batch or s_shape[:-2] != batch:
            return None
        heads = math.prod(batch)
        tq, key_dim = q_shape[-2:]
        tk, value_dim = kt_shape[-1], v_shape[-1]
        if kt_shape[-2] != key_dim or v_shape[-2] != tk or s_shape[-2:] != (tq, tk) \
                or o_shape != (*batch, tq, value_dim):
            return None
        # Q, K^T and V back to their projections
        proj = {}
        for role, operand, transposed, width, tokens in (("q", qk.inputs[0], False, key_dim, tq),
                                                         ("k", qk.inputs[1], True, key_dim, tk),
                                                         ("v", av.inputs[1], False, value_dim, tk)):
            found = _back_to_dense(operand)
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
            if _shape(dense.inputs[0]) is None or math.prod(_shape(dense.inputs[0])) != tokens * w.shape[0]:
                return None
            off = _head_split_offset(idx, heads, tokens, width, row_len, transposed)
            if off is None:
                return None
            if role != "v":
                scale *= factor
            elif factor != 1.0:
                return None  # a scaled V is not attention as the layer computes it
            proj[role] = (dense, w[:, off:off + heads * width], b.reshape(-1)[off:off + heads * width])
            nodes.extend([dense, *path.nodes])
        if not 0.0 < scale < math.inf:
            return None  # the layer scales scores by a positive constant
        if proj["k"][0].inputs[0] is not proj["v"][0].inputs[0]:
            return None  # keys and values come from the same sequence
        # merge heads: O [.., H, Tq, dv] -> layout ops -> out projection [Tq, H*dv]
        merged, tail = av.outputs[0], []
        idx = np.arange(heads * tq * value_dim).reshape(o_shape)
        while True:
            users = merged.consumers()
            if merged.is_graph_output() or len(users) != 1:
                return None
            user = users[0]
            if _is_dense(user) and user.inputs[0] is merged:
                out_dense = user
                break
            if not _std(user, LAYOUT_OPS) or user.inputs[0] is not merged or len(user.outputs) != 1 or \
                    any(v is not None and const_array(v) is None for v in user.inputs[1:]):
                return None
            idx = _trace(user, idx, user.outputs[0])
            if idx is None:
                return None
            tail.append(user)
            merged = user.outputs[0]
        wo, bo = const_array(out_dense.inputs[1]), const_array(out_dense.inputs[2])
        if wo is None or bo is None or wo.ndim != 2 or wo.shape[0] != heads * value_dim or idx.size != wo.shape[0] * tq:
            return None
        expected = (np.arange(heads)[None, :, None] * tq * value_dim + np.arange(tq)[:, None, None] * value_dim
                    + np.arange(value_dim)[None, None, :]).reshape(tq, heads * value_dim)
        if not np.array_equal(idx.reshape(tq, heads * value_dim), expected):
            return None
        nodes.extend([*tail, out_dense])
        dim = wo.shape[1]
        # flat-order-preserving layout ops after the out projection ([T, dim] -> [1, T, dim]) join the layer
        out = out_dense.outputs[0]
        while True:
            users = out.consumers()
            if out.is_graph_output() or len(users) != 1:
                break
            user = users[0]
            if not _std(user, LAYOUT_OPS - {"Gather", "Slice", "Split"}) or user.inputs[0] is not out or \
                    any(v is not None and const_array(v) is None for v in user.inputs[1:]):
                break
            shape = _shape(user.outputs[0])
            traced = _trace(user, np.arange(tq * dim).reshape(_shape(out)), user.outputs[0]) if shape else None
            if traced is None or not _flat_order_kept(traced) or shape[-1] != dim:
                break
            nodes.append(user)
            out = user.outputs[0]
        # no intermediate may be read outside the pattern
        inside = {id(n) for n in nodes}
        for node in nodes:
            for o in node.outputs:
                if o is out:
                    continue
                if o.is_graph_output() or any(id(u.node) not in inside for u in o.uses()):
                    return None
        skipped = [proj["q"][0].inputs[0], proj["k"][0].inputs[0]]
        x_q, x_kv = self._upstream(skipped[0]), self._upstream(skipped[1])
        return {"nodes": nodes, "out": out, "x_q": x_q, "x_kv": x_kv, "skipped": skipped, "proj": proj,
                "wo": wo, "bo": bo.reshape(-1), "heads": heads, "key_dim": key_dim, "value_dim": value_dim,
                "scale": scale, "name": self._name(av)}

    @staticmethod
    def _upstream(x: ir.Value) -> ir.Value:
        """Skip layout ops before the projections that keep the flat order and the row length."""
        while True:
            producer = x.producer()
            if not _std(producer, LAYOUT_OPS - {"Gather", "Slice", "Split"}) or producer.inputs[0] is None:
                return x
            src = producer.inputs[0]
            s, shape = _shape(src), _shape(x)
            if s is None or shape is None or not s or s[-1] != shape[-1] or \
                    any(v is not None and const_array(v) is None for v in producer.inputs[1:]):
                return x
            traced = _trace(producer, np.arange(math.prod(s)).reshape(s), x)
            if traced is None or not _flat_order_kept(traced):
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
        inputs.append(add_initializer(graph, f"{prefix}_Wo", np.ascontiguousarray(m["wo"], dtype=np.float32)))
        inputs.append(add_initializer(graph, f"{prefix}_bo", np.ascontiguousarray(m["bo"], dtype=np.float32)))
        out = m["out"]
        fused = ir.Node(KILN_DOMAIN, "MultiHeadAttention", inputs, name=node_name,
                        attributes=[ir.AttrInt64("heads", m["heads"]), ir.AttrInt64("key_dim", m["key_dim"]),
                                    ir.AttrInt64("value_dim", m["value_dim"]),
                                    ir.AttrFloat32("scale", float(m["scale"]))],
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
