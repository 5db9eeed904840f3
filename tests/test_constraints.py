"""Constraints: relations parsed by the grammar's ``relation`` start and lowered onto one tape with bounds.

The oracle for values is sympy: each test builds the constraint's body as a sympy expression
in Python (or from the written-out text of a family), never from symgrad's own numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest
import sympy

import symgrad
from symgrad import parser
from symgrad.backends.interpreter import evaluate
from symgrad.constraints import LoweredConstraints, lower_constraints
from symgrad.errors import InputError, ModelError, ParseError
from symgrad.expr import to_text
from symgrad.parser import parse_relation

INF = math.inf
x, y, z, w = sympy.symbols("x y z w")


def _points(names: Sequence[str], count: int = 5, seed: int = 7) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{name: rng.uniform(0.5, 2.0) for name in names} for _ in range(count)]


def _check_values(lowered: LoweredConstraints, bodies: Sequence[sympy.Expr], count: int = 5) -> None:
    """The tape's outputs equal the sympy bodies at random points (inputs in the tape's order)."""
    names = lowered.tape.inputs
    assert len(lowered.tape.outputs) == len(bodies)
    for point in _points(names, count):
        got = evaluate(lowered.tape, [point[n] for n in names])
        subs = {sympy.Symbol(n): v for n, v in point.items()}
        want = [float(sympy.sympify(b).subs(subs)) for b in bodies]
        assert got == pytest.approx(want, rel=1e-13, abs=1e-13)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sides", "operators"),
    [
        ("x*y >= 1", ("mul(x, y)", "1"), (">=",)),
        ("x <= y + 1", ("x", "add(y, 1)"), ("<=",)),
        ("sin(x) == 0", ("sin(x)", "0"), ("==",)),
        ("0 <= x - y <= 2", ("0", "sub(x, y)", "2"), ("<=", "<=")),
        ("2 >= x >= -1", ("2", "x", "-1"), (">=", ">=")),
        ("sum(x[i] for i in 1..n) <= 1", ("add(index(x, i) for i in 1..n)", "1"), ("<=",)),
    ],
)
def test_relation_forms_parse(text: str, sides: tuple[str, ...], operators: tuple[str, ...]) -> None:
    relation = parse_relation(text)
    rendered = tuple(to_text(side) for side in relation.sides)
    assert rendered == tuple(s.replace("-1", "neg(1)") for s in sides)
    assert relation.operators == operators
    assert relation.family is None
    assert text[relation.span.start : relation.span.end] == text


def test_relation_with_definitions_and_family() -> None:
    text = "d[i] = x[i+1] - x[i]; t = 2;  d[i] <= t for i in 1..n-1"
    relation = parse_relation(text)
    assert [d.name for d in relation.definitions] == ["d", "t"]
    assert text[relation.span.start : relation.span.end] == "d[i] <= t"
    family = relation.family
    assert family is not None
    assert (family.var, to_text(family.lo), to_text(family.hi)) == ("i", "1", "sub(n, 1)")
    assert text[family.span.start : family.span.end] == "for i in 1..n-1"


def test_the_formula_start_is_unchanged_and_points_relations_to_minimize() -> None:
    assert to_text(symgrad.parse("x*y + 1")) == "add(mul(x, y), 1)"
    for text, operator_ in [("x == y", "=="), ("x >= 1", ">="), ("r = x; r <= 2", "<="), ("x[1] == 2", "==")]:
        with pytest.raises(ParseError) as info:
            symgrad.compile(text)
        error = info.value
        assert f"'{operator_}' makes a constraint, not a formula" in str(error)
        assert "symgrad.minimize" in error.hint
        assert text[error.span.start : error.span.end] == operator_
    with pytest.raises(ParseError, match="expected '\\+', '-', ';'"):
        symgrad.compile("x = 3")  # a definition without ';' keeps its old message


@pytest.mark.parametrize(
    "text",
    [
        "x*y >= 1",
        "0 <= x <= 2",
        "r[i] = x[i]**2; r[i] <= 4 for i in 1..n",
        "x <= y >= z",
        "x == y == z",
        "x + y",
        "x > 1",
        "x = 1",
        "x >= 1 for i in",
        "x >= >= 1",
    ],
)
def test_both_parsers_agree_on_relations(text: str) -> None:
    pytest.importorskip("lark_cython")

    def result(fast: bool) -> object:
        try:
            relation = parser._parse(text, parser._lark(fast=fast), start="relation")
        except ParseError as e:
            return (type(e).__name__, str(e), e.span)
        assert isinstance(relation, parser.Relation)
        family = relation.family
        loop = (
            None
            if family is None
            else (family.span, family.var, family.var_span, to_text(family.lo), to_text(family.hi))
        )
        return (relation.span, relation.operators, [to_text(s) for s in relation.sides], loop)

    assert result(True) == result(False)


# -- normalisation -------------------------------------------------------------------------


def test_each_form_normalises_to_a_body_and_bounds() -> None:
    sources = [
        "x*y >= z + 1",  # neither side constant: x*y - (z + 1) in [0, inf]
        "x*y <= z",
        "sin(x) == y",
        "x*y*z*w >= 25",  # a constant side is the bound: the other side is the body
        "x + y <= 4",
        "x**2 + y**2 == 40",
        "3 >= x - y",
        "2*3 <= exp(x)",
        "-1 == cos(w)",
        "1 <= x*w <= 5",
        "5 >= x/y >= 1",
        "n <= z <= 2*n",  # sizes fold to constants
    ]
    lowered = lower_constraints(sources, sizes={"n": 3})
    assert lowered.lower == (0, -INF, 0, 25, -INF, 40, -INF, 6, -1, 1, 1, 3)
    assert lowered.upper == (INF, 0, 0, INF, 4, 40, 3, INF, -1, 5, 5, 6)
    assert lowered.labels == tuple(sources)
    bodies = [
        x * y - (z + 1),
        x * y - z,
        sympy.sin(x) - y,
        x * y * z * w,
        x + y,
        x**2 + y**2,
        x - y,
        sympy.exp(x),
        sympy.cos(w),
        x * w,
        x / y,
        z,
    ]
    assert lowered.tape.inputs == ("x", "y", "z", "w")  # order of first appearance
    _check_values(lowered, bodies)


def test_constraints_share_one_tape_and_its_subexpressions() -> None:
    lowered = lower_constraints(["sin(x*y) >= 0", "sin(x*y) + x <= 3", "x*y == 1"])
    ops = [instr.op.name for instr in lowered.tape.instrs]
    assert ops.count("sin") == 1
    assert ops.count("mul") == 1
    _check_values(lowered, [sympy.sin(x * y), sympy.sin(x * y) + x, x * y])


def test_declared_variables_are_the_inputs_in_order() -> None:
    lowered = lower_constraints(["x[2] - y >= 0", "y <= 1"], variables={"y": None, "x": 3, "u": None})
    assert lowered.tape.inputs == ("y", "x[1]", "x[2]", "x[3]", "u")
    lowered = lower_constraints(["x[2] - y >= 0"], variables={"y": None, "x": "n"}, sizes={"n": 2})
    assert lowered.tape.inputs == ("y", "x[1]", "x[2]")
    lowered = lower_constraints(["b >= a"], variables=["a", "b", "c"])
    assert lowered.tape.inputs == ("a", "b", "c")
    _check_values(lowered, [sympy.Symbol("b") - sympy.Symbol("a")])


def test_undeclared_variable_is_the_usual_error() -> None:
    with pytest.raises(InputError) as info:
        lower_constraints(["x + 1 >= 0", "x*y <= 2"], variables=["x"])
    message = str(info.value)
    assert "'y' is used but not declared in variables=[x]" in message
    assert "x + 1 >= 0, x*y <= 2\n" in message and message.split("\n")[2].index("^") == 2 + len("x + 1 >= 0, x*")


def test_bad_declarations_are_input_errors() -> None:
    with pytest.raises(InputError, match="declared twice"):
        lower_constraints(["x >= 0"], variables=["x", "x"])
    with pytest.raises(InputError, match="got the string"):
        lower_constraints(["x >= 0"], variables="x")
    with pytest.raises(InputError, match="list of strings"):
        lower_constraints("x >= 0")


# -- families --------------------------------------------------------------------------------

FAMILY = (
    "3*x[i+1]**3 + 2*x[i+2] - 5 + sin(x[i+1] - x[i+2])*sin(x[i+1] + x[i+2]) + 4*x[i+1] - x[i]*exp(x[i] - x[i+1]) - 3"
)


def _family_body(v: Callable[[int], sympy.Symbol], i: int) -> sympy.Expr:
    """The family's body for one i, written with sympy's own functions (the oracle)."""
    return (
        3 * v(i + 1) ** 3
        + 2 * v(i + 2)
        - 5
        + sympy.sin(v(i + 1) - v(i + 2)) * sympy.sin(v(i + 1) + v(i + 2))
        + 4 * v(i + 1)
        - v(i) * sympy.exp(v(i) - v(i + 1))
        - 3
    )


def test_a_family_equals_its_members_written_out() -> None:
    n = 7
    lowered = lower_constraints([f"{FAMILY} == 0 for i in 1..n-2"], sizes={"n": n}, variables={"x": "n"})
    members = [
        f"{FAMILY.replace('[i+1]', f'[{i + 1}]').replace('[i+2]', f'[{i + 2}]').replace('[i]', f'[{i}]')} == 0"
        for i in range(1, n - 1)
    ]
    assert all("i" not in m.replace("sin", "").replace("exp", "") for m in members)
    written = lower_constraints(members, variables={"x": n})
    assert lowered.lower == written.lower == (0.0,) * (n - 2)
    assert lowered.upper == written.upper == (0.0,) * (n - 2)
    assert lowered.labels == tuple(f"{FAMILY} == 0 (i={i})" for i in range(1, n - 1))
    assert lowered.tape.inputs == written.tape.inputs == tuple(f"x[{k}]" for k in range(1, n + 1))
    bodies = [_family_body(lambda k: sympy.Symbol(f"x[{k}]"), i) for i in range(1, n - 1)]
    _check_values(lowered, bodies)
    _check_values(written, bodies)
    # the written-out text, parsed as formulas, is the same oracle
    for member, body in zip(members, bodies, strict=True):
        text = member.removesuffix(" == 0").replace("[", "_").replace("]", "")
        expr = symgrad.compile(text).to_sympy()
        assert (
            sympy.simplify(expr - body.subs({sympy.Symbol(f"x[{k}]"): sympy.Symbol(f"x_{k}") for k in range(1, n + 1)}))
            == 0
        )


def test_a_family_runs_in_index_order_with_definitions_and_constant_sides() -> None:
    lowered = lower_constraints(
        ["d[i] = x[i+1] - x[i]; i <= d[i]*i for i in 1..3", "x[k]**2 <= k for k in 2..n"],
        sizes={"n": 4},
    )
    assert lowered.labels == (
        "i <= d[i]*i (i=1)",
        "i <= d[i]*i (i=2)",
        "i <= d[i]*i (i=3)",
        "x[k]**2 <= k (k=2)",
        "x[k]**2 <= k (k=3)",
        "x[k]**2 <= k (k=4)",
    )
    assert lowered.lower == (1, 2, 3, -INF, -INF, -INF)  # "i <= g": the loop index is a constant bound
    assert lowered.upper == (INF, INF, INF, 2, 3, 4)
    s = [sympy.Symbol(f"x[{k}]") for k in range(5)]
    bodies = [(s[i + 1] - s[i]) * i for i in (1, 2, 3)] + [s[k] ** 2 for k in (2, 3, 4)]
    _check_values(lowered, bodies)


def test_an_empty_family_gives_no_constraints() -> None:
    lowered = lower_constraints(
        ["x[i] >= 0 for i in 3..2", "x[1] + x[2] <= 1", "x[i] >= 1 for i in n..1"], sizes={"n": 5}
    )
    assert lowered.labels == ("x[1] + x[2] <= 1",)
    empty = lower_constraints(["x[i] >= 0 for i in 1..n"], sizes={"n": 0})
    assert empty.tape is None and empty.labels == () and empty.lower == empty.upper == ()
    with pytest.raises(InputError, match="none were given"):
        lower_constraints([])


def test_family_index_shadows_like_a_reduction_index() -> None:
    lowered = lower_constraints(["sum(x[j] for j in 1..i) <= i for i in 1..3"], variables={"x": 3})
    s = [sympy.Symbol(f"x[{k}]") for k in range(4)]
    _check_values(lowered, [s[1], s[1] + s[2], s[1] + s[2] + s[3]])
    assert lowered.upper == (1, 2, 3)


# -- errors ------------------------------------------------------------------------------


def _error(sources: list[str], cls: type[Exception] = ParseError, **kwargs: object) -> ParseError:
    with pytest.raises(cls) as info:
        lower_constraints(sources, **kwargs)  # type: ignore[arg-type]
    error = info.value
    assert isinstance(error, ParseError)
    return error


def _pointed(error: ParseError) -> str:
    return error.source[error.span.start : error.span.end]


def test_mixed_directions_are_an_error_at_the_second_operator() -> None:
    error = _error(["x <= y >= z"])
    assert "'<=' and then '>=' do not make a double-sided constraint" in str(error)
    assert (error.line, error.column, _pointed(error)) == (1, 8, ">=")
    assert "  x <= y >= z\n         ^^" in str(error)
    assert _pointed(_error(["1 == x == 1"])) == "=="
    error = _error(["0 <= x <= 1 <= 2"])
    assert "at most two comparisons" in str(error) and error.column == 13


def test_strict_inequalities_are_refused_with_the_fix() -> None:
    error = _error(["x*y > 1"])
    assert "strict inequality '>'" in str(error) and "write '>='" in error.hint and _pointed(error) == ">"


def test_outer_bounds_must_be_constants() -> None:
    error = _error(["x >= 0", "y <= x**2 <= n"], ModelError, sizes={"n": 3})
    assert "the bounds of a double-sided constraint must be constants: 'y' is not" in str(error)
    assert (_pointed(error), error.column) == ("y", 9)
    assert "write two constraints: y <= x**2 and x**2 <= n" in error.hint
    error = _error(["x[i] >= x[i+1] >= 0 for i in 1..2"], ModelError)
    assert _pointed(error) == "x[i]" and "for i = 1" in str(error)


def test_lower_above_upper_is_an_error_naming_the_constraint() -> None:
    error = _error(["x >= 0", "5 <= x <= 1"], ModelError)
    assert "lower bound 5.0 > upper bound 1.0" in str(error)
    assert _pointed(error) == "5 <= x <= 1"
    error = _error(["2*i >= x[i] >= i + 2 for i in 1..4"], ModelError)
    assert "lower bound 3.0 > upper bound 2.0 for i = 1" in str(error)  # first member that fails
    assert _pointed(error) == "2*i >= x[i] >= i + 2"


def test_a_constraint_of_constants_must_hold() -> None:
    error = _error(["x >= 0", "1 >= 2"], ModelError)
    assert "this constraint is false" in str(error) and _pointed(error) == "1 >= 2"
    lowered = lower_constraints(["x >= 0", "sum(x for j in 1..0) <= 1"])  # a constant that holds is kept
    assert lowered.labels == ("x >= 0", "sum(x for j in 1..0) <= 1")
    assert (lowered.lower[1], lowered.upper[1]) == (-INF, 1.0)


def test_a_formula_without_relation_is_an_error_with_a_hint() -> None:
    error = _error(["x + y >= 0", "x*y - 1"])
    assert "a constraint needs a comparison" in str(error)
    assert "g(x) >= 0, g(x) == 0 or g(x) <= 0" in error.hint
    assert (error.source, _pointed(error)) == ("x*y - 1", "x*y - 1")
    error = _error(["t = x; t for i in 1..2"])
    assert _pointed(error) == "t"


@pytest.mark.parametrize(
    ("text", "pointed", "expected"),
    [
        ("x >= ", "", "expected '(', '+', '-', a name, a number"),
        ("x >=* 1", "*", "expected '(', '+', '-', a name, a number"),
        ("x >= 1 for i in 1..", "", "a number"),
        ("x >= 1 for 2 in 1..3", "2", "a name"),
        ("x = 1", "", "an equality constraint is written with '=='"),
        ("x ! 1", "!", ""),
        ("x => 1", "=>", "write '>='"),
        ("x =< 1", "=<", "write '<='"),
    ],
)
def test_syntax_errors_have_carets(text: str, pointed: str, expected: str) -> None:
    error = _error([text])
    assert "^" in error.excerpt
    assert _pointed(error) == pointed or (pointed == "" and error.span.start == len(text.rstrip()))
    assert expected in str(error)


def test_unknown_index_or_size_points_at_it() -> None:
    error = _error(["x >= 0", "x[j] >= 0 for i in 1..3"], ModelError)
    assert "unknown index or size 'j'" in str(error)
    assert (_pointed(error), error.column) == ("j", 11)
    error = _error(["x[i] >= 0 for i in 1..m"], ModelError, sizes={"n": 2})
    assert "unknown index or size 'm' in the bounds of the family" in str(error) and _pointed(error) == "m"
    error = _error(["x[i] >= 0 for i in 1..4"], ModelError, variables={"x": 3})
    assert "index 4 of 'x' is out of range (x[1]..x[3]) where i = 4" in str(error)
    error = _error(["t = x[i]; t >= 0 for i in 1..2"], ModelError)
    assert "unknown index or size 'i'" in str(error)  # definitions come before the family's index
