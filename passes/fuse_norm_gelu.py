"""Fuse decomposed LayerNorm and GELU (as opset-13..17 exports write them) into one layer.

torch.onnx writes ``nn.LayerNorm`` below opset 17 as
``ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul(gamma) -> Add(beta)``
and ``F.gelu`` as ``Div(sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)`` (tanh form:
``Pow(3) -> Mul(0.044715) -> Add(x) -> Mul(sqrt(2/pi)) -> Tanh -> Add(1) -> Mul(x) -> Mul(0.5)``,
in varying operand orders). The fused layer computes the same thing with fixed-point
tables that hold up across input scales, where the op-by-op form would not.

The result is the standard op where the model's opset has it (LayerNormalization >= 17,
Gelu >= 20), else the same op in the ``kiln`` domain. Matching is done by walking the
IR from the anchor op (ReduceMean / Erf / Tanh) because the shapes of these patterns
vary with the opset (axes as attribute or input) and operand order.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, const_array, single_consumer


def _is(node: ir.Node | None, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain in ("", "ai.onnx")


def _scalar(value: ir.Value | None) -> float | None:
    array = const_array(value)
    return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None


def _other(node: ir.Node, value: ir.Value) -> ir.Value | None:
    """The input of a binary node that is not ``value``."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a is value else a if b is value else None


def _only_user(value: ir.Value, op: str) -> ir.Node | None:
    user = single_consumer(value)
    return user if _is(user, op) else None


def _reduce_axes(node: ir.Node) -> list[int] | None:
    axes = attr(node, "axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        array = const_array(node.inputs[1])
        axes = None if array is None else array.reshape(-1).tolist()
    if axes is None or attr(node, "keepdims", 1) != 1:
        return None
    return list(axes)


def _replace(model: ir.Model, old_nodes: list[ir.Node], new_node: ir.Node, old_out: ir.Value) -> None:
    ir.convenience.replace_nodes_and_values(model.graph, old_nodes[-1], old_nodes, [new_node], [old_out],
                                            [new_node.outputs[0]])


class FuseLayerNormPass(ir.passes.InPlacePass):
    """ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div[/Mul gamma][/Add beta] -> LayerNormalization."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 13)
        count = 0
        for node in list(model.graph):
            if node.graph is not None and _is(node, "ReduceMean"):
                count += self._try(model, node, opset)
        return ir.passes.PassResult(model, count > 0)

    def _try(self, model, mean1: ir.Node, opset: int) -> int:
        x = mean1.inputs[0]
        axes = _reduce_axes(mean1)
        if axes is None or x.shape is None:
            return 0
        rank = len(x.shape)
        norm_axes = sorted(a + rank if a < 0 else a for a in axes)
        if norm_axes != list(range(rank - len(norm_axes), rank)):
            return 0  # LayerNormalization normalises trailing axes only
        subs = [u for u in mean1.outputs[0].consumers() if _is(u, "Sub") and u.inputs[0] is x]
        if len(subs) != 1 or mean1.outputs[0].is_graph_output():
            return 0
        sub = subs[0]
        dev = sub.outputs[0]
        users = dev.consumers()
        square = next((u for u in users if (_is(u, "Pow") and _scalar(u.inputs[1]) == 2.0)
                       or (_is(u, "Mul") and u.inputs[0] is dev and u.inputs[1] is dev)), None)
        div = next((u for u in users if _is(u, "Div") and u.inputs[0] is dev), None)
        if square is None or div is None or len(users) != 2:
            return 0
        mean2 = _only_user(square.outputs[0], "ReduceMean")
        if mean2 is None or _reduce_axes(mean2) != axes:
            return 0
        add_eps = _only_user(mean2.outputs[0], "Add")
        eps = _scalar(_other(add_eps, mean2.outputs[0])) if add_eps is not None else None
        sqrt = _only_user(add_eps.outputs[0], "Sqrt") if add_eps is not None else None
        if eps is None or sqrt is None or div.inputs[1] is not sqrt.outputs[0]:
            return 0
        nodes = [mean1, sub, square, mean2, add_eps, sqrt, div]
        out = div.outputs[0]
        n = int(np.prod([x.shape[a] for a in norm_axes]))
        norm_shape = [x.shape[a] for a in norm_axes]
        gamma, beta = np.ones(norm_shape, np.float32), np.zeros(norm_shape, np.float32)
        mul = _only_user(out, "Mul")
        if mul is not None and (g := const_array(_other(mul, out))) is not None and g.size in (1, n):
            gamma = np.broadcast_to(g, norm_shape).astype(np.float32)
            nodes.append(mul)
            out = mul.outputs[0]
            add = _only_user(out, "Add")
            if add is not None and (b := const_array(_other(add, out))) is not None and b.size in (1, n):
                beta = np.broadcast_to(b, norm_shape).astype(np.float32)
                nodes.append(add)
                out = add.outputs[0]
        name = mean1.name or "layernorm"
        g_val = add_initializer(model.graph, f"{name}_gamma", np.ascontiguousarray(gamma))
        b_val = add_initializer(model.graph, f"{name}_beta", np.ascontiguousarray(beta))
        domain = "" if opset >= 17 else KILN_DOMAIN
        if domain:
            model.opset_imports.setdefault(KILN_DOMAIN, 1)
        fused = ir.Node(domain, "LayerNormalization", [x, g_val, b_val], name=f"{name}_layernorm",
                        attributes=[ir.AttrInt64("axis", norm_axes[0] - rank), ir.AttrFloat32("epsilon", eps)],
                        outputs=[ir.Value(name=f"{name}_ln_out", shape=out.shape, type=out.type)])
        _replace(model, nodes, fused, out)
        return 1


SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class FuseGeluPass(ir.passes.InPlacePass):
    """Erf-form and tanh-form GELU subgraphs -> Gelu."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", 13)
        count = 0
        for node in list(model.graph):
            if node.graph is None:
                continue
            if _is(node, "Erf"):
                count += self._fuse(model, *self._erf_form(node) or (None, None, None), "none", opset)
            elif _is(node, "Tanh"):
                count += self._fuse(model, *self._tanh_form(node) or (None, None, None), "tanh", opset)
        return ir.passes.PassResult(model, count > 0)

    @staticmethod
    def _scaled_input(value: ir.Value, factor: float) -> tuple[ir.Value, ir.Node] | None:
        """value = x * factor (as Mul(x, c) or Div(x, 1/c)): returns (x, node)."""
        node = value.producer()
        if _is(node, "Mul"):
            for x, c in ((node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])):
                if _scalar(c) is not None and abs(_scalar(c) - factor) < 1e-4 * factor:
                    return x, node
        if _is(node, "Div") and _scalar(node.inputs[1]) is not None and \
                abs(1.0 / _scalar(node.inputs[1]) - factor) < 1e-4 * factor:
            return node.inputs[0], node
        return None

    @staticmethod
    def _tail(x: ir.Value, inner: ir.Value) -> tuple[list[ir.Node], ir.Value] | None:
        """0.5 * x * (1 + inner), any association: Add(inner, 1) then two Muls."""
        add = _only_user(inner, "Add")
        if add is None or _scalar(_other(add, inner)) != 1.0:
            return None
        m1 = _only_user(add.outputs[0], "Mul")
        if m1 is None:
            return None
        other = _other(m1, add.outputs[0])
        if other is x:  # x * (1 + inner), then * 0.5
            m2 = _only_user(m1.outputs[0], "Mul")
            if m2 is not None and _scalar(_other(m2, m1.outputs[0])) == 0.5:
                return [add, m1, m2], m2.outputs[0]
            return None
        half = other.producer() if other is not None else None  # (x * 0.5) * (1 + inner)
        if _is(half, "Mul") and x in half.inputs and _scalar(_other(half, x)) == 0.5 and single_consumer(other):
            return [half, add, m1], m1.outputs[0]
        if _scalar(other) == 0.5:  # 0.5 * (1 + inner), then * x
            m2 = _only_user(m1.outputs[0], "Mul")
            if m2 is not None and _other(m2, m1.outputs[0]) is x:
                return [add, m1, m2], m2.outputs[0]
        return None

    def _erf_form(self, erf: ir.Node):
        scaled = self._scaled_input(erf.inputs[0], 1.0 / SQRT2)
        if scaled is None or single_consumer(erf.inputs[0]) is not erf:
            return None
        x, pre = scaled
        tail = self._tail(x, erf.outputs[0])
        return None if tail is None else (x, [pre, erf, *tail[0]], tail[1])

    def _tanh_form(self, tanh: ir.Node):
        scaled = self._scaled_input(tanh.inputs[0], SQRT_2_OVER_PI)
        if scaled is None or single_consumer(tanh.inputs[0]) is not tanh:
            return None
        inner, pre = scaled
        add = inner.producer()  # x + 0.044715 * x^3
        if not _is(add, "Add") or single_consumer(inner) is not pre:
            return None
        for x, cubic in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            mul = cubic.producer()
            if not _is(mul, "Mul") or single_consumer(cubic) is not add:
                continue
            for p, c in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
                cube_nodes = self._cube_of(x, p)
                if _scalar(c) is not None and abs(_scalar(c) - 0.044715) < 1e-6 and cube_nodes:
                    tail = self._tail(x, tanh.outputs[0])
                    if tail is not None:
                        return x, [*cube_nodes, mul, add, pre, tanh, *tail[0]], tail[1]
        return None

    @staticmethod
    def _cube_of(x: ir.Value, value: ir.Value) -> list[ir.Node] | None:
        """The nodes computing value = x^3 (Pow(x, 3), or x * (x * x) in any order), else None."""
        node = value.producer()
        if single_consumer(value) is None:
            return None
        if _is(node, "Pow") and node.inputs[0] is x and _scalar(node.inputs[1]) == 3.0:
            return [node]
        if _is(node, "Mul") and x in node.inputs:
            square = _other(node, x) if node.inputs[0] is not node.inputs[1] else None
            sq_node = square.producer() if square is not None else None
            if _is(sq_node, "Mul") and sq_node.inputs[0] is x and sq_node.inputs[1] is x and single_consumer(square):
                return [sq_node, node]
        return None

    def _fuse(self, model, x, nodes, out, approximate: str, opset: int) -> int:
        if x is None:
            return 0
        domain = "" if opset >= 20 else KILN_DOMAIN
        if domain:
            model.opset_imports.setdefault(KILN_DOMAIN, 1)
        name = nodes[1].name or "gelu"
        fused = ir.Node(domain, "Gelu", [x], name=f"{name}_gelu",
                        attributes=[ir.AttrString("approximate", approximate)],
                        outputs=[ir.Value(name=f"{name}_gelu_out", shape=out.shape, type=out.type)])
        order = {id(n): i for i, n in enumerate(model.graph)}
        nodes = sorted(nodes, key=lambda n: order[id(n)])
        _replace(model, nodes, fused, out)
        return 1
