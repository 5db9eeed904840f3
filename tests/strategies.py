"""Hypothesis strategies for symgrad, all in one module.

:func:`cases` draws a random well-formed expression *string* over the whole
grammar together with a point inside every function's domain and, built
independently of symgrad's parser, the sympy expression the string means.
Tests compare symgrad's tape against that sympy expression, so a parser
that misreads precedence, a lowering bug or a wrong derivative all show up.

What the strings cover: every op of :data:`symgrad.ops.OPS` under each of its
call names (iterated from the table, so a new op is covered automatically),
infix ``+ - * /``, unary minus and plus, ``**``, ``^`` and ``pow(a, b)``,
nesting, redundant and minimal parentheses, whitespace (spaces, tabs,
newlines) between tokens, numbers in every notation (``3``, ``3.0``, ``3.``,
``.5``, ``1e-3``, ``2.5E+4``), the constants ``pi`` and ``E``, and variable
names sympy would read specially (``I``, ``E_n``, ``gamma``, ``S``, ``N``…).

How values stay finite and well conditioned.  While the tree is built the
value of every subexpression at the point is computed with the op table's
scalar forward.  Then, bottom-up:

* an argument outside its op's sampling box (``Op.domain``) is wrapped in a
  guard ``(mid + half*tanh(arg))`` that maps it into the box;
* an ``add``/``sub`` whose operands would cancel (``|a ± b| < |a| + |b|`` /
  100) is flipped to the other operator, which cannot cancel;
* the argument of a kink (``relu``, ``abs``, the difference of ``min``/``max``)
  that is within 1e-6 of the kink but not exactly a variable or literal is
  moved 0.5 away, because there rounding could pick the other branch (an
  exact kink or tie of plain variables is kept: it tests the conventions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import sympy
from hypothesis import strategies as st

from symgrad.ops import OPS, Op

__all__ = ["VARIABLE_NAMES", "Case", "cases", "expression_texts", "numbers", "power_cases", "random_text"]

VARIABLE_NAMES = ("x", "y", "z", "t0", "_u", "I", "E_n", "gamma", "lambd", "beta", "S", "N", "Q", "ξ")
"""Identifiers, including ones sympy's parser would turn into special objects."""

# Precedence of what a rendered node is, as the grammar sees it (higher binds tighter).
SUM, PRODUCT, UNARY, POWER, ATOM = 1, 2, 3, 4, 5
INFIX_PRECEDENCE = {"add": SUM, "sub": SUM, "mul": PRODUCT, "div": PRODUCT}
"""The infix ops of the grammar; every other op is written as a call (or as ``-a``, ``a ** b``)."""

KINK_OPS = ("relu", "abs")
HELPER_OPS = ("heaviside", "sign", "xlogy")
"""Ops that exist for the derivative rules: tested row by row (tests/test_ops.py) and through printed
derivatives, but not drawn here (sympy leaves derivatives of sign(acos(x)) unevaluated)."""
KINK_MARGIN = 1e-6
"""How close to a kink a computed argument may come (rounding could pick the other branch)."""
TIE_OPS = ("min", "max")


@dataclass(frozen=True)
class Node:
    """A generated subexpression: its text, what it means, and its value at the point."""

    text: str
    prec: int
    sym: sympy.Expr
    value: float
    leaf: bool = False


@dataclass(frozen=True)
class Case:
    """One test case: ``text`` means ``sym``; ``point`` covers exactly its variables."""

    text: str
    sym: sympy.Expr
    point: dict[str, float]

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        at = " ".join(f"{k}={v!r}" for k, v in self.point.items())
        return f"Case({self.text!r} at {at})"


_SPACE = st.sampled_from(["", "", "", "", " ", " ", "  ", "\t", "\n"])


def numbers() -> st.SearchStrategy[str]:
    """Non-negative number literals in every notation the grammar accepts."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        digits = draw(st.integers(0, 999))
        exponent = draw(st.integers(-4, 3))
        value = Decimal(digits).scaleb(exponent)
        style = draw(st.sampled_from(["plain", "plain", "dot", "sci", "int"]))
        if style == "int" or (style == "plain" and value == value.to_integral_value() and draw(st.booleans())):
            if value == value.to_integral_value():
                return str(int(value))
            style = "plain"
        if style in ("plain", "dot"):
            text = format(value, "f")
            if "." not in text:
                text += draw(st.sampled_from([".", ".0"]))
            if text.startswith("0.") and len(text) > 2 and draw(st.booleans()):
                text = text[1:]  # ".5"
            return text
        mantissa, exp = f"{digits}", exponent
        if digits >= 10 and draw(st.booleans()):  # 2.5E+4 rather than 25E+3
            mantissa = f"{digits / 10:g}" if digits % 10 else f"{digits // 10}.0"
            exp += 1
        e = draw(st.sampled_from(["e", "E"]))
        sign = "+" if exp >= 0 and draw(st.booleans()) else ""
        return f"{mantissa}{e}{sign}{exp}"

    return build()


def _wrap(draw: st.DrawFn, node: Node, need: int) -> str:
    """``node.text``, parenthesised if its precedence is below ``need`` (or at random)."""
    if node.prec < need or draw(st.integers(0, 9)) == 0:
        return f"({draw(_SPACE)}{node.text}{draw(_SPACE)})"
    return node.text


def _const(text: str) -> Node:
    return Node(text, ATOM, sympy.Rational(text), float(text), leaf=True)


def _apply(draw: st.DrawFn, op: Op, args: list[Node]) -> Node:
    """The node for ``op(*args)`` in a spelling the grammar accepts."""
    sym = op.sympy(*(a.sym for a in args))
    try:
        value = float(op.scalar(*(a.value for a in args)))
    except (ArithmeticError, ValueError):  # (only unguarded trees, see _Shape.guards: an overflow)
        value = math.nan
    sp = lambda: draw(_SPACE)  # noqa: E731 - a tiny local helper
    if op.name in INFIX_PRECEDENCE:
        prec = INFIX_PRECEDENCE[op.name]
        left, right = _wrap(draw, args[0], prec), _wrap(draw, args[1], prec + 1)
        return Node(f"{left}{sp()}{op.symbol}{sp()}{right}", prec, sym, value)
    if op.name == "neg":
        return Node(f"-{sp()}{_wrap(draw, args[0], UNARY)}", UNARY, sym, value)
    if op.name == "pow" and draw(st.integers(0, 2)) > 0:
        spelling = draw(st.sampled_from(["**", "^"]))
        base, exponent = _wrap(draw, args[0], ATOM), _wrap(draw, args[1], UNARY)
        return Node(f"{base}{sp()}{spelling}{sp()}{exponent}", POWER, sym, value)
    name = draw(st.sampled_from(op.call_names))
    inner = f"{sp()},{sp()}".join(a.text for a in args)
    return Node(f"{name}{sp()}({sp()}{inner}{sp()})", ATOM, sym, value)


def _guard(draw: st.DrawFn, node: Node, lo: float, hi: float) -> Node:
    """``(mid + half*tanh(node))``: maps any value into ``[lo, hi]``."""
    mid, half = _const(repr((lo + hi) / 2)), _const(repr((hi - lo) / 2))
    squashed = _apply(draw, OPS["mul"], [half, _apply(draw, OPS["tanh"], [node])])
    return _apply(draw, OPS["add"], [mid, squashed])


def _near_kink(node: Node, value: float, scale: float, margin: float) -> bool:
    """Too close to a kink for rounding (or, with a wider margin, for a central difference)."""
    if node.leaf and margin <= KINK_MARGIN:
        return False  # an exact variable or literal: both sides agree on the branch, even at the kink
    return abs(value) < margin * (1.0 + scale)


def _away(draw: st.DrawFn, node: Node) -> Node:
    return _apply(draw, OPS["add"], [node, _const("0.5")])


def _fit(draw: st.DrawFn, op: Op, args: list[Node], margin: float) -> tuple[Op, list[Node]]:
    """Guard the arguments into ``op``'s domain boxes and away from cancellation and kinks."""
    fitted = []
    boxes = op.domain + (op.domain[-1],) * (len(args) - len(op.domain))  # (a variadic op's extra arguments)
    for arg, (lo, hi) in zip(args, boxes, strict=True):
        fitted.append(arg if lo <= arg.value <= hi else _guard(draw, arg, lo, hi))
    if op.name in KINK_OPS and _near_kink(fitted[0], fitted[0].value, 0.0, margin):
        fitted[0] = _away(draw, fitted[0])
    if op.name in TIE_OPS:  # no near-ties (sympy splits an exact tie of more than two differently)
        exact_pairs_ok = len(fitted) == 2
        for j in range(1, len(fitted)):
            for _ in range(len(fitted)):  # moving one argument away may bring it near another
                b = fitted[j]
                near = [
                    a
                    for a in fitted[:j]
                    if _near_kink(
                        Node("", ATOM, sympy.S.Zero, 0.0, leaf=exact_pairs_ok and a.leaf and b.leaf),
                        a.value - b.value,
                        abs(a.value) + abs(b.value),
                        margin,
                    )
                ]
                if not near:
                    break
                fitted[j] = _away(draw, b)
    if op.name in ("add", "sub"):
        a, b = fitted[0].value, fitted[1].value
        result = a + b if op.name == "add" else a - b
        if abs(result) < 0.01 * (abs(a) + abs(b)):
            op = OPS["sub" if op.name == "add" else "add"]
    return op, fitted


ARITHMETIC_OPS = ("add", "sub", "mul", "div", "neg", "pow")
"""What :func:`power_cases` draws from: the ops the printer writes with operators (precedence matters)."""
COMPOUND_EXPONENT_OPS = ("add", "sub", "mul", "div", "neg", "neg", "pow")
"""The root of an exponent in :func:`power_cases`: a sum, product, quotient, negation or power."""


@dataclass(frozen=True)
class _Shape:
    """What a tree is drawn from: the ops (None: every op of the table but the helpers), whether every
    exponent is a compound expression, and the number literals."""

    ops: tuple[str, ...] | None = None
    compound_exponents: bool = False
    literals: st.SearchStrategy[str] | None = None
    guards: bool = True
    """False: no ``tanh`` guards (their calls print as atoms and would hide the shapes under test);
    only a negative base of ``**`` is negated and a zero base or divisor moved, see :func:`_fit_lightly`."""


_ANY_SHAPE = _Shape()


@st.composite
def _tree(draw: st.DrawFn, point: dict[str, float], depth: int, margin: float, shape: _Shape = _ANY_SHAPE) -> Node:
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["var", "var", "var", "number", "constant"]))
        if kind == "var":
            name = draw(st.sampled_from(sorted(point)))
            return Node(name, ATOM, sympy.Symbol(name), point[name], leaf=True)
        if kind == "constant":
            name = draw(st.sampled_from(["pi", "E"]))
            return Node(
                name, ATOM, sympy.pi if name == "pi" else sympy.E, math.pi if name == "pi" else math.e, leaf=True
            )
        return _const(draw(numbers() if shape.literals is None else shape.literals))
    choices = sorted(set(OPS) - set(HELPER_OPS)) if shape.ops is None else list(shape.ops)
    choice = draw(st.sampled_from([*choices, "pos"]))
    sub = lambda: _tree(point, depth - 1, margin, shape)  # noqa: E731 - a tiny local helper
    if choice == "pos":
        child = draw(sub())
        return Node(f"+{draw(_SPACE)}{_wrap(draw, child, UNARY)}", UNARY, child.sym, child.value)
    op = OPS[choice]
    n_args = op.arity + (draw(st.integers(0, 2)) if op.variadic else 0)  # max(a, b, c): one record
    args = [draw(sub()) for _ in range(n_args)]
    fit = _fit if shape.guards else _fit_lightly
    if op.name == "pow" and shape.compound_exponents:  # x**(-2*y), 2**(-x**2), E**(-x**2/2), x**(y + z)
        inner = OPS[draw(st.sampled_from(COMPOUND_EXPONENT_OPS))]
        inner, inner_args = fit(draw, inner, [draw(sub()) for _ in range(inner.arity)], margin)
        args[1] = _apply(draw, inner, inner_args)
    op, args = fit(draw, op, args, margin)
    return _apply(draw, op, args)


def _fit_lightly(draw: st.DrawFn, op: Op, args: list[Node], margin: float) -> tuple[Op, list[Node]]:
    """Keep ``+ - * / - **`` defined without guards: a negative base is negated, a zero base or
    divisor moved by 0.5 (a value may still overflow: both sides of a round trip then raise)."""
    if op.name == "pow" and args[0].value < 0:
        args = [_apply(draw, OPS["neg"], [args[0]]), args[1]]
    if op.name in ("pow", "div") and args[-1 if op.name == "div" else 0].value == 0:
        k = 1 if op.name == "div" else 0
        args = [_away(draw, a) if i == k else a for i, a in enumerate(args)]
    return op, args


def _coordinate() -> st.SearchStrategy[float]:
    """0 or a float with 1e-3 <= |x| <= 3 (no underflow on the way through products)."""
    magnitude = st.floats(1e-3, 3.0, allow_nan=False, allow_infinity=False)
    return st.one_of(st.just(0.0), magnitude, magnitude.map(lambda v: -v), st.sampled_from([1.0, -1.0, 0.5, 2.0]))


@st.composite
def cases(draw: st.DrawFn, max_depth: int = 4, kink_margin: float = KINK_MARGIN) -> Case:
    """A random expression string, what it means in sympy, and a point in its domain.

    ``kink_margin`` is how close (relatively) a kink's argument may come to the
    kink; tests that take central differences pass ~1e-3 so the stencil never
    straddles one (the default keeps exact kinks of plain variables).
    """
    names = draw(st.lists(st.sampled_from(VARIABLE_NAMES), min_size=1, max_size=3, unique=True))
    point = {name: draw(_coordinate()) for name in names}
    node = draw(_tree(point, max_depth, kink_margin))
    text = f"{draw(_SPACE)}{node.text}{draw(_SPACE)}"
    used = {name: v for name, v in point.items() if sympy.Symbol(name) in node.sym.free_symbols}
    for name, v in point.items():  # a variable may vanish from sympy's form (x - x) but not from the text
        if name not in used and _mentions(text, name):
            used[name] = v
    return Case(text, node.sym, used)


_POWER_SHAPE = _Shape(ARITHMETIC_OPS, True, st.sampled_from(["2", "3", "0.5", "1.5", ".25", "2.0"]), guards=False)


@st.composite
def power_cases(draw: st.DrawFn, max_depth: int = 4) -> Case:
    """Like :func:`cases`, over ``+ - * /``, unary minus and ``**`` only, every exponent a sum,
    product, quotient, negation or power: where a printer's precedence rules can go wrong
    (``x**(-2*y)`` is not ``x**-2*y``; ``a/(-b*c)`` is not ``a/-b*c``)."""
    names = draw(st.lists(st.sampled_from(VARIABLE_NAMES[:4]), min_size=1, max_size=3, unique=True))
    # positive coordinates and small literals: few negated bases, few overflows
    point = {name: draw(st.floats(0.25, 1.5)) for name in names}
    node = draw(_tree(point, max_depth, KINK_MARGIN, _POWER_SHAPE))
    used = {name: v for name, v in point.items() if _mentions(node.text, name)}
    return Case(node.text, node.sym, used)


def _mentions(text: str, name: str) -> bool:
    import re

    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def expression_texts(max_depth: int = 4) -> st.SearchStrategy[str]:
    """Just the strings of :func:`cases`."""
    return cases(max_depth).map(lambda c: c.text)


_TOKENS = [
    "(",
    ")",
    "+",
    "-",
    "*",
    "/",
    "**",
    "^",
    ",",
    ".",
    "e",
    "E",
    "x",
    "sin",
    "pi",
    "1",
    "0",
    "1e308",
    "1e309",
    "9" * 400,
    " ",
    "\n",
    "\t",
    "\x00",
    "√",
    "²",
    "∂",
    "ℯ",
    "٣",
    "x₁",
    "𝑥",
    "\u200b",
    "#",
    "@",
]


def random_text(max_size: int = 200) -> st.SearchStrategy[str]:
    """Arbitrary text: unicode, stray operators, unbalanced parentheses, huge numbers, empty."""
    tokens = st.lists(st.sampled_from(_TOKENS), max_size=max_size).map("".join)
    return st.one_of(st.text(max_size=max_size), tokens, expression_texts(3).map(lambda s: _mutate(s)))


def _mutate(text: str) -> str:
    """A well-formed string with one character dropped from the middle (often unbalanced)."""
    i = len(text) // 2
    return text[:i] + text[i + 1 :]
