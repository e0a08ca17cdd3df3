"""The transformer model zoo: small PyTorch models exported to ONNX (random weights, no downloads).

1. ``jet_tagger``: the particle-physics jet tagger of the hls4ml transformer papers,
   15 particles x 6 features, 3 post-norm encoder blocks each with hand-written
   multi-head attention (2 heads, key dim 32, projected back to 6) and a 6-8-6
   feed-forward, then flatten 90-32-16-8-3 and softmax.
2. ``tiny_vit``: 4x4 patch Conv on 3x16x16, class token, positional table, 2 pre-norm
   blocks (dim 48, 3 heads via ``nn.MultiheadAttention``, MLP 96 with GELU), LayerNorm,
   head 10.
3. ``text_encoder``: int64 token ids -> embedding 32, one block with tanh-GELU, mean over
   tokens, head 4; exported at opset 13.

    python examples/zoo.py -o examples/zoo       # writes <name>.onnx and <name>_x.npy for each
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class HandAttention(nn.Module):
    """Multi-head attention written out: q/k/v Linear, head split, scaled QK^T, softmax, AV, merge."""

    def __init__(self, dim: int, heads: int, key_dim: int):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.q = nn.Linear(dim, heads * key_dim)
        self.k = nn.Linear(dim, heads * key_dim)
        self.v = nn.Linear(dim, heads * key_dim)
        self.out = nn.Linear(heads * key_dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        def split(y):
            return y.reshape(b, t, self.heads, self.key_dim).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.key_dim)
        attn = torch.softmax(scores, dim=-1)
        merged = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.heads * self.key_dim)
        return self.out(merged)


class JetEncoderBlock(nn.Module):
    def __init__(self, dim=6, heads=2, key_dim=32, ff=8):
        super().__init__()
        self.attn = HandAttention(dim, heads, key_dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.ReLU(), nn.Linear(ff, dim))

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff(x))


class JetTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[JetEncoderBlock() for _ in range(3)])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(90, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                                  nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=-1))

    def forward(self, x):
        return self.head(self.blocks(x))


class ViTBlock(nn.Module):
    def __init__(self, dim=48, heads=3, mlp=96):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim=48, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.5)
        self.blocks = nn.Sequential(ViTBlock(dim), ViTBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)  # [B, 16, 48]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class TextEncoder(nn.Module):
    def __init__(self, vocab=50, dim=32, tokens=12, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.5)
        self.attn = HandAttention(dim, heads=2, key_dim=16)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        x = self.embed(ids) + self.pos
        x = self.norm1(x + self.attn(x))
        x = self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x), approximate="tanh")))
        return self.head(x.mean(dim=1))


def zoo() -> dict:
    """name -> (module, example input, opset, sample maker)."""
    torch.manual_seed(0)
    return {
        "jet_tagger": (JetTagger().eval(), torch.zeros(1, 15, 6), 17,
                       lambda n, rng: rng.standard_normal((n, 15, 6)).astype(np.float32)),
        "tiny_vit": (TinyViT().eval(), torch.zeros(1, 3, 16, 16), 17,
                     lambda n, rng: rng.standard_normal((n, 3, 16, 16)).astype(np.float32)),
        "text_encoder": (TextEncoder().eval(), torch.zeros(1, 12, dtype=torch.int64), 13,
                         lambda n, rng: rng.integers(0, 50, (n, 12)).astype(np.int64)),
    }


def export_model(name: str, path: Path, opset: int | None = None) -> Path:
    module, example, default_opset, _ = zoo()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), opset_version=opset or default_opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    return Path(path)


def samples(name: str, n: int, seed: int = 0) -> np.ndarray:
    return zoo()[name][3](n, np.random.default_rng(seed))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="examples/zoo")
    parser.add_argument("-n", "--samples", type=int, default=256)
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in zoo():
        export_model(name, out / f"{name}.onnx")
        np.save(out / f"{name}_x.npy", samples(name, args.samples))
        print(f"wrote {out / name}.onnx and {name}_x.npy")


if __name__ == "__main__":
    main()
