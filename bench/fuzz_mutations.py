"""Seeds and mutations of bench/fuzz_models.py: small models built in-process and structural
mutations of their ONNX protobufs (``make_mutant``). Not a test."""

from __future__ import annotations

import copy
import io
import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HOSTILE_NAMES = ["", " ", "../../etc/passwd", "a\"b'c;`rm -rf`", "名前", "x" * 300, "\x00nul", "-o",
                 "con", "a/b\\c", "$(echo hi)", "%s%n", "\n", "#include <x>", "weights"]
HUGE = [2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 40, 2 ** 62, 10 ** 5, -1, -2 ** 31, 0]


# ---------------------------------------------------------------- seeds

def _torch_seeds() -> list[tuple[str, onnx.ModelProto]]:
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(0)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x + self.mha(x, x, x, need_weights=False)[0])

    models = [("torch_mlp", nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), (1, 6)),
              ("torch_cnn", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(2 * 3 * 3, 4)), (1, 1, 8, 8)),
              ("torch_attn", Attn(), (1, 4, 8))]
    seeds = []
    for name, module, shape in models:
        module.eval()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, torch.randn(*shape), buf, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False)
        seeds.append((name, onnx.load_from_string(buf.getvalue())))
    return seeds


def _qonnx_seed() -> onnx.ModelProto:
    """x[N,6] -> Quant(4 bit) -> MatMul(W quantized 4 bit) -> Add -> Relu -> Quant(8 bit) -> y."""
    rng = np.random.default_rng(0)
    dom = "qonnx.custom_op.general"
    inits = [numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "B"),
             numpy_helper.from_array(np.array(0.125, np.float32), "s_a"),
             numpy_helper.from_array(np.array(0.25, np.float32), "s_w"),
             numpy_helper.from_array(np.array(0.0625, np.float32), "s_o"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zp"),
             numpy_helper.from_array(np.array(4.0, np.float32), "b4"),
             numpy_helper.from_array(np.array(8.0, np.float32), "b8")]
    q = dict(domain=dom, signed=1, narrow=0, rounding_mode="ROUND")
    nodes = [helper.make_node("Quant", ["x", "s_a", "zp", "b4"], ["xq"], name="quant_in", **q),
             helper.make_node("Quant", ["W", "s_w", "zp", "b4"], ["Wq"], name="quant_w", **q),
             helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="matmul"),
             helper.make_node("Add", ["h", "B"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("Quant", ["r", "s_o", "zp", "b8"], ["y"], name="quant_out", **q)]
    graph = helper.make_graph(nodes, "qonnx_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(dom, 1)],
                             ir_version=8)


def _qdq_seed() -> onnx.ModelProto:
    """x -> Q/DQ -> MatMul(DQ(int8 W, per channel)) -> Q/DQ -> y (quantize_static's layout)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "Wq"),
             numpy_helper.from_array(np.full(3, 0.02, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
             numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["W"], name="dq_w", axis=1),
             helper.make_node("MatMul", ["xd", "W"], ["h"], name="matmul"),
             helper.make_node("QuantizeLinear", ["h", "y_scale", "y_zp"], ["hq"], name="q_y"),
             helper.make_node("DequantizeLinear", ["hq", "y_scale", "y_zp"], ["y"], name="dq_y")]
    graph = helper.make_graph(nodes, "qdq_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def build_seeds(torch_seeds: bool = True) -> list[tuple[str, onnx.ModelProto]]:
    seeds = _torch_seeds() if torch_seeds else []
    return seeds + [("qonnx_mlp", _qonnx_seed()), ("qdq_mlp", _qdq_seed())]


# ---------------------------------------------------------------- mutations

def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return found


def _value_infos(model: onnx.ModelProto):
    g = model.graph
    return [v for v in (*g.input, *g.output, *g.value_info) if v.type.HasField("tensor_type")]


def _names(model: onnx.ModelProto) -> list[str]:
    g = model.graph
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    for n in g.node:
        names.update(n.output)
    return sorted(names)


def m_dims(model, rng):
    t = rng.choice(_tensors(model) or [None])
    if t is None:
        return
    dims = list(t.dims)
    choice = rng.random()
    if not dims or choice < 0.3:
        dims.append(rng.choice([1, 2, 3, 8]))
    elif choice < 0.5:
        dims.pop(rng.randrange(len(dims)))
    else:
        dims[rng.randrange(len(dims))] = rng.choice([0, 1, 2, 3, 7, 16, -1, -3] + HUGE)
    del t.dims[:]
    t.dims.extend(dims)


def m_dtype(model, rng):
    target = rng.random()
    value = rng.choice([999, -3, 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 21, 22, 23, 24, 40])
    if target < 0.6 and _tensors(model):
        rng.choice(_tensors(model)).data_type = value
    else:
        rng.choice(_value_infos(model)).type.tensor_type.elem_type = value


def m_raw_data(model, rng):
    ts = [t for t in _tensors(model) if t.raw_data]
    if not ts:
        return
    t = rng.choice(ts)
    raw = t.raw_data
    r = rng.random()
    if r < 0.4:
        t.raw_data = raw[: rng.randrange(len(raw))]
    elif r < 0.6:
        t.raw_data = raw + bytes(rng.randrange(1, 9))
    elif r < 0.8:  # move the data into a typed field of the wrong length
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * rng.randrange(0, 20))
        t.int64_data.extend([1] * rng.randrange(0, 3))
    else:
        t.raw_data = bytes(rng.randrange(256) for _ in range(len(raw)))


def m_attribute(model, rng):
    attrs = [(n, a) for n in model.graph.node for a in n.attribute]
    if not attrs:
        return
    node, a = rng.choice(attrs)
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice([-1, 0, 1, 2, 5, 100, 2 ** 31, -2 ** 62, 2 ** 62])
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([0.0, -1.0, float("inf"), float("-inf"), float("nan"), 1e38, 1e-45])
    elif a.type == onnx.AttributeProto.INTS:
        vals = list(a.ints)
        if vals and rng.random() < 0.6:
            vals[rng.randrange(len(vals))] = rng.choice([-1, 0, 7, 2 ** 31, -2 ** 40])
        else:
            vals = vals[:-1] if vals else [1]
        del a.ints[:]
        a.ints.extend(vals)
    elif a.type == onnx.AttributeProto.STRING:
        a.s = rng.choice([b"", b"nonsense", b"\xff\xfe", b"ROUND", b"FLOOR"])
    elif a.type == onnx.AttributeProto.TENSOR:
        m_dims(model, rng)
    if rng.random() < 0.15:  # an attribute of a type the op does not expect
        a.type = rng.choice([1, 2, 3, 7, 99])


def m_rewire(model, rng):
    nodes = list(model.graph.node)
    if not nodes:
        return
    node = rng.choice(nodes)
    names = _names(model)
    r = rng.random()
    if node.input and r < 0.6:
        node.input[rng.randrange(len(node.input))] = rng.choice(names + ["", "nonexistent"])
    elif r < 0.8:
        node.input.append(rng.choice(names))
    elif node.output:
        node.output[rng.randrange(len(node.output))] = rng.choice(names + [""])
    if rng.random() < 0.1:  # a node moved (graph order broken)
        model.graph.node.remove(node)
        model.graph.node.insert(rng.randrange(len(model.graph.node) + 1), node)


def m_hostile_name(model, rng):
    g = model.graph
    pool = [("node", n) for n in g.node] + [("init", t) for t in g.initializer] + [("graph", g)]
    kind, obj = rng.choice(pool)
    new = rng.choice(HOSTILE_NAMES)
    if kind == "init" and rng.random() < 0.7:  # rename everywhere, keeping the graph connected
        old = obj.name
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new
        obj.name = new
    else:
        obj.name = new


def m_huge_input(model, rng):
    vi = rng.choice(list(model.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = dims[rng.randrange(len(dims))]
        d.Clear()
        d.dim_value = rng.choice(HUGE)


def m_blowup(model, rng):
    """Route the output through ConstantOfShape/Expand to a huge shape (Add keeps it used)."""
    g = model.graph
    out = g.output[0]
    side = rng.choice([100000, 2 ** 20, 46341, 3])
    shape = numpy_helper.from_array(np.array([side, side], np.int64), "kiln_fuzz_shape")
    g.initializer.append(shape)
    old = out.name
    for n in g.node:
        for i, name in enumerate(n.output):
            if name == old:
                n.output[i] = "kiln_fuzz_pre"
    if rng.random() < 0.5:
        g.node.append(helper.make_node("ConstantOfShape", ["kiln_fuzz_shape"], ["kiln_fuzz_big"], name="cos",
                                       value=numpy_helper.from_array(np.array([1.0], np.float32))))
        g.node.append(helper.make_node("ReduceSum", ["kiln_fuzz_big"], ["kiln_fuzz_s"], name="rs", keepdims=0))
        g.node.append(helper.make_node("Add", ["kiln_fuzz_pre", "kiln_fuzz_s"], [old], name="addbig"))
    else:
        g.node.append(helper.make_node("Expand", ["kiln_fuzz_pre", "kiln_fuzz_shape"], [old], name="expand"))
        del out.type.tensor_type.shape.dim[:]


def m_values(model, rng):
    """Non-finite or extreme values in a float initializer (scales, bit widths, weights)."""
    ts = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    if not ts:
        return
    t = rng.choice(ts)
    a = numpy_helper.to_array(t).copy()
    if a.size:
        a.reshape(-1)[rng.randrange(a.size)] = rng.choice([np.inf, -np.inf, np.nan, 1e38, -1e38, 0.0, -1.0, 1e-45])
    t.CopyFrom(numpy_helper.from_array(a.astype(np.float32), t.name))


def m_opset(model, rng):
    op = model.opset_import[0]
    op.version = rng.choice([1, 6, 9, 11, 13, 17, 21, 23, 25, 99, -1])
    if rng.random() < 0.3:
        model.ir_version = rng.choice([0, 1, 3, 99])


STRUCTURAL = [m_dims, m_dtype, m_raw_data, m_attribute, m_rewire, m_hostile_name, m_huge_input, m_blowup, m_opset,
              m_values]
WEIGHTS = [3, 3, 3, 3, 3, 2, 1, 1, 1, 2]


def _non_utf8(data: bytes, model: onnx.ModelProto, rng) -> bytes:
    """Replace one name's bytes in the serialized file with invalid UTF-8 of the same length."""
    names = [n for n in _names(model) + [n.name for n in model.graph.node] if len(n) >= 2]
    if not names:
        return data
    raw = rng.choice(names).encode()
    bad = bytes([0xff, 0xfe] + [0x80] * (len(raw) - 2))
    return data.replace(raw, bad, rng.choice([1, -1]))


def _corrupt(data: bytes, rng) -> bytes:
    buf = bytearray(data)
    r = rng.random()
    if r < 0.5:
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif r < 0.75:
        del buf[rng.randrange(len(buf)):]
    else:
        start = rng.randrange(len(buf))
        buf[start:start] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(buf)


def make_mutant(seed: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """(serialized mutant, description of the mutations)."""
    model = copy.deepcopy(seed)
    done = []
    for fn in rng.choices(STRUCTURAL, WEIGHTS, k=rng.choice([1, 1, 2, 3])):
        try:
            fn(model, rng)
        except (ValueError, TypeError, IndexError):  # the protobuf refused the value: skip it
            continue
        done.append(fn.__name__[2:])
    try:
        data = model.SerializeToString()
    except Exception:  # noqa: BLE001 - a mutation protobuf cannot serialize: fall back to the seed
        data, done = seed.SerializeToString(), []
    r = rng.random()
    if r < 0.08:
        data, done = _non_utf8(data, model, rng), done + ["non_utf8"]
    elif r < 0.16:
        data, done = _corrupt(data, rng), done + ["corrupt"]
    return data, "+".join(done) or "none"
