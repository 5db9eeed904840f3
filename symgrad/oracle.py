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
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import display
from .errors import InputError
from .expr import Call, Const, Expr, Var, iter_postorder
from .ops import Op
from .tape import Tape

if TYPE_CHECKING:
    from .function import Function

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

SYMBOLIC_DEPTH = 64
"""Deepest expression :func:`check` hands to sympy whole.  sympy's time to build and differentiate a
nested expression grows with the square of its depth (about 3 s at 100 levels, 14 s at 200), so
deeper ones are checked operation by operation (see :func:`check`)."""
SYMPY_DEPTH_LIMIT = 250
"""Deepest sympy expression :func:`symbolic_grad` differentiates: beyond it sympy needs minutes."""
_CHAIN_DIGITS = 50
"""Working precision of the operation-by-operation oracle."""
_STACK_BYTES = 512 * 2**20
_RECURSION_LIMIT = 200_000

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

    The walk here is iterative, and sympy itself (which recurses) runs on a helper thread with a
    large stack, so any depth works (sympy's time grows with the square of the depth: about 20 s
    for 1,000 nested calls).  ``real=True`` makes the symbols real, which is what
    differentiation needs; the default is plain ``Symbol(name)``.  A :class:`Tape` (which has no
    source text) converts too, its constants as the exact values of their floats.
    """
    return _deep_stack(lambda: _to_sympy(expr, real))


def _to_sympy(expr: Expr | Tape, real: bool) -> Any:
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


# ----------------------------------------------------------------- depth ---

_Node = tuple[str, Any, tuple[int, ...]]
"""One node of an expression as plain data: ``("var", name, ())``, ``("const", sympy number, ())``
or ``("op", Op, argument indices)``; arguments come before the node."""


def _nodes(expr: Expr | Tape) -> tuple[list[_Node], int]:
    """The nodes of an expression tree or a tape, children first, and the index of the result."""
    if isinstance(expr, Tape):
        sp = _sympy()
        nodes: list[_Node] = [("var", name, ()) for name in expr.inputs]
        nodes += [("const", sp.Rational(c), ()) for c in expr.consts]
        nodes += [("op", instr.op, tuple(instr.args)) for instr in expr.instrs]
        return nodes, expr.output
    index: dict[int, int] = {}
    nodes = []
    for node in iter_postorder(expr):
        index[id(node)] = len(nodes)
        if isinstance(node, Var):
            nodes.append(("var", node.name, ()))
        elif isinstance(node, Const):
            nodes.append(("const", (node.text, node.value), ()))
        elif isinstance(node, Call):
            nodes.append(("op", node.op, tuple(index[id(arg)] for arg in node.args)))
    return nodes, len(nodes) - 1


def _depth(nodes: list[_Node], root: int) -> int:
    """Nesting depth as sympy sees it: a chain of one commutative op (``a+b+c``) is one level,
    because sympy flattens it into one ``Add``."""
    depth = [1] * len(nodes)
    for i, (kind, op, args) in enumerate(nodes):
        if kind == "op":
            depth[i] = 1 + max(
                (depth[a] - 1 if op.commutative and nodes[a][1] is op else depth[a] for a in args), default=0
            )
    return depth[root]


def nesting_depth(expr: Expr | Tape) -> int:
    """How deeply ``expr`` nests, counting a chain of one commutative op (``a+b+c``) as one level."""
    return _depth(*_nodes(expr))


def _sympy_depth(expr: Any) -> int:
    """Nesting depth of a sympy expression, walked without recursion."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((arg, depth + 1) for arg in getattr(node, "args", ()))
    return deepest


_T = TypeVar("_T")


def _deep_stack(work: Callable[[], _T]) -> _T:
    """``work()`` on a helper thread with a 512 MiB stack and a high recursion limit.

    sympy recurses over expressions (construction, ``diff``, ``evalf``), about ten frames per
    level, so Python's default limit of 1,000 frames stops it near 100 levels.  The limit is
    interpreter-wide: it is raised only while the helper runs, and put back after.
    """
    result: list[_T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as e:  # handed to the caller's thread below
            failure.append(e)

    old_limit = sys.getrecursionlimit()
    old_size = threading.stack_size(_STACK_BYTES)
    try:
        sys.setrecursionlimit(max(old_limit, _RECURSION_LIMIT))
        thread = threading.Thread(target=target, name="symgrad-oracle", daemon=True)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_size)
        sys.setrecursionlimit(old_limit)
    if failure:
        if isinstance(failure[0], RecursionError):
            raise InputError("sympy ran out of stack on this expression: it nests too deeply for sympy") from None
        raise failure[0]
    return result[0]


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
    ``Symbol(name)`` so they match :func:`to_sympy`'s output.  Like
    :func:`to_sympy`, it runs sympy on a deep stack; beyond :data:`SYMPY_DEPTH_LIMIT` levels of
    nesting it raises :class:`~symgrad.errors.InputError` rather than run for minutes.
    """
    names = tuple(variables) if variables is not None else (expr.inputs if isinstance(expr, Tape) else _variables(expr))
    return _deep_stack(lambda: _symbolic_grad(expr, names))


def _symbolic_grad(expr: Expr | Tape, names: tuple[str, ...]) -> dict[str, Any]:
    sp = _sympy()
    real_expr = _to_sympy(expr, real=True)
    depth = _sympy_depth(real_expr)
    if depth > SYMPY_DEPTH_LIMIT:
        raise InputError(
            f"sympy cannot differentiate this expression in reasonable time: it nests {depth} levels deep, and "
            f"sympy's time grows with the square of the depth (minutes beyond {SYMPY_DEPTH_LIMIT}); symgrad itself "
            f"handles it, and symgrad.check still checks it, operation by operation"
        )
    back = {sp.Symbol(name, real=True): sp.Symbol(name) for name in names}
    return {name: sp.diff(real_expr, sp.Symbol(name, real=True)).xreplace(back) for name in names}


_LOCAL_PARTIALS: dict[tuple[str, int, int], tuple[Any, tuple[Any, ...]]] = {}


def _local_partial(op: Op, n: int, k: int, args: list[Any]) -> Any:
    """sympy's ∂op/∂arg_k at the given (numeric) arguments, to :data:`_CHAIN_DIGITS` digits."""
    sp = _sympy()
    key = (op.name, n, k)
    if key not in _LOCAL_PARTIALS:
        symbols = tuple(sp.Symbol(f"a{i}", real=True) for i in range(n))
        _LOCAL_PARTIALS[key] = (sp.diff(op.sympy(*symbols), symbols[k]), symbols)
    derivative, symbols = _LOCAL_PARTIALS[key]
    return sp.N(_decide_steps(derivative.xreplace(dict(zip(symbols, args, strict=True)))), _CHAIN_DIGITS)


def _chained(expr: Expr | Tape, point: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """The value and partials from sympy, operation by operation, for expressions too deep to
    differentiate whole.

    Each node's value is sympy's (its op's ``sympy`` column on the numeric arguments) and each
    local partial is ``sympy.diff`` of that op, evaluated at the node's arguments; the chain rule
    then combines them in reverse order, all in :data:`_CHAIN_DIGITS`-digit arithmetic.  Linear in
    the size of the expression and free of recursion, so it handles any depth symgrad does.
    """
    sp = _sympy()
    nodes, root = _nodes(expr)
    values: list[Any] = []
    for kind, payload, args in nodes:
        if kind == "var":
            values.append(sp.Float(float(point[payload]), _POINT_DIGITS))
        elif kind == "const":
            number = _const(*payload) if isinstance(payload, tuple) else payload
            values.append(sp.N(number, _CHAIN_DIGITS))
        else:
            values.append(sp.N(_decide_steps(payload.sympy(*(values[a] for a in args))), _CHAIN_DIGITS))
    adjoint: list[Any] = [sp.Integer(0)] * len(nodes)
    adjoint[root] = sp.Integer(1)
    grads: dict[str, Any] = {}
    for i in range(root, -1, -1):
        kind, payload, args = nodes[i]
        if adjoint[i] == 0:
            continue
        if kind == "var":
            grads[payload] = grads.get(payload, sp.Integer(0)) + adjoint[i]
        elif kind == "op":
            argument_values = [values[a] for a in args]
            for k, a in enumerate(args):
                adjoint[a] += adjoint[i] * _local_partial(payload, len(args), k, argument_values)
    names = {payload for kind, payload, _ in nodes if kind == "var"}
    return sympy_value(values[root], {}), {name: sympy_value(grads.get(name, sp.Integer(0)), {}) for name in names}


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
        table = [head]
        for row in (self.value, *self.rows):
            fd = "" if row.finite_difference is None else _fmt(row.finite_difference)
            fd_err = "" if row.fd_rel_error is None else _fmt_err(row.fd_rel_error)
            table.append(
                [
                    row.label,
                    _fmt(row.tape),
                    _fmt(row.sympy),
                    fd,
                    _fmt_err(row.abs_error),
                    _fmt_err(row.rel_error),
                    fd_err,
                    _verdict(row),
                ]
            )
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
    from .api import compile
    from .function import bind_scalars, merge_point

    fn = compile(expr)
    for name, tolerance in (("rtol", rtol), ("atol", atol), ("fd_rtol", fd_rtol), ("fd_atol", fd_atol)):
        _check_tolerance(name, tolerance)
    x = bind_scalars(fn, merge_point(point, values), "check()")  # a name in both is an InputError
    at = dict(zip(fn.variables, x, strict=True))
    value, grads = fn.value_and_grad(at)
    tape_grad = grads if isinstance(grads, dict) else {fn.variables[0]: grads}

    notes: list[str] = []
    tree = tree_of(fn)
    depth = nesting_depth(tree)
    if depth <= SYMBOLIC_DEPTH:
        sp_value, sp_grad = _deep_stack(lambda: _symbolic_value_and_grad(tree, at, fn.variables))
    else:
        sp_value, sp_grad = _chained(tree, at)
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
    value = sympy_value(_to_sympy(tree, real=False), at)
    return value, {name: sympy_value(d, at) for name, d in _symbolic_grad(tree, names).items()}


def fd_error_estimate(f: Function, point: Mapping[str, float], name: str) -> float:
    """An estimate of the central difference's own error for the partial along ``name`` at ``point``.

    Truncation: ``h**2 * |f3| / 6`` with ``f3`` the third derivative along ``name``; ``h**2 * f3``
    is taken as the second difference of the tape's exact derivative at ``x-h, x, x+h`` (two more
    gradient evaluations).  Rounding: ``eps * (|f(x+h)| + |f(x-h)|) / (2h)``.  Infinity when the
    derivative is undefined at a stencil point.
    """
    from .errors import DomainError

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
        return expr
    return fn.source if fn.source is not None else repr(fn)
