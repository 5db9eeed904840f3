"""The formula printer (symgrad/formula.py): ``parse(formula)`` computes the same numbers as the tape.

Three oracles: the grammar itself (a printed formula is parsed back and evaluated: exactly the same
floats, or the same DomainError), sympy (the printed formula of a derivative means sympy's
derivative), and an exhaustive enumeration of small trees over the operators whose precedence the
printer decides (``+ - * /``, unary minus, ``**``).  Nothing compares with strings copied from
the printer's own output except the hand-written expectations of readability.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import sympy
from agreement import exact
from hypothesis import given, settings
from strategies import Case, power_cases

import symgrad
from symgrad.backends import interpreter
from symgrad.builder import Ref, TapeBuilder
from symgrad.errors import DomainError
from symgrad.formula import to_formula
from symgrad.function import Function
from symgrad.lower import lower
from symgrad.ops import OPS
from symgrad.parser import parse
from symgrad.tape import Tape

Tree = str | float | tuple["str", "Tree"] | tuple[str, "Tree", "Tree"]
"""A hand-built expression: a variable name, a constant, or ``(op name, argument, ...)``."""


def _tape(tree: Tree) -> Tape:
    """The tape of ``tree`` exactly as written: no folding or rewriting (``optimize=False``); equal
    subtrees share one record, as common subexpressions do on a tape."""
    b = TapeBuilder(optimize=False)
    refs: list[Ref] = []
    shared: dict[Tree, Ref] = {}
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        node, ready = stack.pop()
        if isinstance(node, str):
            refs.append(b.var(node))
        elif isinstance(node, float):
            refs.append(b.const(node))
        elif ready:
            n = len(node) - 1
            args = tuple(refs[len(refs) - n :])
            del refs[len(refs) - n :]
            if node not in shared:
                shared[node] = b.emit(OPS[node[0]], args)
            refs.append(shared[node])
        else:
            stack.append((node, True))
            stack.extend((arg, False) for arg in reversed(node[1:]))
    (out,) = refs
    return b.finish([out])


def _values(tape: Tape, point: dict[str, float]) -> list[float] | type[DomainError]:
    try:
        return interpreter.evaluate(tape, [point[name] for name in tape.inputs])
    except DomainError:
        return DomainError


def _assert_round_trip(tape: Tape, points: list[dict[str, float]]) -> None:
    """Every output's formula, parsed and lowered as users do, gives the same floats at every point."""
    for k, text in enumerate(to_formula(tape)):
        again = lower(parse(text), text)
        one = Tape(tape.inputs, tape.consts, tape.instrs, (tape.outputs[k],), tape.source)
        for point in points:
            want, got = _values(one, point), _values(again, point)
            if want is DomainError or got is DomainError:
                assert want is got, (text, point, want, got)
                continue
            assert isinstance(want, list) and isinstance(got, list)
            assert got[0] == want[0] or (math.isnan(got[0]) and math.isnan(want[0])), (text, point, got, want)


POINTS = [{"x": 1.3, "y": 0.7, "z": 2.1}, {"x": 0.45, "y": 1.9, "z": 0.8}]


# ------------------------------------------------------------- what the printer writes ---


@pytest.mark.parametrize(
    ("tree", "want"),
    [
        # an exponent that is a negated product or quotient is a product: parenthesised
        (("pow", "x", ("neg", ("mul", 2.0, "y"))), "x**(-2*y)"),
        (("pow", "x", ("neg", ("div", "y", 2.0))), "x**(-y/2)"),
        (("pow", "x", ("neg", ("mul", "y", "y"))), "x**-y**2"),  # -(y*y) is -(y**2): a unary minus
        (("pow", "x", ("neg", "y")), "x**-y"),
        (("pow", "x", -2.0), "x**-2"),
        # ** is right-associative, its base an atom
        (("pow", "x", ("pow", "y", "z")), "x**y**z"),
        (("pow", ("pow", "x", "y"), "z"), "(x**y)**z"),
        (("pow", ("neg", "x"), "y"), "(-x)**y"),
        (("pow", -2.0, "x"), "(-2)**x"),
        (("neg", ("pow", "x", "y")), "-x**y"),
        # division and subtraction chains associate to the left
        (("div", ("div", "x", "y"), "z"), "x/y/z"),
        (("div", "x", ("div", "y", "z")), "x/(y/z)"),
        (("div", "x", ("mul", "y", "z")), "x/(y*z)"),
        (("div", "x", ("neg", ("mul", "y", "z"))), "x/(-y*z)"),
        (("mul", "x", ("neg", ("div", "y", "z"))), "x*(-y/z)"),
        (("mul", ("neg", ("mul", "x", "y")), "z"), "-x*y*z"),
        (("mul", "x", ("neg", "y")), "x*-y"),
        (("sub", "x", ("sub", "y", "z")), "x - (y - z)"),
        (("sub", ("sub", "x", "y"), "z"), "x - y - z"),
        (("sub", "x", ("neg", ("mul", "y", "z"))), "x - -y*z"),
        (("neg", ("neg", ("mul", "x", "y"))), "-(-x*y)"),
        (("neg", ("add", "x", "y")), "-(x + y)"),
        # repeated factors print as powers (the parser lowers a**2 back to a*a)
        (("mul", "x", "x"), "x**2"),
        (("mul", ("neg", "x"), ("neg", "x")), "(-x)**2"),
        (("neg", ("mul", "x", "x")), "-x**2"),
        (("mul", ("add", "x", "y"), ("add", "x", "y")), "(x + y)**2"),
        # the constants pi and E by name
        (("mul", math.pi, "x"), "pi*x"),
        (("pow", math.e, ("neg", "x")), "E**-x"),
        (("mul", -math.pi, "x"), "-pi*x"),
    ],
)
def test_precedence_and_readability(tree: Tree, want: str) -> None:
    tape = _tape(tree)
    assert to_formula(tape) == [want]
    _assert_round_trip(tape, POINTS)


@pytest.mark.parametrize(
    ("text", "wrt", "want"),
    [
        ("x**(-2*y)", (), "x**(-2*y)"),  # printed as x**-2*y, which is (x**-2)*y
        ("2**(-x**2)", ("x",), "-2*x*xlogy(2**-x**2, 2)"),  # printed with 2**-x*x in it
        ("E**(-x**2/2)", (), "E**(-x**2/2)"),  # printed as 2.718281828459045**-x*x/2
        ("x**3", ("x",), "3*x**2"),  # printed as 3*(x*x)
        ("sin(pi*x)", ("x",), "pi*cos(pi*x)"),
    ],
)
def test_the_reported_formulas(text: str, wrt: tuple[str, ...], want: str) -> None:
    f = symgrad.compile(text)
    g = f.derivative(*wrt) if wrt else f
    assert g.formula == want
    # and it means what sympy says: the function, or sympy's derivative of it
    syms = {n: sympy.Symbol(n, real=True) for n in f.variables}
    expr = symgrad.oracle.to_sympy(parse(text)).xreplace({sympy.Symbol(n): s for n, s in syms.items()})
    meant = sympy.diff(expr, *(syms[n] for n in wrt)) if wrt else expr
    again = symgrad.compile(g.formula)
    for point in POINTS:
        at = {n: point[n] for n in again.variables}
        assert again(at) == pytest.approx(exact(meant, point), rel=1e-14)
        assert again(at) == g({n: point[n] for n in g.variables})


def test_a_variable_named_like_a_constant_keeps_the_number() -> None:
    """A tape may have an input called ``E`` (recorded from Value operations, say): then e prints as a number."""
    tape = _tape(("mul", "E", math.e))
    assert to_formula(tape) == ["E*2.718281828459045"]


# ---------------------------------------------------------------- exhaustively ---

_BINARY = ("add", "sub", "mul", "div", "pow")


def _trees(depth: int, leaves: tuple[Tree, ...]) -> Iterator[Tree]:
    """Every tree over ``+ - * / **`` and unary minus up to ``depth`` levels."""
    yield from leaves
    if depth == 0:
        return
    smaller = list(_trees(depth - 1, leaves))
    for a in smaller:
        yield ("neg", a)
    for op in _BINARY:
        for a, b in itertools.product(smaller, repeat=2):
            yield (op, a, b)


def _spines(leaves: tuple[Tree, ...]) -> Iterator[Tree]:
    """Three levels of operators along one path (``x**-(y*z)``, ``x/-(y/z)``, …), the other operands leaves."""

    def around(op: str, inner: Tree) -> Iterator[Tree]:
        if op == "neg":
            yield ("neg", inner)
            return
        for leaf in leaves:
            yield (op, inner, leaf)
            yield (op, leaf, inner)

    ops = ("neg", *_BINARY)
    for o1, o2, o3 in itertools.product(ops, repeat=3):
        for bottom in around(o3, "y") if o3 == "neg" else [(o3, "y", "z")]:
            for middle in around(o2, bottom):
                yield from around(o1, middle)


def test_every_small_tree_round_trips() -> None:
    """All trees of two levels over x, y and all three-level paths (leaves x, -2, E) print, parse back
    and give the same floats; a misplaced parenthesis changes the numbers at these points."""
    count = 0
    for tree in itertools.chain(_trees(2, ("x", "y")), _spines(("x", -2.0, math.e))):
        _assert_round_trip(_tape(tree), POINTS)
        count += 1
    assert count > 3000


# ------------------------------------------------------------------- at random ---


@settings(max_examples=250)
@given(power_cases())
def test_formulas_of_powers_and_their_derivatives_round_trip(case: Case) -> None:
    """Exponents that are sums, products, quotients, negations and powers: the formula, every first
    partial, a second derivative, the gradient and the Hessian functions all print and parse back."""
    f = symgrad.compile(case.text)
    point = {n: case.point.get(n, 0.5) for n in f.variables}
    functions: list[Function] = [f]
    if f.variables:
        first = f.variables[0]
        functions += [f.derivative(name) for name in f.variables]
        functions += [f.derivative(first, f.variables[-1]), f.gradient_function(), f.hessian_function()]
    for g in functions:
        _assert_round_trip(g.tape, [point])
