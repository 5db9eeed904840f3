"""symgrad's formulas as sympy expressions: the oracle's independent view, and LaTeX.

The expression tree (or a tape) is rebuilt as a sympy expression through each
op's ``sympy`` column of the op table (no ``sympify`` of user text), and can be
differentiated symbolically and evaluated at a point in high precision.  sympy
is imported lazily inside the functions here: ``import symgrad`` does not
import it.  Checking (``check``, finite differences) is :mod:`symgrad.oracle`.

Numbers.  A ``Const`` node keeps its source text, so the conversion uses the
*exact* number the user wrote: ``0.1`` becomes ``Rational(1, 10)``, ``1e-3``
becomes ``1/1000``, ``pi`` and ``E`` stay symbolic.  (The tape uses the nearest
float, which differs by at most half an ulp; the tolerances absorb that.)  A
tape (of a derivative, or recorded from ``Value`` operations) has only floats:
each becomes the shortest decimal that reads back to it, as the formula
printer writes it (``0.1`` is ``1/10`` again), and the floats of ``pi`` and
``E`` become ``pi`` and ``E``.
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
from typing import Any, TypeVar

from .errors import InputError
from .expr import Call, Const, Expr, Var, is_plain, iter_postorder
from .formula import number_text
from .ops import Op
from .parser import CONSTANTS, parse
from .tape import Tape

__all__ = [
    "DIGITS",
    "SYMBOLIC_DEPTH",
    "SYMPY_DEPTH_LIMIT",
    "chained_value_and_grad",
    "deep_stack",
    "exact_grad",
    "nesting_depth",
    "symbolic_grad",
    "sympy_value",
    "to_sympy",
    "to_sympy_at_depth",
    "to_sympy_outputs",
    "tree_of",
]

DIGITS = 30
"""Significant digits of the sympy evaluation (far beyond float64's 16)."""
_POINT_DIGITS = 50
"""Digits of the substituted point: enough to hold any float64 exactly (it has <= 17 significant)."""


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
    differentiation needs; the default is plain ``Symbol(name)``.  A one-output :class:`Tape`
    converts too (see the module's note on numbers); :func:`to_sympy_outputs` converts every
    output of a tape.
    """
    return deep_stack(lambda: to_sympy_at_depth(expr, real))


def to_sympy_outputs(tape: Tape, *, real: bool = False) -> tuple[Any, ...]:
    """One sympy expression per output of ``tape`` (a gradient or Hessian function, say)."""
    return deep_stack(lambda: _tape_to_sympy(tape, real, tape.outputs))


def to_sympy_at_depth(expr: Expr | Tape, real: bool) -> Any:
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
        nodes: list[_Node] = [("var", name, ()) for name in expr.inputs]
        nodes += [("const", _tape_const(c), ()) for c in expr.consts]
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


def deep_stack(work: Callable[[], _T]) -> _T:
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


def _tape_const(value: float) -> Any:
    """A tape's float as sympy: ``pi`` and ``E`` by name, else the shortest decimal that reads back to it."""
    sp = _sympy()
    for name, constant in CONSTANTS.items():
        if abs(value) == constant:
            return _const(name, constant) * (-1 if value < 0 else 1)
    return sp.Rational(number_text(value))


def _tape_to_sympy(tape: Tape, real: bool, outputs: tuple[int, ...] | None = None) -> Any:
    """The sympy form of the tape's output, or a tuple of those of ``outputs``."""
    sp = _sympy()
    slots: list[Any] = [sp.Symbol(name, real=True) if real else sp.Symbol(name) for name in tape.inputs]
    slots += [_tape_const(c) for c in tape.consts]
    for instr in tape.instrs:
        slots.append(instr.op.sympy(*(slots[a] for a in instr.args)))
    if outputs is not None:
        return tuple(slots[o] for o in outputs)
    return slots[tape.output]


def _variables(expr: Expr) -> tuple[str, ...]:
    """Variables in order of first appearance (the order the tape uses)."""
    seen: dict[str, None] = {}
    for node in iter_postorder(expr):
        if isinstance(node, Var):
            seen.setdefault(node.name, None)
    return tuple(seen)


def tree_of(source: str | None, tape: Tape) -> Expr | Tape:
    """What to convert for a compiled function: its source re-parsed by the grammar (not
    sympify), or its tape when it has no source text or is a model (whose sizes the text lacks;
    :func:`symgrad.model.expand` writes a small model out for the oracle)."""
    if source is None:
        return tape
    tree = parse(source)
    return tree if is_plain(tree) else tape


def symbolic_grad(expr: Expr | Tape, variables: Iterable[str] | None = None) -> dict[str, Any]:
    """``{name: sympy derivative}`` for each variable, in order of first appearance.

    Derivatives are taken with real symbols, then written back in plain
    ``Symbol(name)`` so they match :func:`to_sympy`'s output.  Like
    :func:`to_sympy`, it runs sympy on a deep stack; beyond :data:`SYMPY_DEPTH_LIMIT` levels of
    nesting it raises :class:`~symgrad.errors.InputError` rather than run for minutes.
    """
    names = tuple(variables) if variables is not None else (expr.inputs if isinstance(expr, Tape) else _variables(expr))
    return deep_stack(lambda: exact_grad(expr, names))


def exact_grad(expr: Expr | Tape, names: tuple[str, ...]) -> dict[str, Any]:
    sp = _sympy()
    real_expr = to_sympy_at_depth(expr, real=True)
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


def chained_value_and_grad(expr: Expr | Tape, point: Mapping[str, float]) -> tuple[float, dict[str, float]]:
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
