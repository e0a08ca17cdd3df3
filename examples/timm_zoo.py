"""Real efficient-transformer architectures from timm (pinned in the test extra), random weights.

Every model is built with ``timm.create_model(name, pretrained=False)`` (never a download),
seeded, put in eval mode and exported with ``torch.onnx.export``, either the legacy
TorchScript exporter (``dynamo=False``) or the dynamo exporter (``dynamo=True``).
Input sizes are the smallest each architecture accepts near 64x64 (CI); bench/ uses 224.

    python examples/timm_zoo.py -o build/timm_zoo [--size 64] [--dynamo] [--sharpen] [names ...]
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 20261201
LOGIT_STD = 3.0  # sharpened heads: logits spread like a trained classifier's (see _sharpen_head)


@dataclass(frozen=True)
class ZooModel:
    name: str          # timm model name
    size: int = 64     # input height = width for CI
    kwargs: tuple = () # extra create_model keyword arguments (name, value) pairs
    size_kwarg: bool = True  # pass img_size=size to create_model (ViT-style models need it)


ZOO = {
    m.name: m for m in (
        ZooModel("deit_tiny_patch16_224"),
        ZooModel("poolformer_s12", size_kwarg=False),
        ZooModel("efficientformer_l1", size=224),   # its last stage's attention bias is fixed at 7x7 tokens
        ZooModel("levit_128s"),
        ZooModel("mobilevit_xxs", size_kwarg=False),
        ZooModel("mobilenetv3_small_050", size_kwarg=False),
        ZooModel("convnext_atto", size_kwarg=False),
        ZooModel("mixer_s16_224"),
    )
}


def build(name: str, size: int | None = None, sharpen: bool = False, num_classes: int | None = None):
    """The timm model with deterministic random weights, in eval mode, and its input size.

    ``sharpen``: scale the classifier head (the last Linear, or a 1x1 Conv head) so the logits
    have std LOGIT_STD over standard-normal images (``num_classes``: another head size, e.g. 10
    for a CIFAR-size classifier). A random-weight classifier gives
    near-uniform logits whose top two differ by less than a fixed-point lsb for many inputs;
    sharpened, argmax agreement between float and fixed point measures accuracy, not ties."""
    import timm
    import torch

    spec = ZOO.get(name, ZooModel(name))
    size = size or spec.size
    torch.manual_seed(SEED)
    kwargs = dict(spec.kwargs)
    if spec.size_kwarg:
        kwargs["img_size"] = size
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except TypeError as err:   # a model outside ZOO whose constructor takes no img_size (PVTv2, EdgeNeXt)
            if name in ZOO or "img_size" not in str(err):
                raise
            kwargs.pop("img_size")
            model = timm.create_model(name, pretrained=False, **kwargs)
    model.eval()
    _randomize_zero_head(model)
    if sharpen:
        _sharpen_head(model, size)
    return model, size


def _randomize_zero_head(model) -> None:
    """timm initialises some heads to zero (MLP-Mixer: weight 0, bias 0), which makes the
    output 0 for every input; such a head gets timm's usual Linear init (normal, std 0.02),
    seeded, so the output depends on the input."""
    import torch

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    if not torch.any(head.weight != 0):
        with torch.no_grad():
            head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(SEED))


def _sharpen_head(model, size: int) -> None:
    """Scale the last Linear (weight and bias) so the logits' std over 64 standard-normal
    images (seed SEED + 1, distinct from ``samples``' seeds) is LOGIT_STD."""
    import torch

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    x = torch.from_numpy(samples(size, 64, seed=SEED + 1))
    with torch.no_grad():
        logits = model(x)
        scale = LOGIT_STD / float(logits.std())
        head.weight.mul_(scale)
        if head.bias is not None:
            head.bias.mul_(scale)


def samples(size: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """Standard-normal NCHW images (what a normalised image batch looks like)."""
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def export(name: str, path, size: int | None = None, dynamo: bool = False, opset: int = 17,
           sharpen: bool = False, num_classes: int | None = None) -> Path:
    """Export ``name`` to ONNX at ``path`` (batch axis 1, static); ``sharpen``, ``num_classes``: see ``build``."""
    import torch

    model, size = build(name, size, sharpen, num_classes)
    x = torch.from_numpy(samples(size, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["x"],
                                        output_names=["y"], verbose=False)
            program.save(str(path))
        else:
            torch.onnx.export(model, (x,), str(path), opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamo=False)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ZOO))
    parser.add_argument("-o", "--output", default="build/timm_zoo")
    parser.add_argument("--size", type=int)
    parser.add_argument("--dynamo", action="store_true")
    parser.add_argument("--sharpen", action="store_true", help="scale the head to logit std LOGIT_STD")
    args = parser.parse_args(argv)
    for name in args.names:
        suffix = "dynamo" if args.dynamo else "legacy"
        path = export(name, Path(args.output) / f"{name}_{suffix}.onnx", args.size, args.dynamo, sharpen=args.sharpen)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
