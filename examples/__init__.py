"""Example models for Kiln (importable from tests and benchmarks)."""
