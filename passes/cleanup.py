"""Remove inference no-ops: Identity and Dropout (inference mode).

Their output is replaced by their input everywhere. When the output is a graph output
and the input is a graph input (or another graph output), the node stays: the HLS
backend then emits a plain copy so the top function keeps both ports.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.ir_utils import const_array

NO_OP_TYPES = {"Identity", "Dropout"}


def is_inference_dropout(node: ir.Node) -> bool:
    """A Dropout that passes its input through: no training_mode input, a constant false
    one, or a constant ratio of 0 (opset >= 12; older opsets are inference-only here)."""
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = const_array(training)
    if flag is not None and not bool(flag.reshape(-1)[0]):
        return True
    ratio = const_array(node.inputs[1]) if node.inputs[1] is not None else None
    return ratio is not None and ratio.size == 1 and float(ratio.reshape(-1)[0]) == 0.0


class RemoveNoOpsPass(ir.passes.InPlacePass):
    """Identity/Dropout removal."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.domain not in ("", "ai.onnx") or node.op_type not in NO_OP_TYPES:
                continue
            if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1].uses():
                continue  # the mask is consumed: keep it so the op is reported as unsupported
            if node.op_type == "Dropout" and not is_inference_dropout(node):
                continue  # training mode (random): keep it so the op is reported as unsupported
            src, out = node.inputs[0], node.outputs[0]
            if out.is_graph_output() and (src.is_graph_input() or src.is_graph_output() or src.is_initializer()):
                if node.op_type == "Dropout":
                    node.op_type = "Identity"
                    node.resize_inputs(1)
                    node.resize_outputs(1)
                    node.attributes.clear()
                    modified = True
                continue
            if out.is_graph_output():
                # keep the graph output's name: rename the producer's value instead
                ir.convenience.replace_all_uses_with(out, src, replace_graph_outputs=True)
                src.name, out.name = out.name, src.name + "_removed" if src.name else None
            else:
                ir.convenience.replace_all_uses_with(out, src)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
