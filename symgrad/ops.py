"""The op table: every fact about every primitive, stated exactly once.

Each :class:`Op` row holds the primitive's name, arity, display symbol, its
scalar forward (``math``) and array forward (``numpy``) side by side, how
Python spells the forward (``code``), the local partial derivatives, the exact
rewrites that hold for it, the sympy counterpart used only by the oracle, and
how machine code computes it (``native``: plain data, an LLVM instruction or a
C library function and the facts the backend relies on; the emitting code
stays in :mod:`symgrad.backends.native`, and this module never imports llvmlite).

Partial derivatives and rewrites are written in symgrad's own language over
the argument names ``a``, ``b`` and the op's result ``out`` (so ``exp``,
``tanh``, ``sqrt`` and ``sigmoid`` reuse the forward value).  They are parsed
once, by symgrad's grammar, in :mod:`symgrad.rules`; the derivative transforms
instantiate them as tape records, and the reference interpreter compiles them
into small functions.  Nothing else in symgrad states a derivative.

Rewrites (``"a * 1 -> a"``) are identities that hold for *every* float,
signed zeros, inf and nan included, so applying them never changes a result.
A pattern ``-b`` also matches a negative constant.  Rewrites marked ``~`` are
the algebra used only on derivative records: they regroup constants
(``2 * (3 * x) -> 6 * x``), which can move the last bit.

Conventions at non-differentiable points follow PyTorch: ``relu'(0) = 0``,
``abs'(0) = 0``, and ``min``/``max`` split the gradient evenly on a tie: among
k tied arguments each gets 1/k, in any order.  Those two are *variadic*
(``max(a, b, c)`` is one record with three arguments) and state their partial as
one *tie weight* ``w`` over ``a`` (any one argument) and ``out``:
∂out/∂arg_i = w(arg_i) / Σ_j w(arg_j).
``min``/``max`` are not marked commutative: Python's ``min(nan, 1)`` is nan but
``min(1, nan)`` is 1 (and likewise for ±0), so CSE must not merge the two orders.
``heaviside``, ``sign`` and ``xlogy`` are the helpers that derivative rules
use; they are ops like any other (their own derivatives are 0 almost
everywhere: the steps' jumps are not differentiated).
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FUNCTIONS",
    "OPS",
    "NativeRule",
    "Op",
    "domain_message",
    "lookup_function",
    "register",
    "unregister",
]

Scalar = Callable[..., float]


# ---------------------------------------------------------------- helpers ---
# Scalar and array forwards that math/numpy do not provide as they are.
# Nothing here states a derivative.


def _relu(x: float) -> float:
    return 0.0 if x <= 0.0 else x  # nan stays nan, as in PyTorch


def _sigmoid(x: float) -> float:
    # Two branches so that exp never overflows: exp(-x) for x >= 0, exp(x) below.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _heaviside(x: float, at_zero: float) -> float:
    """Step function with an explicit value at 0 (numpy's ``heaviside``)."""
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return 0.0
    return at_zero if x == 0.0 else x  # x is nan: propagate it


def _sign(x: float) -> float:
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return x  # 0.0, -0.0 or nan


def _pow(x: float, y: float) -> float:
    """``math.pow``, but ``0 ** -1`` is a division by zero (math says only "domain error")."""
    try:
        return math.pow(x, y)
    except ValueError:
        if x == 0.0 and y < 0.0:
            raise ZeroDivisionError("0 to a negative power") from None
        raise


def _xlogy(x: float, y: float) -> float:
    """``x * log(y)``, taken as 0 when ``x == 0`` (so d/db 0**b = 0 for b > 0)."""
    return 0.0 if x == 0.0 else x * math.log(y)


def _np_sigmoid(x: Any) -> Any:
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(np.asarray(x) >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def _np_maximum(*xs: Any) -> Any:
    return functools.reduce(np.maximum, xs)


def _np_minimum(*xs: Any) -> Any:
    return functools.reduce(np.minimum, xs)


def _np_relu(x: Any) -> Any:
    return np.maximum(x, 0.0)


def _np_xlogy(x: Any, y: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(x) == 0.0, 0.0, x * np.log(y))


def _sympy_heaviside(a: Any, b: Any) -> Any:
    """Heaviside with the value at 0 as a differentiable argument (sympy's own cannot be differentiated by it)."""
    sp = _sp()
    return sp.Piecewise((0, a < 0), (1, a > 0), (b, True))


def _sp() -> Any:
    """sympy, imported on first use: it is the oracle, never the engine."""
    import sympy

    return sympy


# ------------------------------------------------------------------ table ---


@dataclass(frozen=True)
class NativeRule:
    """How the LLVM backend computes an op: plain data, read by :mod:`symgrad.backends.native.emit`.

    Exactly one of ``instruction``, ``libm`` and ``recipe`` says what is
    emitted; the rest are facts the backend's optimisations rely on (with the
    op's own ``propagates``).  Every choice keeps the interpreter's bits: the
    same IEEE operation or the same C library function (see the module
    docstring of :mod:`symgrad.backends.native.emit`).
    """

    instruction: str = ""
    """One exact operation on doubles: ``fadd``, ``fsub``, ``fmul``, ``fdiv``, ``fneg``, ``sqrt`` (IEEE,
    correctly rounded like libm's) or ``fabs`` (the sign bit cleared)."""
    libm: str = ""
    """The C library function computing the op (``exp``, ``atan2``), called with the op's arguments."""
    recipe: str = ""
    """A few compares and selects (maybe a libm call), by the name of the native package's recipe."""
    checked: bool = False
    """A non-finite result raises the domain flag: the op can leave the finite numbers (``exp(1000)``,
    ``1 / 0``), where the interpreter may raise."""
    pair: tuple[str, str] | None = None
    """(other op, C function): on one argument, the function computes this op's value and the other's
    in one call, through two pointers in that order (``sin``: ``("cos", "sincos")``; stated on one of
    the two rows only)."""
    by_reciprocal: str = ""
    """``op(a, b) == other(a, 1 / b)`` up to one rounding: the other op, for a ``b`` fixed per call
    (``div``: ``mul``; a vector division costs about ten multiplications)."""

    def __post_init__(self) -> None:
        kinds = [kind for kind in (self.instruction, self.libm, self.recipe) if kind]
        if len(kinds) != 1:
            raise ValueError(f"a native rule names one instruction, libm function or recipe, got {kinds}")


def _ieee(instruction: str, checked: bool = True, **kw: Any) -> NativeRule:
    return NativeRule(instruction=instruction, checked=checked, **kw)


def _libm(symbol: str, **kw: Any) -> NativeRule:
    return NativeRule(libm=symbol, checked=True, **kw)


def _recipe(name: str, checked: bool = False) -> NativeRule:
    return NativeRule(recipe=name, checked=checked)


@dataclass(frozen=True, eq=False)
class Op:
    """One primitive.  Everything else in symgrad looks facts up here."""

    name: str
    """Opcode in tapes and listings, e.g. ``"mul"``."""
    arity: int
    symbol: str
    """How the op is drawn: ``"*"``, ``"tanh"``."""
    scalar: Scalar
    """Forward on Python floats (``math``); raises on a domain error."""
    array: Callable[..., Any]
    """Forward on numpy arrays; follows numpy on a domain error (nan/inf)."""
    code: str
    """How Python spells the forward, over ``{0}``, ``{1}`` (a variadic op: ``{0}`` is all arguments)."""
    partials: tuple[str, ...]
    """∂out/∂arg_i in symgrad's language over ``a``, ``b`` and ``out``; a variadic op has one tie weight."""
    sympy: Callable[..., Any]
    """The sympy counterpart, for the oracle only."""
    doc: str
    call_names: tuple[str, ...] = ()
    """Names under which the op may be called in source text (``abs``, ``Abs``)."""
    domain: tuple[tuple[float, float], ...] = ()
    """A safe sampling box per argument for tests, inside the op's domain."""
    commutative: bool = False
    variadic: bool = False
    """A selection among ``arity`` or more arguments (``max(a, b, c)``, as sympy prints ``Max``); its
    ``partials`` is one tie weight ``w(a, out)``, and ∂out/∂arg_i = w(arg_i) / Σ_j w(arg_j)."""
    infix: bool = False
    rewrites: tuple[str, ...] = ()
    """Identities ``"lhs -> rhs"`` with this op at the root of ``lhs`` (``~`` marks derivative-only algebra)."""
    additive: bool = False
    """``op(sum x, sum y) == sum op(x, y)``: a sum over points may be taken before the op (add, sub, neg)."""
    linear_in: tuple[int, ...] = ()
    """Arguments the op is linear in when the others are fixed (``mul``: both; ``div``: the dividend)."""
    propagates: tuple[bool, ...] = ()
    """Per argument: an inf or nan there always makes the result inf or nan (IEEE arithmetic; libm's
    ``sin(inf)`` is nan, ``log(inf)`` inf).  Executors that check values for inf and nan skip a record
    whose inf or nan reaches a checked reader this way.  Ops without it (``exp(-inf)`` is 0) propagate nothing."""
    native: NativeRule | None = None
    """How machine code computes it (None: a tape with this op runs on the Python backend)."""
    c: str = ""
    """How C99 spells the forward with ``<math.h>`` (for :mod:`symgrad.export_c`), over ``{0}``, ``{1}``:
    the same IEEE operations or C library function as ``scalar``, so exported C gives the interpreter's
    bits.  Arguments are plain names and may be spelled more than once; a variadic op spells two arguments
    and is folded from the left (``min(a, b, c)`` is ``min(min(a, b), c)``, as Python's ``min`` keeps the
    first of equal arguments).  Empty: the op cannot be exported to C."""

    def __post_init__(self) -> None:
        wanted = 1 if self.variadic else self.arity
        if len(self.partials) != wanted:
            raise ValueError(f"op {self.name!r}: {wanted} partials expected, got {len(self.partials)}")
        if not self.domain:
            object.__setattr__(self, "domain", ((-3.0, 3.0),) * self.arity)

    def spell(self, args: Sequence[str]) -> str:
        """The forward as Python source over the argument texts (``code`` filled in)."""
        return self.code.format(", ".join(args)) if self.variadic else self.code.format(*args)

    def takes(self, n_args: int) -> bool:
        """Whether a record of this op may have ``n_args`` arguments."""
        return n_args >= self.arity if self.variadic else n_args == self.arity

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickle a row by its name: the functions in it are found again in the table."""
        return (_row, (self.name,))

    def __repr__(self) -> str:
        return f"<op {self.name}/{self.arity}>"


def _op(
    name: str,
    arity: int,
    symbol: str,
    scalar: Scalar,
    array: Callable[..., Any],
    code: str,
    partials: tuple[str, ...],
    sympy: Callable[..., Any],
    doc: str,
    **kw: Any,
) -> Op:
    return Op(name, arity, symbol, scalar, array, code, partials, sympy, doc, **kw)


_M = "max(abs(a), abs(b))"
"""atan2's scale in its partials (the larger magnitude of its arguments)."""

# fmt: off
_TABLE: tuple[Op, ...] = (
    #    name     n  symbol   scalar           array          python code        partials ∂/∂a, ∂/∂b                 sympy
    _op("add",   2, "+",     operator.add,    np.add,        "{0} + {1}",       ("1", "1"),                         lambda a, b: a + b,
        "a + b", infix=True, commutative=True, additive=True,
        rewrites=("a + -0.0 -> a", "a + -b -> a - b", "~ a + a -> 2 * a"), propagates=(True, True),
        c="{0} + {1}",
        native=_ieee("fadd")),
    _op("sub",   2, "-",     operator.sub,    np.subtract,   "{0} - {1}",       ("1", "-1"),                        lambda a, b: a - b,
        "a - b", infix=True, additive=True,
        rewrites=("a - 0.0 -> a", "a - -b -> a + b"), propagates=(True, True),
        c="{0} - {1}",
        native=_ieee("fsub")),
    _op("mul",   2, "*",     operator.mul,    np.multiply,   "{0} * {1}",       ("b", "a"),                         lambda a, b: a * b,
        "a * b", infix=True, commutative=True, linear_in=(0, 1),
        rewrites=("a * 1 -> a", "a * -1 -> -a", "a * -b -> -(a * b)", "~ k1 * (k2 * a) -> (k1 * k2) * a",
                  "~ k1 * (a * (k2 * b)) -> (k1 * k2) * (a * b)"), propagates=(True, True),
        c="{0} * {1}",
        native=_ieee("fmul")),
    _op("div",   2, "/",     operator.truediv, np.true_divide, "{0} / {1}",     ("1 / b", "-out / b"),              lambda a, b: a / b,
        "a / b", infix=True, domain=((-3.0, 3.0), (0.2, 3.0)), linear_in=(0,),
        rewrites=("a / 1 -> a", "a / -1 -> -a", "-a / b -> -(a / b)", "a / -b -> -(a / b)"),
        propagates=(True, False),  # inf / y is inf or nan for every y; x / inf is 0
        c="{0} / {1}",
        native=_ieee("fdiv", by_reciprocal="mul")),
    _op("neg",   1, "-",     operator.neg,    np.negative,   "-{0}",            ("-1",),                            lambda a: -a,
        "-a", infix=True, additive=True,
        rewrites=("--a -> a",), propagates=(True,),
        c="-{0}",
        native=_ieee("fneg", checked=False)),
    _op("pow",   2, "**",    _pow,            np.power,      "pow({0}, {1})",   ("b * a ** (b - 1)", "xlogy(out, a)"), lambda a, b: a ** b,
        "a ** b (also a ^ b); real-valued, so a negative base needs an integer exponent",
        call_names=("pow",), domain=((0.2, 3.0), (-2.5, 2.5)),
        rewrites=("a ** 1 -> a", "a ** 0 -> 1", "a ** 2 -> a * a"),
        c="pow({0}, {1})",
        native=_libm("pow")),
    _op("exp",   1, "exp",   math.exp,        np.exp,        "exp({0})",        ("out",),                           lambda a: _sp().exp(a),
        "e ** a", call_names=("exp",),
        c="exp({0})",
        native=_libm("exp")),
    _op("log",   1, "log",   math.log,        np.log,        "log({0})",        ("1 / a",),                         lambda a: _sp().log(a),
        "natural logarithm, a > 0", call_names=("log", "ln"), domain=((0.05, 5.0),),
        propagates=(True,),
        c="log({0})",
        native=_libm("log")),
    _op("sqrt",  1, "sqrt",  math.sqrt,       np.sqrt,       "sqrt({0})",       ("0.5 / out",),                     lambda a: _sp().sqrt(a),
        "square root, a >= 0 (derivative infinite at 0)", call_names=("sqrt",), domain=((0.05, 5.0),),
        propagates=(True,),
        c="sqrt({0})",
        native=_ieee("sqrt")),
    _op("sin",   1, "sin",   math.sin,        np.sin,        "sin({0})",        ("cos(a)",),                        lambda a: _sp().sin(a),
        "sine (radians)", call_names=("sin",), propagates=(True,),
        c="sin({0})",
        native=_libm("sin", pair=("cos", "sincos"))),
    _op("cos",   1, "cos",   math.cos,        np.cos,        "cos({0})",        ("-sin(a)",),                       lambda a: _sp().cos(a),
        "cosine (radians)", call_names=("cos",), propagates=(True,),
        c="cos({0})",
        native=_libm("cos")),
    _op("tan",   1, "tan",   math.tan,        np.tan,        "tan({0})",        ("1 + out * out",),                 lambda a: _sp().tan(a),
        "tangent (radians)", call_names=("tan",), domain=((-1.4, 1.4),), propagates=(True,),
        c="tan({0})",
        native=_libm("tan")),
    _op("asin",  1, "asin",  math.asin,       np.arcsin,     "asin({0})",       ("1 / sqrt(1 - a * a)",),           lambda a: _sp().asin(a),
        "inverse sine, -1 <= a <= 1", call_names=("asin",), domain=((-0.95, 0.95),),
        c="asin({0})",
        native=_libm("asin")),
    _op("acos",  1, "acos",  math.acos,       np.arccos,     "acos({0})",       ("-1 / sqrt(1 - a * a)",),          lambda a: _sp().acos(a),
        "inverse cosine, -1 <= a <= 1", call_names=("acos",), domain=((-0.95, 0.95),),
        c="acos({0})",
        native=_libm("acos")),
    _op("atan",  1, "atan",  math.atan,       np.arctan,     "atan({0})",       ("1 / (1 + a * a)",),               lambda a: _sp().atan(a),
        "inverse tangent", call_names=("atan",),
        c="atan({0})",
        native=_libm("atan")),
    _op("sinh",  1, "sinh",  math.sinh,       np.sinh,       "sinh({0})",       ("cosh(a)",),                       lambda a: _sp().sinh(a),
        "hyperbolic sine", call_names=("sinh",),
        c="sinh({0})",
        native=_libm("sinh")),
    _op("cosh",  1, "cosh",  math.cosh,       np.cosh,       "cosh({0})",       ("sinh(a)",),                       lambda a: _sp().cosh(a),
        "hyperbolic cosine", call_names=("cosh",),
        c="cosh({0})",
        native=_libm("cosh")),
    _op("tanh",  1, "tanh",  math.tanh,       np.tanh,       "tanh({0})",       ("1 - out * out",),                 lambda a: _sp().tanh(a),
        "hyperbolic tangent", call_names=("tanh",),
        c="tanh({0})",
        native=_libm("tanh")),
    _op("sigmoid", 1, "σ",   _sigmoid,        _np_sigmoid,   "sigmoid({0})",    ("out * (1 - out)",),               lambda a: 1 / (1 + _sp().exp(-a)),
        "logistic function 1 / (1 + e ** -a)", call_names=("sigmoid",),
        c="({0} >= 0.0 ? 1.0 / (1.0 + exp(-{0})) : exp({0}) / (1.0 + exp({0})))",
        native=_recipe("sigmoid")),
    # relu's sympy form is a*Heaviside(a, 0) (derivative 0 at 0, like ours), not a Piecewise: sympy
    # folds Piecewise conditions and fails to compare them, e.g. in relu(log(relu(x))).
    _op("relu",  1, "relu",  _relu,           _np_relu,      "relu({0})",       ("heaviside(a, 0)",),               lambda a: a * _sp().Heaviside(a, 0),
        "max(a, 0); relu'(0) = 0", call_names=("relu",),
        c="({0} <= 0.0 ? 0.0 : {0})",
        native=_recipe("relu")),
    _op("abs",   1, "abs",   math.fabs,       np.abs,        "abs({0})",        ("sign(a)",),                       lambda a: _sp().Abs(a),
        "absolute value; abs'(0) = 0", call_names=("abs", "Abs"), propagates=(True,),
        c="fabs({0})",
        native=_ieee("fabs", checked=False)),
    _op("atan2", 2, "atan2", math.atan2,      np.arctan2,    "atan2({0}, {1})",
        # Scaled by m = max(|a|, |b|): (a*a + b*b) overflows (or underflows) near |a|, |b| = 1e±154, where
        # the partial is finite; a/m, b/m lie in [-1, 1] and (a/m)*a + (b/m)*b = (a*a + b*b)/m in [m, 2m].
        (f"(b / {_M}) / ((a / {_M}) * a + (b / {_M}) * b)", f"-(a / {_M}) / ((a / {_M}) * a + (b / {_M}) * b)"),
                                                                                                                   lambda a, b: _sp().atan2(a, b),
        "angle of the point (x=b, y=a), as atan2(y, x)", call_names=("atan2",), domain=((-3.0, 3.0), (0.2, 3.0)),
        c="atan2({0}, {1})",
        native=_libm("atan2")),
    # Variadic: the one partial is a tie weight, 1 for an argument equal to out (see the docstring).
    _op("min",   2, "min",   min,             _np_minimum,   "min({0})",        ("heaviside(out - a, 1)",),         lambda *a: _sp().Min(*a),
        "smallest argument; a tie among k arguments gives each 1/k of the gradient", call_names=("min", "Min"),
        variadic=True,
        c="({1} < {0} ? {1} : {0})",
        native=_recipe("min")),
    _op("max",   2, "max",   max,             _np_maximum,   "max({0})",        ("heaviside(a - out, 1)",),         lambda *a: _sp().Max(*a),
        "largest argument; a tie among k arguments gives each 1/k of the gradient", call_names=("max", "Max"),
        variadic=True,
        c="({1} > {0} ? {1} : {0})",
        native=_recipe("max")),
    # Helpers of the derivative rules: steps and x*log(y), with derivative 0 where the step jumps.
    _op("heaviside", 2, "H", _heaviside,      np.heaviside,  "heaviside({0}, {1})", ("0", "0"),                    _sympy_heaviside,
        "step: 0 for a < 0, 1 for a > 0, b at a = 0", call_names=("heaviside",), domain=((-3.0, 3.0), (0.0, 1.0)),
        c="({0} > 0.0 ? 1.0 : {0} < 0.0 ? 0.0 : {0} == 0.0 ? {1} : {0})",
        native=_recipe("heaviside")),
    _op("sign",  1, "sign",  _sign,           np.sign,       "sign({0})",       ("0",),                             lambda a: _sp().sign(a),
        "-1, 0 or 1 by the sign of a", call_names=("sign",),
        c="({0} > 0.0 ? 1.0 : {0} < 0.0 ? -1.0 : {0})",
        native=_recipe("sign")),
    _op("xlogy", 2, "xlogy", _xlogy,          _np_xlogy,     "xlogy({0}, {1})", ("log(b)", "a / b"),               lambda a, b: a * _sp().log(b),
        "a * log(b), taken as 0 when a == 0", call_names=("xlogy",), domain=((-3.0, 3.0), (0.05, 5.0)),
        c="({0} == 0.0 ? 0.0 : {0} * log({1}))",
        native=_recipe("xlogy", checked=True)),
)
# fmt: on

_OPS: dict[str, Op] = {}
_FUNCTIONS: dict[str, Op] = {}

OPS: Mapping[str, Op] = _OPS
"""Every primitive by opcode."""

FUNCTIONS: Mapping[str, Op] = _FUNCTIONS
"""Every primitive that source text may call, by each of its spellings."""


ON_REGISTER: list[Callable[[Op], None]] = []
"""Called with each row :func:`register` adds, after it is in the table.  Modules that derive
something per row (``Value``'s methods) append here, so the table never imports them."""

ON_UNREGISTER: list[Callable[[Op], None]] = []
"""Called with each row :func:`unregister` removes, after it has left the table."""


def register(op: Op) -> None:
    """Add a row to the table (the rows below, and tests that prove a new op needs nothing else)."""
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} is already in the table")
    _OPS[op.name] = op
    for name in op.call_names:
        _FUNCTIONS[name] = op
    for hook in ON_REGISTER:
        hook(op)


def unregister(name: str) -> None:
    """Remove a row added by :func:`register`."""
    op = _OPS.pop(name)
    for call in op.call_names:
        _FUNCTIONS.pop(call, None)
    for hook in ON_UNREGISTER:
        hook(op)


for _row_op in _TABLE:
    register(_row_op)


def _row(name: str) -> Op:
    """The row called ``name`` (how a pickled :class:`Op` is found again)."""
    return _OPS[name]


def lookup_function(name: str) -> Op | None:
    """The op that source text means by ``name(...)``, or None."""
    return _FUNCTIONS.get(name)


def domain_message(op: Op, args: Sequence[Any], error: Exception | None, derivative_of: Op | None = None) -> str:
    """What went wrong when ``op`` was evaluated at ``args``.

    ``error`` is the exception the scalar forward raised, or None when it
    returned a non-finite value from finite arguments (an overflow).
    """
    call = f"{op.name}({', '.join(repr(float(a)) for a in args)})"
    if error is None or isinstance(error, OverflowError):
        problem = f"{call} overflows a 64-bit float"
    elif isinstance(error, ZeroDivisionError):
        problem = f"{call} divides by zero"
    else:
        problem = f"{call} is undefined ({op.doc})"
    if derivative_of is not None:
        return f"in the derivative of {derivative_of.name}: {problem}"
    return problem
