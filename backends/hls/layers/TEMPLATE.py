"""TEMPLATE for a new HLS layer emitter (copy to ``<family>.py``; this file is not registered).

One operator family, one module, the same few hooks in every module (after onnx2c's
``src/nodes/``). Adding an operator touches exactly:

1. the C++ template in ``hls_templates/nnet/kiln_<family>.h``: a function template
   ``template <class data_T, class res_T, typename CONFIG_T> void my_op(...)`` and its
   contract, a default config struct ``struct my_op_config { ... }`` (sizes, reuse factor,
   internal types) that the generated config inherits; kernels chosen by name with an
   ``enum class my_op_kind { ... }`` whose names this module writes;
2. this module (the emitter), registered with ``@register``;
3. its test (``tests/test_<family>.py``: the C-simulation against ONNX Runtime, float at
   1e-5 relative, fixed point within a bound stated from the bit widths). The ONNX node test
   cases of the new op run by themselves: tests/test_onnx_node_cases.py reads REGISTRY.

Nothing else: the writer renders the ``Call`` and derives the overflow-counting variant from
it, the estimate reads ``LayerCost``, the precision pass has already put a type on every value.
"""

from __future__ import annotations

from kiln.backends.hls.call import Call
from kiln.backends.hls.estimate import LayerCost, bits
from kiln.backends.hls.layers.base import Layer, LayerEmitter  # and `register` in the real module
from kiln.ir_utils import attr, size

# ops: ONNX op -> the kernel's name in the header's enum (one source of the names: the C++
# enum; a test checks that every name here is one of its enumerators).
OPS = {"MyOp": "my_op"}

# The config struct, rendered with Jinja2 (ctx.render). It inherits the header's defaults and
# sets every field the template reads. Types are names from ctx.typedef (defines.h).
CONFIG = """struct {{ id }}_config : kiln::my_op_config {
    static const unsigned n_elem = {{ n }};
    static const kiln::my_op_kind op = kiln::my_op_kind::{{ op }};
    static const unsigned reuse_factor = {{ rf }};
    static constexpr float alpha = {{ alpha }};
};
"""


# @register  <- in the real module: registers the instance for every (domain, op) in `ops`
class MyOpEmitter(LayerEmitter):
    # traits
    ops = tuple(("", op) for op in OPS)  # (domain, op_type) pairs; "kiln" for fused ops
    header = "kiln_my_op.h"              # the nnet header with the template
    integer_tensors = False              # True only for layers that just move data
    # operator traits the passes read (kiln/op_traits.py): True, or the set of this emitter's op types
    keeps_input_type = False             # output values are input values (Relu, max, reshapes)
    commutes_with_scale = False          # op(s * x) == s * op(x) for a positive scale s
    max_rank = None                      # the highest tensor rank the template implements

    def check(self, node):
        """Why this node cannot be emitted (an attribute value the template does not implement), or None."""
        if attr(node, "mode", "default") != "default":
            return "only mode='default' is supported"
        return super().check(node)  # always end here: the checks common to every layer

    def emit(self, node, ctx) -> Layer:
        """The config text, the call, the header and the cost of one node."""
        x, out = node.inputs[0], node.outputs[0]
        lid = ctx.layer_id(node)  # a C++-safe, unique prefix for this layer's names
        config = ctx.render(CONFIG, id=lid, n=size(x), op=OPS[node.op_type], rf=ctx.reuse(node),
                            alpha=float(attr(node, "alpha", 1.0)))
        # emit: the template, its template arguments, its function arguments (array names).
        # A loop over a fixed batch axis: Call(..., batch=n, strides=(in_size, out_size)).
        call = Call("kiln::my_op", (ctx.ctype(x), ctx.ctype(out), f"{lid}_config"), (ctx.var(x), ctx.var(out)))
        # cost: what the estimate (estimate.py) needs; None for layers that are only wiring
        cost = LayerCost(out_elems=size(out), out_bits=bits(ctx.precision(out)), is_float=ctx.float_mode,
                         reuse_factor=ctx.reuse(node))
        return Layer(config, call, self.header, cost)
