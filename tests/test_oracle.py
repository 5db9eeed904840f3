"""The oracle itself: AST -> sympy, symbolic gradients, finite differences, check, ``symgrad check``.

Expected derivatives are hand-derived calculus (in the comments) or sympy's,
never copied from symgrad's output.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import sympy
from agreement import assert_tape_agrees
from hypothesis import assume, given
from strategies import Case, cases

import symgrad
from symgrad import rules
from symgrad.cli import main
from symgrad.lower import lower
from symgrad.ops import OPS
from symgrad.oracle import _CBRT_EPS, fd_step, finite_difference, symbolic_grad, sympy_value, to_sympy
from symgrad.parser import parse

x, y = sympy.Symbol("x"), sympy.Symbol("y")


# ------------------------------------------------------------- to_sympy ---


def test_issue_example() -> None:
    f = symgrad.compile("x*sin(y) + exp(x/y)")
    assert f.to_sympy() == x * sympy.sin(y) + sympy.exp(x / y)
    grads = f.symbolic_grad()
    assert list(grads) == ["x", "y"]
    # d/dx = sin(y) + exp(x/y)/y ; d/dy = x cos(y) - x exp(x/y)/y²
    assert sympy.simplify(grads["x"] - (sympy.sin(y) + sympy.exp(x / y) / y)) == 0
    assert sympy.simplify(grads["y"] - (x * sympy.cos(y) - x * sympy.exp(x / y) / y**2)) == 0


@pytest.mark.parametrize("name", ["I", "E_n", "gamma", "lambd", "S", "N", "Q", "O", "beta", "zeta", "ξ"])
def test_variables_are_plain_symbols(name: str) -> None:
    e = to_sympy(parse(f"2*{name}"))
    assert e == 2 * sympy.Symbol(name)
    assert e.free_symbols == {sympy.Symbol(name)}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0.1", sympy.Rational(1, 10)),
        (".5", sympy.Rational(1, 2)),
        ("3/2", sympy.Rational(3, 2)),
        ("1e-3", sympy.Rational(1, 1000)),
        ("2.5E+4", sympy.Integer(25000)),
        ("3.", sympy.Integer(3)),
        ("pi", sympy.pi),
        ("E", sympy.E),
        ("2*pi", 2 * sympy.pi),
    ],
)
def test_constants_are_exact(text: str, want: sympy.Expr) -> None:
    assert to_sympy(parse(text)) == want


def test_every_op_spelling_converts_through_the_table() -> None:
    e = to_sympy(
        parse("relu(x) + abs(x) + Abs(y) + min(x, y) + Max(x, y) + atan2(y, x) + sigmoid(x) + x^y + pow(x, y)")
    )
    assert e.has(sympy.Heaviside, sympy.Abs, sympy.Min, sympy.Max, sympy.atan2)
    assert e.has(x**y)


def test_deep_expressions_convert_without_recursion() -> None:
    depth = 20_000
    e = to_sympy(parse("-(" * depth + "x" + ")" * depth))  # an even number of negations
    assert e == x
    wide = to_sympy(parse("+".join(["x"] * 50_000)))
    assert wide == 50_000 * x


def test_tape_without_source_converts() -> None:
    tape = lower(parse("x*0.1 + sin(y)"))
    f = symgrad.Function(tape, None)
    assert f.source is None
    e = f.to_sympy()  # the tape's float nearest 0.1 reads as 1/10 again, as from the source text
    assert e == sympy.Rational(1, 10) * x + sympy.sin(y)
    assert set(f.symbolic_grad()) == {"x", "y"}
    assert symgrad.Function(lower(parse("pi*x - E")), None).to_sympy() == sympy.pi * x - sympy.E


def test_sympy_is_not_imported_by_symgrad() -> None:
    code = "import sys, symgrad; symgrad.grad('sin(x)', x=1); symgrad.cli.build_parser(); print('sympy' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", "import symgrad.cli\n" + code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


# ---------------------------------------------------- symbolic gradients ---


def test_abs_and_kinks_differentiate_as_real_functions() -> None:
    grads = symbolic_grad(parse("abs(x) + relu(y) + max(x, y)"))
    # For real x: d|x|/dx = sign(x); d max(x, y)/dx = Heaviside(x - y), 1/2 on a tie.
    assert sympy_value(grads["x"], {"x": -2.0, "y": 1.0}) == -1.0
    assert sympy_value(grads["x"], {"x": 0.0, "y": 0.0}) == 0.5
    assert sympy_value(grads["y"], {"x": 0.0, "y": 0.0}) == 0.5
    assert grads["x"].free_symbols <= {x, y}  # written back in plain symbols


def test_sympy_value_decides_steps_sympy_cannot_prove() -> None:
    # sympy leaves Heaviside(2 - 19*tanh(2)/(20*sqrt(1 - 361*tanh(2)**2/400))) unevaluated; the inner
    # value is 2.28 > 2, so d/dx max(x, g(x)) is g'(2) = 1.0364... (hypothesis found this one).
    report = symgrad.check("max(x, tan(asin(0.95*tanh(x))))", x=2.0)
    assert not math.isnan(report.rows[0].sympy)
    assert report.ok


def test_sympy_value_reports_nan_off_the_real_line() -> None:
    assert math.isnan(sympy_value(sympy.log(x), {"x": -1.0}))
    assert math.isnan(sympy_value(1 / x, {"x": 0.0}))


# ---------------------------------------------------- finite differences ---


def test_step_rule() -> None:
    assert pytest.approx((2.0**-52) ** (1 / 3), rel=1e-15) == _CBRT_EPS
    assert fd_step(0.0) == fd_step(1.0) == fd_step(-0.5) == _CBRT_EPS
    assert fd_step(-1000.0) == 1000 * _CBRT_EPS


def test_finite_difference_of_a_cubic() -> None:
    # d/dx x³y = 3x²y = 12 * 1.5 = 18 ; d/dy = x³ = 8
    fd = finite_difference("x**3*y", x=2.0, y=1.5)
    assert fd["x"] == pytest.approx(18.0, rel=1e-9)
    assert fd["y"] == pytest.approx(8.0, rel=1e-9)


def test_finite_difference_at_a_large_coordinate() -> None:
    # d/dx sin(x/1e6) = cos(x/1e6)/1e6 at x = 3e6: the step scales with |x| (≈ 18)
    fd = finite_difference("sin(x/1e6)", x=3e6)
    assert fd["x"] == pytest.approx(math.cos(3.0) / 1e6, rel=1e-8)


def test_finite_difference_off_the_domain_is_nan() -> None:
    assert math.isnan(finite_difference("sqrt(x)", x=0.0)["x"])


# ------------------------------------------------------------------ check ---


def test_check_issue_example() -> None:
    report = symgrad.check("x*sin(y) + exp(x/y)", x=0.7, y=1.3)
    assert report.ok and bool(report)
    assert [row.variable for row in report.rows] == ["x", "y"]
    # d/dx = sin(y) + exp(x/y)/y, by hand
    want = math.sin(1.3) + math.exp(0.7 / 1.3) / 1.3
    assert report.rows[0].sympy == pytest.approx(want, rel=1e-15)
    assert report.rows[0].finite_difference == pytest.approx(want, rel=1e-8)
    assert report.value.tape == pytest.approx(0.7 * math.sin(1.3) + math.exp(0.7 / 1.3), rel=1e-15)
    text = str(report)
    for fragment in ("tape", "sympy", "finite difference", "abs error", "rel error", "d/dx", "d/dy", "agrees"):
        assert fragment in text
    assert report.to_dict()["grad"]["y"]["ok"] is True


def test_check_catches_a_wrong_derivative() -> None:
    """Break the sin row's partial ('sin' instead of 'cos') for one fresh Function: check must say so."""
    sin = OPS["sin"]
    f = symgrad.Function(lower(parse("sin(x)"), "sin(x)"))
    right = sin.partials

    def forget() -> None:  # the parsed rules are cached per op
        rules._PARTIALS.pop((sin, 1), None)
        rules._SCALAR.pop((sin, 1), None)

    object.__setattr__(sin, "partials", ("sin(a)",))
    forget()
    try:
        f.grad(x=0.3)  # the gradient tape (with the wrong partial) is kept by this Function only
    finally:
        object.__setattr__(sin, "partials", right)
        forget()
    report = symgrad.check(f, x=0.3)
    assert report.value.ok
    assert not report.ok
    row = report.rows[0]
    assert row.tape == pytest.approx(math.sin(0.3)) and row.sympy == pytest.approx(math.cos(0.3))
    assert "DISAGREES" in str(report)
    assert symgrad.check("sin(x)", x=0.3).ok  # the real row is untouched


def test_check_at_a_kink_reports_the_convention() -> None:
    report = symgrad.check("relu(x)", x=0.0)
    assert report.rows[0].tape == report.rows[0].sympy == 0.0  # the convention, as sympy's a*Heaviside(a, 0) says
    assert report.rows[0].finite_difference == pytest.approx(0.5)  # the mean of the one-sided slopes
    assert not report.ok


def test_check_without_any_oracle_is_not_ok() -> None:
    # sympy writes d/dx x**y as y*x**y/x: 0/0 at x = 0; the stencil x-h leaves the domain of pow.
    report = symgrad.check("x**y", x=0.0, y=2.5)
    assert not report.ok
    assert math.isnan(report.rows[0].sympy) and math.isnan(report.rows[0].finite_difference or 0.0)
    assert report.rows[1].ok  # d/dy = x**y * log(x) -> 0 by the central difference
    assert "NO ORACLE" in str(report) and "UNCHECKED" in str(report)


def test_check_tolerances_are_keywords_and_names_may_clash() -> None:
    report = symgrad.check("rtol*x", {"rtol": 2.0}, x=3.0, rtol=1e-12)
    assert report.ok and report.rtol == 1e-12
    assert report.point == {"rtol": 2.0, "x": 3.0}


def test_check_user_errors() -> None:
    with pytest.raises(symgrad.MissingVariableError):
        symgrad.check("x*y", x=1.0)
    with pytest.raises(symgrad.DomainError):
        symgrad.check("log(x)", x=-1.0)


@given(cases(max_depth=3, kink_margin=1e-3))
def test_check_agrees_on_random_expressions(case: Case) -> None:
    """``check`` (sympy and central differences) passes on random expressions away from kinks.

    Looser tolerances than the defaults: these random compositions include steep ones
    (the central difference's truncation error grows with the third derivative).
    """
    report = symgrad.check(case.text, case.point, rtol=1e-7, atol=1e-9, fd_rtol=1e-4, fd_atol=1e-6)
    assume(all(math.isfinite(r.finite_difference or 0.0) for r in report.rows))
    assert report.ok, str(report)


# -------------------------------------------------- round trip from sympy ---


@given(cases(max_depth=3))
def test_sympy_str_round_trips(case: Case) -> None:
    """What sympy prints over our function set (Abs, sqrt, exp, E, pi, 3/2, x**(-1/2)) parses back.

    sympy may print an expression it re-reads differently (``101/(100*(7*t/5 + 8/5))``
    becomes ``101/(140*t + 160)``), so the comparison is by value and gradient.
    """
    # With real symbols, as symgrad's variables are: sympy then prints abs(E**x) as exp(x), not exp(re(x)).
    sym = case.sym.xreplace({s: sympy.Symbol(s.name, real=True) for s in case.sym.free_symbols})
    assume(not sym.has(sympy.Heaviside))  # relu prints as x*Heaviside(x, 0), which is not our syntax
    f = symgrad.compile(str(sym))
    assert set(f.variables) <= set(case.point)
    assert_tape_agrees(f, sym, {name: case.point[name] for name in f.variables})


@pytest.mark.parametrize(
    "expr",
    [
        sympy.sqrt(x) * sympy.exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi),
        sympy.Abs(x - sympy.Rational(3, 2)) + x ** sympy.Rational(-1, 2),
        x ** sympy.Rational(3, 2) * sympy.E**y,
        sympy.atan2(y, x) + sympy.Max(x, y) - sympy.Min(x, 2 * y),
        1 / (1 + sympy.exp(-x)) + sympy.tanh(x * y) ** 2 - sympy.log(x) / y,
    ],
)
def test_hand_built_sympy_strings_round_trip(expr: sympy.Expr) -> None:
    printed = str(expr)
    assert to_sympy(parse(printed)) == expr
    f = symgrad.compile(printed)
    report = symgrad.check(f, {name: {"x": 0.7, "y": 1.3}[name] for name in f.variables})
    assert report.ok, str(report)


def test_min_max_take_more_arguments_as_sympy_prints_them() -> None:
    # max(x, y, z, 1) at (1, 3, 2) is y: value 3, gradient (0, 1, 0); min(x, y, z) there is x.
    assert symgrad.value_and_grad("Max(x, y, z, 1)", x=1.0, y=3.0, z=2.0) == (3.0, {"x": 0.0, "y": 1.0, "z": 0.0})
    assert symgrad.grad("min(x, y, z)", x=1.0, y=3.0, z=2.0) == {"x": 1.0, "y": 0.0, "z": 0.0}
    assert to_sympy(parse("Max(x, y, 2)")) == sympy.Max(x, y, 2)
    with pytest.raises(symgrad.ArityError, match="takes at least 2 arguments, got 1"):
        parse("max(x)")


# -------------------------------------------------------------------- CLI ---


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_check_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "check", "x*sin(y) + exp(x/y)", "x=0.7", "y=1.3")
    assert status == 0 and err == ""
    assert out.rstrip("\n") == str(symgrad.check("x*sin(y) + exp(x/y)", x=0.7, y=1.3))


def test_cli_check_json_and_tolerances(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", "-x^2", "x=3", "--json", "--rtol", "1e-8", "--atol=0")
    assert status == 0
    payload = json.loads(out)
    assert payload["ok"] is True
    assert payload["tolerances"]["rtol"] == 1e-8 and payload["tolerances"]["atol"] == 0.0
    assert payload["grad"]["x"]["sympy"] == -6.0  # d/dx -x² = -2x


def test_cli_check_exit_1_on_disagreement(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", "relu(x)", "x=0")
    assert status == 1
    assert "DISAGREES" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["check", "2x", "x=1"], "write 2*x"),
        (["check", "log(x)", "x=-1"], "undefined"),
        (["check", "x*y", "x=1"], "no value given for 'y'"),
    ],
)
def test_cli_check_user_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == ""
    assert fragment in err and "Traceback" not in err


def test_the_agreement_scale_sees_cancellation_behind_max() -> None:
    # tanh(15.95) is 1 - 2.8e-14: its partial 1 - out*out keeps two digits, and the gradient
    # (-4.2169e-13 against sympy's -4.2203e-13) is that accurate.  The rounding model must see it
    # through max, whose partial asks which argument it returned (a wobbled max returned none).
    src = "acos(max(x, x + 0.5, atan2(acos(0.), 1.6 + 1.4*tanh(pow(1.6 + 1.4*tanh(x), x)))))"
    x = sympy.Symbol("x")
    half, inner = sympy.Rational(1, 2), 7 * sympy.tanh(x) / 5 + sympy.Rational(8, 5)
    sym = sympy.acos(
        sympy.Max(x, x + half, sympy.atan2(sympy.pi / 2, 7 * sympy.tanh(inner**x) / 5 + sympy.Rational(8, 5)))
    )
    assert_tape_agrees(symgrad.compile(src, backend="python"), sym, {"x": -2.0})
