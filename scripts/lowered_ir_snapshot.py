"""Snapshot of the lowered IR of the zoo and the test suite's torch models, to check that a pass refactor changes nothing.

    .venv/bin/python scripts/lowered_ir_snapshot.py --write before.json     # on the old code
    .venv/bin/python scripts/lowered_ir_snapshot.py --compare before.json   # on the new code: exit 1 on any difference

For every model: ``kiln.driver.lower(model, precision="float")`` then, per node in order,
(op_type, domain, name, attributes, input names, output names, metadata), plus a digest of every
constant input so that folded weights (gamma/beta, attention projections) are compared too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _attr(a: ir.Attr):
    value = a.value
    if isinstance(value, ir.TensorProtocol):
        return ["tensor", _digest(value.numpy())]
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, (int, float, str)) else repr(v) for v in value]
    if isinstance(value, float):
        return float(np.float32(value))
    return value if isinstance(value, (int, str)) else repr(value)


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return f"{array.dtype}{list(array.shape)}:{hashlib.sha1(array.tobytes()).hexdigest()[:16]}"


def describe(model: ir.Model) -> list:
    from kiln.ir_utils import const_array

    rows = []
    for node in model.graph:
        inputs = []
        for v in node.inputs:
            if v is None:
                inputs.append(None)
                continue
            c = const_array(v)
            inputs.append(v.name if c is None else f"{v.name}={_digest(c)}")
        rows.append([node.op_type, node.domain, node.name, {k: _attr(a) for k, a in sorted(node.attributes.items())},
                     inputs, [o.name for o in node.outputs], dict(node.metadata_props)])
    return rows


def _models(directory: Path):
    """(name, path or proto) for every model compared."""
    import torch

    from examples.zoo import export_model, zoo
    from tests import test_attention as att
    from tests import test_fusion as fus
    from tests import test_torch_models as tm
    from tests.helpers import export_torch

    for name, (_, _, opset, _) in zoo().items():
        for o in sorted({opset, 17}):
            yield f"zoo:{name}:op{o}", export_model(name, directory / f"{name}_{o}.onnx", opset=o)
    torch.manual_seed(0)
    block = fus.NormGeluBlock()
    with torch.no_grad():
        for ln in (block.ln1, block.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    for o in (13, 17, 18):
        yield f"fusion:NormGeluBlock:op{o}", export_torch(block, torch.zeros(1, 5, 8), directory / f"ng{o}.onnx",
                                                         opset=o)
    for name, (factory, shapes, opset, _) in att.FORMS.items():
        torch.manual_seed(0)
        yield f"attention:{name}", att._export(factory(), shapes, directory / f"{name}.onnx", opset)
    for variant in ("mask", "axis", "probs"):
        torch.manual_seed(0)
        outputs = ("y", "p") if variant == "probs" else ("y",)
        yield f"attention:HandCross_{variant}", att._export(att.HandCross(variant=variant), [(6, 8), (9, 5)],
                                                            directory / f"hc_{variant}.onnx", 17, outputs)
    for name in tm.MODELS:
        for o in tm.OPSETS:
            yield f"torch_models:{name}:op{o}", tm.exported(name, o, str(directory))


def snapshot() -> dict:
    from kiln.driver import lower
    from kiln.errors import KilnError

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in _models(Path(tmp)):
            for fuse in (True, False):
                key = f"{name}:{'fused' if fuse else 'unfused'}"
                try:
                    result[key] = describe(lower(model, precision="float", fuse=fuse)[0].model)
                except KilnError as error:  # e.g. an unfused op the HLS backend lacks: the message is compared
                    result[key] = [["error", str(error).replace(tmp, "<tmp>")]]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args()
    now = json.loads(json.dumps(snapshot()))
    if args.write:
        args.write.write_text(json.dumps(now, indent=1))
        print(f"{len(now)} lowered models, {sum(map(len, now.values()))} nodes -> {args.write}")
        return 0
    before = json.loads(args.compare.read_text())
    differ = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    for key in differ:
        print(f"DIFFERENT: {key}")
        old, new = before.get(key) or [], now.get(key) or []
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                print(f"  node {i}:\n    before {a}\n    after  {b}")
                break
        if len(old) != len(new):
            print(f"  {len(old)} nodes before, {len(new)} after")
    print(f"{len(now)} lowered models, {sum(map(len, now.values()))} nodes; {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
