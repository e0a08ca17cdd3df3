"""ONNX -> Relax through TVM's own importer (``tvm.relax.frontend.onnx.from_onnx``).

TVM is fed the frontend's model (``kiln.frontend.load_onnx(...).model``): checked, batch
axis pinned to 1, shapes inferred, shape arithmetic and constants folded. Static shapes
are what Relax needs to plan memory statically and what MetaSchedule needs to tune (it
cannot tune kernels with a symbolic batch). The HLS-specific passes (kiln.Dense and other
``kiln``-domain fusions) are not applied: TVM's importer knows only standard ONNX and does
its own fusion.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import onnx
import onnx_ir as ir

from kiln.annotations import is_standard
from kiln.backends.tvm.target import short_error
from kiln.errors import KilnError


def supported_op_types() -> set[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    # _get_convert_map is the importer's own table (TVM is pinned, see pyproject.toml);
    # If and Constant are handled outside it (see ONNXGraphImporter._check_for_unsupported_ops).
    return set(onnx_frontend._get_convert_map()) | {"If", "Constant"}


def check_importable(proto: onnx.ModelProto, source: str) -> None:
    """Every node TVM's ONNX importer cannot take, in one message with node names."""
    known = supported_op_types()
    problems: dict[str, list[str]] = defaultdict(list)

    def walk(graph: onnx.GraphProto):
        for node in graph.node:
            if not is_standard(node):
                problems[f"{node.domain}.{node.op_type} (custom domain; TVM imports standard ONNX only)"].append(
                    node.name or "<unnamed>")
            elif node.op_type not in known:
                problems[f"{node.op_type} (operator not supported by TVM's ONNX importer)"].append(
                    node.name or "<unnamed>")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(proto.graph)
    if problems:
        import tvm

        lines = [f"  {what}: {', '.join(repr(n) for n in names)}" for what, names in sorted(problems.items())]
        raise KilnError(f"{source}: {sum(map(len, problems.values()))} node(s) cannot be imported by TVM "
                        f"{tvm.__version__} (Relax ONNX frontend):\n" + "\n".join(lines))


def to_relax(model: ir.Model, source: str):
    """The frontend's model as a Relax IRModule with one function ``main``."""
    from tvm.relax.frontend.onnx import from_onnx

    proto = ir.serde.serialize_model(model)
    check_importable(proto, source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input renaming notes, checker chatter
        try:
            return from_onnx(proto, keep_params_in_input=False)
        except Exception as exc:  # the importer raises ValueError/NotImplementedError/TVMError
            raise KilnError(f"{source}: TVM's ONNX importer failed: {short_error(exc)}") from None
