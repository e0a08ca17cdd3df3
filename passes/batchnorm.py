"""Fold inference-mode BatchNormalization into the preceding Conv or Dense.

BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta is a per-channel affine map, so
when y comes from a Conv (channel = output filter) or a 2-D Dense (channel = output
feature) whose output nothing else reads, scaling the weights and bias removes the
layer at no cost. A BN with nothing foldable before it stays, and the HLS backend emits
it as a per-channel scale/shift.

Quantized weights (integers q times a per-channel scale s, ``kiln.quant_specs``) stay
quantized: q * s * gamma_c / sqrt(var_c + eps) is q times the channel scale |s * gamma_c / ...|
(sign into q when the range is symmetric), so the folded weights keep their specs and
passes/weight_scale.py still makes them exact integers with one multiply per output.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

import dataclasses

from kiln.annotations import QUANT_SPECS, is_op
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
            specs = _scaled_specs(producer.inputs[1], w, scale, 0 if is_conv else 1)
            if specs:
                w_val.meta[QUANT_SPECS] = specs
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


def _scaled_specs(weight: ir.Value, w: np.ndarray, bn_scale: np.ndarray, axis: int) -> list | None:
    """The quantizer specs of ``w * bn_scale`` (per output channel on ``axis``), or None when ``w``
    is not quantized or a channel's integers do not survive the scaling (negated out of range)."""
    from kiln.passes.weight_scale import _integer_weights  # one definition of "integers times a scale"

    specs = weight.meta.get(QUANT_SPECS)
    if not specs or any(s.zero_point or s.bipolar for s in specs):
        return None
    found = _integer_weights(w, specs, axis)
    if found is None:
        return None
    q, scales = found
    q = np.moveaxis(q, axis, 0).reshape(len(scales), -1)
    out = set()
    for c, (s_c, k) in enumerate(zip(scales, bn_scale.reshape(-1))):
        spec = next(sp for sp in specs if sp.scale == s_c)
        if k == 0:
            continue  # the channel's weights become zeros: integers of any scale
        if k < 0 and q[c].size and ((-q[c]).min() < spec.q_min or (-q[c]).max() > spec.q_max):
            return None
        out.add(dataclasses.replace(spec, scale=float(abs(s_c * k))))
    return sorted(out, key=lambda sp: sp.scale) or None
