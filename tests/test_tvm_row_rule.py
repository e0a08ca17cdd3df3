"""The ``rows`` schedule rule (backends/tvm/row_rule.py) and the fast sigmoid (fast_math.py):
checked in the scheduled TIR and against ONNX Runtime (1e-5)."""

from __future__ import annotations

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


def _save(path, nodes, x_shape, y_shape, inits=()):
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", F32, x_shape)],
                              [helper.make_tensor_value_info("y", F32, y_shape)], list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rows")
    rng = np.random.default_rng(3)
    # MobileViT's attention scores (rows of 196 = 49 half vectors at AVX2), DeiT's (197: prime)
    softmax196 = _save(d / "softmax196.onnx", [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
                       [1, 4, 40, 196], [1, 4, 40, 196])
    softmax197 = _save(d / "softmax197.onnx", [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
                       [1, 3, 30, 197], [1, 3, 30, 197])
    # a sum over the channel axis (not the last): not row-shaped
    channels = _save(d / "channels.onnx",
                     [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
                      helper.make_node("Sub", ["x", "s"], ["y"])],
                     [1, 32, 16, 16], [1, 32, 16, 16], [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    # SiLU after a 1x1 conv (MobileNetV2 / MobileViT blocks), on pre-activations up to +-100
    silu = _save(d / "silu.onnx",
                 [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["y"])],
                 [1, 16, 20, 20], [1, 32, 20, 20],
                 [_const("w", rng.standard_normal((32, 16, 1, 1)) * 8.0), _const("b", rng.standard_normal(32))])
    # GroupNorm with one group over 32 x 32 x 32 values (PoolFormer's norm), flattened to one row
    groupnorm = _save(d / "groupnorm.onnx",
                      [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], keepdims=1),
                       helper.make_node("Sub", ["x", "m"], ["c"]), helper.make_node("Mul", ["c", "c"], ["c2"]),
                       helper.make_node("ReduceMean", ["c2"], ["v"], axes=[-1], keepdims=1),
                       helper.make_node("Add", ["v", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
                       helper.make_node("Div", ["c", "sd"], ["y"])],
                      [1, 1, 32768], [1, 1, 32768],
                      [_const("eps", 1e-5)])
    return {"softmax196": softmax196, "softmax197": softmax197, "channels": channels, "silu": silu,
            "groupnorm": groupnorm}


def _kernels(path):
    from tvm import tirx

    target = resolve_target(get_board("x86-host"))
    loaded = load_model(str(path), quantizers=False)
    mod, counts = schedules.schedule_module(schedules.legalize(to_relax(loaded.model, loaded.source), target), target)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}, counts


def _matches_onnxruntime(path, tmp_path, scale=1.0):
    art = compile_tvm(path, board="x86-host", output_dir=tmp_path / path.stem)
    assert art.manifest["schedules"]["default"] == 0
    x = (np.random.default_rng(7).standard_normal((2, *art.inputs[0]["shape"][1:])) * scale).astype(np.float32)
    (result,) = art.compare(x)
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result
    return art


def test_softmax_is_one_parallel_loop_over_rows_with_vector_partial_reductions(models, tmp_path):
    """Rows of 196: every block under one parallel row loop, the max and the sum each folded
    from a vector of partial results (``rfactor``: ``_rf`` buffers of a whole number of lanes)."""
    kernels, counts = _kernels(models["softmax196"])
    (name,) = [n for n in kernels if "softmax" in n]
    text = kernels[name].script()
    assert counts["rules"][name] == "rows", counts["rules"]
    assert re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", text) == [str(4 * 40)], text
    partials = re.findall(r"(\w+_rf) = T\.sblock_alloc_buffer\(\(T\.int64\((\d+)\)", text)
    assert len(partials) == 2 and all(int(n) > 1 and 196 % int(n) == 0 for _, n in partials), partials
    lines = text.splitlines()
    for buf, width in partials:  # each partial's update runs one vector of its lanes at a time
        (at,) = [i for i, line in enumerate(lines) if f'T.sblock("{buf}_update")' in line]
        assert f"T.vectorized(T.int64({width}))" in lines[at - 1], lines[at - 2:at + 1]
    # 2 x 4 x 40 x 196 inputs scaled so that the rows are neither one-hot nor flat
    _matches_onnxruntime(models["softmax196"], tmp_path, scale=3.0)


def test_prime_rows_keep_a_scalar_reduction_and_still_match(models, tmp_path):
    """197 columns: no whole vectors to fold from, the reduction stays scalar; the rule still
    puts every block under the row loop, and the rows' quotients are vectorized with a tail."""
    kernels, counts = _kernels(models["softmax197"])
    (name,) = [n for n in kernels if "softmax" in n]
    text = kernels[name].script()
    assert counts["rules"][name] == "rows" and "_rf" not in text and "T.vectorized(" in text, text
    _matches_onnxruntime(models["softmax197"], tmp_path, scale=3.0)


def test_a_reduction_over_another_axis_is_not_row_shaped(models, tmp_path):
    kernels, counts = _kernels(models["channels"])
    assert "rows" not in set(counts["rules"].values()), counts["rules"]
    _matches_onnxruntime(models["channels"], tmp_path)


def test_silu_is_a_fast_exp_sigmoid_in_the_convs_epilogue(models, tmp_path):
    """No libm sigmoid left; the sigmoid and the product fused into the NHWC conv's kernel (no
    layout transposes around it); saturated pre-activations (|x| up to ~100) match too."""
    kernels, counts = _kernels(models["silu"])
    texts = "\n".join(f.script() for f in kernels.values())
    assert "T.sigmoid(" not in texts, texts
    assert not [n for n in kernels if "transpose" in n and "sigmoid" in n], list(kernels)
    (conv,) = [n for n in kernels if "conv2d" in n]
    assert "sigmoid" in conv and counts["rules"][conv] == "tile", list(kernels)
    _matches_onnxruntime(models["silu"], tmp_path, scale=2.0)


def test_a_long_reduction_of_one_row_is_shared_between_the_cores(models, tmp_path):
    """GroupNorm's mean and variance over one row of 32,768 values: each a parallel loop over
    parts of the row, each part a vector of partial sums; the model within 1e-5 of ONNX Runtime
    on inputs of mean 3 (where a serial float32 sum drifts)."""
    kernels, counts = _kernels(models["groupnorm"])
    reductions = [f.script() for n, f in kernels.items() if "mean" in n or "variance" in n or "sum" in n]
    assert reductions, list(kernels)
    for text in reductions:
        assert "T.parallel(" in text and "_rf" in text and "T.vectorized(" in text, text
    art = compile_tvm(models["groupnorm"], board="x86-host", output_dir=tmp_path / "gn")
    x = (np.random.default_rng(7).standard_normal((2, 1, 32768)) + 3.0).astype(np.float32)
    (result,) = art.compare(x)
    assert result.max_abs_error <= 1e-5 * max(1.0, result.scale), result
