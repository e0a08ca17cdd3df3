"""PyTorch frontend: a ``torch.nn.Module`` into ONNX with ``torch.onnx``, then the ONNX frontend.

``kiln.compile(module, example_inputs=(x,))`` exports the module itself: first with the dynamo
exporter (``torch.onnx.export(..., dynamo=True)``), and if that raises, with the legacy
TorchScript exporter (``dynamo=False``). Each runs at its opset in ``TORCH_OPSETS``: dynamo at 18,
the lowest it has implementations for (asked for 17 it exports 18 and then tries a version
conversion, which fails on many timm models and prints a traceback of its own); legacy at 17,
the first with LayerNormalization. The module is
exported in eval mode on the first sample of each example input (batch 1), so axis 0 is the
batch axis of the compiled design. Which exporter was used is said on stderr.

torch stays optional: nothing here imports it until a module is given, and
``is_torch_module`` recognises one without importing torch.
"""

from __future__ import annotations

import io
import sys
import warnings

from kiln.errors import KilnError

TORCH_OPSETS = {"dynamo": 18, "legacy": 17}


def is_torch_module(obj) -> bool:
    """``obj`` is a ``torch.nn.Module`` (checked without importing torch)."""
    if "torch" not in sys.modules:
        return False
    return any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in type(obj).__mro__)


def _batch_one(example_inputs, name: str):
    import torch

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise KilnError(f"{name}: example_inputs must be a tuple of tensors (one per forward() argument), "
                        f"got {type(example_inputs).__name__}")
    out = []
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise KilnError(f"{name}: example_inputs[{i}] is not a tensor or array "
                                f"({type(x).__name__}): {e}") from None
        if x.dim() == 0 or x.shape[0] < 1:
            raise KilnError(f"{name}: example_inputs[{i}] needs a leading batch axis (shape {tuple(x.shape)})")
        out.append(x[:1])
    return tuple(out)


def _export_dynamo(module, args, opset: int):
    import torch

    program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False,
                                input_names=[f"input_{i}" for i in range(len(args))])
    return program.model_proto


def _export_legacy(module, args, opset: int):
    import onnx
    import torch

    buf = io.BytesIO()
    torch.onnx.export(module, args, buf, opset_version=opset, dynamo=False,
                      input_names=[f"input_{i}" for i in range(len(args))])
    return onnx.load_from_string(buf.getvalue())


EXPORTERS = (("dynamo", _export_dynamo), ("legacy", _export_legacy))


def export_module(module, example_inputs, opset: int | None = None, quiet: bool = False):
    """``(onnx.ModelProto, exporter)``: the module exported by the first exporter that succeeds
    ("dynamo", else "legacy"), at ``opset`` or the exporter's own in TORCH_OPSETS. Both failing is a KilnError quoting each one's error."""
    import torch

    name = type(module).__name__
    args = _batch_one(example_inputs, name)
    was_training = module.training
    module.eval()
    errors = []
    try:
        for exporter, fn in EXPORTERS:
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    proto = fn(module, args, opset or TORCH_OPSETS[exporter])
            except Exception as e:  # noqa: BLE001 - any exporter failure means: try the next one
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                errors.append(f"  {exporter}: {type(e).__name__}: {first[:300]}")
                continue
            proto.graph.name = name
            if not quiet:
                fallback = f" (the dynamo exporter failed: {errors[0].split(': ', 1)[1]})" if errors else ""
                used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
                print(f"kiln: exported {name} with torch.onnx {exporter} exporter, opset {used}{fallback}",
                      file=sys.stderr)
            return proto, exporter
    finally:
        module.train(was_training)
    raise KilnError(f"{name}: torch.onnx could not export the module:\n" + "\n".join(errors))


def prepare_model(model, example_inputs):
    """What the compile entry passes on: a torch module becomes its exported ModelProto;
    anything else is returned as is (``example_inputs`` must then be None)."""
    if is_torch_module(model):
        if example_inputs is None:
            raise KilnError(f"{type(model).__name__}: a PyTorch module needs example_inputs=(x,) to be exported "
                            "(x: a tensor with a leading batch axis, one per forward() argument)")
        return export_module(model, example_inputs)[0]
    if example_inputs is not None:
        raise KilnError("example_inputs applies to PyTorch modules only; the model given is a "
                        f"{type(model).__name__}")
    return model
