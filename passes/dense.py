"""Fuse Gemm, and MatMul with a constant weight (+ a following bias Add), into ``kiln.Dense``.

``kiln.Dense(x, W[K,N], b[N])`` computes ``x @ W + b`` over the last axis of x (any number
of leading rows). One Dense layer is what the HLS template parameterises with a reuse
factor, so every form of linear layer that torch exports lands on it:

* ``Gemm(A, B, C; alpha, beta, transA, transB)`` with constant B: W = alpha * B (transposed
  if transB), b = beta * C when C broadcasts along rows; a full [M,N] C becomes an Add
  after the Dense; transA inserts a Transpose before it.
* ``MatMul(x, W)`` with constant 2-D (or 1-D) W, and ``Add(MatMul(x, W), c)`` where c
  broadcasts to [N] and the MatMul has no other consumer.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.annotations import copy_precision, is_op, is_standard
from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, const_array, single_consumer


def _bias_vector(c: np.ndarray, n: int) -> np.ndarray | None:
    """c as a length-n vector if it broadcasts identically along every row, else None."""
    if c.ndim == 0 or c.size == 1:
        return np.full(n, c.reshape(-1)[0], dtype=np.float32)
    squeezed = c.reshape(c.shape[-1:]) if all(d == 1 for d in c.shape[:-1]) else None
    if squeezed is None or squeezed.shape[0] not in (1, n):
        return None
    return np.broadcast_to(squeezed, (n,)).astype(np.float32)


class FuseDensePass(ir.passes.InPlacePass):
    """Gemm / MatMul(+Add) with constant weights -> kiln.Dense."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.graph is None or not is_standard(node):
                continue
            if node.op_type == "Gemm":
                modified |= self._gemm(graph, node)
            elif node.op_type == "MatMul":
                modified |= self._matmul(graph, node)
        if modified:
            model.opset_imports.setdefault(KILN_DOMAIN, 1)
        return ir.passes.PassResult(model, modified)

    def _dense(self, graph, x, w, b, name, template: ir.Value, w_src=None, b_src=None) -> tuple[ir.Node, ir.Value]:
        """The Dense node; ``w_src``/``b_src``: the constants W and b come from, whose quantized
        type (if any) carries over (transposing or reshaping keeps every value)."""
        w_val = copy_precision(w_src, add_initializer(graph, f"{name}_W", w.astype(np.float32)))
        b_val = copy_precision(b_src, add_initializer(graph, f"{name}_b", b.astype(np.float32)))
        out = ir.Value(name=f"{name}_dense_out", shape=template.shape, type=template.type)
        node = ir.Node(KILN_DOMAIN, "Dense", [x, w_val, b_val], outputs=[out], name=name)
        return node, out

    def _gemm(self, graph: ir.Graph, node: ir.Node) -> bool:
        a, b_in = node.inputs[0], node.inputs[1]
        c_in = node.inputs[2] if len(node.inputs) > 2 else None
        w = const_array(b_in)
        c = const_array(c_in) if c_in is not None else np.zeros(1, np.float32)
        if w is None or c is None or w.ndim != 2:
            return False
        alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)
        w = (w.T if attr(node, "transB", 0) else w) * np.float32(alpha)
        n = w.shape[1]
        new_nodes = []
        x = a
        if attr(node, "transA", 0):
            t_out = ir.Value(name=f"{node.name}_At", type=a.type,
                             shape=ir.Shape(list(reversed(list(a.shape)))) if a.shape is not None else None)
            new_nodes.append(ir.Node("", "Transpose", [a], outputs=[t_out], name=f"{node.name}_transA",
                                     attributes=[ir.AttrInt64s("perm", [1, 0])]))
            x = t_out
        c = np.float32(beta) * c.astype(np.float32)
        bias = _bias_vector(c, n)
        exact = alpha == 1.0 and beta == 1.0
        dense, out = self._dense(graph, x, w, bias if bias is not None else np.zeros(n, np.float32),
                                 node.name, node.outputs[0], b_in if exact else None,
                                 c_in if exact and bias is not None else None)
        new_nodes.append(dense)
        if bias is None:  # a full [M, N] bias: Dense then Add
            c_val = add_initializer(graph, f"{node.name}_C", c)
            add_out = ir.Value(name=f"{node.name}_biased", shape=node.outputs[0].shape, type=node.outputs[0].type)
            new_nodes.append(ir.Node("", "Add", [out, c_val], outputs=[add_out], name=f"{node.name}_bias"))
            out = add_out
        ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [node.outputs[0]], [out])
        return True

    def _matmul(self, graph: ir.Graph, node: ir.Node) -> bool:
        x, w_in = node.inputs
        w = const_array(w_in)
        if w is None or w.ndim not in (1, 2) or const_array(x) is not None:
            return False
        w2 = w.reshape(-1, 1) if w.ndim == 1 else w
        n = w2.shape[1]
        old_nodes, old_out = [node], node.outputs[0]
        bias, b_src = np.zeros(n, np.float32), None
        add = single_consumer(old_out)
        if is_op(add, "Add") and w.ndim == 2:
            other = add.inputs[1] if add.inputs[0] is old_out else add.inputs[0]
            c = const_array(other)
            vec = _bias_vector(c, n) if c is not None and c.ndim <= 1 + (old_out.shape is not None and len(old_out.shape) or 0) else None
            if vec is not None and add.outputs[0].shape == old_out.shape:
                bias, old_nodes, old_out, b_src = vec, [node, add], add.outputs[0], other
        dense, out = self._dense(graph, x, w2, bias, node.name, old_out, w_in, b_src)
        ir.convenience.replace_nodes_and_values(graph, old_nodes[-1], old_nodes, [dense], [old_out], [out])
        return True
