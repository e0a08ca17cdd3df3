"""Multi-head attention fusion (passes/fuse_attention.py) and its HLS layer (kiln_attention.h).

The zoo models' fused counts and float agreement, fused and unfused, are in
tests/test_zoo.py. Here: the other forms torch exports (nn.MultiheadAttention at opset 14,
cross-attention with separate or packed projections, hand-written attention with
value_dim != key_dim, timm-style packed qkv split by Gather/Split or Slice) fuse into one
layer and agree with ONNX Runtime in float; graphs that are not plain attention (an
additive mask, softmax over the queries, the probabilities read outside) are left op by
op and still agree; the reuse factor is lowered / rejected as for other layers; one
attention block in fixed<16,6> stays within a stated bound.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from tests.helpers import export_torch, relative_error

import kiln
from kiln.errors import KilnError

torch = pytest.importorskip("torch")
nn = torch.nn


class TorchMHA(nn.Module):
    """nn.MultiheadAttention(batch_first=True): self-attention, or cross-attention on a second input."""

    def __init__(self, cross=False, **kwargs):
        super().__init__()
        self.cross = cross
        self.attn = nn.MultiheadAttention(batch_first=True, **kwargs)

    def forward(self, x, mem=None):
        kv = mem if self.cross else x
        return self.attn(x, kv, kv, need_weights=False)[0]


class HandCross(nn.Module):
    """Hand-written cross-attention: value_dim != key_dim, K^T by one permute, scale as Mul on Q.

    ``variant`` breaks the pattern: "mask" adds a run-time mask (from the input) to the scores, "axis"
    takes the softmax over the queries, "probs" also returns the probabilities. "bias" adds a constant
    per-head bias and causal mask, which fuses (the layer's score bias input).
    """

    def __init__(self, dq=8, dkv=5, heads=3, key_dim=4, value_dim=6, out=7, variant=None):
        super().__init__()
        self.h, self.kd, self.vd, self.variant = heads, key_dim, value_dim, variant
        self.q, self.k = nn.Linear(dq, heads * key_dim), nn.Linear(dkv, heads * key_dim)
        self.v, self.o = nn.Linear(dkv, heads * value_dim), nn.Linear(heads * value_dim, out)
        self.score_bias = nn.Parameter(torch.randn(heads, 6, 9))  # the bias variant's [heads, Tq, Tk] (6 x 9 tokens)

    def forward(self, x, mem):
        b, tq, _ = x.shape
        tk = mem.shape[1]
        q = self.q(x).view(b, tq, self.h, self.kd).permute(0, 2, 1, 3)
        k = self.k(mem).view(b, tk, self.h, self.kd).permute(0, 2, 3, 1)
        v = self.v(mem).view(b, tk, self.h, self.vd).transpose(1, 2)
        s = (q * self.kd ** -0.5) @ k
        if self.variant == "mask":
            s = s + mem.mean(-1)[:, None, None, :]
        elif self.variant == "bias":
            s = s + torch.triu(torch.full((tq, tk), -1e4), 1) + self.score_bias
        p = s.softmax(-2 if self.variant == "axis" else -1)
        out = self.o((p @ v).transpose(1, 2).reshape(b, tq, self.h * self.vd))
        return (out, p) if self.variant == "probs" else out


class PackedQKV(nn.Module):
    """timm-style Linear(dim, 3 dim) split into q, k, v by unbind (Gather/Split) or chunk (Slice)."""

    def __init__(self, dim=12, heads=3, style="unbind"):
        super().__init__()
        self.h, self.d, self.style = heads, dim // heads, style
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        if self.style == "unbind":
            q, k, v = self.qkv(x).reshape(b, n, 3, self.h, self.d).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (t.reshape(b, n, self.h, self.d).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        a = (q @ k.transpose(-2, -1)) * self.d ** -0.5
        return self.proj((a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


# name -> (module factory, input shapes without batch, opset, expected attributes)
FORMS = {
    "torch_mha_opset14": (lambda: TorchMHA(embed_dim=16, num_heads=4), [(7, 16)], 14,
                          {"heads": 4, "key_dim": 4, "value_dim": 4, "scale": 0.5}),
    "torch_mha_cross_kdim": (lambda: TorchMHA(cross=True, embed_dim=16, num_heads=2, kdim=10, vdim=10),
                             [(5, 16), (9, 10)], 17, {"heads": 2, "key_dim": 8, "value_dim": 8}),
    "torch_mha_cross_packed": (lambda: TorchMHA(cross=True, embed_dim=16, num_heads=2), [(5, 16), (9, 16)], 17,
                               {"heads": 2, "key_dim": 8}),
    "hand_cross_opset13": (lambda: HandCross(), [(6, 8), (9, 5)], 13,
                           {"heads": 3, "key_dim": 4, "value_dim": 6, "scale": 0.5}),
    "hand_cross_const_bias": (lambda: HandCross(variant="bias"), [(6, 8), (9, 5)], 17,
                              {"heads": 3, "key_dim": 4, "value_dim": 6, "scale": 0.5}),
    "packed_unbind_opset13": (lambda: PackedQKV(style="unbind"), [(5, 12)], 13, {"heads": 3, "key_dim": 4}),
    "packed_chunk_opset17": (lambda: PackedQKV(style="chunk"), [(5, 12)], 17, {"heads": 3, "key_dim": 4}),
}


def _export(module, shapes, path, opset, outputs=("y",)):
    names = ("x", "mem")[:len(shapes)]
    return export_torch(module, tuple(torch.zeros(1, *s) for s in shapes), path, opset=opset, input_names=names,
                        output_names=outputs)


def _inputs(shapes, n=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, *s)).astype(np.float32) for s in shapes]


def _lowered(project) -> tuple[Counter, list[onnx.NodeProto]]:
    nodes = list(onnx.load(project.path / "kiln_ir.onnx").graph.node)
    return Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in nodes), nodes


@pytest.mark.parametrize("name", FORMS)
def test_attention_forms_fuse_and_agree(tmp_path, name):
    factory, shapes, opset, expected = FORMS[name]
    torch.manual_seed(0)
    path = _export(factory(), shapes, tmp_path / "m.onnx", opset)
    project = kiln.compile(path, output_dir=tmp_path / "p", precision="float")
    ops, nodes = _lowered(project)
    assert ops["kiln.MultiHeadAttention"] == 1 and ops["MatMul"] == 0 and ops["Softmax"] == 0, ops
    mha = next(n for n in nodes if n.op_type == "MultiHeadAttention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mha.attribute}
    for key, value in expected.items():
        assert attrs[key] == pytest.approx(value), (key, attrs)
    xs = _inputs(shapes)
    assert relative_error(project.csim(xs), project.reference(xs)[0]) <= 1e-5


@pytest.mark.parametrize("variant", ["mask", "axis", "probs"])
def test_not_attention_is_left_op_by_op(tmp_path, variant):
    shapes = [(6, 8), (9, 5)]
    torch.manual_seed(0)
    outputs = ("y", "p") if variant == "probs" else ("y",)
    path = _export(HandCross(variant=variant), shapes, tmp_path / "m.onnx", 17, outputs)
    project = kiln.compile(path, output_dir=tmp_path / "p", precision="float")
    ops, _ = _lowered(project)
    assert ops["kiln.MultiHeadAttention"] == 0 and ops["MatMul"] == 2 and ops["Softmax"] == 1, ops
    xs = _inputs(shapes)
    for got, ref in zip(project.csim(xs, return_all=True), project.reference(xs)):
        assert relative_error(got, ref) <= 1e-5


def test_reuse_factor(tmp_path):
    """R must divide each projection's multiplications (5 rows x 144 weights each here): a model-wide R is lowered to
    a divisor, a per-layer one that does not divide is an error; the core takes ceil(n / R)
    multipliers for its 600 multiplications (3 heads x 5 queries x 5 keys x (4 + 4))."""
    torch.manual_seed(0)
    path = _export(PackedQKV(), [(5, 12)], tmp_path / "m.onnx", 17)
    xs = _inputs([(5, 12)])
    for model_rf, rf in ((4, 4), (7, 6)):
        project = kiln.compile(path, output_dir=tmp_path / f"p{model_rf}", precision="float", reuse_factor=model_rf)
        params = (project.path / "firmware" / "parameters.h").read_text()
        assert f"static const unsigned reuse_factor = {rf};" in params
        assert f"static const unsigned block_factor = {144 // rf};" in params
        assert f"static const unsigned multiplier_limit = {-(-600 // rf)};" in params
        assert relative_error(project.csim(xs), project.reference(xs)[0]) <= 1e-5
    config = {"layers": {"/MultiHeadAttention": {"reuse_factor": 7}}}
    with pytest.raises(KilnError, match=r"reuse_factor 7 must divide the multiplications of each projection .* "
                                        r"valid values: \[1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 15, 16, 18, 20, "):
        kiln.compile(path, output_dir=tmp_path / "bad", precision="float", config=config)


def test_attention_block_in_fixed_point(tmp_path):
    """One hand-written attention block (dim 16, 2 heads, key dim 8, 10 tokens) in fixed<16,6>.

    Bound: fixed<16,6> has lsb 2^-10 ~ 1e-3 and truncates; the input and the output are
    each quantised once (up to 1 lsb each), the weights are rounded (error <= 0.5 lsb,
    summed over fan-in 16 with inputs |x| <~ 3), q/k/v are rounded to P and the scores,
    probabilities and weighted values carry 12-17 fractional bits, so a few lsb in all:
    max abs error <= 6e-3 (6 lsb), mean <= 1.5e-3; measured 2.6e-3 and 6.7e-4 on outputs up
    to 0.9. The fused layer's wider internal types make it no worse than the op-by-op
    graph, whose every intermediate is fixed<16,6> (measured 5.4e-3 max).
    """
    from examples.zoo import HandAttention

    torch.manual_seed(0)
    path = export_torch(HandAttention(16, 2, 8), torch.zeros(1, 10, 16), tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((500, 10, 16)).astype(np.float32)
    errors = {}
    for fuse in (True, False):
        project = kiln.compile(path, output_dir=tmp_path / f"p{fuse}", precision="fixed<16,6>", fuse=fuse)
        assert _lowered(project)[0]["kiln.MultiHeadAttention"] == (1 if fuse else 0)
        errors[fuse] = np.abs(project.csim(x) - project.reference(x)[0])
    assert errors[True].max() <= 6e-3 and errors[True].mean() <= 1.5e-3
    assert errors[True].max() <= errors[False].max()
