"""ONNX's own backend node test cases, run through the HLS backend in float mode.

The cases come from ``onnx.backend.test.case.node.collect_testcases()`` (in the onnx
wheel): for each, a one-node model, its input arrays and the expected outputs. We keep
every case whose nodes all have an operator type Kiln supports (``SUPPORTED_OPS``, derived
from the HLS emitter registry),
compile it in ``float`` mode, run the g++ C-simulation and compare with the case's own
expected outputs (rtol 1e-5, atol 1e-6).

Weights become constants. ONNX node tests feed every operand, weights included, as a
graph input; Kiln needs constants for weight-like operands (Conv W/B, Gemm B/C, MatMul B,
BatchNormalization scale/bias/mean/var, Clip min/max, Reshape shape, Squeeze/Unsqueeze
axes, Dropout ratio/training_mode). So the harness turns every graph input except the
data input(s) into an initializer holding that case's own input array (an input no node
reads is dropped). The data inputs,
which stay runtime inputs of the compiled design, are:

* Add, Sub, Mul, Div, Concat, Min, Max, the comparisons and And/Or/Xor: all inputs;
* Where: the two branches (the condition becomes a constant);
* every other operator: the first input only.

Cases that cannot work by design are listed in ``EXPECTED_UNSUPPORTED`` with the reason;
for those the test asserts that ``kiln.compile`` refuses them with a ``KilnError`` (so a
case that starts compiling makes the list fail instead of going stale). Every other
collected case must match. One case publishes its expected output as 4-decimal numbers
that are only accurate to 1e-4 (``EXPECTED_ROUNDED``): it is compared, at the same
tolerance, with onnx's reference evaluator on the same model, after checking that the
published numbers agree with that result to their stated accuracy.

The counts are summarised in tests/ONNX_NODE_CASES.md.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import kiln
from kiln.backends.hls.layers import REGISTRY

# The standard operators of the HLS emitter registry, plus those the lowering passes turn
# into a registered layer before emission (Gemm -> kiln.Dense, passes/dense.py).
LOWERED_BY_PASSES = frozenset({"Gemm"})
SUPPORTED_OPS = frozenset(op for domain, op in REGISTRY if domain == "") | LOWERED_BY_PASSES
ALL_INPUTS_AT_RUNTIME = frozenset({"Add", "Sub", "Mul", "Div", "Concat", "Min", "Max", "Equal", "Less", "Greater",
                                   "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"})
# operators whose data inputs are not the first: Where's condition is a constant, its branches tensors
DATA_INPUTS = {"Where": slice(1, 3)}
RTOL, ATOL = 1e-5, 1e-6

_INT = ("integer arithmetic: layers compute in float or fixed point, not with integer semantics "
        "(wrap-around, truncating division); only data movement passes integers through")
_POOL_3D = "3-D pooling: the pooling template is 1-D/2-D only"
_BN_TRAIN = "BatchNormalization training_mode=1 (batch statistics, extra outputs) is training, not inference"
_MASK = "bool mask output of Dropout"
_TRAIN_DROPOUT = "Dropout in training mode with a non-zero ratio is random"
_INDICES = "int64 Indices output of MaxPool"
_NOT_TENSOR = "sequence / optional input: only tensors are supported"
_EMPTY = "zero-size tensor (a dimension of 0)"
_LN_STATS = "LayerNormalization's Mean/InvStdDev outputs (training statistics)"
_POW_TENSOR = "Pow with a tensor exponent: the template takes one constant scalar exponent"
_CUBIC = "Resize mode cubic: only nearest and linear are implemented"
_ANTIALIAS = "Resize antialias=1 with linear mode (a wider filter when downsampling)"
_TF_CROP = "Resize tf_crop_and_resize (a crop box from roi, extrapolation value)"
_ALIGN_FRACTIONAL = ("Resize align_corners with scales giving a fractional output length (input * scale): ONNX's "
                     "reference divides by input * scale - 1, ONNX Runtime by output length - 1")
_BOOL = "bool tensors: layers compute in float or fixed point"
_ORT = ("ONNX Runtime 1.31 cannot load the case (IR version 14 / opset 28, or no kernel for the type); "
        "kiln.compile checks every model with it")
CAST_CASES_IR14 = (  # Cast cases of onnx 1.23.2 in IR version 14 (opset 25): ONNX Runtime 1.31 refuses them
    'cast_BFLOAT16_to_FLOAT', 'cast_DOUBLE_to_FLOAT', 'cast_DOUBLE_to_FLOAT16', 'cast_FLOAT16_to_DOUBLE',
    'cast_FLOAT16_to_FLOAT', 'cast_FLOAT16_to_FLOAT4E2M1', 'cast_FLOAT16_to_FLOAT8E4M3FN',
    'cast_FLOAT16_to_FLOAT8E4M3FNUZ', 'cast_FLOAT16_to_FLOAT8E5M2', 'cast_FLOAT16_to_FLOAT8E5M2FNUZ',
    'cast_FLOAT16_to_INT2', 'cast_FLOAT16_to_INT4', 'cast_FLOAT16_to_UINT2', 'cast_FLOAT16_to_UINT4',
    'cast_FLOAT4E2M1_to_FLOAT', 'cast_FLOAT4E2M1_to_FLOAT16', 'cast_FLOAT8E4M3FNUZ_to_FLOAT',
    'cast_FLOAT8E4M3FNUZ_to_FLOAT16', 'cast_FLOAT8E4M3FN_to_FLOAT', 'cast_FLOAT8E4M3FN_to_FLOAT16',
    'cast_FLOAT8E5M2FNUZ_to_FLOAT', 'cast_FLOAT8E5M2FNUZ_to_FLOAT16', 'cast_FLOAT8E5M2_to_FLOAT',
    'cast_FLOAT8E5M2_to_FLOAT16', 'cast_FLOAT_to_BFLOAT16', 'cast_FLOAT_to_DOUBLE', 'cast_FLOAT_to_FLOAT16',
    'cast_FLOAT_to_FLOAT4E2M1', 'cast_FLOAT_to_FLOAT8E4M3FN', 'cast_FLOAT_to_FLOAT8E4M3FNUZ',
    'cast_FLOAT_to_FLOAT8E5M2', 'cast_FLOAT_to_FLOAT8E5M2FNUZ', 'cast_FLOAT_to_INT2', 'cast_FLOAT_to_INT4',
    'cast_FLOAT_to_UINT2', 'cast_FLOAT_to_UINT4', 'cast_INT2_to_FLOAT', 'cast_INT2_to_FLOAT16', 'cast_INT2_to_INT8',
    'cast_INT4_to_FLOAT', 'cast_INT4_to_FLOAT16', 'cast_INT4_to_INT8', 'cast_UINT2_to_FLOAT',
    'cast_UINT2_to_FLOAT16', 'cast_UINT2_to_UINT8', 'cast_UINT4_to_FLOAT', 'cast_UINT4_to_FLOAT16',
    'cast_UINT4_to_UINT8', 'cast_e8m0_FLOAT16_to_FLOAT8E8M0', 'cast_e8m0_FLOAT8E8M0_to_FLOAT',
    'cast_e8m0_FLOAT8E8M0_to_FLOAT16', 'cast_e8m0_FLOAT_to_FLOAT8E8M0', 'cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN',
    'cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ', 'cast_no_saturate_FLOAT16_to_FLOAT8E5M2',
    'cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ', 'cast_no_saturate_FLOAT_to_FLOAT8E4M3FN',
    'cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ', 'cast_no_saturate_FLOAT_to_FLOAT8E5M2',
    'cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ',
)
CAST_CASES_NARROW_TYPES = (  # CastLike expanded cases (IR 13) from or to float16/bfloat16/float8/4- and 2-bit types
    'castlike_BFLOAT16_to_FLOAT_expanded', 'castlike_DOUBLE_to_FLOAT16_expanded',
    'castlike_FLOAT16_to_DOUBLE_expanded', 
    'castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded', 'castlike_FLOAT16_to_FLOAT8E4M3FN_expanded',
    'castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded', 'castlike_FLOAT16_to_FLOAT8E5M2_expanded',
    'castlike_FLOAT16_to_FLOAT_expanded', 'castlike_FLOAT16_to_INT2_expanded', 'castlike_FLOAT16_to_INT4_expanded',
    'castlike_FLOAT16_to_UINT2_expanded', 'castlike_FLOAT16_to_UINT4_expanded',
    
    'castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded', 'castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded',
    'castlike_FLOAT8E4M3FN_to_FLOAT16_expanded', 'castlike_FLOAT8E4M3FN_to_FLOAT_expanded',
    'castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded', 'castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded',
    'castlike_FLOAT8E5M2_to_FLOAT16_expanded', 'castlike_FLOAT8E5M2_to_FLOAT_expanded',
    'castlike_FLOAT_to_BFLOAT16_expanded', 'castlike_FLOAT_to_FLOAT16_expanded',
    'castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded',
    'castlike_FLOAT_to_FLOAT8E4M3FN_expanded', 'castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded',
    'castlike_FLOAT_to_FLOAT8E5M2_expanded', 'castlike_FLOAT_to_INT2_expanded', 'castlike_FLOAT_to_INT4_expanded',
    'castlike_FLOAT_to_UINT2_expanded', 'castlike_FLOAT_to_UINT4_expanded', 'castlike_INT2_to_FLOAT16_expanded',
    'castlike_INT2_to_FLOAT_expanded', 'castlike_INT2_to_INT8_expanded', 'castlike_INT4_to_FLOAT16_expanded',
    'castlike_INT4_to_FLOAT_expanded', 'castlike_INT4_to_INT8_expanded', 'castlike_UINT2_to_FLOAT16_expanded',
    'castlike_UINT2_to_FLOAT_expanded', 'castlike_UINT2_to_UINT8_expanded', 'castlike_UINT4_to_FLOAT16_expanded',
    'castlike_UINT4_to_FLOAT_expanded', 'castlike_UINT4_to_UINT8_expanded',
    'castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded',
    'castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded',
    'castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded',
    'castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded', 'castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded',
    'castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded', 'castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded',
    'castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded',
)
_UINT_WIDE = "uint32/uint64 operands: integers are held as C++ int (values above 2**31 - 1 would wrap)"
_STRING = "string tensors"
_CAST_NARROW = ("Cast from or to float16/bfloat16/float8/float4/int4/int2 types: a C++ float or int does not round "
                "or wrap as they do")
EXPECTED_UNSUPPORTED: dict[str, str] = {
    "test_add_int8": _INT, "test_add_int16": _INT, "test_add_uint8": _INT, "test_add_uint16": _INT,
    "test_add_uint32": _INT, "test_add_uint64": _INT,
    "test_sub_int8": _INT, "test_sub_int16": _INT, "test_sub_uint8": _INT, "test_sub_uint16": _INT,
    "test_sub_uint32": _INT, "test_sub_uint64": _INT,
    "test_mul_int8": _INT, "test_mul_int16": _INT, "test_mul_uint8": _INT, "test_mul_uint16": _INT,
    "test_mul_uint32": _INT, "test_mul_uint64": _INT,
    "test_div_int8": _INT, "test_div_int16": _INT, "test_div_int32_trunc": _INT, "test_div_uint8": _INT,
    "test_div_uint16": _INT, "test_div_uint32": _INT, "test_div_uint64": _INT,
    "test_clip_default_int8_min": _INT, "test_clip_default_int8_max": _INT, "test_clip_default_int8_inbounds": _INT,
    "test_maxpool_2d_uint8": _INT,
    "test_averagepool_3d_default": _POOL_3D, "test_averagepool_3d_dilations_small": _POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": _POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": _POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": _POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": _POOL_3D,
    "test_maxpool_3d_default": _POOL_3D, "test_maxpool_3d_dilations": _POOL_3D,
    "test_maxpool_3d_dilations_use_ref_impl": _POOL_3D, "test_maxpool_3d_dilations_use_ref_impl_large": _POOL_3D,
    "test_maxpool_with_argmax_2d_precomputed_pads": _INDICES,
    "test_maxpool_with_argmax_2d_precomputed_strides": _INDICES,
    "test_batchnorm_example_training_mode": _BN_TRAIN, "test_batchnorm_epsilon_training_mode": _BN_TRAIN,
    "test_dropout_default_mask": _MASK, "test_dropout_default_mask_ratio": _MASK,
    "test_training_dropout_zero_ratio_mask": _MASK,
    "test_training_dropout": _TRAIN_DROPOUT, "test_training_dropout_default": _TRAIN_DROPOUT,
    "test_training_dropout_mask": _TRAIN_DROPOUT, "test_training_dropout_default_mask": _TRAIN_DROPOUT,
    "test_identity_sequence": _NOT_TENSOR, "test_identity_opt": _NOT_TENSOR,
    "test_reshape_allowzero_reordered": _EMPTY,
    "test_reduce_l1_empty_set_expanded": _EMPTY, "test_reduce_sum_empty_set": _EMPTY,
    "test_reduce_sum_empty_set_non_reduced_axis_zero": _EMPTY, "test_reduce_sum_square_empty_set_expanded": _EMPTY,
    "test_slice_start_out_of_bounds": _EMPTY,
    **{f"test_resize_{c}": _CUBIC for c in (
        "downsample_scales_cubic", "downsample_scales_cubic_A_n0p5_exclude_outside", "downsample_scales_cubic_align_corners",
        "downsample_scales_cubic_antialias", "downsample_sizes_cubic", "downsample_sizes_cubic_antialias",
        "upsample_scales_cubic", "upsample_scales_cubic_A_n0p5_exclude_outside", "upsample_scales_cubic_align_corners",
        "upsample_scales_cubic_asymmetric", "upsample_sizes_cubic")},
    "test_resize_downsample_scales_linear_antialias": _ANTIALIAS, "test_resize_downsample_sizes_linear_antialias": _ANTIALIAS,
    **{f"test_resize_tf_crop_and_resize{c}": _TF_CROP for c in ("", "_axes_2_3", "_axes_3_2", "_extrapolation_value")},
    "test_resize_downsample_scales_linear_align_corners": _ALIGN_FRACTIONAL,
    "test_split_zero_size_splits_opset13": _EMPTY, "test_split_zero_size_splits_opset18": _EMPTY,
    "test_reduce_l1_empty_set": _EMPTY, "test_reduce_l2_empty_set": _EMPTY, "test_reduce_max_empty_set": _EMPTY,
    "test_reduce_min_empty_set": _EMPTY, "test_reduce_prod_empty_set": _EMPTY,
    "test_reduce_sum_square_empty_set": _EMPTY,
    "test_reduce_max_bool_inputs": _BOOL, "test_reduce_min_bool_inputs": _BOOL,
    "test_reduce_max_empty_set_bool": _BOOL,
    "test_einsum_batch_diagonal": _ORT, "test_einsum_batch_matmul": _ORT, "test_einsum_batch_matmul_bfloat16": _ORT,
    "test_einsum_inner_prod": _ORT, "test_einsum_scalar": _ORT, "test_einsum_sum": _ORT,
    "test_einsum_sum_bfloat16": _ORT, "test_einsum_transpose": _ORT, "test_einsum_transpose_bfloat16": _ORT,
    "test_cumsum_1d_int32_exclusive": _INT, "test_cumsum_2d_int32": _INT,
    "test_max_int8": _INT, "test_max_int32": _INT, "test_max_int64": _INT, "test_max_uint8": _INT,
    "test_max_uint32": _INT, "test_max_uint64": _INT, "test_min_int8": _INT, "test_min_int32": _INT,
    "test_min_int64": _INT, "test_min_uint8": _INT, "test_min_uint32": _INT, "test_min_uint64": _INT,
    "test_where_long_example": _INT,
    "test_max_int16": _ORT, "test_max_uint16": _ORT, "test_min_int16": _ORT, "test_min_uint16": _ORT,
    "test_mod_float16_mixed_sign_fmod_0": _ORT, "test_mod_float32_mixed_sign_fmod_0": _ORT,
    "test_mod_float64_mixed_sign_fmod_0": _ORT, "test_mod_float_edge_cases_fmod_0_float16": _ORT,
    "test_mod_float_edge_cases_fmod_0_float32": _ORT, "test_mod_float_edge_cases_fmod_0_float64": _ORT,
    "test_mod_broadcast": _ORT, "test_mod_int64_fmod": _ORT, "test_mod_mixed_sign_float16": _ORT,
    "test_mod_mixed_sign_float32": _ORT, "test_mod_mixed_sign_float64": _ORT, "test_mod_mixed_sign_int16": _ORT,
    "test_mod_mixed_sign_int32": _ORT, "test_mod_mixed_sign_int64": _ORT, "test_mod_mixed_sign_int8": _ORT,
    "test_mod_uint16": _ORT, "test_mod_uint32": _ORT, "test_mod_uint64": _ORT, "test_mod_uint8": _ORT,
    "test_layer_normalization_2d_axis0": _LN_STATS, "test_layer_normalization_2d_axis1": _LN_STATS,
    "test_layer_normalization_2d_axis_negative_1": _LN_STATS,
    "test_layer_normalization_2d_axis_negative_2": _LN_STATS,
    "test_layer_normalization_3d_axis0_epsilon": _LN_STATS, "test_layer_normalization_3d_axis1_epsilon": _LN_STATS,
    "test_layer_normalization_3d_axis2_epsilon": _LN_STATS,
    "test_layer_normalization_3d_axis_negative_1_epsilon": _LN_STATS,
    "test_layer_normalization_3d_axis_negative_2_epsilon": _LN_STATS,
    "test_layer_normalization_3d_axis_negative_3_epsilon": _LN_STATS,
    "test_layer_normalization_4d_axis0": _LN_STATS, "test_layer_normalization_4d_axis1": _LN_STATS,
    "test_layer_normalization_4d_axis2": _LN_STATS, "test_layer_normalization_4d_axis3": _LN_STATS,
    "test_layer_normalization_4d_axis_negative_1": _LN_STATS,
    "test_layer_normalization_4d_axis_negative_2": _LN_STATS,
    "test_layer_normalization_4d_axis_negative_3": _LN_STATS,
    "test_layer_normalization_4d_axis_negative_4": _LN_STATS, "test_layer_normalization_default_axis": _LN_STATS,
    "test_pow": _POW_TENSOR, "test_pow_bcast_array": _POW_TENSOR, "test_pow_example": _POW_TENSOR,
    "test_pow_types_float32_int32": _POW_TENSOR, "test_pow_types_float32_int64": _POW_TENSOR,
    "test_pow_types_float32_uint32": _ORT, "test_pow_types_float32_uint64": _ORT,
    "test_pow_types_int32_float32": _POW_TENSOR, "test_pow_types_int32_int32": _POW_TENSOR,
    "test_pow_types_int64_float32": _POW_TENSOR, "test_pow_types_int64_int64": _POW_TENSOR,
    **{f"test_{c}": _ORT for c in CAST_CASES_IR14},
    **{f"test_{c}": _CAST_NARROW for c in CAST_CASES_NARROW_TYPES},
    **{f"test_castlike_{c}_expanded": _ORT for c in ("FLOAT16_to_FLOAT4E2M1", "FLOAT4E2M1_to_FLOAT16",
                                                     "FLOAT4E2M1_to_FLOAT", "FLOAT_to_FLOAT4E2M1")},
    **{f"test_{op}_{t}{x}": _UINT_WIDE for op in ("equal", "less", "greater", "less_equal", "greater_equal")
       for t in ("uint32", "uint64") for x in (("", "_expanded") if "_" in op else ("",))},
    "test_equal_string": _STRING, "test_equal_string_broadcast": _STRING,
    "test_clip_default_int8_min_expanded": _INT, "test_clip_default_int8_max_expanded": _INT,
}
# What the KilnError must say for each reason (so a case is refused for the listed reason).
# The frontend folds an inference Dropout's mask (all true) to a constant graph output.
REFUSAL_MESSAGE = {
    _INT: r"int\d+ tensors are not supported", _POOL_3D: r"only 1-D and 2-D pooling",
    _BN_TRAIN: r"training_mode=1", _MASK: r"mask output|graph output computed by no layer",
    _TRAIN_DROPOUT: r"training mode|mask output", _INDICES: r"Indices output", _NOT_TENSOR: r"is not a tensor",
    _EMPTY: r"empty tensors", _LN_STATS: r"Mean/InvStdDev outputs are not supported",
    _POW_TENSOR: r"constant scalar exponent",
    _CUBIC: r"mode 'cubic' is not supported",
    _ANTIALIAS: r"antialias=1 is not supported", _TF_CROP: r"coordinate_transformation_mode 'tf_crop_and_resize'",
    _ALIGN_FRACTIONAL: r"align_corners with a scale whose output length",
    _BOOL: r"bool tensors are not supported",
    _ORT: r"ONNX Runtime cannot load the model",
    _UINT_WIDE: r"uint(32|64) operands are not supported", _STRING: r"string tensors are not supported",
    _CAST_NARROW: r"Cast supports float32/float64, bool and integer types",
}

# Cases whose expected output onnx publishes as hand-written approximate numbers: compared
# with onnx's reference evaluator on the same model instead (same rtol/atol), after checking
# that the published numbers agree with that result to the stated absolute accuracy.
EXPECTED_ROUNDED: dict[str, float] = {
    # x and y are written with 4 decimals (y = [[[[0.1511]], [[0.2841]], [[0.3572]]]]; the
    # exact mean of the written x is [0.151056, 0.284044, 0.357222]): agree to 1e-4
    "test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-4,
}


@functools.lru_cache(maxsize=1)
def node_cases() -> dict:
    """name -> onnx TestCase, for the cases whose nodes are all supported operators."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {c.name: c for c in cases
            if c.kind == "node" and c.model is not None and c.model.graph.node
            and all(n.domain in ("", "ai.onnx") and n.op_type in SUPPORTED_OPS for n in c.model.graph.node)}


def runtime_input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs that stay runtime inputs (the rest become initializers)."""
    node = model.graph.node[0]
    names = ([n for n in node.input if n] if node.op_type in ALL_INPUTS_AT_RUNTIME else
             node.input[DATA_INPUTS.get(node.op_type, slice(0, 1))])
    graph_inputs = [i.name for i in model.graph.input]
    return [n for n in graph_inputs if n in set(names)]


def as_array(x):
    """A case's input or expected output as a numpy array (some cases store TensorProtos)."""
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def with_constant_weights(model: onnx.ModelProto, inputs: list) -> tuple[onnx.ModelProto, list]:
    """The case's model with non-data inputs as initializers; returns (model, runtime arrays)."""
    keep = runtime_input_names(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    runtime = []
    all_inputs = list(graph.input)
    del graph.input[:]
    read = {name for node in graph.node for name in node.input}
    for value_info, array in zip(all_inputs, inputs):
        if value_info.name not in read:
            continue  # an input no node reads (CastLike's `like` in an expanded case): dropped
        if value_info.name in keep:
            graph.input.append(value_info)
            runtime.append(array)
        else:
            graph.initializer.append(numpy_helper.from_array(np.asarray(array), value_info.name))
    return out, runtime


def _case_names() -> list[str]:
    return sorted(node_cases())


@pytest.mark.parametrize("name", _case_names())
def test_onnx_node_case(name, tmp_path):
    case = node_cases()[name]
    for k, (inputs, expected) in enumerate(case.data_sets):
        expected = [as_array(y) for y in expected]
        model, runtime = with_constant_weights(case.model, [as_array(x) for x in inputs])
        out_dir = tmp_path / f"prj{k}"
        if name in EXPECTED_UNSUPPORTED:
            with pytest.raises(kiln.KilnError, match=REFUSAL_MESSAGE[EXPECTED_UNSUPPORTED[name]]):
                kiln.compile(model, board="vu13p", output_dir=out_dir, precision="float")
            continue
        project = kiln.compile(model, board="vu13p", output_dir=out_dir, precision="float")
        # one sample: arrays of inputs with a batch axis (dim 0 of 1 or symbolic) as they are
        feed = [x if spec["batch_axis"] else x[None] for spec, x in zip(project.inputs, runtime)]
        got = project.csim(feed, return_all=True)
        if name in EXPECTED_ROUNDED:
            exact = ReferenceEvaluator(model).run(None, {i.name: x for i, x in zip(model.graph.input, runtime)})
            for published, value in zip(expected, exact):
                np.testing.assert_allclose(published, value, rtol=0, atol=EXPECTED_ROUNDED[name])
            expected = exact
        assert len(got) == len(expected)
        for spec, y, want in zip(project.outputs, got, expected):
            y = y if spec["batch_axis"] else y[0]
            assert y.shape == want.shape, f"output {spec['name']!r}: shape {y.shape}, expected {want.shape}"
            np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL, err_msg=f"output {spec['name']!r}")


def test_listed_names_exist():
    """Every entry of EXPECTED_UNSUPPORTED / EXPECTED_ROUNDED names a collected case."""
    assert sorted((set(EXPECTED_UNSUPPORTED) | set(EXPECTED_ROUNDED)) - set(node_cases())) == []
    assert not set(EXPECTED_UNSUPPORTED) & set(EXPECTED_ROUNDED)
    assert set(EXPECTED_UNSUPPORTED.values()) <= set(REFUSAL_MESSAGE)
