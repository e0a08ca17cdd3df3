"""A fixed leading axis that is really the batch: make it symbolic, after checking that it is.

PyTorch 0.3-era exports (hls4ml's ``*_pytorch.onnx``) were traced on a whole data set, so
their input is ``(789444, 16)`` and their output ``(789444, 5)``: the batch axis is baked in.
Compiled as written, one C-simulation "sample" would be 789,444 rows. ``relax_fixed_batch``
recognises the pattern and rewrites it:

1. every graph input and output has rank >= 2 and the same static leading dim D >=
   ``MIN_ROWS`` (inputs listed as initializers do not count); a shorter static leading axis is
   the model's shape as its author wrote it (a (3, 4) tensor is not 3 samples);
2. dim 0 of the inputs and outputs becomes symbolic, the file's value_info (shapes traced at
   D) is dropped, and ONNX shape inference runs again: every value must still have a static
   shape apart from its leading axis;
3. ONNX Runtime on the original model (D random rows) and on the rewritten model (only rows
   0, 1, D/2 and D-1 of them, gathered) must agree on those rows, so no row depended on the
   others (a running sum along the axis, a softmax over it, or a reversed one would not).

Then the rewritten model is the user's model from here on and one info line on stderr says
so; if any step fails, the model is left as it is.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx

from kiln.frontend.validate import tensor_byte_limit

MIN_ROWS = 1024
BATCH_PARAM = "N"


def _dims(v: onnx.ValueInfoProto):
    tt = v.type.tensor_type
    if not v.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def _leading_dim(proto: onnx.ModelProto):
    """D when every (non-initializer) input and every output has static leading dim D > 1."""
    initializers = {t.name for t in proto.graph.initializer}
    ports = [v for v in proto.graph.input if v.name not in initializers] + list(proto.graph.output)
    leading = set()
    for v in ports:
        dims = _dims(v)
        if not dims or len(dims) < 2 or dims[0] is None:
            return None
        leading.add(dims[0])
    return leading.pop() if len(leading) == 1 and min(leading) >= MIN_ROWS else None


def _rewritten(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    initializers = {t.name for t in out.graph.initializer}
    for v in [v for v in out.graph.input if v.name not in initializers] + list(out.graph.output):
        first = v.type.tensor_type.shape.dim[0]
        first.Clear()
        first.dim_param = BATCH_PARAM
    del out.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception:  # noqa: BLE001 - any inference failure: not the pattern
        return None
    produced = {o for n in inferred.graph.node for o in n.output}
    shapes = {v.name: _dims(v) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    if any(shapes.get(name) is None or None in shapes[name][1:] for name in produced):
        return None
    return out


def _rows_agree(original: onnx.ModelProto, rewritten: onnx.ModelProto, rows: int) -> bool:
    from kiln.frontend.quantizers import reference_model
    from kiln.reference import numpy_type, ort_session

    try:
        full = ort_session(reference_model(original), "fixed batch check", optimize=False)
        few = ort_session(reference_model(rewritten), "fixed batch check", optimize=False)
    except Exception:  # noqa: BLE001 - the ordinary load reports it
        return False
    rng = np.random.default_rng(0)
    picked = [0, 1, rows // 2, rows - 1]  # gathered from the whole axis: a row that depends on others shows
    feed_full, feed_few = {}, {}
    for inp in full.get_inputs():
        shape = [rows, *inp.shape[1:]]
        if any(not isinstance(d, int) for d in shape) or np.prod(shape) * 8 > tensor_byte_limit():
            return False
        feed_full[inp.name] = rng.standard_normal(shape).astype(numpy_type(inp.type))
        feed_few[inp.name] = feed_full[inp.name][picked]
    try:
        want = full.run(None, feed_full)
        got = few.run(None, feed_few)
    except Exception:  # noqa: BLE001
        return False
    for w, g in zip(want, got):
        w, g = np.asarray(w, np.float64)[picked], np.asarray(g, np.float64)
        if w.shape != g.shape:
            return False
        scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-30)
        if not np.all(np.isfinite(w)) or float(np.max(np.abs(w - g))) > 1e-5 * scale:
            return False
    return True


def relax_fixed_batch(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """``proto`` with a baked-in batch axis made symbolic (module docstring), or ``proto`` itself."""
    rows = _leading_dim(proto)
    if rows is None:
        return proto
    rewritten = _rewritten(proto)
    if rewritten is None or not _rows_agree(proto, rewritten, rows):
        return proto
    initializers = {t.name for t in proto.graph.initializer}
    names = ", ".join(repr(v.name) for v in proto.graph.input if v.name not in initializers)
    print(f"kiln: info: {source}: input {names} has a fixed leading axis of {rows} that is the batch axis (every "
          f"output has it and rows are computed independently: checked with ONNX Runtime on 4 of its rows); "
          "compiling it as a batch axis", file=sys.stderr)
    return rewritten
