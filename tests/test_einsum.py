"""Einsum lowered to kiln::matmul (batched, with transposed operands) against ONNX Runtime:
the contractions of attention exports, in float and fixed point; other equations refused."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import kiln

RNG = np.random.default_rng(11)
# equation -> (a shape, b shape, out shape), without the leading batch axis N (a letter of the equation)
EQUATIONS = {"bhid,bhjd->bhij": ((2, 5, 4), (2, 6, 4), (2, 5, 6)),   # q k^T
             "bhij,bhjd->bhid": ((2, 5, 6), (2, 6, 4), (2, 5, 4)),   # attn v
             "bnc,bmc->bnm": ((5, 4), (6, 4), (5, 6)),
             "...ij,...jk->...ik": ((2, 5, 4), (2, 4, 3), (2, 5, 3)),
             "bji,bjk->bik": ((4, 5), (4, 3), (5, 3))}                # a transposed


def einsum_model():
    nodes, ins, outs = [], [], []
    for k, (eq, (sa, sb, so)) in enumerate(EQUATIONS.items()):
        nodes.append(h.make_node("Einsum", [f"a{k}", f"b{k}"], [f"y{k}"], equation=eq))
        ins += [h.make_tensor_value_info(f"a{k}", T.FLOAT, ["N", *sa]), h.make_tensor_value_info(f"b{k}", T.FLOAT, ["N", *sb])]
        outs.append(h.make_tensor_value_info(f"y{k}", T.FLOAT, ["N", *so]))
    return h.make_model(h.make_graph(nodes, "g", ins, outs), opset_imports=[h.make_opsetid("", 17)], ir_version=10)


def feeds():
    return [RNG.uniform(-1, 1, (3, *s)).astype(np.float32) for sa, sb, _ in EQUATIONS.values() for s in (sa, sb)]


@pytest.mark.parametrize("precision", ["float", "fixed<18,4>"])
def test_attention_contractions_match_onnxruntime(tmp_path, precision):
    """fixed<18,4> (14 fractional bits, truncation): operands off by < 1 LSB each (|x| <= 1),
    so each product by < 2 LSB, a sum of k <= 6 of them by < 12 LSB, plus < 1 LSB output
    truncation (the accumulator is exact): < 13 LSB."""
    x = feeds()
    project = kiln.compile(einsum_model(), output_dir=tmp_path / "p", precision=precision)
    got, ref = project.csim(x, return_all=True), project.reference(x)
    for eq, y, r in zip(EQUATIONS, got, ref):
        if precision == "float":
            np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6, err_msg=eq)
        else:
            err = np.abs(y.astype(np.float64) - r)
            assert 0 < err.max() < 13 * 2.0 ** -14, (eq, float(err.max()))


@pytest.mark.parametrize("eq,shapes,why", [
    ("bij->bji", [(3, 4)], "only two-operand"),
    ("bij,bjk->bki", [(3, 4), (4, 5)], "not a matrix product over one contracted axis"),
    ("bi,bi->b", [(4,), (4,)], "not a batched matrix product")])
def test_other_equations_are_refused(tmp_path, eq, shapes, why):
    ins = [h.make_tensor_value_info(f"x{i}", T.FLOAT, ["N", *s]) for i, s in enumerate(shapes)]
    out_rank = len(eq.split("->")[1])
    graph = h.make_graph([h.make_node("Einsum", [f"x{i}" for i in range(len(shapes))], ["y"], equation=eq)], "g",
                         ins, [h.make_tensor_value_info("y", T.FLOAT, [None] * out_rank)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(kiln.KilnError, match=f"Einsum .*{why}"):
        kiln.compile(model, output_dir=tmp_path / "p", precision="float")
