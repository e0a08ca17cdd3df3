"""Names from a model never reach generated C++, Tcl or paths unsanitised."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import kiln

EVIL = 'x"); system("id'


def hostile_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = helper.make_tensor("int", TensorProto.FLOAT, [6, 5], rng.standard_normal(30).astype(np.float32))
    b = helper.make_tensor("weights/../../etc", TensorProto.FLOAT, [5], rng.standard_normal(5).astype(np.float32))
    nodes = [
        helper.make_node("MatMul", ['in"put\n#include <x>', "int"], ["a-b"], name=EVIL),
        helper.make_node("Add", ["a-b", "weights/../../etc"], ["a_b"], name="*/ main() { /*"),
        helper.make_node("Relu", ["a_b"], ["main"], name="int main(){return 0;}"),
        helper.make_node("Sigmoid", ["a_b"], ["}; exit(1); //"], name="\\\n"),
    ]
    graph = helper.make_graph(
        nodes, '"; rm -rf /; "',
        [helper.make_tensor_value_info('in"put\n#include <x>', TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("main", TensorProto.FLOAT, ["N", 5]),
         helper.make_tensor_value_info("}; exit(1); //", TensorProto.FLOAT, ["N", 5])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_hostile_names_compile_to_valid_cpp_that_computes_the_model(tmp_path):
    project = kiln.compile(hostile_model(), output_dir=tmp_path / "prj", precision="float")
    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    relu_out, sig_out = project.csim(x)
    ref_relu, ref_sig = project.reference(x)
    np.testing.assert_allclose(relu_out, ref_relu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sig_out, ref_sig, rtol=1e-5, atol=1e-6)
    assert relu_out.min() == 0.0 and sig_out.max() < 1.0  # the outputs are what each name says
    generated = [p for p in (tmp_path / "prj").rglob("*") if p.is_file() and p.suffix in (".h", ".cpp", ".tcl", "")]
    for path in generated:
        if path.name == "Makefile" or path.suffix:
            text = path.read_text(errors="replace")
            for needle in ("system(", "rm -rf /;", "#include <x>", "exit(1)", "../"):
                assert needle not in text, (path, needle)
    assert all("\n" not in p.name and '"' not in p.name for p in (tmp_path / "prj").rglob("*"))
