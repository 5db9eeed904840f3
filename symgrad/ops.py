"""The op table: every fact about every primitive, stated exactly once.

Each :class:`Op` row holds the primitive's name, arity, display symbol, its
scalar forward (``math``) and array forward (``numpy``) side by side, a code
template for the forward, one code template per argument for the local partial
derivative, and the sympy counterpart used only by the oracle.

The partial-derivative templates are the single statement of each derivative.
The interpreter compiles them once into small functions (below), the code
generator pastes them into straight-line code, and the array evaluator
evaluates them with numpy.  Templates name the arguments ``{0}``, ``{1}`` and
the op's own result ``{out}`` (so ``exp``, ``tanh``, ``sqrt`` and ``sigmoid``
reuse the forward value), and may call any op of the table by name plus the
helpers in :data:`SCALAR_HELPERS` / :data:`ARRAY_HELPERS`.

Conventions at non-differentiable points follow PyTorch: ``relu'(0) = 0``,
``abs'(0) = 0``, and ``min``/``max`` split the gradient evenly on a tie.
``min``/``max`` are not marked commutative: Python's ``min(nan, 1)`` is nan but
``min(1, nan)`` is 1 (and likewise for ±0), so CSE must not merge the two orders.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ARRAY_HELPERS",
    "ARRAY_NAMESPACE",
    "FUNCTIONS",
    "OPS",
    "SCALAR_HELPERS",
    "SCALAR_NAMESPACE",
    "Op",
    "lookup_function",
]

Scalar = Callable[..., float]


# ---------------------------------------------------------------- helpers ---
# Small functions the templates may call.  Each has a scalar and an array
# version with the same meaning; nothing here states a derivative.


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


def _np_relu(x: Any) -> Any:
    return np.maximum(x, 0.0)


def _np_xlogy(x: Any, y: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(x) == 0.0, 0.0, x * np.log(y))


SCALAR_HELPERS: dict[str, Callable[..., float]] = {
    "heaviside": _heaviside,
    "sign": _sign,
    "xlogy": _xlogy,
}
ARRAY_HELPERS: dict[str, Callable[..., Any]] = {
    "heaviside": np.heaviside,
    "sign": np.sign,
    "xlogy": _np_xlogy,
}


def _sp() -> Any:
    """sympy, imported on first use: it is the oracle, never the engine."""
    import sympy

    return sympy


# ------------------------------------------------------------------ table ---


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
    """Forward as a code template over ``{0}``, ``{1}``."""
    partials: tuple[str, ...]
    """∂out/∂arg_i as code templates over ``{0}``, ``{1}``, ``{out}``."""
    sympy: Callable[..., Any]
    """The sympy counterpart, for the oracle only."""
    doc: str
    call_names: tuple[str, ...] = ()
    """Names under which the op may be called in source text (``abs``, ``Abs``)."""
    domain: tuple[tuple[float, float], ...] = ()
    """A safe sampling box per argument for tests, inside the op's domain."""
    commutative: bool = False
    variadic: bool = False
    """Associative: a call may pass more arguments, folded left (``max(a, b, c)``, as sympy prints ``Max``)."""
    infix: bool = False
    scalar_partials: tuple[Callable[..., float], ...] = field(init=False, repr=False)
    """The partial templates compiled once for the interpreter: ``(out, *args) -> float``."""

    def __post_init__(self) -> None:
        if len(self.partials) != self.arity:
            raise ValueError(f"op {self.name!r}: {self.arity} args but {len(self.partials)} partials")
        if not self.domain:
            object.__setattr__(self, "domain", ((-3.0, 3.0),) * self.arity)

    def format(self, template: str, out: str, args: tuple[str, ...]) -> str:
        """Fill a template with code for the output and argument values."""
        return template.format(*args, out=out)

    def __repr__(self) -> str:
        return f"<op {self.name}/{self.arity}>"

    def __reduce__(self) -> tuple[Callable[[str], Op], tuple[str]]:
        """Pickled by name (the row holds lambdas); unpickling looks the row up in :data:`OPS`."""
        return _op_named, (self.name,)


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


# fmt: off
_TABLE: tuple[Op, ...] = (
    #    name     n  symbol   scalar           array          forward code       partials ∂/∂{0}, ∂/∂{1}                           sympy
    _op("add",   2, "+",     operator.add,    np.add,        "{0} + {1}",       ("1.0", "1.0"),                                 lambda a, b: a + b,
        "a + b", infix=True, commutative=True),
    _op("sub",   2, "-",     operator.sub,    np.subtract,   "{0} - {1}",       ("1.0", "-1.0"),                                lambda a, b: a - b,
        "a - b", infix=True),
    _op("mul",   2, "*",     operator.mul,    np.multiply,   "{0} * {1}",       ("{1}", "{0}"),                                 lambda a, b: a * b,
        "a * b", infix=True, commutative=True),
    _op("div",   2, "/",     operator.truediv, np.true_divide, "{0} / {1}",     ("1.0 / {1}", "-{out} / {1}"),                  lambda a, b: a / b,
        "a / b", infix=True, domain=((-3.0, 3.0), (0.2, 3.0))),
    _op("neg",   1, "-",     operator.neg,    np.negative,   "-{0}",            ("-1.0",),                                      lambda a: -a,
        "-a", infix=True),
    _op("pow",   2, "**",    _pow,            np.power,      "pow({0}, {1})",   ("{1} * pow({0}, {1} - 1.0)", "xlogy({out}, {0})"), lambda a, b: a ** b,
        "a ** b (also a ^ b); real-valued, so a negative base needs an integer exponent",
        call_names=("pow",), domain=((0.2, 3.0), (-2.5, 2.5))),
    _op("exp",   1, "exp",   math.exp,        np.exp,        "exp({0})",        ("{out}",),                                     lambda a: _sp().exp(a),
        "e ** a", call_names=("exp",)),
    _op("log",   1, "log",   math.log,        np.log,        "log({0})",        ("1.0 / {0}",),                                 lambda a: _sp().log(a),
        "natural logarithm, a > 0", call_names=("log", "ln"), domain=((0.05, 5.0),)),
    _op("sqrt",  1, "sqrt",  math.sqrt,       np.sqrt,       "sqrt({0})",       ("0.5 / {out}",),                               lambda a: _sp().sqrt(a),
        "square root, a >= 0 (derivative infinite at 0)", call_names=("sqrt",), domain=((0.05, 5.0),)),
    _op("sin",   1, "sin",   math.sin,        np.sin,        "sin({0})",        ("cos({0})",),                                  lambda a: _sp().sin(a),
        "sine (radians)", call_names=("sin",)),
    _op("cos",   1, "cos",   math.cos,        np.cos,        "cos({0})",        ("-sin({0})",),                                 lambda a: _sp().cos(a),
        "cosine (radians)", call_names=("cos",)),
    _op("tan",   1, "tan",   math.tan,        np.tan,        "tan({0})",        ("1.0 + {out} * {out}",),                       lambda a: _sp().tan(a),
        "tangent (radians)", call_names=("tan",), domain=((-1.4, 1.4),)),
    _op("asin",  1, "asin",  math.asin,       np.arcsin,     "asin({0})",       ("1.0 / sqrt(1.0 - {0} * {0})",),               lambda a: _sp().asin(a),
        "inverse sine, -1 <= a <= 1", call_names=("asin",), domain=((-0.95, 0.95),)),
    _op("acos",  1, "acos",  math.acos,       np.arccos,     "acos({0})",       ("-1.0 / sqrt(1.0 - {0} * {0})",),              lambda a: _sp().acos(a),
        "inverse cosine, -1 <= a <= 1", call_names=("acos",), domain=((-0.95, 0.95),)),
    _op("atan",  1, "atan",  math.atan,       np.arctan,     "atan({0})",       ("1.0 / (1.0 + {0} * {0})",),                   lambda a: _sp().atan(a),
        "inverse tangent", call_names=("atan",)),
    _op("sinh",  1, "sinh",  math.sinh,       np.sinh,       "sinh({0})",       ("cosh({0})",),                                 lambda a: _sp().sinh(a),
        "hyperbolic sine", call_names=("sinh",)),
    _op("cosh",  1, "cosh",  math.cosh,       np.cosh,       "cosh({0})",       ("sinh({0})",),                                 lambda a: _sp().cosh(a),
        "hyperbolic cosine", call_names=("cosh",)),
    _op("tanh",  1, "tanh",  math.tanh,       np.tanh,       "tanh({0})",       ("1.0 - {out} * {out}",),                       lambda a: _sp().tanh(a),
        "hyperbolic tangent", call_names=("tanh",)),
    _op("sigmoid", 1, "σ",   _sigmoid,        _np_sigmoid,   "sigmoid({0})",    ("{out} * (1.0 - {out})",),                     lambda a: 1 / (1 + _sp().exp(-a)),
        "logistic function 1 / (1 + e ** -a)", call_names=("sigmoid",)),
    # relu's sympy form is a*Heaviside(a, 0) (derivative 0 at 0, like ours), not a Piecewise: sympy
    # folds Piecewise conditions and fails to compare them, e.g. in relu(log(relu(x))).
    _op("relu",  1, "relu",  _relu,           _np_relu,      "relu({0})",       ("heaviside({0}, 0.0)",),                       lambda a: a * _sp().Heaviside(a, 0),
        "max(a, 0); relu'(0) = 0", call_names=("relu",)),
    _op("abs",   1, "abs",   math.fabs,       np.abs,        "abs({0})",        ("sign({0})",),                                 lambda a: _sp().Abs(a),
        "absolute value; abs'(0) = 0", call_names=("abs", "Abs")),
    _op("atan2", 2, "atan2", math.atan2,      np.arctan2,    "atan2({0}, {1})",
        ("{1} / ({0} * {0} + {1} * {1})", "-{0} / ({0} * {0} + {1} * {1})"),                                                      lambda a, b: _sp().atan2(a, b),
        "angle of the point (x=b, y=a), as atan2(y, x)", call_names=("atan2",), domain=((-3.0, 3.0), (0.2, 3.0))),
    _op("min",   2, "min",   min,             np.minimum,    "min({0}, {1})",
        ("heaviside({1} - {0}, 0.5)", "heaviside({0} - {1}, 0.5)"),                                                                lambda a, b: _sp().Min(a, b),
        "smaller of a and b; a tie splits the gradient evenly", call_names=("min", "Min"),
        variadic=True),
    _op("max",   2, "max",   max,             np.maximum,    "max({0}, {1})",
        ("heaviside({0} - {1}, 0.5)", "heaviside({1} - {0}, 0.5)"),                                                                lambda a, b: _sp().Max(a, b),
        "larger of a and b; a tie splits the gradient evenly", call_names=("max", "Max"),
        variadic=True),
)
# fmt: on

OPS: Mapping[str, Op] = {op.name: op for op in _TABLE}
"""Every primitive by opcode."""

FUNCTIONS: Mapping[str, Op] = {name: op for op in _TABLE for name in op.call_names}
"""Every primitive that source text may call, by each of its spellings."""

SCALAR_NAMESPACE: dict[str, Any] = {op.name: op.scalar for op in _TABLE} | SCALAR_HELPERS
"""What template code can call when it runs on floats."""

ARRAY_NAMESPACE: dict[str, Any] = {op.name: op.array for op in _TABLE} | ARRAY_HELPERS
"""What template code can call when it runs on numpy arrays."""


def _compile_partials(op: Op) -> tuple[Callable[..., float], ...]:
    params = ", ".join(["out", *(f"a{i}" for i in range(op.arity))])
    args = tuple(f"a{i}" for i in range(op.arity))
    fns = []
    for template in op.partials:
        body = op.format(template, "out", args)
        code = compile(f"lambda {params}: {body}", f"<partial of {op.name}>", "eval")
        fns.append(eval(code, dict(SCALAR_NAMESPACE)))  # codegen: template from the op table
    return tuple(fns)


for _row in _TABLE:
    object.__setattr__(_row, "scalar_partials", _compile_partials(_row))


def _op_named(name: str) -> Op:
    return OPS[name]


def lookup_function(name: str) -> Op | None:
    """The op that source text means by ``name(...)``, or None."""
    return FUNCTIONS.get(name)
