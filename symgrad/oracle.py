"""The oracle: sympy cross-checks and finite differences, for *checking* only.

symgrad computes values and gradients from the tape; this module computes
them two other, independent ways so anyone can check the tape's answer:

* **sympy**: the expression tree is rebuilt as a sympy expression using each
  op's ``sympy`` column of the op table (no ``sympify`` of user text), then
  differentiated symbolically and evaluated at the point in high precision;
* **central differences** of the tape's own forward sweep.

sympy is imported lazily inside the functions here: it is never on the
evaluation path, and ``import symgrad`` does not import it.

Numbers.  A ``Const`` node keeps its source text, so the oracle uses the
*exact* number the user wrote: ``0.1`` becomes ``Rational(1, 10)``, ``1e-3``
becomes ``1/1000``, ``pi`` and ``E`` stay symbolic.  (The tape uses the nearest
float, which differs by at most half an ulp; the tolerances absorb that.)
Points are substituted as the exact value of each float (a 50-digit sympy
``Float``), then the result is evaluated to :data:`DIGITS` significant digits.

Symbols.  Every variable becomes ``sympy.Symbol(name)``, a plain symbol even
for names sympy would otherwise read specially (``I``, ``E_n``, ``gamma``,
``S``, ``N``).  Derivatives are taken with *real* symbols (symgrad is
real-valued: d|x|/dx is ``sign(x)`` only for real x) and returned in terms of
the plain symbols again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import display
from .expr import Call, Const, Expr, Var, iter_postorder
from .tape import Tape

if TYPE_CHECKING:
    from .function import Function

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_FD_ATOL",
    "DEFAULT_FD_RTOL",
    "DEFAULT_RTOL",
    "DIGITS",
    "CheckReport",
    "CheckRow",
    "check",
    "fd_step",
    "finite_difference",
    "symbolic_grad",
    "sympy_value",
    "to_sympy",
    "tree_of",
]

DIGITS = 30
"""Significant digits of the sympy evaluation (far beyond float64's 16)."""
_POINT_DIGITS = 50
"""Digits of the substituted point: enough to hold any float64 exactly (it has <= 17 significant)."""

DEFAULT_RTOL = 1e-9
"""tape vs sympy: relative tolerance (float64 gives ~1e-16 per operation)."""
DEFAULT_ATOL = 1e-12
"""tape vs sympy: absolute tolerance, for results that are (nearly) 0."""
DEFAULT_FD_RTOL = 1e-6
"""tape vs central difference: relative tolerance (the difference itself is good to ~1e-10)."""
DEFAULT_FD_ATOL = 1e-9
"""tape vs central difference: absolute tolerance."""

_EPS = 2.0**-52
_CBRT_EPS = 6.055454452393343e-06
"""eps ** (1/3), the relative step of the central difference."""


def _sympy() -> Any:
    import sympy  # the oracle only: never imported on the evaluation path

    return sympy


# ----------------------------------------------------------- conversion ---


def _const(text: str, value: float) -> Any:
    sp = _sympy()
    if text == "pi":
        return sp.pi
    if text == "E":
        return sp.E
    try:
        return sp.Rational(text)  # the exact decimal the user wrote: "0.1" -> 1/10
    except (TypeError, ValueError):  # pragma: no cover - the grammar only makes decimal literals
        return sp.Rational(value)


def to_sympy(expr: Expr | Tape, *, real: bool = False) -> Any:
    """The sympy expression for ``expr``, built by the op table's ``sympy`` column.

    Iterative (a post-order walk), so it works on expressions of any depth.
    ``real=True`` makes the symbols real, which is what differentiation needs;
    the default is plain ``Symbol(name)``.  A :class:`Tape` (which has no
    source text) converts too, its constants as the exact values of their floats.
    """
    if isinstance(expr, Tape):
        return _tape_to_sympy(expr, real)
    sp = _sympy()
    symbols: dict[str, Any] = {}
    stack: list[Any] = []
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            if node.name not in symbols:
                symbols[node.name] = sp.Symbol(node.name, real=True) if real else sp.Symbol(node.name)
            stack.append(symbols[node.name])
        elif isinstance(node, Const):
            stack.append(_const(node.text, node.value))
        elif isinstance(node, Call):
            n = len(node.args)
            args = stack[len(stack) - n :]
            del stack[len(stack) - n :]
            stack.append(node.op.sympy(*args))
        else:  # pragma: no cover - the parser builds no other node type
            raise TypeError(f"cannot convert {type(node).__name__} to sympy")
    return stack[-1]


def _tape_to_sympy(tape: Tape, real: bool) -> Any:
    sp = _sympy()
    slots: list[Any] = [sp.Symbol(name, real=True) if real else sp.Symbol(name) for name in tape.inputs]
    slots += [sp.Rational(c) for c in tape.consts]
    for instr in tape.instrs:
        slots.append(instr.op.sympy(*(slots[a] for a in instr.args)))
    return slots[tape.output]


def _variables(expr: Expr) -> tuple[str, ...]:
    """Variables in order of first appearance (the order the tape uses)."""
    seen: dict[str, None] = {}
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            seen.setdefault(node.name, None)
    return tuple(seen)


def tree_of(f: Function) -> Expr | Tape:
    """What to convert for a compiled function: its source re-parsed by the grammar (not
    sympify), or its tape when it has no source text."""
    if f.source is None:
        return f.tape
    from .parser import parse

    return parse(f.source)


def symbolic_grad(expr: Expr | Tape, variables: Iterable[str] | None = None) -> dict[str, Any]:
    """``{name: sympy derivative}`` for each variable, in order of first appearance.

    Derivatives are taken with real symbols, then written back in plain
    ``Symbol(name)`` so they match :func:`to_sympy`'s output.
    """
    sp = _sympy()
    names = tuple(variables) if variables is not None else (
        expr.inputs if isinstance(expr, Tape) else _variables(expr)
    )
    real_expr = to_sympy(expr, real=True)
    back = {sp.Symbol(name, real=True): sp.Symbol(name) for name in names}
    return {name: sp.diff(real_expr, sp.Symbol(name, real=True)).xreplace(back) for name in names}


def _decide_steps(expr: Any) -> Any:
    """Evaluate the arguments of ``Heaviside``, ``DiracDelta`` and ``sign`` numerically.

    sympy leaves ``Heaviside(2 - 19*tanh(2)/20)`` unevaluated (it cannot prove
    the sign), and ``N`` then cannot give a number; at :data:`DIGITS` digits the
    sign is certain.  Exact arguments (``Heaviside(0)`` at a tie) are left alone.
    """
    sp = _sympy()
    if not hasattr(expr, "replace"):
        return expr
    steps = (sp.Heaviside, sp.DiracDelta, sp.sign)
    return expr.replace(
        lambda e: isinstance(e, steps) and e.args[0].is_number and not e.args[0].is_Number,
        lambda e: e.func(sp.N(e.args[0], DIGITS), *e.args[1:]),
    )


def sympy_value(expr: Any, point: Mapping[str, float]) -> float:
    """``expr`` at ``point``, evaluated to :data:`DIGITS` digits, as a float.

    Each coordinate is substituted as the exact value of its float, held as a
    50-digit sympy ``Float`` rather than a ``Rational``: exact rational powers such
    as ``(3152519739159347/4503599627370496)**(2499/1000)`` can take sympy minutes.
    Returns nan when sympy's answer is not a finite real number (a pole, a
    complex result, an unevaluable form).
    """
    sp = _sympy()
    subs: dict[Any, Any] = {}
    for name, value in point.items():
        exact = sp.Float(float(value), _POINT_DIGITS)  # the float's exact binary value, as a number
        subs[sp.Symbol(name)] = exact
        subs[sp.Symbol(name, real=True)] = exact
    try:
        result = sp.N(_decide_steps(expr.xreplace(subs) if hasattr(expr, "xreplace") else expr), DIGITS)
        number = complex(result)
    except (TypeError, ValueError, ArithmeticError, AttributeError):
        return math.nan
    scale = abs(number)
    if not math.isfinite(scale) or abs(number.imag) > 1e-25 * max(scale, 1.0):
        return math.nan
    return number.real


# ------------------------------------------------------ finite difference ---


def fd_step(x: float) -> float:
    """The central-difference step for a coordinate at ``x``: ``eps**(1/3) * max(1, |x|)``.

    eps**(1/3) (≈ 6.1e-6) balances the truncation error (∝ h²) against the
    rounding error (∝ eps/h), giving about 10 correct digits for smooth
    functions; scaling by |x| keeps the step meaningful for large coordinates.
    """
    return _CBRT_EPS * max(1.0, abs(x))


def finite_difference(f: Function | str, point: Mapping[str, Any] | None = None, /, **values: Any) -> dict[str, float]:
    """Central differences ``(f(x+h) - f(x-h)) / (x+h - (x-h))`` of the tape's forward sweep.

    The step per variable is :func:`fd_step`; dividing by the representable
    width ``(x+h) - (x-h)`` rather than ``2h`` removes the step's rounding.  A
    variable whose stencil leaves the function's domain gets nan.
    """
    from .api import compile
    from .errors import DomainError

    fn = compile(f)
    x = fn.bind(() if point is None else (point,), values)  # a name in both is an InputError
    out: dict[str, float] = {}
    for i, name in enumerate(fn.variables):
        h = fd_step(x[i])
        hi, lo = list(x), list(x)
        hi[i] += h
        lo[i] -= h
        try:
            out[name] = (fn(*hi) - fn(*lo)) / (hi[i] - lo[i])
        except DomainError:
            out[name] = math.nan
    return out


# ------------------------------------------------------------------ check ---


def _close(a: float, b: float, rtol: float, atol: float, scale: float = 0.0) -> bool:
    """``|a - b| <= atol + rtol * max(|a|, |b|, scale)``; nan never agrees."""
    if math.isnan(a) or math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b), scale)


def _rel(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    denom = max(abs(a), abs(b))
    return 0.0 if denom == 0.0 else abs(a - b) / denom


@dataclass(frozen=True)
class CheckRow:
    """One line of a :class:`CheckReport`: the value, or one partial derivative."""

    label: str
    """``"value"`` or ``"d/dx"``."""
    variable: str | None
    """None for the value row."""
    tape: float
    sympy: float
    """nan when sympy could not give a finite real number."""
    finite_difference: float | None
    """None for the value row; nan when the stencil left the domain."""
    abs_error: float
    """|tape - sympy|."""
    rel_error: float
    """|tape - sympy| / max(|tape|, |sympy|)."""
    fd_rel_error: float | None
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "tape": self.tape,
            "sympy": self.sympy,
            "finite_difference": self.finite_difference,
            "abs_error": self.abs_error,
            "rel_error": self.rel_error,
            "fd_rel_error": self.fd_rel_error,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class CheckReport:
    """The result of :func:`check`: ``.ok``, the value row and one row per variable."""

    expression: str
    point: dict[str, float]
    value: CheckRow
    rows: tuple[CheckRow, ...]
    rtol: float
    atol: float
    fd_rtol: float
    fd_atol: float
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the value and every partial agree with every available oracle."""
        return self.value.ok and all(row.ok for row in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "point": self.point,
            "ok": self.ok,
            "tolerances": {"rtol": self.rtol, "atol": self.atol, "fd_rtol": self.fd_rtol, "fd_atol": self.fd_atol},
            "value": self.value.to_dict(),
            "grad": {row.variable: row.to_dict() for row in self.rows},
        }

    def __str__(self) -> str:
        head = ["", "tape", "sympy", "finite difference", "abs error", "rel error", "fd rel error", ""]
        table = [head]
        for row in (self.value, *self.rows):
            fd = "" if row.finite_difference is None else _fmt(row.finite_difference)
            fd_err = "" if row.fd_rel_error is None else _fmt_err(row.fd_rel_error)
            table.append([row.label, _fmt(row.tape), _fmt(row.sympy), fd, _fmt_err(row.abs_error),
                          _fmt_err(row.rel_error), fd_err, _verdict(row)])
        widths = [max(len(line[i]) for line in table) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
        at = ", ".join(f"{k}={v!r}" for k, v in self.point.items()) or "(no variables)"
        verdicts = {_verdict(row) for row in (self.value, *self.rows)}
        verdict = "DISAGREES" if "DISAGREES" in verdicts else "UNCHECKED" if "NO ORACLE" in verdicts else "agrees"
        lines.insert(0, f"{self.expression}  at  {at}")
        lines.append(
            f"{verdict}: tape vs sympy within rtol={self.rtol:g}, atol={self.atol:g}; "
            f"vs central difference within rtol={self.fd_rtol:g}, atol={self.fd_atol:g}"
        )
        lines.extend(self.notes)
        return "\n".join(lines)


    def _repr_html_(self) -> str:
        """Jupyter: the three-way table; rows that disagree are highlighted."""
        head = ["", "tape", "sympy", "finite difference", "abs error", "rel error", "fd rel error", ""]
        rows, styles = [], []
        for row in (self.value, *self.rows):
            fd = "" if row.finite_difference is None else _fmt(row.finite_difference)
            fd_err = "" if row.fd_rel_error is None else _fmt_err(row.fd_rel_error)
            verdict = _verdict(row)
            rows.append([row.label, _fmt(row.tape), _fmt(row.sympy), fd, _fmt_err(row.abs_error),
                         _fmt_err(row.rel_error), fd_err, verdict])
            styles.append(None if row.ok else _HIGHLIGHT[verdict])
        at = ", ".join(f"{k}={v!r}" for k, v in self.point.items()) or "(no variables)"
        lines = str(self).splitlines()
        return display.html_table(head, rows, caption=f"{self.expression}  at  {at}", row_styles=styles,
                                  footer=lines[len(rows) + 2 :], css_class="symgrad-check")


_HIGHLIGHT = {"DISAGREES": "background:#fee2e2;font-weight:bold", "NO ORACLE": "background:#fef3c7"}


def _verdict(row: CheckRow) -> str:
    if row.ok:
        return "ok"
    no_fd = row.finite_difference is None or math.isnan(row.finite_difference)
    return "NO ORACLE" if math.isnan(row.sympy) and no_fd else "DISAGREES"


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else repr(float(x))


def _fmt_err(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.1e}"


def check(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    fd_rtol: float = DEFAULT_FD_RTOL,
    fd_atol: float = DEFAULT_FD_ATOL,
    **values: Any,
) -> CheckReport:
    """Cross-check the tape's value and gradient at a point against sympy and central differences.

    *Agrees* means ``|tape - sympy| <= atol + rtol * max(|tape|, |sympy|)``
    for the value and each partial, and, for each partial,
    ``|tape - fd| <= fd_atol + fd_rtol * max(|tape|, |fd|, |f| / max(1, |x|))``
    (the last term is the scale the central difference's rounding error grows
    with).  A comparison whose oracle is unavailable (sympy gives nan, or the
    stencil leaves the domain) is skipped, but at least one must remain.  At a
    kink (``relu`` at 0) the central difference sees the mean of the one-sided
    slopes, so it disagrees with the tape's convention there: that is reported.

    A variable whose name clashes with a keyword here can be given in the
    ``point`` mapping: ``check("rtol*x", {"rtol": 1, "x": 2})``.
    """
    from .api import compile

    fn = compile(expr)
    x = fn.bind(() if point is None else (point,), values)  # a name in both is an InputError
    at = dict(zip(fn.variables, x, strict=True))
    value, grads = fn.value_and_grad(at)
    tape_grad = grads if isinstance(grads, dict) else {fn.variables[0]: grads}

    tree = tree_of(fn)
    sp_value = sympy_value(to_sympy(tree), at)
    sp_grad = {name: sympy_value(d, at) for name, d in symbolic_grad(tree, fn.variables).items()}
    fd = finite_difference(fn, at)

    notes: list[str] = []
    value_ok = _close(value, sp_value, rtol, atol)
    if math.isnan(sp_value):
        notes.append("note: sympy gives no finite real value here")
        value_ok = False
    value_row = CheckRow("value", None, value, sp_value, None, abs(value - sp_value), _rel(value, sp_value),
                         None, value_ok)
    rows = []
    for name in fn.variables:
        t, s, d = tape_grad[name], sp_grad[name], fd[name]
        scale = abs(value) / max(1.0, abs(at[name]))
        verdicts = []
        if not math.isnan(s):
            verdicts.append(_close(t, s, rtol, atol))
        if not math.isnan(d):
            verdicts.append(_close(t, d, fd_rtol, fd_atol, scale))
        if math.isnan(s) and math.isnan(d):
            notes.append(f"note: no oracle for d/d{name}: sympy gives nan and the stencil leaves the domain")
        ok = bool(verdicts) and all(verdicts)
        rows.append(CheckRow(f"d/d{name}", name, t, s, d, abs(t - s), _rel(t, s), _rel(t, d), ok))
    return CheckReport(_describe(expr, fn), at, value_row, tuple(rows), rtol, atol, fd_rtol, fd_atol, tuple(notes))


def _describe(expr: str | Function, fn: Function) -> str:
    if isinstance(expr, str):
        return expr
    return fn.source if fn.source is not None else repr(fn)

