"""Frontends: turn a user's model into the IR (an ``onnx_ir.Model`` with static shapes)."""

from kiln.frontend.onnx_loader import LoadedModel, load_onnx

__all__ = ["LoadedModel", "load_onnx"]
