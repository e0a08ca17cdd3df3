"""Build the MIL program of a lowered model: with placeholders (the saved package) or with a
sample as constant inputs (value inference, the Linux numerics check)."""

from __future__ import annotations

import numpy as np

from kiln.backends.coreml.lower import Lowering, mil_name

TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")


def deployment_target(name: str):
    import coremltools as ct

    return getattr(ct.target, name)


def mil_dtype(dtype: str):
    from coremltools.converters.mil.mil import types

    return {"float32": types.fp32, "float16": types.fp16, "int64": types.int32, "int32": types.int32,
            "bool": types.bool}[dtype]


def build_program(model, inputs: list[dict], outputs: list[dict], target: str, quantized_weights=None):
    """The ML Program: one placeholder per input (int64 ids become int32), outputs named after
    the ONNX outputs (sanitized)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program

    placeholders = {mil_name(p["name"]): mb.placeholder(shape=p["shape"], dtype=mil_dtype(p["dtype"]))
                    for p in inputs}
    prog = Program()
    with Function(placeholders, opset_version=deployment_target(target)) as func:
        lw = Lowering(model, quantized_weights)
        outs = lw.run({p["name"]: func.inputs[mil_name(p["name"])] for p in inputs})
        named = [mb.identity(x=y, name=mil_name(p["name"])) for p, y in zip(outputs, outs)]
        func.set_outputs(named)
        prog.add_function("main", func)
    return prog


def fold_with_constants(model, inputs: list[dict], sample: list[np.ndarray], target: str):
    """Walk the graph with ``sample`` (one per input, batch 1) as MIL constants. Returns
    (output values or None per output, op types whose MIL ops computed no value although
    every input was known: those ops have no value inference in coremltools)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Var

    def known(x):
        return isinstance(x, np.ndarray) or (isinstance(x, Var) and x.val is not None)

    blocked: dict[str, list[str]] = {}
    with Function({}, opset_version=deployment_target(target)):
        lw = Lowering(model, constant_inputs=True)
        consts = {p["name"]: mb.const(val=x.astype(np.int32 if p["dtype"].startswith("int") else np.float32))
                  for p, x in zip(inputs, sample)}
        lw.env.update(consts)
        from kiln.backends.coreml.lower import REGISTRY

        for node in model.graph:
            outs = REGISTRY[node.op_type](lw, node)
            ins_known = all(v is None or known(lw.value(v)) for v in node.inputs)
            for value, out in zip(node.outputs, outs):
                if value is not None and out is not None:
                    lw.env[value.name] = out
            if ins_known and not all(known(o) for o in outs if o is not None):
                blocked.setdefault(node.op_type, []).append(node.name)
        values = []
        for v in model.graph.outputs:
            y = lw.env[v.name]
            values.append(np.asarray(y if isinstance(y, np.ndarray) else y.val) if known(y) else None)
    return values, blocked
