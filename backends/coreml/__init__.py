"""CoreML backend: ONNX (after Kiln's frontend and the LayerNorm/GELU fusions) -> MIL program
built with coremltools' MIL builder -> ML Program package (.mlpackage) for Apple boards.

coremltools has no ONNX converter since 6.0, so each ONNX op family is lowered by a small
function (lower.py's REGISTRY; ops_tensor.py, ops_nn.py, ops_quant.py). Prediction needs
macOS; elsewhere the package is checked by reloading it and by MIL value inference (verify.py).
"""

from kiln.backends.coreml.compiler import compile_coreml

__all__ = ["compile_coreml"]
