"""FuseAttentionPass (passes/fuse_attention.py) alone on a hand-built multi-head self-attention graph.

The pass runs after FuseDensePass (its projections are kiln.Dense), so the graph is built
with MatMul + Add projections, FuseDensePass makes them Dense, and then the attention pass
runs by itself. kiln.MultiHeadAttention is not runnable by ONNX Runtime: the fused layer is
evaluated with numpy as the layer is defined and compared with ONNX Runtime on the original.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from kiln.passes.dense import FuseDensePass
from kiln.passes.fuse_attention import FuseAttentionPass
from tests.passes.graphs import attrs, const, const_of, model, node, ops, rng_input, run

T, E, H, D = 4, 8, 2, 4
rng = np.random.default_rng(5)
P = {f"{k}{r}": rng.standard_normal((E, E) if k == "W" else E).astype(np.float32) for k in "Wb" for r in "qkvo"}
X = rng_input((1, T, E))
BIAS = np.triu(np.full((T, T), -1e4), 1) + rng.standard_normal((H, T, T))  # causal mask + a per-head bias


def attention(variant=None):
    """Q, K^T, V by Reshape/Transpose, scores / sqrt(D), softmax, @ V, heads merged, out projection."""
    def proj(r, perm):
        return [helper.make_node("MatMul", ["x", f"W{r}"], [f"{r}_mm"], name=f"/{r}/MatMul"),
                helper.make_node("Add", [f"{r}_mm", f"b{r}"], [f"{r}_p"], name=f"/{r}/Add"),
                helper.make_node("Reshape", [f"{r}_p", "heads_shape"], [f"{r}_h"]),
                helper.make_node("Transpose", [f"{r}_h"], [f"{r}_t"], perm=perm)]
    scores = "s"
    nodes = [*proj("q", [0, 2, 1, 3]), *proj("k", [0, 2, 3, 1]), *proj("v", [0, 2, 1, 3]),
             helper.make_node("MatMul", ["q_t", "k_t"], ["qk"], name="/attn/MatMul")]
    if variant == "bias_then_scale":  # (QK^T + B) / sqrt(D): the bias is scaled too
        nodes += [helper.make_node("Add", ["mask", "qk"], ["qkb"]),
                  helper.make_node("Div", ["qkb", "sqrt_d"], ["s"], name="/attn/Div")]
    else:
        nodes.append(helper.make_node("Div", ["qk", "sqrt_d"], ["s"], name="/attn/Div"))
    if variant in ("mask", "bias"):  # a run-time mask (a graph input) / a constant bias on the scores
        nodes.append(helper.make_node("Add", ["s", "mask"], ["sm"]))
        scores = "sm"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1, name="/attn/Softmax"),
              helper.make_node("MatMul", ["p", "v_t"], ["o"], name="/attn/MatMul_1"),
              helper.make_node("Transpose", ["o"], ["o_t"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o_t", "merged_shape"], ["m"]),
              helper.make_node("MatMul", ["m", "Wo"], ["o_mm"], name="/attn/out/MatMul"),
              helper.make_node("Add", ["o_mm", "bo"], ["y"], name="/attn/out/Add")]
    inits = [const(k, v) for k, v in P.items()] + [
        const("heads_shape", np.array([1, T, H, D], np.int64)), const("merged_shape", np.array([1, T, E], np.int64)),
        const("sqrt_d", np.sqrt(D))] + ([const("mask", BIAS)] if variant in ("bias", "bias_then_scale") else [])
    outputs = {"y": (1, T, E), **({"p": (1, H, T, T)} if variant == "probs" else {})}
    inputs = {"x": (1, T, E), **({"mask": (T, T)} if variant == "mask" else {})}
    return model(nodes, inputs, outputs, inits, opset=17)


def _mha(x, w, heads, key_dim, value_dim, scale, bias=None):
    """kiln.MultiHeadAttention as passes/fuse_attention.py defines it (x_q is x_kv here)."""
    q, k, v = (x @ w[f"W{r}"] + w[f"b{r}"] for r in "qkv")
    out = []
    for h in range(heads):
        qh, kh = q[..., h * key_dim:(h + 1) * key_dim], k[..., h * key_dim:(h + 1) * key_dim]
        s = scale * qh @ np.swapaxes(kh, -1, -2) + (0.0 if bias is None else bias[h])
        p = np.exp(s - s.max(-1, keepdims=True))
        out.append((p / p.sum(-1, keepdims=True)) @ v[..., h * value_dim:(h + 1) * value_dim])
    return np.concatenate(out, -1) @ w["Wo"] + w["bo"]


def test_self_attention_fuses_into_one_layer():
    m = attention()
    ref = run(m, {"x": X})[0]
    FuseDensePass()(m)
    assert ops(m).count("kiln.Dense") == 4
    assert FuseAttentionPass()(m).modified
    assert ops(m) == ["kiln.MultiHeadAttention"]
    mha = node(m, "MultiHeadAttention")
    assert mha.name == "/attn/MultiHeadAttention" and mha.outputs[0].name == "y"
    assert attrs(mha) == {"heads": H, "key_dim": D, "value_dim": D, "scale": pytest.approx(0.5)}
    names = [v.name for v in mha.inputs]
    assert names == ["x", "x", "/attn_Wq", "/attn_bq", "/attn_Wk", "/attn_bk", "/attn_Wv", "/attn_bv", "/attn_Wo",
                     "/attn_bo"]
    weights = dict(zip(["Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"], (const_of(v) for v in mha.inputs[2:])))
    for key, value in weights.items():
        np.testing.assert_array_equal(value, P[key])
    got = _mha(X.astype(np.float64), weights, **attrs(mha))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["mask", "probs"])
def test_not_plain_attention_is_left_op_by_op(variant):
    m = attention(variant)
    FuseDensePass()(m)
    assert not FuseAttentionPass()(m).modified
    assert ops(m).count("Softmax") == 1 and ops(m).count("MatMul") == 2 and "kiln.MultiHeadAttention" not in ops(m)


@pytest.mark.parametrize("variant, bias_factor", [("bias", 1.0), ("bias_then_scale", 0.5)])
def test_constant_score_bias_becomes_the_bias_input(variant, bias_factor):
    """softmax(QK^T / sqrt(D) + B) with B constant [H, T, T] (a causal mask plus a per-head bias), or
    softmax((B + QK^T) / sqrt(D)): one layer whose 11th input is B (times the scale met after it: 1/2), and it
    computes what ONNX Runtime does on the original."""
    m = attention(variant)
    ref = run(m, {"x": X})[0]
    FuseDensePass()(m)
    assert FuseAttentionPass()(m).modified
    assert ops(m) == ["kiln.MultiHeadAttention"]
    mha = node(m, "MultiHeadAttention")
    assert len(mha.inputs) == 11 and mha.inputs[10].name == "/attn_bias"
    bias = const_of(mha.inputs[10])
    assert bias.shape == (H, T, T)
    np.testing.assert_allclose(bias, bias_factor * BIAS.astype(np.float32))
    weights = dict(zip(["Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"], (const_of(v) for v in mha.inputs[2:10])))
    got = _mha(X.astype(np.float64), weights, **attrs(mha), bias=bias.astype(np.float64))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
