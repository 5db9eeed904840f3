"""The oracle: sympy cross-checks and finite differences, for *checking* only.

symgrad computes values and gradients from the tape; this module computes
them two other, independent ways so anyone can check the tape's answer:

* **sympy**: the expression tree is rebuilt as a sympy expression using each
  op's ``sympy`` column of the op table (no ``sympify`` of user text), then
  differentiated symbolically and evaluated at the point in high precision;
* **central differences** of the tape's own forward sweep.

sympy is imported lazily inside the functions here: it is never on the
evaluation path, and ``import symgrad`` does not import it.

How formulas become sympy expressions (exact numbers as written, plain
symbols, real symbols for differentiation) is :mod:`symgrad.symbolic`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import display
from .api import compile
from .errors import DomainError, InputError, abbreviate
from .expr import Expr
from .function import Function, bind_scalars, merge_point
from .symbolic import (
    _CHAIN_DIGITS,
    DIGITS,
    SYMBOLIC_DEPTH,
    SYMPY_DEPTH_LIMIT,
    chained_value_and_grad,
    deep_stack,
    exact_grad,
    nesting_depth,
    symbolic_grad,
    sympy_value,
    to_sympy,
    to_sympy_at_depth,
    tree_of,
)
from .tape import Tape

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_FD_ATOL",
    "DEFAULT_FD_RTOL",
    "DEFAULT_RTOL",
    "DIGITS",
    "SYMBOLIC_DEPTH",
    "SYMPY_DEPTH_LIMIT",
    "CheckReport",
    "CheckRow",
    "check",
    "fd_error_estimate",
    "fd_step",
    "finite_difference",
    "nesting_depth",
    "symbolic_grad",
    "sympy_value",
    "to_sympy",
    "tree_of",
]

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


def fd_step(x: float) -> float:
    """The central-difference step for a coordinate at ``x``: ``eps**(1/3) * max(1, |x|)``.

    eps**(1/3) (≈ 6.1e-6) balances the truncation error (∝ h²) against the
    rounding error (∝ eps/h), giving about 10 correct digits for smooth
    functions; scaling by ``|x|`` keeps the step meaningful for large coordinates.
    """
    return _CBRT_EPS * max(1.0, abs(x))


def finite_difference(f: Function | str, point: Mapping[str, Any] | None = None, /, **values: Any) -> dict[str, float]:
    """Central differences ``(f(x+h) - f(x-h)) / (x+h - (x-h))`` of the tape's forward sweep.

    The step per variable is :func:`fd_step`; dividing by the representable
    width ``(x+h) - (x-h)`` rather than ``2h`` removes the step's rounding.  A
    variable whose stencil leaves the function's domain gets nan.
    """
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
    """``|tape - sympy|``."""
    rel_error: float
    """``|tape - sympy| / max(|tape|, |sympy|)``."""
    fd_rel_error: float | None
    ok: bool
    fd_error_estimate: float | None = None
    """None for the value row: an estimate of the central difference's own error (see :func:`check`)."""
    fd_unreliable: bool = False
    """The central difference missed, by no more than its error estimate allows, while tape and
    sympy agree: the miss is the difference's, and does not fail the check."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "tape": self.tape,
            "sympy": self.sympy,
            "finite_difference": self.finite_difference,
            "abs_error": self.abs_error,
            "rel_error": self.rel_error,
            "fd_rel_error": self.fd_rel_error,
            "fd_error_estimate": self.fd_error_estimate,
            "fd_unreliable": self.fd_unreliable,
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
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        head = ["", "tape", "sympy", "finite difference", "abs error", "rel error", "fd rel error", ""]
        table = [head, *(_cells(row) for row in (self.value, *self.rows))]
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
        rows = [_cells(row) for row in (self.value, *self.rows)]
        styles = [None if row.ok else _HIGHLIGHT[_verdict(row)] for row in (self.value, *self.rows)]
        at = ", ".join(f"{k}={v!r}" for k, v in self.point.items()) or "(no variables)"
        lines = str(self).splitlines()
        return display.html_table(
            head,
            rows,
            caption=f"{self.expression}  at  {at}",
            row_styles=styles,
            footer=lines[len(rows) + 2 :],
            css_class="symgrad-check",
        )


_HIGHLIGHT = {"DISAGREES": "background:#fee2e2;font-weight:bold", "NO ORACLE": "background:#fef3c7"}


def _cells(row: CheckRow) -> list[str]:
    """One row of the check table, as text: label, the three numbers, the errors, the verdict."""
    fd = "" if row.finite_difference is None else _fmt(row.finite_difference)
    fd_err = "" if row.fd_rel_error is None else _fmt_err(row.fd_rel_error)
    return [
        row.label,
        _fmt(row.tape),
        _fmt(row.sympy),
        fd,
        _fmt_err(row.abs_error),
        _fmt_err(row.rel_error),
        fd_err,
        _verdict(row),
    ]


def _verdict(row: CheckRow) -> str:
    if row.ok:
        return "ok (fd unreliable)" if row.fd_unreliable else "ok"
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
    fn = compile(expr)
    if fn.n_outputs != 1:
        raise InputError(
            f"check() compares one output's value and gradient; {_describe(expr, fn)} has {fn.n_outputs} "
            f"outputs ({', '.join(fn.output_names)}): check one formula, or one derivative (f.derivative(...))"
        )
    for name, tolerance in (("rtol", rtol), ("atol", atol), ("fd_rtol", fd_rtol), ("fd_atol", fd_atol)):
        _check_tolerance(name, tolerance)
    x = bind_scalars(fn, merge_point(point, values), "check()")  # a name in both is an InputError
    at = dict(zip(fn.variables, x, strict=True))
    value, grads = fn.value_and_grad(at)
    tape_grad = grads if isinstance(grads, dict) else {fn.variables[0]: grads}

    notes: list[str] = []
    tree = tree_of(fn.source, fn.tape)
    depth = nesting_depth(tree)
    if depth <= SYMBOLIC_DEPTH:
        sp_value, sp_grad = deep_stack(lambda: _symbolic_value_and_grad(tree, at, fn.variables))
    else:
        sp_value, sp_grad = chained_value_and_grad(tree, at)
        notes.append(
            f"note: the expression nests {depth} levels deep (more than {SYMBOLIC_DEPTH}), so sympy differentiated "
            f"each operation and the chain rule combined them at {_CHAIN_DIGITS} digits"
        )
    fd = finite_difference(fn, at)

    value_ok = _close(value, sp_value, rtol, atol)
    if math.isnan(sp_value):
        notes.append("note: sympy gives no finite real value here")
        value_ok = False
    value_row = CheckRow(
        "value", None, value, sp_value, None, abs(value - sp_value), _rel(value, sp_value), None, value_ok
    )
    rows = []
    for name in fn.variables:
        t, s, d = tape_grad[name], sp_grad[name], fd[name]
        scale = abs(value) / max(1.0, abs(at[name]))
        sympy_ok = None if math.isnan(s) else _close(t, s, rtol, atol)
        fd_ok = None if math.isnan(d) else _close(t, d, fd_rtol, fd_atol, scale)
        estimate = None if math.isnan(d) else fd_error_estimate(fn, at, name)
        unreliable = bool(sympy_ok and fd_ok is False and estimate is not None and abs(t - d) <= 2.0 * estimate)
        if unreliable:
            notes.append(
                f"note: d/d{name}: finite difference unreliable here: it misses by {abs(t - d):.1e} and its own "
                f"error estimate is {estimate:.1e}; tape and sympy agree"
            )
        elif sympy_ok and fd_ok is False:  # two exact methods agree: is the stencil straddling a kink?
            smaller = _smaller_step_agrees(fn, at, name, t, fd_rtol, fd_atol, scale)
            if smaller is not None:
                unreliable = True
                step, slope = smaller
                notes.append(
                    f"note: d/d{name}: the central difference with step {fd_step(at[name]):.1e} disagrees (it reaches "
                    f"across a kink nearby); with step {step:.1e} and a tenth of it, it gives {slope!r}, as tape and "
                    f"sympy do"
                )
        if sympy_ok is None and fd_ok is None:
            notes.append(f"note: no oracle for d/d{name}: sympy gives nan and the stencil leaves the domain")
        verdicts = [v for v in (sympy_ok, True if unreliable else fd_ok) if v is not None]
        ok = bool(verdicts) and all(verdicts)
        rows.append(CheckRow(f"d/d{name}", name, t, s, d, abs(t - s), _rel(t, s), _rel(t, d), ok, estimate, unreliable))
    return CheckReport(_describe(expr, fn), at, value_row, tuple(rows), rtol, atol, fd_rtol, fd_atol, tuple(notes))


def _check_tolerance(name: str, tolerance: Any) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0.0 <= tolerance < math.inf:
        raise InputError(f"{name} must be a finite number >= 0, got {tolerance!r}")


def _symbolic_value_and_grad(
    tree: Expr | Tape, at: Mapping[str, float], names: tuple[str, ...]
) -> tuple[float, dict[str, float]]:
    """sympy's value and exact derivative of the whole expression at the point (run on the deep stack)."""
    value = sympy_value(to_sympy_at_depth(tree, real=False), at)
    return value, {name: sympy_value(d, at) for name, d in exact_grad(tree, names).items()}


FD_RETRY_SHRINKS = 4
"""How many times :func:`check` divides the step by 10 when the central difference alone disagrees."""


def _smaller_step_agrees(
    f: Function, point: Mapping[str, float], name: str, slope: float, rtol: float, atol: float, scale: float
) -> tuple[float, float] | None:
    """``(step, difference)`` when central differences at two successive steps, each a tenth of the
    last, both agree with ``slope``; else None.

    Near a kink (``abs(x)`` at 1e-7, ``max(x, y)`` at (1, 1.000001)) the standard step reaches
    across it and sees a mix of the two slopes, though the function is smooth at the point; a step
    below the distance to the kink does not.  Two successive steps must agree, so one lucky
    difference cannot pass; at the kink itself every step reaches across, and nothing changes.
    """
    x = point[name]
    h = fd_step(x)
    agreed: list[tuple[float, float]] = []
    for _ in range(FD_RETRY_SHRINKS):
        h /= 10.0
        try:
            hi = f({**point, name: x + h})
            lo = f({**point, name: x - h})
        except DomainError:
            return None
        difference = (hi - lo) / ((x + h) - (x - h))
        if _close(slope, difference, rtol, atol, scale):
            agreed.append((h, difference))
            if len(agreed) == 2:
                return agreed[0]
        else:
            agreed.clear()
    return None


def fd_error_estimate(f: Function, point: Mapping[str, float], name: str) -> float:
    """An estimate of the central difference's own error for the partial along ``name`` at ``point``.

    Truncation: ``h**2 * |f3| / 6`` with ``f3`` the third derivative along ``name``; ``h**2 * f3``
    is taken as the second difference of the tape's exact derivative at ``x-h, x, x+h`` (two more
    gradient evaluations).  Rounding: ``eps * (|f(x+h)| + |f(x-h)|) / (2h)``.  Infinity when the
    derivative is undefined at a stencil point.
    """
    x = point[name]
    h = fd_step(x)
    try:
        lo_value, lo_grad = f.value_and_grad({**point, name: x - h}, wrt=name)
        hi_value, hi_grad = f.value_and_grad({**point, name: x + h}, wrt=name)
    except DomainError:
        return math.inf
    mid_grad = f.grad(dict(point), wrt=name)
    width = (x + h) - (x - h)
    truncation = abs(hi_grad - 2.0 * mid_grad + lo_grad) / 6.0
    rounding = _EPS * (abs(hi_value) + abs(lo_value)) / width
    estimate = truncation + rounding
    return estimate if math.isfinite(estimate) else math.inf


def _describe(expr: str | Function, fn: Function) -> str:
    if isinstance(expr, str):
        return abbreviate(expr, 200)
    if fn.source is not None:
        return abbreviate(fn.source, 200)
    return fn.derivation if fn.derivation is not None else repr(fn)
