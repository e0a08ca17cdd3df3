"""Fold inference-mode BatchNormalization into the preceding Conv or Dense.

BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta is a per-channel affine map, so
when y comes from a Conv (channel = output filter) or a 2-D Dense (channel = output
feature) whose output nothing else reads, scaling the weights and bias removes the
layer at no cost. A BN with nothing foldable before it stays, and the HLS backend emits
it as a per-channel scale/shift.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from kiln.annotations import is_op
from kiln.ir_utils import KILN_DOMAIN, add_initializer, attr, bn_scale_shift, const_array, single_consumer


class FoldBatchNormPass(ir.passes.InPlacePass):
    """BatchNormalization after Conv / kiln.Dense -> scaled weights."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for bn in list(graph):
            if bn.graph is None or not is_op(bn, "BatchNormalization"):
                continue
            if attr(bn, "training_mode", 0):
                continue
            producer = bn.inputs[0].producer()
            if producer is None or single_consumer(bn.inputs[0]) is not bn:
                continue
            affine = bn_scale_shift(bn)
            if affine is None:
                continue
            is_conv = is_op(producer, "Conv")
            is_dense = is_op(producer, "Dense", domain=KILN_DOMAIN)
            if is_dense and (producer.outputs[0].shape is None or len(producer.outputs[0].shape) != 2):
                continue
            if not (is_conv or is_dense):
                continue
            w = const_array(producer.inputs[1])
            if w is None:
                continue
            n_out = w.shape[0] if is_conv else w.shape[1]
            b_in = producer.inputs[2] if len(producer.inputs) > 2 else None
            b = const_array(b_in) if b_in is not None else np.zeros(n_out)
            if b is None:
                continue
            scale, shift = affine
            if is_conv:
                w_new = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
            else:
                w_new = w * scale.reshape(1, -1)
            b_new = b * scale + shift
            w_val = add_initializer(graph, f"{producer.name}_W_bn", w_new.astype(np.float32))
            b_val = add_initializer(graph, f"{producer.name}_b_bn", b_new.astype(np.float32))
            if len(producer.inputs) < 3:
                producer.resize_inputs(3)
            producer.replace_input_with(1, w_val)
            producer.replace_input_with(2, b_val)
            out = bn.outputs[0]
            ir.convenience.replace_all_uses_with(out, producer.outputs[0], replace_graph_outputs=True)
            # the folded layer's output keeps the BN output's name (it may be a graph output)
            producer.outputs[0].name, out.name = out.name, f"{out.name}_folded"
            graph.remove(bn, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)
