"""Attention as timm writes it, through the lowering passes: how many blocks fuse, and each fused layer's output
against ONNX Runtime on the original export.

kiln.MultiHeadAttention is not runnable by ONNX Runtime, so each fused layer is evaluated with numpy as the
op is defined (passes/fuse_attention.py: projections, scale, the optional score bias, softmax, the optional out
projection) on the values ONNX Runtime computes for its inputs x_q and x_kv in the original model, and compared
with the value ONNX Runtime computes for its output there (the fused layer keeps the names of the values it
reads and replaces). Forms: timm's vision_transformer Attention (fused qkv Linear, reshape/permute/unbind, q *
scale or F.scaled_dot_product_attention, both exporters); EfficientFormer (q|k|v interleaved per head, a
gathered attention-bias table); LeViT (BatchNorm after the qkv Linear, Hardswish between the heads and the out
projection, so the layer ends at the merged heads); PVTv2 spatial reduction (K/V from a strided-conv-reduced
sequence, x_kv != x_q); Swin's window attention where the stage is one window.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from kiln.frontend import load_model
from kiln.passes import lowering_passes
from kiln.ir_utils import attr, const_array
from kiln.reference import ort_session

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from tests.timm_attention import efficientformer, export, levit, pvt, swin, vit_attention, windowed_merged  # noqa: E402


def mha_numpy(node: ir.Node, x_q: np.ndarray, x_kv: np.ndarray) -> np.ndarray:
    """kiln.MultiHeadAttention as passes/fuse_attention.py defines it, in float64: ``sequences`` S independent
    sequences (rows s * T ..), the same weights, the score bias [heads, Tq, Tk] shared or [S, heads, Tq, Tk]."""
    w = [None if v is None else const_array(v).astype(np.float64) for v in node.inputs[2:]]
    wq, bq, wk, bk, wv, bv, wo, bo = w[:8]
    bias = w[8] if len(w) > 8 else None
    heads, kd, vd, scale = (attr(node, k) for k in ("heads", "key_dim", "value_dim", "scale"))
    sequences = attr(node, "sequences", 1)
    xq = x_q.reshape(sequences, -1, wq.shape[0]).astype(np.float64)
    xkv = x_kv.reshape(sequences, -1, wk.shape[0]).astype(np.float64)
    outputs = []
    for s in range(sequences):
        q, k, v = xq[s] @ wq + bq, xkv[s] @ wk + bk, xkv[s] @ wv + bv
        seq_bias = None if bias is None else bias[s] if bias.ndim == 4 else bias
        heads_out = []
        for h in range(heads):
            sc = scale * q[:, h * kd:(h + 1) * kd] @ k[:, h * kd:(h + 1) * kd].T
            if seq_bias is not None:
                sc = sc + np.broadcast_to(seq_bias, (heads, len(q), len(k)))[h]
            p = np.exp(sc - sc.max(-1, keepdims=True))
            heads_out.append((p / p.sum(-1, keepdims=True)) @ v[:, h * vd:(h + 1) * vd])
        merged = np.concatenate(heads_out, -1)
        outputs.append(merged if wo is None else merged @ wo + bo)
    return np.concatenate(outputs, 0)


def lowered_and_checked(path, x: np.ndarray):
    """Lower ``path``; every kiln.MultiHeadAttention checked against ONNX Runtime on the original (max error
    relative to the output scale <= 1e-5). Returns (op counts, the fused nodes)."""
    loaded = load_model(path)
    lowering_passes()(loaded.model)
    fused = [n for n in loaded.model.graph if n.op_type == "MultiHeadAttention"]
    names = sorted({v.name for n in fused for v in (*n.inputs[:2], n.outputs[0])})
    original = onnx.load(str(path))
    session = ort_session(original, "reference", extra_outputs=names)
    wanted = [o.name for o in session.get_outputs()]
    values = dict(zip(wanted, session.run(None, {"x": x})))
    for n in fused:
        got = mha_numpy(n, values[n.inputs[0].name], values[n.inputs[1].name])
        ref = values[n.outputs[0].name]
        err = np.max(np.abs(got.reshape(ref.shape) - ref)) / np.max(np.abs(ref))
        assert err <= 1e-5, (n.name, err)
    return Counter(n.op_type for n in loaded.model.graph), fused


X5 = np.random.default_rng(0).standard_normal((1, 5, 32)).astype(np.float32)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("fused_attn", [True, False], ids=["sdpa", "explicit"])
def test_timm_vit_attention_is_one_layer(tmp_path, dynamo, fused_attn):
    path = export(*vit_attention(fused_attn), tmp_path / "m.onnx", dynamo)
    ops, (mha,) = lowered_and_checked(path, X5)
    assert dict(ops) == {"MultiHeadAttention": 1}
    assert (attr(mha, "heads"), attr(mha, "key_dim"), attr(mha, "value_dim")) == (4, 8, 8)
    assert attr(mha, "scale") == pytest.approx(8 ** -0.5)
    assert len(mha.inputs) == 10  # no score bias


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_efficientformer_attention_with_bias_table(tmp_path, dynamo):
    """q|k|v interleaved per head (reshape(B, N, H, -1).split), + attention_biases[:, idxs]: one layer, bias
    [heads, N, N] as its 11th input, with the table's values."""
    wrapped, shape = efficientformer()
    module = wrapped.module
    path = export(wrapped, shape, tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(1).standard_normal((1, 9, 24)).astype(np.float32)
    ops, (mha,) = lowered_and_checked(path, x)
    assert dict(ops) == {"MultiHeadAttention": 1}
    assert (attr(mha, "heads"), attr(mha, "key_dim"), attr(mha, "value_dim")) == (3, 8, 16)
    bias = const_array(mha.inputs[10])
    expected = module.attention_biases[:, module.attention_bias_idxs].detach().numpy()
    np.testing.assert_allclose(bias.reshape(expected.shape), expected, rtol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_levit_attention_ends_at_the_merged_heads(tmp_path, dynamo):
    """LeViT: BatchNorm after the qkv Linear (folded into the projections), a bias table, and Hardswish before the
    out projection: the layer has no Wo/bo and outputs the merged heads; Hardswish and the projection follow."""
    path = export(*levit(), tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(2).standard_normal((1, 9, 16)).astype(np.float32)
    ops, (mha,) = lowered_and_checked(path, x)
    assert ops["MultiHeadAttention"] == 1 and ops["Softmax"] == 0 and ops["MatMul"] == 0 and ops["HardSwish"] == 1
    assert mha.inputs[8] is None and mha.inputs[9] is None and mha.inputs[10] is not None
    assert mha.outputs[0].shape[-1] == 2 * 8  # heads * value_dim


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_pvt_spatial_reduction_attention(tmp_path, dynamo):
    """PVTv2: q from x, k/v from Conv(stride 2) -> LayerNorm of x: x_kv is another value than x_q, Tk = Tq / 4."""
    path = export(*pvt(), tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(3).standard_normal((1, 16, 16)).astype(np.float32)
    ops, (mha,) = lowered_and_checked(path, x)
    assert ops["MultiHeadAttention"] == 1 and ops["Softmax"] == 0 and ops["MatMul"] == 0
    assert mha.inputs[0] is not mha.inputs[1]
    assert list(mha.inputs[1].shape)[-2:] == [4, 16]


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_swin_fuses_every_window_attention(tmp_path, dynamo):
    """Swin's window attention, all 4 blocks: stage 0 (8x8 tokens, window 4) has its 4 windows side by side in the
    batch axis, so the layer has sequences=4 (16 tokens each); its unshifted block shares the relative position
    bias [heads, T, T] across windows, the shifted block's bias is [4, heads, T, T]: each window's mask (-100
    across regions) plus the per-head bias, the module's own values. Stage 1 is one window (no sequences axis)."""
    model, shape = swin()
    path = export(model, shape, tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ops, fused = lowered_and_checked(path, x)
    assert len(fused) == 4 and ops["Softmax"] == 0 and ops["MatMul"] == 0
    stage0 = [n for n in fused if attr(n, "heads") == 2]
    stage1 = [n for n in fused if attr(n, "heads") == 4]
    assert len(stage0) == 2 and len(stage1) == 2
    assert all(attr(n, "sequences") == 4 for n in stage0) and all(attr(n, "sequences") is None for n in stage1)
    biases = sorted((const_array(n.inputs[10]) for n in stage0), key=lambda b: b.ndim)
    assert [list(b.shape) for b in biases] == [[2, 16, 16], [4, 2, 16, 16]]
    block = model.layers[0].blocks[1]
    with torch.no_grad():
        expected = (block.attn._get_rel_pos_bias() + block.attn_mask[:, None]).numpy()
    np.testing.assert_allclose(biases[1], expected, rtol=1e-6, atol=1e-6)
    assert np.ptp(biases[1], axis=0).max() == pytest.approx(100.0)  # the windows' masks differ


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_windows_with_per_window_bias_and_no_out_projection(tmp_path, dynamo):
    """3 windows in the batch axis, a bias per window and head, Hardswish before the out projection: one layer with
    sequences=3, the bias [3, heads, T, T] as the module holds it, no Wo/bo."""
    module, shape = windowed_merged()
    path = export(module, shape, tmp_path / "m.onnx", dynamo)
    x = np.random.default_rng(5).standard_normal((1, *shape)).astype(np.float32)
    ops, (mha,) = lowered_and_checked(path, x)
    assert ops["Softmax"] == 0 and ops["MatMul"] == 0 and ops["HardSwish"] == 1
    assert attr(mha, "sequences") == 3 and mha.inputs[8] is None and mha.inputs[9] is None
    np.testing.assert_allclose(const_array(mha.inputs[10]), module.bias.detach().numpy(), rtol=1e-6)


# zoo model -> attention blocks fused, every one of them (both exporters)
ZOO_FUSED = {"deit_tiny_patch16_224": 12, "levit_128s": 11, "pvt_v2_b0": 8, "mobilevit_xxs": 9}


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", ZOO_FUSED)
def test_zoo_models_fuse_every_attention_block(tmp_path, name, dynamo):
    from examples.timm_zoo import ZOO, SEED, export as export_zoo, samples

    if name in ZOO:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export_zoo(name, tmp_path / "m.onnx", dynamo=dynamo)
    else:  # pvt_v2_b0 (not in the C-sim zoo; it takes no img_size): seeded random weights, 64x64
        torch.manual_seed(SEED)
        path = export(timm.create_model(name, pretrained=False), (3, 64, 64), tmp_path / "m.onnx", dynamo)
    ops, fused = lowered_and_checked(path, samples(64, 1))
    assert len(fused) == ZOO_FUSED[name] and ops["Softmax"] == 0, ops
