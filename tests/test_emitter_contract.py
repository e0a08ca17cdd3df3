"""The emitters and the nnet headers agree: kernel names, config bases, the structured call."""

import re
from importlib import resources

import pytest

from kiln.backends.hls.call import Call
from kiln.backends.hls.layers import REGISTRY, activation, eltwise, logic, math, pad, quantize, resize
from tests.helpers import header_enumerators as _enumerators, header_text as _header


@pytest.mark.parametrize("ops, header, enum", [(activation.OPS, "kiln_activation.h", "activation_op"),
                                               ({**eltwise.OPS, **logic.BINARY_OPS}, "kiln_eltwise.h", "binary_op"),
                                               (logic.UNARY_KINDS, "kiln_logic.h", "logic_op"),
                                               (math.MATH_OPS, "kiln_math.h", "math_op"),
                                               (quantize.ROUNDING_MODES, "kiln_quantize.h", "rounding_mode"),
                                               (pad.MODES, "kiln_pad.h", "pad_mode"),
                                               (resize.MODES, "kiln_resize.h", "resize_mode")])
def test_kernel_names_are_the_headers_enumerators(ops, header, enum):
    assert sorted(ops.values()) == sorted(_enumerators(header, enum))


def test_every_config_inherits_a_struct_its_header_declares():
    assert any(type(e) is quantize.QuantizeEmitter for e in REGISTRY.values())
    for emitter in set(REGISTRY.values()):
        module = __import__(type(emitter).__module__, fromlist=["*"])
        texts = [v for k, v in vars(module).items() if k.endswith("CONFIG") and isinstance(v, str)]
        for text in texts:
            base = re.match(r"struct .+? : kiln::(\w+) \{", text)
            assert base, f"{module.__name__}: config without a kiln:: base: {text.splitlines()[0]}"
            headers = [_header(h.name) for h in (resources.files("kiln.hls_templates") / "nnet").iterdir()
                       if h.name.endswith(".h")]
            assert any(f"struct {base.group(1)} " in h for h in headers), base.group(1)


def test_template_module_is_not_registered():
    assert ("", "MyOp") not in REGISTRY


def test_call_renders_and_renames_whole_names():
    call = Call("kiln::conv2d", ("v0_t", "v1_t", "layer0_config"), ("v0", "v1", "w", "b"), batch=2, strides=(12, 8))
    assert call.render() == ("for (unsigned n = 0; n < 2; n++) {\n"
                             "        kiln::conv2d<v0_t, v1_t, layer0_config>(v0 + n * 12, v1 + n * 8, w, b);\n    }")
    wide = call.renamed({"v1": "v1_wide", "v1_t": "layer0_v1_wide_t", "v": "x"})
    assert wide.args == ("v0", "v1_wide", "w", "b") and wide.type_args[1] == "layer0_v1_wide_t"
    assert Call("kiln::copy", ("a_t", "b_t", 4), ("a", "b")).render() == "kiln::copy<a_t, b_t, 4>(a, b);"
