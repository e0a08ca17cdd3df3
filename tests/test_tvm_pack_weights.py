"""Packed constant weights (backends/tvm/pack_weights.py): a dense kernel whose weight is a
constant gets it as ``[N / P, K, P]`` panels and still computes ONNX Runtime's outputs; a
kernel whose weight is computed keeps its layout."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm", reason="the TVM backend needs the tvm extra (pip install -e '.[tvm]')")

from kiln.backends.tvm import compile_tvm, schedules  # noqa: E402
from kiln.backends.tvm.importer import to_relax  # noqa: E402
from kiln.backends.tvm.pack_weights import Packing  # noqa: E402
from kiln.backends.tvm.target import resolve_target  # noqa: E402
from kiln.board import get_board  # noqa: E402
from kiln.frontend import load_model  # noqa: E402


def _weight(rng, name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """x @ W1 + b1, ReLU, then (r @ W2 + b2) and r @ r^T: one constant weight per dense, one computed."""
    rng = np.random.default_rng(5)
    w = lambda name, *shape: _weight(rng, name, *shape)  # noqa: E731
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["h2"]), helper.make_node("Add", ["h2", "b2"], ["y"]),
             helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["r", "rt"], ["g"])]
    graph = helper.make_graph(nodes, "dense_pair", [helper.make_tensor_value_info("x", f32, [1, 48, 64])],
                              [helper.make_tensor_value_info("y", f32, [1, 48, 96]),
                               helper.make_tensor_value_info("g", f32, [1, 48, 48])],
                              [w("w1", 64, 128), w("b1", 128), w("w2", 128, 96), w("b2", 96)])
    path = tmp_path_factory.mktemp("pack") / "dense_pair.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def _legalized(path, board="x86-host"):
    import tvm

    target = resolve_target(get_board(board))
    loaded = load_model(str(path), quantizers=False)
    with tvm.target.Target(target):
        return schedules.legalize(to_relax(loaded.model, loaded.source), target)


def _param_shapes(mod) -> dict:
    from tvm import tirx

    return {gv.name_hint: [tuple(int(d) for d in p.shape) for p in f.params]
            for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def test_pack_moves_each_column_tile_into_one_contiguous_panel():
    w = np.arange(6 * 32, dtype=np.float32).reshape(6, 32)  # K = 6, N = 32
    packed = Packing(param=1, axis=1, width=8, func=None).pack(w)
    assert packed.shape == (4, 6, 8) and packed.flags["C_CONTIGUOUS"]
    o, k, lane = np.meshgrid(range(4), range(6), range(8), indexing="ij")
    np.testing.assert_array_equal(packed, w[k, o * 8 + lane])


@pytest.mark.parametrize("board,lanes", [("x86-host", None), ("rpi4", 4)])
def test_constant_weights_are_packed_and_computed_ones_are_not(model, board, lanes):
    shapes = _param_shapes(_legalized(model, board))
    lanes = lanes or schedules.vector_lanes(resolve_target(get_board(board)))
    dense = {n: s for n, s in shapes.items() if "matmul" in n}
    packed = [s[1] for s in dense.values() if len(s[1]) == 3 and s[1][0] > 1]
    # x @ W1 (64 x 128) and r @ W2 (128 x 96): [N / P, K, P] with P whole vectors
    assert sorted((p[0] * p[2], p[1]) for p in packed) == [(96, 128), (128, 64)], dense
    assert all(p[2] % lanes == 0 for p in packed)
    # r @ r^T: both operands computed, its kernel keeps (1, 48, 128) x (1, 128, 48)
    assert any(s[:2] == [(1, 48, 128), (1, 128, 48)] for s in dense.values()), dense


def test_packed_build_matches_onnxruntime(model, tmp_path):
    art = compile_tvm(model, board="x86-host", output_dir=tmp_path / "packed")
    assert art.manifest["schedules"]["default"] == 0 and art.manifest["schedules"]["tile"] >= 3
    x = np.random.default_rng(2).standard_normal((2, 48, 64)).astype(np.float32)
    results = art.compare(x)
    assert len(results) == 2
    for result in results:
        assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result


def test_convs_run_in_nhwc_with_packed_weights(tmp_path):
    """conv_layout.py: a 1x1 and a 3x3 conv (with a depthwise one between) in NHWC, their
    weights packed along the output channels (the depthwise one's too: its 32 channels are one
    tile, but its OHWI weight would read them with a stride of 9), and the build still ONNX
    Runtime's numbers."""
    rng = np.random.default_rng(8)
    w = lambda name, *shape: _weight(rng, name, *shape)  # noqa: E731
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "k1", "c1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "dw"], ["d"], pads=[1, 1, 1, 1], group=32),
             helper.make_node("Conv", ["d", "k3"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", f32, [1, 16, 14, 14])],
                              [helper.make_tensor_value_info("y", f32, [1, 48, 14, 14])],
                              [w("k1", 32, 16, 1, 1), w("c1", 32), w("dw", 32, 1, 3, 3), w("k3", 48, 32, 3, 3)])
    path = tmp_path / "convs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    shapes = _param_shapes(_legalized(path))
    convs = {n: s for n, s in shapes.items() if "conv2d" in n}
    assert convs and all(s[0][-1] in (16, 32) for s in convs.values()), convs  # inputs channels-last
    packed = sorted(s[1] for s in convs.values() if len(s[1]) == 5)  # [O / P, KH, KW, I, P]
    assert sorted((p[0] * p[4], p[1], p[2], p[3]) for p in packed) == [(32, 1, 1, 16), (32, 3, 3, 1),
                                                                        (48, 3, 3, 32)], convs
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / "convs")
    assert art.manifest["schedules"]["default"] == 0
    (result,) = art.compare(rng.standard_normal((2, 16, 14, 14)).astype(np.float32))
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result


def test_hardswish_fuses_into_the_nhwc_convs_epilogue(tmp_path):
    """conv_layout.clip_as_min_max: MobileNetV3's stem (3x3 stride 2 to 16 channels, one tile:
    its weight packed all the same) with its HardSwish, and a ReLU6 after a 1x1 conv, computed in
    the convs' kernels: no clip and no layout transposes left, within 1e-5 of ONNX Runtime on
    inputs that reach both ends of the clips."""
    from tvm import tirx

    rng = np.random.default_rng(9)
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "k", "c"], ["h"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("HardSwish", ["h"], ["s"]),
             helper.make_node("Conv", ["s", "k1"], ["p"]), helper.make_node("Clip", ["p", "lo", "hi"], ["r"]),
             helper.make_node("Conv", ["r", "k2"], ["y"])]
    graph = helper.make_graph(nodes, "stem", [helper.make_tensor_value_info("x", f32, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", f32, [1, 8, 16, 16])],
                              [_weight(rng, "k", 16, 3, 3, 3), _weight(rng, "c", 16), _weight(rng, "k1", 24, 16, 1, 1),
                               _weight(rng, "k2", 8, 24, 1, 1),
                               numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                               numpy_helper.from_array(np.array(6.0, np.float32), "hi")])
    path = tmp_path / "stem.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    mod = _legalized(path)
    kernels = {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    # the transposes left are the input's and the output's; none wraps a clip's max / min
    assert not [n for n in kernels if "clip" in n or ("transpose" in n and ("maximum" in n or "minimum" in n))]
    convs = [n for n in kernels if "maximum" in n]
    assert len(convs) == 2 and all("conv2d" in n and "minimum" in n for n in convs), list(kernels)
    stem = _param_shapes(mod)[next(n for n in convs if "multiply" in n)]  # HardSwish: x * relu6(x + 3) / 6
    assert len(stem[1]) == 5 and stem[1][0] * stem[1][4] == 16, stem  # [O / P, KH, KW, I, P]
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / "stem")
    assert art.manifest["schedules"]["default"] == 0
    (result,) = art.compare((rng.standard_normal((2, 3, 32, 32)) * 6).astype(np.float32))
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result
