"""How each op becomes LLVM IR: one emitter per op name, in one table.

An emitter receives the :class:`Emit` context (the IR builder plus helpers)
and the argument values, and returns the result value.  Emitters reproduce the
interpreter's arithmetic exactly: the same IEEE operations in the same order,
and the same libm functions (called under a private name, see
:mod:`symgrad.native.libm`, so that LLVM cannot rewrite ``pow(x, 2.0)`` into
``x * x`` or use its own ``exp``).  No fast-math flags anywhere.

Domain flags: where the interpreter raises (``math.log(-1)``, ``1 / 0``,
``math.exp(1000)``), the emitter raises the chunk's flag instead, and the
caller hands the point to the interpreter for the exact
:class:`~symgrad.errors.DomainError`.  The test is deliberately conservative:
*any* non-finite libm result and any division by zero flags the point.  A flag
where Python would not raise (``exp(inf)``) only costs an interpreter call that
returns the same numbers.  Operations that never raise in Python (``+``, ``*``,
``min``, ``relu``, ``sigmoid``...) emit no test at all.

This table is the ``native`` column of the op table, kept here while the table
itself is being rewritten; ``heaviside``, ``sign`` and ``xlogy`` are the
helpers that derivative rules use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from llvmlite import ir

__all__ = ["DOUBLE", "EMITTERS", "Emit", "Emitter"]

DOUBLE = ir.DoubleType()
I1 = ir.IntType(1)
I64 = ir.IntType(64)
_EXPONENT = 0x7FF0000000000000
_MAGNITUDE = 0x7FFFFFFFFFFFFFFF


class Emit:
    """What an emitter may use: the builder, libm calls, constants, the domain flag."""

    def __init__(self, builder: ir.IRBuilder, libm: Callable[[str, int], ir.Function]) -> None:
        self.b = builder
        self._libm = libm
        self.flag: ir.Value = ir.Constant(I1, 0)
        """True once any operation of this chunk left its domain (see the module docstring)."""

    @staticmethod
    def const(value: float) -> ir.Constant:
        return ir.Constant(DOUBLE, value)

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        """A libm function (``exp``, ``atan2``...), declared once per module."""
        return self.b.call(self._libm(name, len(args)), args)

    def mark(self, condition: ir.Value) -> None:
        """Raise the domain flag where ``condition`` (an i1) holds."""
        self.flag = self.b.or_(self.flag, condition)

    def nonfinite(self, x: ir.Value) -> ir.Value:
        """i1: ``x`` is inf or nan (exponent bits all ones; integer ops only)."""
        bits = self.b.bitcast(x, I64)
        exponent = self.b.and_(bits, ir.Constant(I64, _EXPONENT))
        return self.b.icmp_unsigned("==", exponent, ir.Constant(I64, _EXPONENT))

    def checked(self, name: str, *args: ir.Value) -> ir.Value:
        """A libm call whose non-finite result raises the flag."""
        result = self.call(name, *args)
        self.mark(self.nonfinite(result))
        return result

    def select_lt(self, a: ir.Value, b: ir.Value, if_true: ir.Value, if_false: ir.Value) -> ir.Value:
        return self.b.select(self.b.fcmp_ordered("<", a, b), if_true, if_false)


Emitter = Callable[[Emit, Sequence[ir.Value]], ir.Value]


def _libm(name: str) -> Emitter:
    return lambda e, args: e.checked(name, *args)


def _div(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    a, b = args
    e.mark(e.b.fcmp_ordered("==", b, e.const(0.0)))  # Python raises ZeroDivisionError for x / ±0, even nan / 0
    return e.b.fdiv(a, b)


def _sqrt(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    # llvm.sqrt is IEEE sqrt, correctly rounded like libm's; it lowers to one instruction.
    fn = e.b.module.declare_intrinsic("llvm.sqrt", [DOUBLE])
    result = e.b.call(fn, [args[0]])
    e.mark(e.nonfinite(result))
    return result


def _fabs(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    # A bit mask rather than llvm.fabs: the same bits, and cheaper for the fast instruction selector.
    bits = e.b.and_(e.b.bitcast(args[0], I64), ir.Constant(I64, _MAGNITUDE))
    return e.b.bitcast(bits, DOUBLE)


def _sigmoid(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    # Both branches of ops._sigmoid, computed and selected: 1/(1+exp(-x)) for x >= 0, else e/(1+e) with e = exp(x).
    x = args[0]
    one = e.const(1.0)
    positive = e.b.fcmp_ordered(">=", x, e.const(0.0))
    arg = e.b.select(positive, e.b.fneg(x), x)
    ex = e.call("exp", arg)
    denominator = e.b.fadd(one, ex)
    numerator = e.b.select(positive, one, ex)
    return e.b.fdiv(numerator, denominator)


def _relu(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    x = args[0]  # 0.0 if x <= 0.0 else x: nan stays nan, -0.0 becomes 0.0
    return e.b.select(e.b.fcmp_ordered("<=", x, e.const(0.0)), e.const(0.0), x)


def _min(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    a, b = args  # Python's min(a, b): b if b < a else a
    return e.select_lt(b, a, b, a)


def _max(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    a, b = args  # Python's max(a, b): b if b > a else a
    return e.select_lt(a, b, b, a)


def _heaviside(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    x, at_zero = args  # 1 for x > 0, 0 for x < 0, at_zero at ±0, nan stays nan
    zero = e.const(0.0)
    inner = e.b.select(e.b.fcmp_ordered("==", x, zero), at_zero, x)
    inner = e.b.select(e.b.fcmp_ordered("<", x, zero), zero, inner)
    return e.b.select(e.b.fcmp_ordered(">", x, zero), e.const(1.0), inner)


def _sign(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    x = args[0]  # 1, -1, or x itself (±0, nan)
    zero = e.const(0.0)
    inner = e.b.select(e.b.fcmp_ordered("<", x, zero), e.const(-1.0), x)
    return e.b.select(e.b.fcmp_ordered(">", x, zero), e.const(1.0), inner)


def _xlogy(e: Emit, args: Sequence[ir.Value]) -> ir.Value:
    x, y = args  # 0.0 if x == 0.0 else x * log(y); log raises (flag) only where it is used
    log_y = e.call("log", y)
    used = e.b.fcmp_unordered("!=", x, e.const(0.0))
    e.mark(e.b.and_(used, e.nonfinite(log_y)))
    return e.b.select(used, e.b.fmul(x, log_y), e.const(0.0))


EMITTERS: Mapping[str, Emitter] = {
    "add": lambda e, a: e.b.fadd(a[0], a[1]),
    "sub": lambda e, a: e.b.fsub(a[0], a[1]),
    "mul": lambda e, a: e.b.fmul(a[0], a[1]),
    "div": _div,
    "neg": lambda e, a: e.b.fneg(a[0]),
    "pow": _libm("pow"),
    "exp": _libm("exp"),
    "log": _libm("log"),
    "sqrt": _sqrt,
    "sin": _libm("sin"),
    "cos": _libm("cos"),
    "tan": _libm("tan"),
    "asin": _libm("asin"),
    "acos": _libm("acos"),
    "atan": _libm("atan"),
    "sinh": _libm("sinh"),
    "cosh": _libm("cosh"),
    "tanh": _libm("tanh"),
    "sigmoid": _sigmoid,
    "relu": _relu,
    "abs": _fabs,
    "atan2": _libm("atan2"),
    "min": _min,
    "max": _max,
    "heaviside": _heaviside,
    "sign": _sign,
    "xlogy": _xlogy,
}
"""Per op name: how to emit it.  Every op of :data:`symgrad.OPS` has a row (tested)."""
