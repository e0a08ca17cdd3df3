"""timm's attention modules as small one-input models, random weights (shared by tests/passes/test_attention_models.py
and tests/test_attention_timm.py): the forms passes/fuse_attention.py fuses."""

from __future__ import annotations

import warnings

import torch


class Wrap(torch.nn.Module):
    """One timm attention module as a model of one input (PVT's also takes its feature map size)."""

    def __init__(self, module, *extra):
        super().__init__()
        self.module, self.extra = module, extra

    def forward(self, x):
        return self.module(x, *self.extra)


def export(module, shape, path, dynamo=False):
    """torch.onnx.export at batch 1: legacy exporter at opset 17, or dynamo at opset 18."""
    module.eval()
    x = torch.zeros(1, *shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (x,), dynamo=True, opset_version=18, input_names=["x"], output_names=["y"],
                              verbose=False).save(str(path))
        else:
            torch.onnx.export(module, (x,), str(path), opset_version=17, input_names=["x"], output_names=["y"],
                              dynamo=False)
    return path


def vit_attention(fused_attn: bool):
    """timm vision_transformer Attention(32, 4 heads) on 5 tokens: F.scaled_dot_product_attention (fused_attn) or
    q * scale, q @ k^T, softmax, @ v."""
    from timm.models.vision_transformer import Attention

    torch.manual_seed(0)
    module = Attention(32, num_heads=4, qkv_bias=True)
    module.fused_attn = fused_attn
    return Wrap(module), (5, 32)


def efficientformer():
    """EfficientFormer Attention: q|k|v interleaved per head, a random attention-bias table, 9 tokens."""
    from timm.models.efficientformer import Attention

    torch.manual_seed(0)
    module = Attention(dim=24, key_dim=8, num_heads=3, attn_ratio=2, resolution=3)
    with torch.no_grad():
        module.attention_biases.normal_()
    return Wrap(module), (9, 24)


def levit():
    """LeViT Attention: LinearNorm (Linear + BatchNorm1d, random statistics: timm initialises the out BatchNorm's
    weight to 0), a random bias table, Hardswish before the out projection; 9 tokens."""
    from timm.models.levit import Attention

    torch.manual_seed(0)
    module = Attention(dim=16, key_dim=4, num_heads=2, attn_ratio=2, resolution=3, act_layer=torch.nn.Hardswish)
    with torch.no_grad():
        module.attention_biases.normal_()
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm1d):
                bn.running_mean.normal_(0, 0.5), bn.running_var.uniform_(0.5, 1.5), bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.2)
    return Wrap(module), (9, 16)


def pvt():
    """PVTv2 Attention with sr_ratio 2 on a 4x4 feature map: K/V from Conv(stride 2) -> LayerNorm (4 tokens)."""
    from timm.models.pvt_v2 import Attention

    torch.manual_seed(0)
    return Wrap(Attention(16, num_heads=2, sr_ratio=2), [4, 4]), (16, 16)


def swin():
    """A small timm SwinTransformer on 32x32 images: patch 4 -> 8x8 tokens, window 4. Stage 0 has 4 windows (the
    second block shifted, with its mask); stage 1 (4x4 tokens) is one window with its relative position bias."""
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                            num_classes=10)
    with torch.no_grad():
        for table in (m.relative_position_bias_table for m in model.modules() if hasattr(m, "relative_position_bias_table")):
            table.normal_()
    return model, (3, 32, 32)


def mobilevitv2():
    """timm mobilevitv2_050 at 64x64: MobileViTv2's separable (linear) attention."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("mobilevitv2_050", pretrained=False), (3, 64, 64)


class WindowedMerged(torch.nn.Module):
    """Not timm: 3 windows of 4 tokens side by side in the batch axis (like Swin's), a random score bias per window
    and head [3, 2, 4, 4], and a Hardswish between the merged heads and the out projection (like LeViT): the
    layer has sequences=3, its bias [S, heads, T, T] and no out projection (kiln::multihead_attention_merged_sequences)."""

    def __init__(self, windows=3, tokens=4, dim=8, heads=2, head_dim=3):
        super().__init__()
        self.shape, self.scale = (windows, tokens, heads, head_dim), head_dim ** -0.5
        self.qkv = torch.nn.Linear(dim, 3 * heads * head_dim)
        self.bias = torch.nn.Parameter(torch.randn(windows, heads, tokens, tokens))
        self.proj = torch.nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        windows, tokens, heads, head_dim = self.shape
        q, k, v = self.qkv(x).reshape(windows, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + self.bias).softmax(-1)
        merged = (attn @ v).transpose(1, 2).reshape(1, windows * tokens, heads * head_dim)
        return self.proj(torch.nn.functional.hardswish(merged))


def windowed_merged():
    torch.manual_seed(0)
    return WindowedMerged(), (12, 8)
