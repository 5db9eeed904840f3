"""How each op becomes LLVM IR: one emitter per op name, in one table.

An emitter receives the :class:`Emit` context (which writes IR text)
and the argument values, and returns the result value.  Emitters reproduce the
interpreter's arithmetic exactly: the same IEEE operations in the same order,
and the same libm functions (called under a private name, see
:mod:`symgrad.backends.native.libm`, so that LLVM cannot rewrite ``pow(x, 2.0)`` into
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
``heaviside``, ``sign``) emit no test at all.  The tests are cheap: checked
values are summed and only the sum is tested (:meth:`Emit.check`), and a
record whose inf or nan would reach a checked reader anyway (``x*y`` read by
``+``: see :data:`PROPAGATES`) is not checked itself.

Two libm calls on one argument can be one call (``sin``/``cos`` as
``sincos``: :data:`FUSED`) where the C library's combined function gives the
same bits (checked in :mod:`symgrad.backends.native.libm`).

This table is the ``native`` column of the op table, kept here while the table
itself is being rewritten; ``heaviside``, ``sign`` and ``xlogy`` are the
helpers that derivative rules use.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

from ...ops import OPS

__all__ = [
    "BY_RECIPROCAL",
    "EMITTERS",
    "FUSED",
    "LIBM",
    "LIBM_PAIRS",
    "PREFIX",
    "PROPAGATES",
    "Emit",
    "Emitter",
    "calls_libm",
    "checks_result",
    "double",
]

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

    ``width`` > 1 emits the same operations on vectors of that many points
    (``<4 x double>``): IEEE arithmetic, comparisons and selects act lane by
    lane, so every lane is bit-identical to the scalar code, and libm calls are
    made once per lane.  The flag is then one bit per lane.  ``vector`` (2, 4 or 8)
    instead calls libmvec on that many lanes at once (``symgrad_v4_exp``; see
    :mod:`symgrad.backends.native.libm`): a few ulp from libm, for the array loop only.
    """

    def __init__(self, lines: list[str], width: int = 1, vector: int = 0) -> None:
        self.lines = lines
        self.width = width
        self.vector = vector if width > 1 and vector and width % vector == 0 else 0
        self.d = "double" if width == 1 else f"<{width} x double>"
        self.i1 = "i1" if width == 1 else f"<{width} x i1>"
        self.i64 = "i64" if width == 1 else f"<{width} x i64>"
        self._count = 0
        self.libm: set[str] = set()
        """The libm functions called (to declare in the module)."""
        self.vector_libm: set[str] = set()
        """The libmvec functions called on ``vector`` doubles (to declare in the module)."""
        self.no = "false" if width == 1 else "zeroinitializer"
        self.flag = self.no
        """true (per lane) where a :meth:`mark` condition held (see :meth:`finish`)."""
        self._sums: list[tuple[int, str]] = []
        """Pairwise partial sums of the values :meth:`check` was given: (level, value), levels decreasing."""
        self.checking = True
        """False while emitting a record whose value need not be checked (see :data:`PROPAGATES`)."""
        self.checks = 0
        """How many times :meth:`check` was called (checking or not)."""
        self.batched: dict[tuple[str, tuple[str, ...]], str] = {}
        """Scalar code: results of libm calls already made for several records at once by
        :meth:`lanes_call`, by (function, arguments); :meth:`call` returns them."""
        self.batched_pairs: dict[tuple[str, str], tuple[str, str]] = {}
        """The same for :meth:`call_pair` (both results of ``sincos``, by (function, argument))."""

    def _new(self, text: str) -> str:
        name = f"%t{self._count}"
        self._count += 1
        self.lines.append(f"  {name} = {text}")
        return name

    def _splat(self, scalar_type: str, text: str) -> str:
        if self.width == 1:
            return text
        return "<" + ", ".join([f"{scalar_type} {text}"] * self.width) + ">"

    # -- doubles -------------------------------------------------------------
    def const(self, value: float) -> str:
        return self._splat("double", double(value))

    def binary(self, instruction: str, a: str, b: str) -> str:
        """``fadd``, ``fsub``, ``fmul`` or ``fdiv``."""
        return self._new(f"{instruction} {self.d} {a}, {b}")

    def fneg(self, a: str) -> str:
        return self._new(f"fneg {self.d} {a}")

    def select(self, condition: str, a: str, b: str) -> str:
        """``a`` where ``condition`` holds, else ``b``."""
        return self._new(f"select {self.i1} {condition}, {self.d} {a}, {self.d} {b}")

    def call(self, name: str, *args: str) -> str:
        """A libm function (``exp``, ``atan2``...) under its private name, once per lane."""
        if self.vector:
            return self._vector_call(name, args)
        if self.width == 1:
            done = self.batched.get((name, args))
            if done is not None:
                return done
            self.libm.add(name)
            return self._new(f"call double @{PREFIX}{name}({', '.join(f'double {a}' for a in args)})")
        self.libm.add(name)
        result = "poison"
        for lane in range(self.width):
            lanes = [self._new(f"extractelement {self.d} {a}, i32 {lane}") for a in args]
            one = self._new(f"call double @{PREFIX}{name}({', '.join(f'double {x}' for x in lanes)})")
            result = self._new(f"insertelement {self.d} {result}, double {one}, i32 {lane}")
        return result

    def _vector_call(self, name: str, args: tuple[str, ...]) -> str:
        """One libmvec call per ``vector`` lanes (two 2-wide calls for four lanes on SSE)."""
        self.vector_libm.add(name)
        v, n = self.vector, self.width // self.vector
        vd = f"<{v} x double>"
        symbol = f"@{PREFIX}v{v}_{name}"
        if n == 1:
            return self._new(f"call {vd} {symbol}({', '.join(f'{vd} {a}' for a in args)})")
        parts = []
        for k in range(n):
            mask = "<" + ", ".join(f"i32 {k * v + j}" for j in range(v)) + ">"
            lanes = [self._new(f"shufflevector {self.d} {a}, {self.d} poison, <{v} x i32> {mask}") for a in args]
            parts.append(self._new(f"call {vd} {symbol}({', '.join(f'{vd} {x}' for x in lanes)})"))
        m = v
        while len(parts) > 1:  # concatenate pairwise: 2+2 → 4, ...
            mask = "<" + ", ".join(f"i32 {j}" for j in range(2 * m)) + ">"
            parts = [
                self._new(f"shufflevector <{m} x double> {a}, <{m} x double> {b}, <{2 * m} x i32> {mask}")
                for a, b in zip(parts[::2], parts[1::2], strict=True)
            ]
            m *= 2
        return parts[0]

    def lanes_call(self, name: str, scalars: Sequence[str], width: int) -> list[str]:
        """libmvec's ``name`` (one argument) on up to ``width`` scalars in one call, one result per scalar.

        Idle lanes repeat the first scalar.  For scalar code whose independent
        libm calls are batched (``SYMGRAD_VECTOR_LIBM=all``, see
        :func:`symgrad.backends.native.build.batches`): a few ulp from libm.
        """
        self.vector_libm.add(name)
        vd = f"<{width} x double>"
        packed = "poison"
        for lane in range(width):
            x = scalars[lane] if lane < len(scalars) else scalars[0]
            packed = self._new(f"insertelement {vd} {packed}, double {x}, i32 {lane}")
        result = self._new(f"call {vd} @{PREFIX}v{width}_{name}({vd} {packed})")
        return [self._new(f"extractelement {vd} {result}, i32 {lane}") for lane in range(len(scalars))]

    def call_pair(self, name: str, a: str) -> tuple[str, str]:
        """A libm function of one argument with two results written through pointers (``sincos``), per lane
        (also in ``vector`` mode: libmvec's are not used for pairs)."""
        if self.width == 1:
            done = self.batched_pairs.get((name, a))
            if done is not None:
                return done
        self.libm.add(name)
        firsts, seconds = [], []
        for lane in range(self.width):
            x = a if self.width == 1 else self._new(f"extractelement {self.d} {a}, i32 {lane}")
            p, q = self._new("alloca double, align 8"), self._new("alloca double, align 8")
            self.lines.append(f"  call void @{PREFIX}{name}(double {x}, ptr {p}, ptr {q})")
            firsts.append(self._new(f"load double, ptr {p}, align 8"))
            seconds.append(self._new(f"load double, ptr {q}, align 8"))
        if self.width == 1:
            return firsts[0], seconds[0]
        results = []
        for lanes in (firsts, seconds):
            result = "poison"
            for lane, one in enumerate(lanes):
                result = self._new(f"insertelement {self.d} {result}, double {one}, i32 {lane}")
            results.append(result)
        return results[0], results[1]

    def sqrt(self, a: str) -> str:
        suffix = "f64" if self.width == 1 else f"v{self.width}f64"
        return self._new(f"call {self.d} @llvm.sqrt.{suffix}({self.d} {a})")

    def fabs(self, a: str) -> str:
        """|a| as a bit mask (the same bits as libm's fabs, cheap for the fast instruction selector)."""
        bits = self._new(f"bitcast {self.d} {a} to {self.i64}")
        masked = self._new(f"and {self.i64} {bits}, {self._splat('i64', str(_MAGNITUDE))}")
        return self._new(f"bitcast {self.i64} {masked} to {self.d}")

    # -- conditions (i1 per lane) ---------------------------------------------
    def fcmp(self, predicate: str, a: str, b: str) -> str:
        """An LLVM fcmp: ``olt``, ``ole``, ``ogt``, ``oge``, ``oeq`` (false on nan), ``une`` (true on nan)."""
        return self._new(f"fcmp {predicate} {self.d} {a}, {b}")

    def both(self, a: str, b: str) -> str:
        return self._new(f"and {self.i1} {a}, {b}")

    def nonfinite(self, a: str) -> str:
        """``a`` is inf or nan (exponent bits all ones; integer ops only)."""
        bits = self._new(f"bitcast {self.d} {a} to {self.i64}")
        exponent = self._splat("i64", str(_EXPONENT))
        return self._new(f"icmp eq {self.i64} {self._new(f'and {self.i64} {bits}, {exponent}')}, {exponent}")

    def mark(self, condition: str) -> None:
        """Raise the domain flag where ``condition`` holds."""
        self.flag = condition if self.flag == self.no else self._new(f"or {self.i1} {self.flag}, {condition}")

    def check(self, value: str) -> None:
        """Raise the domain flag where ``value`` is inf or nan.

        Cheaper than ``mark(nonfinite(value))`` for each value (measured: that
        was a quarter of a big kernel's time): the checked values are summed,
        one ``fadd`` each, and only the sum is tested, in :meth:`finish`.
        A non-finite value makes the sum non-finite (inf + -inf is nan, nan
        sticks); finite values can only make it non-finite by overflowing near
        1.8e308, a flag the interpreter then clears.  The sum is pairwise, so
        the additions do not form one long chain of dependent instructions.
        Does nothing while :attr:`checking` is off.
        """
        self.checks += 1
        if not self.checking:
            return
        level = 0
        while self._sums and self._sums[-1][0] == level:
            value = self.binary("fadd", self._sums.pop()[1], value)
            level += 1
        self._sums.append((level, value))

    def finish(self) -> str:
        """The function's flag (``i1`` per lane), once every record is emitted: any :meth:`mark` condition,
        or a non-finite checked value."""
        flag = self.flag
        if self._sums:
            total = self._sums[-1][1]
            for _, partial in reversed(self._sums[:-1]):
                total = self.binary("fadd", partial, total)
            self._sums = [(0, total)]
            nonfinite = self.nonfinite(total)
            flag = nonfinite if flag == self.no else self._new(f"or {self.i1} {flag}, {nonfinite}")
        return flag

    def checked(self, name: str, *args: str) -> str:
        """A libm call whose non-finite result raises the flag."""
        result = self.call(name, *args)
        self.check(result)
        return result


Emitter = Callable[[Emit, Sequence[str]], str]
PREFIX = "symgrad_"
"""libm functions are called as ``symgrad_<name>`` (see :mod:`symgrad.backends.native.libm`)."""
LIBM: dict[str, int] = {
    **dict.fromkeys(("exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh"), 1),
    "pow": 2,
    "atan2": 2,
}
"""The libm functions generated code may call, with their arity."""
LIBM_PAIRS: dict[str, tuple[str, str]] = {"sincos": ("sin", "cos")}
"""libm functions ``void f(double x, double *a, double *b)`` computing two of :data:`LIBM` at once.

Used only where the C library has them and they give the same bits as the
two calls (checked when registered, see :mod:`symgrad.backends.native.libm`): glibc's
``sincos`` is its ``sin`` and ``cos`` sharing the argument reduction, at about
60% of their cost.
"""


def _libm(name: str) -> Emitter:
    return lambda e, args: e.checked(name, *args)


def _arith(instruction: str) -> Emitter:
    """``+ - * /``: the flag is raised by a non-finite result (overflow, x / 0, inf - inf...)."""

    def emit(e: Emit, args: Sequence[str]) -> str:
        result = e.binary(instruction, args[0], args[1])
        e.check(result)
        return result

    return emit


def _sqrt(e: Emit, args: Sequence[str]) -> str:
    # llvm.sqrt is IEEE sqrt, correctly rounded like libm's; it lowers to one instruction.
    result = e.sqrt(args[0])
    e.check(result)
    return result


def _sigmoid(e: Emit, args: Sequence[str]) -> str:
    # Both branches of ops._sigmoid, computed and selected: 1/(1+exp(-x)) for x >= 0, else e/(1+e) with e = exp(x).
    x = args[0]
    positive = e.fcmp("oge", x, e.const(0.0))
    one = e.const(1.0)
    ex = e.call("exp", e.select(positive, e.fneg(x), x))
    return e.binary("fdiv", e.select(positive, one, ex), e.binary("fadd", one, ex))


def _relu(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 0.0 if x <= 0.0 else x: nan stays nan, -0.0 becomes 0.0
    zero = e.const(0.0)
    return e.select(e.fcmp("ole", x, zero), zero, x)


def _min(e: Emit, args: Sequence[str]) -> str:
    best = args[0]  # Python's min(*args): a later argument replaces the best only if smaller
    for x in args[1:]:
        best = e.select(e.fcmp("olt", x, best), x, best)
    return best


def _max(e: Emit, args: Sequence[str]) -> str:
    best = args[0]  # Python's max(*args): a later argument replaces the best only if larger
    for x in args[1:]:
        best = e.select(e.fcmp("olt", best, x), x, best)
    return best


def _heaviside(e: Emit, args: Sequence[str]) -> str:
    x, at_zero = args  # 1 for x > 0, 0 for x < 0, at_zero at ±0, nan stays nan
    zero = e.const(0.0)
    inner = e.select(e.fcmp("oeq", x, zero), at_zero, x)
    inner = e.select(e.fcmp("olt", x, zero), zero, inner)
    return e.select(e.fcmp("ogt", x, zero), e.const(1.0), inner)


def _sign(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 1, -1, or x itself (±0, nan)
    zero = e.const(0.0)
    inner = e.select(e.fcmp("olt", x, zero), e.const(-1.0), x)
    return e.select(e.fcmp("ogt", x, zero), e.const(1.0), inner)


def _xlogy(e: Emit, args: Sequence[str]) -> str:
    x, y = args  # 0.0 if x == 0.0 else x * log(y); log raises (flag) only where it is used
    log_y = e.call("log", y)
    zero = e.const(0.0)
    used = e.fcmp("une", x, zero)
    result = e.select(used, e.binary("fmul", x, log_y), zero)
    e.check(result)  # where used: log(y) undefined, or x*log(y) overflows
    return result


def _fused(name: str, swap: bool) -> Callable[[Emit, Sequence[str]], tuple[str, str]]:
    def emit(e: Emit, args: Sequence[str]) -> tuple[str, str]:
        if e.vector:  # the array loop with libmvec: two vector calls beat one scalar call per lane
            a, b = (e.checked(single, args[0]) for single in LIBM_PAIRS[name])
        else:
            a, b = e.call_pair(name, args[0])
            e.check(a)
            e.check(b)
        return (b, a) if swap else (a, b)

    return emit


FUSED: Mapping[tuple[str, str], tuple[str, Callable[[Emit, Sequence[str]], tuple[str, str]]]] = {
    ("sin", "cos"): ("sincos", _fused("sincos", False)),
    ("cos", "sin"): ("sincos", _fused("sincos", True)),
}
"""(op, op) on the same argument → the :data:`LIBM_PAIRS` function computing both, and its emitter,
which returns the two ops' values in that order."""

PROPAGATES: Mapping[str, tuple[bool, ...]] = {op.name: op.propagates for op in OPS.values() if op.propagates}
"""Per op, per argument: whether an inf or nan there always makes the result inf or nan (the op
table's ``propagates``: IEEE arithmetic; libm returns nan for sin(inf) and inf or nan for log(inf), log(-inf)).

A record whose value feeds such an argument of a record that is itself checked,
or feeds on in the same way to one, needs no check of its own: its inf or nan
reaches a checked value (see :func:`symgrad.backends.native.program.unchecked`).  Ops
missing here (``exp(-inf)`` is 0, ``tanh(inf)`` is 1...) propagate nothing.
"""

_PROBES: dict[tuple[str, int], Emit] = {}


def _probe(name: str, arity: int) -> Emit:
    """The emitter of ``name`` run once on placeholders, to see what it emits."""
    e = _PROBES.get((name, arity))
    if e is None:
        e = _PROBES[name, arity] = Emit([])
        EMITTERS[name](e, [f"%a{k}" for k in range(arity)])
    return e


def checks_result(name: str, arity: int) -> bool:
    """Whether the emitter of ``name`` checks its result."""
    return _probe(name, arity).checks > 0


def calls_libm(name: str, arity: int) -> bool:
    """Whether the emitter of ``name`` calls libm (a slow op, whose readers had better wait)."""
    return bool(_probe(name, arity).libm)


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

BY_RECIPROCAL: Mapping[str, str] = {"div": "mul"}
"""``op(a, b) == other(a, 1/b)`` up to one rounding: where ``b`` is the same at every point, the
array loop computes ``1/b`` once and runs ``other`` (a vector division costs about ten
multiplications; see :func:`symgrad.backends.native.arrays.reciprocals`)."""
