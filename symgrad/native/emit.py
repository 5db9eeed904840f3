"""How each op becomes LLVM IR: one emitter per op name, in one table.

An emitter receives the :class:`Emit` context (which writes IR text)
and the argument values, and returns the result value.  Emitters reproduce the
interpreter's arithmetic exactly: the same IEEE operations in the same order,
and the same libm functions (called under a private name, see
:mod:`symgrad.native.libm`, so that LLVM cannot rewrite ``pow(x, 2.0)`` into
``x * x`` or use its own ``exp``).  No fast-math flags anywhere.

Domain flags: where the interpreter raises (``math.log(-1)``, ``1 / 0``,
``math.exp(1000)``, and, in the interpreter of the derivative-tape rewrite, an
overflow of ``+ - * /``), the emitter raises the function's flag instead, and
the caller hands the point to the interpreter for the exact
:class:`~symgrad.errors.DomainError`.  The test is deliberately conservative:
a non-finite result of any op that can make one from finite arguments (libm
calls, ``sqrt``, ``+ - * /``, ``xlogy``) flags the point.  A flag where the
interpreter would not raise (``exp(inf)``, ``inf + 1``) only costs an
interpreter call that returns the same numbers.  Ops that cannot leave the
finite numbers (``neg``, ``abs``, ``relu``, ``min``, ``max``, ``sigmoid``,
``heaviside``, ``sign``) emit no test at all.

This table is the ``native`` column of the op table, kept here while the table
itself is being rewritten; ``heaviside``, ``sign`` and ``xlogy`` are the
helpers that derivative rules use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

__all__ = ["EMITTERS", "LIBM", "PREFIX", "Emit", "Emitter", "double"]

_EXPONENT = 0x7FF0000000000000
_MAGNITUDE = 0x7FFFFFFFFFFFFFFF


def double(value: float) -> str:
    """An exact LLVM constant for any float (hex bits: also nan, inf and -0.0)."""
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016X}"


class Emit:
    """Writes one function's instructions as LLVM IR text; emitters call its methods.

    Text rather than llvmlite's IR objects: building objects for a 100,000-record
    tape took several times longer than LLVM's own compilation (measured).  The
    text is parsed and verified by LLVM before anything runs.  Values are
    strings: ``%tN`` names or constants; methods say which type they make.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self._count = 0
        self.libm: set[str] = set()
        """The libm functions called (to declare in the module)."""
        self.flag = "false"
        """i1: true once any operation left its domain (see the module docstring)."""

    def _new(self, text: str) -> str:
        name = f"%t{self._count}"
        self._count += 1
        self.lines.append(f"  {name} = {text}")
        return name

    # -- doubles -------------------------------------------------------------
    const = staticmethod(double)

    def fadd(self, a: str, b: str) -> str:
        return self._new(f"fadd double {a}, {b}")

    def fsub(self, a: str, b: str) -> str:
        return self._new(f"fsub double {a}, {b}")

    def fmul(self, a: str, b: str) -> str:
        return self._new(f"fmul double {a}, {b}")

    def fdiv(self, a: str, b: str) -> str:
        return self._new(f"fdiv double {a}, {b}")

    def fneg(self, a: str) -> str:
        return self._new(f"fneg double {a}")

    def select(self, condition: str, a: str, b: str) -> str:
        """``a`` where the i1 ``condition`` holds, else ``b``."""
        return self._new(f"select i1 {condition}, double {a}, double {b}")

    def call(self, name: str, *args: str) -> str:
        """A libm function (``exp``, ``atan2``...) under its private name."""
        self.libm.add(name)
        return self._new(f"call double @{PREFIX}{name}({', '.join(f'double {a}' for a in args)})")

    def sqrt(self, a: str) -> str:
        return self._new(f"call double @llvm.sqrt.f64(double {a})")

    def fabs(self, a: str) -> str:
        """|a| as a bit mask (the same bits as libm's fabs, cheap for the fast instruction selector)."""
        bits = self._new(f"bitcast double {a} to i64")
        return self._new(f"bitcast i64 {self._new(f'and i64 {bits}, {_MAGNITUDE}')} to double")

    # -- conditions (i1) ------------------------------------------------------
    def fcmp(self, predicate: str, a: str, b: str) -> str:
        """An LLVM fcmp: ``olt``, ``ole``, ``ogt``, ``oge``, ``oeq`` (false on nan), ``une`` (true on nan)."""
        return self._new(f"fcmp {predicate} double {a}, {b}")

    def both(self, a: str, b: str) -> str:
        return self._new(f"and i1 {a}, {b}")

    def nonfinite(self, a: str) -> str:
        """i1: ``a`` is inf or nan (exponent bits all ones; integer ops only)."""
        bits = self._new(f"bitcast double {a} to i64")
        return self._new(f"icmp eq i64 {self._new(f'and i64 {bits}, {_EXPONENT}')}, {_EXPONENT}")

    def mark(self, condition: str) -> None:
        """Raise the domain flag where ``condition`` holds."""
        self.flag = condition if self.flag == "false" else self._new(f"or i1 {self.flag}, {condition}")

    def checked(self, name: str, *args: str) -> str:
        """A libm call whose non-finite result raises the flag."""
        result = self.call(name, *args)
        self.mark(self.nonfinite(result))
        return result


Emitter = Callable[[Emit, Sequence[str]], str]
PREFIX = "symgrad_"
"""libm functions are called as ``symgrad_<name>`` (see :mod:`symgrad.native.libm`)."""
LIBM: dict[str, int] = {
    **dict.fromkeys(("exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh"), 1),
    "pow": 2,
    "atan2": 2,
}
"""The libm functions generated code may call, with their arity."""


ZERO = double(0.0)
ONE = double(1.0)


def _libm(name: str) -> Emitter:
    return lambda e, args: e.checked(name, *args)


def _arith(instruction: str) -> Emitter:
    """``+ - * /``: the flag is raised by a non-finite result (overflow, x / 0, inf - inf...)."""

    def emit(e: Emit, args: Sequence[str]) -> str:
        result = e._new(f"{instruction} double {args[0]}, {args[1]}")
        e.mark(e.nonfinite(result))
        return result

    return emit


def _sqrt(e: Emit, args: Sequence[str]) -> str:
    # llvm.sqrt is IEEE sqrt, correctly rounded like libm's; it lowers to one instruction.
    result = e.sqrt(args[0])
    e.mark(e.nonfinite(result))
    return result


def _sigmoid(e: Emit, args: Sequence[str]) -> str:
    # Both branches of ops._sigmoid, computed and selected: 1/(1+exp(-x)) for x >= 0, else e/(1+e) with e = exp(x).
    x = args[0]
    positive = e.fcmp("oge", x, ZERO)
    ex = e.call("exp", e.select(positive, e.fneg(x), x))
    return e.fdiv(e.select(positive, ONE, ex), e.fadd(ONE, ex))


def _relu(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 0.0 if x <= 0.0 else x: nan stays nan, -0.0 becomes 0.0
    return e.select(e.fcmp("ole", x, ZERO), ZERO, x)


def _min(e: Emit, args: Sequence[str]) -> str:
    a, b = args  # Python's min(a, b): b if b < a else a
    return e.select(e.fcmp("olt", b, a), b, a)


def _max(e: Emit, args: Sequence[str]) -> str:
    a, b = args  # Python's max(a, b): b if b > a else a
    return e.select(e.fcmp("olt", a, b), b, a)


def _heaviside(e: Emit, args: Sequence[str]) -> str:
    x, at_zero = args  # 1 for x > 0, 0 for x < 0, at_zero at ±0, nan stays nan
    inner = e.select(e.fcmp("oeq", x, ZERO), at_zero, x)
    inner = e.select(e.fcmp("olt", x, ZERO), ZERO, inner)
    return e.select(e.fcmp("ogt", x, ZERO), ONE, inner)


def _sign(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 1, -1, or x itself (±0, nan)
    inner = e.select(e.fcmp("olt", x, ZERO), double(-1.0), x)
    return e.select(e.fcmp("ogt", x, ZERO), ONE, inner)


def _xlogy(e: Emit, args: Sequence[str]) -> str:
    x, y = args  # 0.0 if x == 0.0 else x * log(y); log raises (flag) only where it is used
    log_y = e.call("log", y)
    used = e.fcmp("une", x, ZERO)
    e.mark(e.both(used, e.nonfinite(log_y)))
    return e.select(used, e.fmul(x, log_y), ZERO)


EMITTERS: Mapping[str, Emitter] = {
    "add": _arith("fadd"),
    "sub": _arith("fsub"),
    "mul": _arith("fmul"),
    "div": _arith("fdiv"),
    "neg": lambda e, a: e.fneg(a[0]),
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
    "abs": lambda e, a: e.fabs(a[0]),
    "atan2": _libm("atan2"),
    "min": _min,
    "max": _max,
    "heaviside": _heaviside,
    "sign": _sign,
    "xlogy": _xlogy,
}
"""Per op name: how to emit it.  Every op of :data:`symgrad.OPS` has a row (tested)."""
