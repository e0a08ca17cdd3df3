"""Relax pass: ``erf`` as TOPI's ``fast_erf`` (a rational polynomial that LLVM vectorizes),
``softmax`` as TOPI's ``fast_softmax`` (its exp a polynomial too), ``sigmoid`` as
``1 / (1 + fast_exp(-x))``, a division by a float constant as a product with its reciprocal.

TVM 0.27 lowers ``erf`` to a scalar libm call per element, which no schedule can vectorize:
in DeiT-tiny the exact-GELU MLP (197x192 -> 768, erf epilogue) took 3.4 ms a call against
0.7 ms with ``fast_erf`` (one core), 44% of the model. ``fast_erf`` is the float32
approximation of Eigen (clamped to [-4, 4], a 13/8-term rational), max error on the order of
1e-7: within the 1e-5 the TVM backend promises against ONNX Runtime.

Softmax: TVM's exp is a libm call per element, twice per element (in the sum and in the
quotient): DeiT-tiny's softmax over 197 tokens took 0.86 ms a call, 13% of the model.
``fast_softmax`` computes ``fast_exp`` (Cephes' range reduction and degree-5 polynomial, the
float exponent set by bit arithmetic; relative error ~1e-7 over softmax's range x - max <= 0)
once into a buffer that the sum and the quotient read.

Sigmoid (SiLU = x * sigmoid(x): MobileViT, EfficientNet, YOLO): TVM lowers ``T.sigmoid`` to
``1 / (1 + exp(-x))`` with a libm ``expf`` per lane; MobileViT-XXS's 112x112x32 1x1 conv with
its SiLU epilogue took 1.42 ms a call against 0.24 ms for the conv alone, 0.59 ms with this
rewrite (epilogue fused). ``fast_exp`` clamps its argument to
[-88.38, 88.38], so the rewrite saturates to 0 and 1 as sigmoid does; relative error ~1e-7.
Division by a constant (GELU's ``x / sqrt(2)``, attention's ``/ sqrt(d)``): LLVM keeps an
``fdiv`` by a constant that is not a power of two (the product with the reciprocal can differ
in the last bit), and AVX2's ``vdivps`` takes ~5x an FMA's issue slot: in PoolFormer's
64 -> 256 GELU conv at 56x56 the epilogue's two divisions (this one and fast_erf's own) cost
as much as the 64-deep multiply-accumulate. ``x * (1 / c)`` is within 1 ulp of ``x / c``.

Elementwise ``exp`` elsewhere stays as it is (TVM's ``FastMathTransform`` swaps every exp
and tanh, which is not needed).

The pass runs after the conv layout change (conv_layout.py): ``ConvertLayout`` knows Relax's
ops, not the ``call_tir`` of a rewritten op, and would wrap each of those in a pair of layout
transposes (and keep it out of the conv's fused epilogue).
"""

from __future__ import annotations


def fast_math_pass():
    """A module pass rewriting every ``relax.erf`` call of the Relax functions to ``fast_erf``,
    every ``relax.nn.softmax`` to ``fast_softmax``, every ``relax.sigmoid`` to a sigmoid
    of ``fast_exp`` and every ``relax.divide`` by a float constant to a ``multiply`` by its
    reciprocal."""
    import numpy as np
    import tvm
    from tvm import relax, topi
    from tvm.relax import PyExprMutator, expr_functor

    @expr_functor.mutator
    class _FastMath(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.erf":
                return self.builder_.call_te(topi.fast_erf, call.args[0])
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.sigmoid":
                return self.builder_.call_te(_fast_sigmoid, call.args[0])
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.divide":
                reciprocal = _reciprocal(call.args[1])
                if reciprocal is not None:
                    return relax.op.multiply(call.args[0], reciprocal)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.softmax":
                return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis))
            return call

    def _reciprocal(divisor):
        """``1 / divisor`` as a Relax constant, for a float32 constant with finite nonzero values."""
        if not isinstance(divisor, tvm.ir.expr.Constant):
            return None
        values = divisor.value.numpy()
        if values.dtype != np.float32 or not np.all(np.isfinite(values)) or np.any(values == 0):
            return None
        return relax.const(np.float32(1.0) / values, "float32")

    def _fast_sigmoid(x):
        return topi.divide(1.0, topi.add(1.0, topi.fast_exp(topi.negative(x))))

    return relax_functions_pass(_FastMath, "KilnFastMath")


def relax_functions_pass(mutator_class, name: str):
    """A module pass running a ``PyExprMutator`` class over every Relax function of the module."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        mutator = mutator_class(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gv, mutator.visit_expr(func))
        return mutator.builder_.get()

    return _pass
