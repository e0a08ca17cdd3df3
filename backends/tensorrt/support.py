"""What TensorRT's ONNX parser accepts, checked before any file is written.

The operator table is data (``onnx_operators.toml``, from onnx-tensorrt's docs/operators.md for
TensorRT 10.x); this module checks a model against it and against the table's restrictions
that a folded, static-shape network can still violate:

- the opset range the parser reads (9 to 20);
- operators outside the standard domain (a custom op needs a TensorRT plugin);
- operators the table marks unsupported, or does not list;
- Q/DQ with a non-zero zero point (TensorRT's quantization is symmetric);
- ``axes`` inputs of Reduce*/Squeeze/Unsqueeze/Slice/Pad that are not initializers;
- LayerNormalization with its Mean/InvStdDev outputs in use (only ``Y`` is supported).

Every problem of the model is reported in one KilnError, grouped by reason, naming the nodes.
"""

from __future__ import annotations

import functools
import tomllib
from collections import defaultdict
from importlib import resources

import numpy as np
import onnx
from onnx import numpy_helper

from kiln.errors import KilnError

AXES_INPUT = {**{op: 1 for op in ("ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                                  "ReduceProd", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                                  "Squeeze", "Unsqueeze")},
              "Slice": 3, "Pad": 3}


@functools.cache
def operator_table() -> dict:
    text = resources.files("kiln.backends.tensorrt").joinpath("onnx_operators.toml").read_text()
    return tomllib.loads(text)


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _zero_point_nonzero(node: onnx.NodeProto, consts: dict) -> bool:
    if len(node.input) < 3 or not node.input[2]:
        return False  # absent zero point = 0
    zp = consts.get(node.input[2])
    return zp is None or bool(np.any(zp != 0))


def check_tensorrt_support(model: onnx.ModelProto, source: str) -> None:
    """Raise one KilnError listing every node TensorRT's ONNX parser would reject, and why."""
    table = operator_table()
    supported, unsupported = table["supported"], set(table["unsupported"]["ops"])
    problems: dict[str, list[str]] = defaultdict(list)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not table["opset_min"] <= opset <= table["opset_max"]:
        problems[f"opset {opset}: TensorRT's ONNX parser reads opsets {table['opset_min']} to "
                 f"{table['opset_max']}; export the model at opset 17"].append("<model>")
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            try:
                consts[node.output[0]] = numpy_helper.to_array(onnx.helper.get_attribute_value(node.attribute[0]))
            except Exception:  # noqa: BLE001 - a non-tensor constant: not usable as axes
                pass
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for i, node in enumerate(graph.node):
        label = _node_label(node, i)
        if node.domain not in ("", "ai.onnx"):
            problems[f"{node.domain}.{node.op_type} (custom-domain operator: TensorRT needs a plugin for it)"].append(label)
            continue
        op = node.op_type
        if op in unsupported:
            problems[f"{op} (marked unsupported in TensorRT's ONNX operator table)"].append(label)
            continue
        if op not in supported:
            problems[f"{op} (not in TensorRT's ONNX operator table)"].append(label)
            continue
        if op in ("QuantizeLinear", "DequantizeLinear") and _zero_point_nonzero(node, consts):
            problems[f"{op} (zero point must be 0: TensorRT quantizes symmetrically)"].append(label)
        if op in AXES_INPUT and len(node.input) > AXES_INPUT[op] and node.input[AXES_INPUT[op]] \
                and node.input[AXES_INPUT[op]] not in consts:
            problems[f"{op} (its axes input must be an initializer)"].append(label)
        if op == "LayerNormalization" and any(o in used for o in node.output[1:] if o):
            problems["LayerNormalization (only output Y is supported; Mean/InvStdDev are used)"].append(label)
    if problems:
        lines = [f"  {what}: {', '.join(repr(n) for n in names)}" for what, names in sorted(problems.items())]
        raise KilnError(f"{source}: {sum(map(len, problems.values()))} node(s) cannot be parsed by TensorRT:\n"
                        + "\n".join(lines))
