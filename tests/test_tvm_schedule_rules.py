"""Schedule rules added for issue 16 (backends/tvm/schedules.py, fast_math.py): parallel loops
over the leading loops only, 1x1 convs that read their input in place with a rows x columns
vector tile (in ONNX's NCHW: `legalize(conv_layout=None)`), erf as fast_erf; each checked
in the scheduled TIR and against ONNX Runtime
(1e-5), and `kiln bench --json`'s per-engine statistics."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

from kiln.backends.tvm import compile_tvm, schedules  # noqa: E402
from kiln.backends.tvm.importer import to_relax  # noqa: E402
from kiln.backends.tvm.target import resolve_target  # noqa: E402
from kiln.board import get_board  # noqa: E402
from kiln.frontend import load_model  # noqa: E402

F32 = TensorProto.FLOAT


def _save(path, nodes, x_shape, y_shape, inits):
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", F32, x_shape)],
                              [helper.make_tensor_value_info("y", F32, y_shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def _w(rng, name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    rng = np.random.default_rng(5)
    # mobilenet-like: padded stride-2 depthwise 3x3, then 1x1 convs at 14x14 (196: no whole
    # 16-float tile -> whole rows), 7x7 after a stride-2 depthwise, and 12x12 (144 = 9 x 16)
    dw = _save(d / "dw.onnx",
               [helper.make_node("Conv", ["x", "dw"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
                helper.make_node("Relu", ["a"], ["r"]),
                helper.make_node("Conv", ["r", "pw", "pb"], ["p"]),
                helper.make_node("Add", ["p", "r2"], ["y"])],
               [1, 16, 28, 28], [1, 24, 14, 14],
               [_w(rng, "dw", 16, 1, 3, 3), _w(rng, "pw", 24, 16, 1, 1), _w(rng, "pb", 24), _w(rng, "r2", 1, 24, 14, 14)])
    small = _save(d / "pw7.onnx",
                  [helper.make_node("Conv", ["x", "dw"], ["a"], pads=[2, 2, 2, 2], strides=[2, 2], group=32),
                   helper.make_node("Conv", ["a", "pw"], ["y"])],
                  [1, 32, 14, 14], [1, 40, 7, 7], [_w(rng, "dw", 32, 1, 5, 5), _w(rng, "pw", 40, 32, 1, 1)])
    grid = _save(d / "pw12.onnx", [helper.make_node("Conv", ["x", "pw"], ["y"])],
                 [1, 24, 12, 12], [1, 16, 12, 12], [_w(rng, "pw", 16, 24, 1, 1)])
    # 40x40 pixels with bias and a residual epilogue: rows of 40 are no whole 16-float vector,
    # 1600 pixels are 100 of them
    wide = _save(d / "pw40.onnx",
                 [helper.make_node("Conv", ["x", "pw", "pb"], ["p"]), helper.make_node("Add", ["p", "r"], ["y"])],
                 [1, 8, 40, 40], [1, 24, 40, 40], [_w(rng, "pw", 24, 8, 1, 1), _w(rng, "pb", 24), _w(rng, "r", 1, 24, 40, 40)])
    gelu = _save(d / "gelu.onnx",
                 [helper.make_node("MatMul", ["x", "w"], ["h"]),
                  helper.make_node("Div", ["h", "sq2"], ["hd"]), helper.make_node("Erf", ["hd"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["he"]),
                  helper.make_node("Mul", ["he", "half"], ["y"])],
                 [1, 20, 32], [1, 20, 64],
                 [numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w"),
                  numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sq2"),
                  numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    # DeiT's attention scores over 197 tokens (a prime: no whole vector, no whole row tile), scaled so
    # that the softmax is not one-hot, then attn @ v
    attn = _save(d / "attn197.onnx",
                 [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
                  helper.make_node("MatMul", ["x", "xt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
                  helper.make_node("Softmax", ["ss"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "x"], ["y"])],
                 [1, 3, 197, 64], [1, 3, 197, 64], [numpy_helper.from_array(np.array(0.02, np.float32), "scale")])
    # poolformer's downsampling: 3x3 stride-2 conv, 56 -> 28 columns (a gather per vector)
    s2 = _save(d / "s2.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
               [1, 16, 56, 56], [1, 32, 28, 28], [_w(rng, "w", 32, 16, 3, 3)])
    return {"dw": dw, "pw7": small, "pw12": grid, "pw40": wide, "gelu": gelu, "attn197": attn, "s2": s2}


def _kernels(path, board="x86-host"):
    from tvm import tirx

    target = resolve_target(get_board(board))
    loaded = load_model(str(path), quantizers=False)
    mod, counts = schedules.schedule_module(schedules.legalize(to_relax(loaded.model, loaded.source), target,
                                                                     conv_layout=None), target)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}, counts


def _parallel_extents(func) -> list[int]:
    return [int(n) for n in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", func.script())]


def _matches_onnxruntime(path, tmp_path, samples=2):
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / path.stem)
    assert art.manifest["schedules"]["default"] == 0
    x = np.random.default_rng(7).standard_normal((samples, *art.inputs[0]["shape"][1:])).astype(np.float32)
    (result,) = art.compare(x)
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result
    return art


def test_parallel_loop_is_the_leading_loops_not_the_whole_nest(models):
    """The padded copy of a stride-2 depthwise conv (16 x 30 x 30): parallel over channels only."""
    kernels, counts = _kernels(models["dw"])
    cores = counts["cores"]
    (dw,) = [f for n, f in kernels.items() if "conv2d" in n and "pad_temp" in f.script()]
    extents = _parallel_extents(dw)
    assert extents, dw.script()
    want = cores * schedules.PARALLEL_TASKS_PER_CORE
    # every parallel loop is the fewest leading loops reaching `want` tasks: at most want x a loop's extent
    assert all(e <= 16 * 15 * 15 for e in extents) and max(extents) < 16 * 30 * 30, extents
    if cores > 1:
        assert min(extents) >= min(want, 16)


@pytest.mark.parametrize("name,width", [("dw", 14), ("pw7", 7), ("pw12", 12), ("pw40", 40)])
def test_pointwise_conv_reads_in_place_with_a_rows_by_columns_tile(models, name, width, tmp_path):
    """Rows of ``width`` pixels with no whole-vector tile of their own (12 and 40 at 16 lanes),
    whose pixels together are whole vectors (144, 1600), are one fused pixel axis: the
    accumulator cache and its write-back (with the epilogue) indexed by it. 14x14 = 196 and
    7x7 are not whole vectors: a row a vector."""
    from kiln.backends.tvm.tir_access import _vector_tile

    kernels, counts = _kernels(models[name])
    lanes = counts["vector_lanes"]
    pointwise = [f for n, f in kernels.items() if "conv2d" in n and "pad_temp" not in f.script()]
    assert pointwise, list(kernels)  # the 1x1 conv's unpadded pad_temp copy is gone
    text = pointwise[-1].script()
    fused = (width < 2 * lanes or _vector_tile(width, lanes, 2 * lanes) % lanes != 0) and width * width % lanes == 0
    flat_cache = any('scope="local"' in line and f"T.int64({width * width}))" in line for line in text.splitlines())
    assert bool(flat_cache) == fused and "T.vectorized(" in text, text
    if fused:  # no write-back wider than the vector tile: under the tile loop, not above it
        assert not re.search(r"T\.vectorized\(T\.max", text), text
    update = text[:text.index('T.sblock("conv2d_nchw_update")')]
    tile = int(re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", update)[-1])
    # one (widened) vector or whole vectors, never a vector and a ragged rest (14 at 8 lanes: 4.7x slower than 7)
    assert tile <= lanes or tile % lanes == 0, (tile, lanes)
    _matches_onnxruntime(models[name], tmp_path)


def test_erf_becomes_fast_erf_and_stays_within_1e5_of_onnxruntime(models, tmp_path):
    kernels, _ = _kernels(models["gelu"])
    texts = "\n".join(f.script() for f in kernels.values())
    assert "T.erf(" not in texts and any("fast_erf" in n for n in kernels), list(kernels)
    # GELU's x / sqrt(2) is a product with the reciprocal: no division left in the fused epilogue
    # but fast_erf's own quotient of polynomials
    (gelu,) = [f.script() for n, f in kernels.items() if "fast_erf" in n]
    assert not any("divide" in n for n in kernels) and gelu.count(" / ") == 1, gelu
    _matches_onnxruntime(models["gelu"], tmp_path, samples=3)


def test_bench_json_has_median_p10_p90_per_engine_and_the_ratio(models, tmp_path):
    from tests.helpers import run_kiln

    out = tmp_path / "pw12"
    assert run_kiln("compile", models["pw12"], "--board", "x86-host", "-o", out).returncode == 0
    result = run_kiln("bench", out, "--repeat", "7", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # one object
    engines = {e["engine"]: e for e in data["engines"]}
    assert {"tvm", "tvm_wall", "onnxruntime"} <= set(engines)
    for e in engines.values():
        assert e["runs"] == 7 and 0 < e["p10_ms"] <= e["median_ms"] <= e["p90_ms"], e
    ratio = engines["tvm_wall"]["median_ms"] / engines["onnxruntime"]["median_ms"]
    assert data["tvm_over_onnxruntime"] == pytest.approx(ratio, rel=1e-9)


@pytest.mark.parametrize("repeat", [1, 9, 25, 300])
def test_bench_interleaves_the_engines_in_blocks(monkeypatch, repeat):
    """TVM and ONNX Runtime are timed in alternating blocks (a slow minute of the machine lands
    on both), each engine exactly ``repeat`` times, and every block, either engine's, is followed by
    the same pause (an engine's worker threads spin on after its runs and slow the other's down)."""
    from kiln.backends.tvm import artifact

    calls = []
    monkeypatch.setattr(artifact.time, "sleep", lambda s: calls.append(s))
    series = artifact.interleaved_wall_clock({"tvm": lambda: calls.append("tvm"),
                                               "onnxruntime": lambda: calls.append("ort")}, repeat)
    pauses = [c for c in calls if not isinstance(c, str)]
    calls = [c for c in calls if isinstance(c, str)]
    assert len(series["tvm"]) == len(series["onnxruntime"]) == repeat
    blocks = max(1, min(artifact.INTERLEAVE_BLOCKS, repeat // artifact.RUNS_PER_BLOCK))
    assert calls.count("tvm") == calls.count("ort") == repeat + blocks * artifact.BLOCK_WARMUP
    switches = sum(a != b for a, b in zip(calls, calls[1:]))
    assert calls[0] == "tvm" and switches == 2 * blocks - 1, calls
    assert pauses == [artifact.BLOCK_PAUSE_S] * (2 * blocks) and artifact.BLOCK_PAUSE_S >= 0.1, pauses


def test_prime_token_scores_are_padded_to_whole_tiles_and_softmax_is_fast(models, tmp_path):
    """q @ k^T over 197 tokens: pad_einsum to whole vectors (no predicated update, zero-filled operand
    copies, a copy-out), softmax as fast_softmax with its 197-wide rows vectorized up to a scalar
    tail; the model within 1e-5 of ONNX Runtime on inputs whose softmax is not one-hot."""
    kernels, counts = _kernels(models["attn197"])
    lanes = counts["vector_lanes"]
    padded = 197 + (-197) % lanes
    scores = [f.script() for n, f in kernels.items() if "matmul" in n and "x_pad" in f.script()]
    assert len(scores) == 1, list(kernels)
    text = scores[0]
    assert f"T.int64({padded})" in text and "T.vectorized(" in text
    update = text[text.index('T.sblock("matmul_update")') + 1:]
    update = update[:update.index("T.sblock(")]
    assert "T.where" not in update, update  # whole tiles: the vectorized update has no predicate
    (softmax,) = [f.script() for n, f in kernels.items() if "softmax" in n]
    assert "T.exp(" not in softmax and "T.vectorized(" in softmax, softmax
    assert all(rule != "default" for rule in counts["rules"].values()), counts["rules"]
    art = _matches_onnxruntime(models["attn197"], tmp_path)
    x = np.random.default_rng(7).standard_normal((2, 3, 197, 64)).astype(np.float32)
    p = art.reference(x)[0]
    assert p.std() > 0.1 * np.abs(x).std()  # the output is a mixture of tokens, not one token each


def test_strided_conv_gathers_at_most_a_vector(models, tmp_path):
    """A stride-2 conv's vector tile is a gather: at most one vector wide (28 columns at 16 lanes: 14,
    at 8 lanes: 7; 28 wide took 21 ms against 2.7 ms on poolformer's 64 -> 128 conv)."""
    kernels, counts = _kernels(models["s2"])
    (conv,) = [f.script() for n, f in kernels.items() if "conv2d" in n]
    before_update = conv[:conv.index('T.sblock("conv2d_nchw_update")')]
    width = int(re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", before_update)[-1])
    assert width <= counts["vector_lanes"] and 28 % width == 0 and width > 1, width
    _matches_onnxruntime(models["s2"], tmp_path)


@pytest.mark.parametrize("name", ["gelu", "pw40"])
def test_tile_plans_are_other_tiles_that_compute_the_same(models, name):
    """Tuning's rule variants (schedules.tile_plans): tiles other than the rule's own, within the
    register file, each a distinct schedule whose kernel gives the rule's kernel's outputs (1e-5)."""
    import tvm
    from tvm import tirx

    target = resolve_target(get_board("x86-host"))
    loaded = load_model(str(models[name]), quantizers=False)
    lmod = schedules.legalize(to_relax(loaded.model, loaded.source), target, conv_layout=None)
    (func,) = [f for gv, f in lmod.functions_items() if isinstance(f, tirx.PrimFunc)
               and ("matmul" in gv.name_hint or "conv2d" in gv.name_hint)]
    lanes, cores = schedules.vector_lanes(target), int(target.get("num-cores") or 1)
    own, rule = schedules.rule_schedule(func, lanes, cores)
    plans = schedules.tile_plans(func, lanes, cores)
    assert rule == "tile" and len(plans) >= 3, plans
    regs = schedules._registers(lanes)
    assert all(p.mi * -(-p.ni // lanes) + -(-p.ni // lanes) + 1 <= regs + 2 for p in plans), plans
    if name == "pw40":  # 40 x 40 pixels: both the rows and the fused pixel axis are tried
        assert {p.fuse for p in plans} == {True, False}, plans

    def run(f):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tvm.target.Target(target))
        rng = np.random.default_rng(11)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.shape]).astype("float32"))
                for p in f.params]
        lib["main"](*args)
        return args[-1].numpy()

    want = run(own.mod["main"])
    traces = {str(own.trace)}
    for plan in plans[:6]:
        sch, _ = schedules.rule_schedule(func, lanes, cores, plan)
        traces.add(str(sch.trace))
        got = run(sch.mod["main"])
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), plan
    assert len(traces) == 1 + len(plans[:6])


@pytest.mark.parametrize("side,want", [(14, (4, 16, True)), (7, (7, 8, False)), (16, (4, 16, False))])
def test_row_tile_fits_the_register_file(tmp_path, side, want):
    """A 1x1 conv in NHWC tiles pixels (rows) x output channels. At 14 or 7 pixels a row only 7
    (or 2) divides them, and 7 rows x 16 channels needs 17 of AVX2's 16 vector registers: its
    accumulators spill. At 14x14 the rule merges the pixel rows (196 = 49 x 4) for a 4 x 16 tile
    (PoolFormer's 1280 -> 320 conv: 3.3 ms as 7 x 16, 2.8 as 7 x 8, 2.4 merged 4 x 16); at 7x7
    (49 pixels, no 4-row tile) it takes 7 x 8; where the rows allow it, 4 x 16 unmerged. Each
    tile fits the register file, and the kernels match ONNX Runtime."""
    from tvm import tirx

    rng = np.random.default_rng(3)
    path = _save(tmp_path / f"pw{side}.onnx",
                 [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                 [1, 64, side, side], [1, 64, side, side], [_w(rng, "w", 64, 64, 1, 1), _w(rng, "b", 64)])
    target = resolve_target(get_board("x86-host"))
    lanes, cores = schedules.vector_lanes(target), int(target.get("num-cores") or 1)
    loaded = load_model(str(path), quantizers=False)
    lmod = schedules.legalize(to_relax(loaded.model, loaded.source), target)
    (func,) = [f for gv, f in lmod.functions_items() if isinstance(f, tirx.PrimFunc) and "conv2d" in gv.name_hint]
    probe: dict = {}
    sch, rule = schedules.rule_schedule(func, lanes, cores, probe=probe)
    plan = probe["plan"]
    assert rule == "tile" and probe["rows"] == side and probe["merged_rows"] == side * side, probe
    assert schedules._tile_registers(plan.mi, plan.ni, lanes) <= schedules._registers(lanes), plan
    if lanes == 8:  # AVX2, the machine this rule was measured on
        assert (plan.mi, plan.ni, plan.merge_rows) == want, plan
    if plan.merge_rows:  # the accumulator cache is indexed by pixel, not by (row, column)
        text = sch.mod["main"].script()
        assert any('scope="local"' in line and f"T.int64({side * side}), T.int64(64))" in line
                   for line in text.splitlines()), text
    _matches_onnxruntime(path, tmp_path)
