"""Apply onnxscript rewrite rules at chosen nodes (the fusions' driver).

``RewriteRuleSet.apply_to_model`` tries every rule at every node. A commuted rule set of the
GELU forms has ~1500 rules (each Add/Mul operand order of 18 forms), and trying all of them at
every node takes about a second on a small transformer; the fusions' rules can only match at a
node near their anchor op (Erf/Tanh, ReduceMean), so ``apply_rules`` tries them only at the
nodes ``where`` accepts. Otherwise it rewrites as the rule set does (first matching rule wins,
nodes visited in graph order, the new node inserted at the matched output node), without the
rule-name/metadata tagging of the new nodes (the fused nodes carry no metadata, as before).
"""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir
from onnxscript.rewriter import pattern

from kiln.annotations import is_op
from kiln.ir_utils import const_array


def scalar(value: ir.Value | None) -> float | None:
    """The value of a one-element constant, else None (rule conditions check constants with it)."""
    array = const_array(value)
    return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None


def is_std(node: ir.Node | None, *ops: str) -> bool:
    """The node is one of the standard-domain ``ops``."""
    return is_op(node, *ops)


def near(node: ir.Node, ops: set[str], depth: int) -> bool:
    """One of the standard ``ops`` produces an input of ``node`` at most ``depth`` producers up."""
    frontier = [node]
    for _ in range(depth):
        frontier = [v.producer() for n in frontier for v in n.inputs if v is not None and v.producer() is not None]
        if any(is_std(n, *ops) for n in frontier):
            return True
    return False


def apply_rules(model: ir.Model, rules: pattern.RewriteRuleSet, where: Callable[[ir.Node], bool]) -> int:
    """Rewrite the main graph with ``rules`` at the nodes ``where`` accepts; returns the number of rewrites."""
    graph, count = model.graph, 0
    for node in list(graph):
        if node.graph is not graph or not where(node):
            continue  # removed by an earlier rewrite, or no anchor for these rules
        for rule in rules.rules:
            delta = rule.try_rewrite(model, graph, node)
            if delta is None:
                continue
            for value in delta.new_initializers:
                graph.register_initializer(value)
            ir.convenience.replace_nodes_and_values(graph, node, delta.match.nodes, delta.new_nodes,
                                                    delta.match.outputs, delta.new_outputs)
            count += 1
            break
    return count


__all__ = ["apply_rules", "is_std", "near", "scalar"]
