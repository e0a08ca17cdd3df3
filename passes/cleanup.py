"""Remove inference no-ops: Identity and Dropout (inference mode).

Their output is replaced by their input everywhere. When the output is a graph output
and the input is a graph input (or another graph output), the node stays: the HLS
backend then emits a plain copy so the top function keeps both ports.
"""

from __future__ import annotations

import onnx_ir as ir

from kiln.annotations import is_op
from kiln.ir_utils import is_inference_dropout

NO_OP_TYPES = {"Identity", "Dropout"}


class RemoveNoOpsPass(ir.passes.InPlacePass):
    """Identity/Dropout removal."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if not is_op(node, *NO_OP_TYPES):
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
