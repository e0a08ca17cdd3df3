"""What ONNX Runtime's CPU provider can check of a float16 engine.onnx.

ORT's CPU provider has float16 kernels for only some operators; for the others its
InsertCastTransformer wraps the node in Casts and computes it in float32. Such a node's
float16 arithmetic is then not what was checked (only the rounding of its inputs and outputs
to float16 is). ``fp16_fallbacks`` names those operator types, from the graph ORT actually ran.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

FP32, FP16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def fp16_fallbacks(model: onnx.ModelProto) -> list[str]:
    """Op types of ``model`` that ORT's CPU provider runs in float32 (sorted)."""
    import onnxruntime as ort

    original = {n.name for n in model.graph.node}
    with tempfile.TemporaryDirectory(prefix="kiln-ort-fp16-") as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "ran.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ran = onnx.load(so.optimized_model_filepath)
    inserted = [n for n in ran.graph.node if n.name not in original and n.op_type == "Cast"]
    to_fp32 = {o for n in inserted if onnx.helper.get_attribute_value(n.attribute[0]) == FP32 for o in n.output}
    from_fp32 = {i for n in inserted if onnx.helper.get_attribute_value(n.attribute[0]) == FP16 for i in n.input}
    fell = {n.op_type for n in ran.graph.node if n.name in original
            and (any(i in to_fp32 for i in n.input) or any(o in from_fp32 for o in n.output))}
    return sorted(fell)
