"""Derivatives as tapes: higher orders, Hessians, Jacobians, forward mode and formulas, against sympy.

sympy (``sympy.diff`` at the exact point, 30 digits) and the reference
interpreter's classic sweeps are the oracles; nothing here compares with
numbers copied from symgrad's own output.  Tolerances follow tests/agreement.py:
a derivative tape is judged against the magnitude of the terms it combines.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import sympy
from agreement import agrees, exact, magnitudes
from hypothesis import assume, given, settings
from strategies import Case, cases

import symgrad
from symgrad import ops, transforms
from symgrad.backends import interpreter
from symgrad.errors import DomainError, SymgradError
from symgrad.function import Function
from symgrad.rules import scalar_partials

EXAMPLES = 120


def _real(expr: sympy.Expr, names: list[str]) -> tuple[sympy.Expr, dict[str, sympy.Symbol]]:
    symbols = {n: sympy.Symbol(n, real=True) for n in names}
    return expr.xreplace({sympy.Symbol(n): s for n, s in symbols.items()}), symbols


def _exact_or_nan(expr: sympy.Expr, point: dict[str, float]) -> float:
    """sympy's value, or nan where it has none (a Dirac delta at a kink, a 0/0 form)."""
    try:
        return exact(expr, point)
    except (TypeError, ValueError):
        return math.nan


def _assert_close_to_sympy(d: Function, want_expr: sympy.Expr, point: dict[str, float]) -> None:
    x = [point[n] for n in d.variables]
    try:
        got = d(*x)
    except DomainError:
        assume(False)  # an undefined partial at this point (0 * inf on a dead branch, say): not comparable
        return
    want = _exact_or_nan(want_expr, point)
    assume(math.isfinite(want))
    magnitude = magnitudes(d.tape, x)[0]
    assert agrees(got, want, magnitude), f"{d.formula if len(d.tape) < 200 else d!r}: {got!r} vs sympy {want!r}"


# ------------------------------------------------------------ higher orders ---


@settings(max_examples=EXAMPLES)
@given(cases(max_depth=3, kink_margin=1e-3))
def test_second_derivatives_and_mixed_partials_agree_with_sympy(case: Case) -> None:
    f = symgrad.compile(case.text)
    names = list(f.variables)
    assume(names)
    expr, syms = _real(case.sym, names)
    first = names[0]
    second = names[-1]
    _assert_close_to_sympy(f.derivative(first, first), sympy.diff(expr, syms[first], syms[first]), case.point)
    if second != first:
        _assert_close_to_sympy(f.derivative(first, second), sympy.diff(expr, syms[first], syms[second]), case.point)


@settings(max_examples=EXAMPLES // 2)
@given(cases(max_depth=3, kink_margin=1e-3))
def test_third_derivatives_agree_with_sympy(case: Case) -> None:
    f = symgrad.compile(case.text)
    names = list(f.variables)
    assume(names)
    expr, syms = _real(case.sym, names)
    wrt = [names[0], names[-1], names[0]]
    _assert_close_to_sympy(f.derivative(*wrt), sympy.diff(expr, *(syms[n] for n in wrt)), case.point)


@settings(max_examples=EXAMPLES // 2)
@given(cases(max_depth=3, kink_margin=1e-3))
def test_hessian_is_symmetric_and_agrees_with_sympy(case: Case) -> None:
    f = symgrad.compile(case.text)
    names = list(f.variables)
    assume(names)
    try:
        h = f.hessian(case.point)
    except DomainError:
        assume(False)
        return
    if len(names) == 1:
        h = {names[0]: {names[0]: h}}
    expr, syms = _real(case.sym, names)
    hf = f.hessian_function()
    x = [case.point[n] for n in names]
    magnitude = magnitudes(hf.tape, x)[0] if len(hf.tape.outputs) == 1 else 0.0
    for i in names:
        for j in names:
            assert h[i][j] == h[j][i] or (math.isnan(h[i][j]) and math.isnan(h[j][i]))  # exactly symmetric
            want = _exact_or_nan(sympy.diff(expr, syms[i], syms[j]), case.point)
            if math.isfinite(want):
                single = f.derivative(i, j)
                scale = max(magnitude, magnitudes(single.tape, x)[0])
                assert agrees(h[i][j], want, scale), (i, j, h[i][j], want)


def test_the_issue_examples() -> None:
    d = symgrad.diff("3*x**2-4*x+5", "x")
    assert d(x=3) == 14.0
    assert d.formula == "6*x - 4"
    assert symgrad.compile(d.formula).tape.n_slots == d.tape.n_slots  # parses back to the same function
    assert symgrad.diff("sin(x)", "x", "x", "x")(x=0.5) == pytest.approx(-math.cos(0.5), rel=1e-15)
    h = symgrad.hessian("x**2*y + exp(x*y)", x=1, y=2)
    x, y = 1.0, 2.0
    assert h["x"]["x"] == pytest.approx(2 * y + y * y * math.exp(x * y), rel=1e-14)
    assert h["x"]["y"] == h["y"]["x"] == pytest.approx(2 * x + math.exp(x * y) * (1 + x * y), rel=1e-14)
    assert h["y"]["y"] == pytest.approx(x * x * math.exp(x * y), rel=1e-14)
    jac = symgrad.jacobian(["x*y", "x + y", "sin(x)"], x=1, y=2)
    assert jac == {"x*y": {"x": 2.0, "y": 1.0}, "x + y": {"x": 1.0, "y": 1.0}, "sin(x)": {"x": math.cos(1.0), "y": 0.0}}
    assert symgrad.jvp("x*y + sin(x)", {"x": 1, "y": 2}, {"x": 1, "y": 0}) == (2 + math.sin(1.0), 2 + math.cos(1.0))
    assert symgrad.grad("x**n", x=-2, n=3, wrt="x") == 12.0  # the log(x) of d/dn is never evaluated


# ---------------------------------------------------------- forward mode ----


@settings(max_examples=EXAMPLES)
@given(cases(max_depth=4))
def test_jvp_is_the_gradient_dotted_with_the_tangent(case: Case) -> None:
    f = symgrad.compile(case.text)
    rng = random.Random(case.text)
    tangent = {n: rng.uniform(-2, 2) for n in f.variables}
    try:
        value, grads = f.value_and_grad(case.point)
        v2, dot = f.jvp(case.point, tangent)
    except DomainError:
        assume(False)
        return
    if not isinstance(grads, dict):
        grads = {f.variables[0]: grads}
    assert v2 == value or (math.isnan(v2) and math.isnan(value))
    want = sum(grads[n] * tangent[n] for n in f.variables)
    scale = sum(abs(grads[n] * tangent[n]) for n in f.variables)
    assert math.isclose(dot, want, rel_tol=1e-9, abs_tol=1e-9 * scale + 1e-300), (dot, want)


@settings(max_examples=EXAMPLES // 2)
@given(cases(max_depth=3, kink_margin=1e-3))
def test_hvp_is_the_hessian_times_the_vector(case: Case) -> None:
    f = symgrad.compile(case.text)
    names = list(f.variables)
    assume(names)
    rng = random.Random(case.text)
    v = {n: rng.uniform(-2, 2) for n in names}
    try:
        h = f.hessian(case.point)
        hv = f.hvp(case.point, v)
    except DomainError:
        assume(False)
        return
    if len(names) == 1:
        h, hv = {names[0]: {names[0]: h}}, {names[0]: hv}
    for i in names:
        want = sum(h[i][j] * v[j] for j in names)
        scale = sum(abs(h[i][j] * v[j]) for j in names)
        assert math.isclose(hv[i], want, rel_tol=1e-9, abs_tol=1e-9 * scale + 1e-300), (i, hv[i], want)


def test_jacobian_covers_the_union_of_variables_in_both_modes() -> None:
    f = symgrad.compile(["x*y", "exp(z)", "x + 2"])
    assert f.variables == ("x", "y", "z")
    point = {"x": 0.5, "y": -1.5, "z": 0.25}
    x, y, z = (sympy.Symbol(n, real=True) for n in "xyz")
    exprs = [x * y, sympy.exp(z), x + 2]
    for mode in ("reverse", "forward"):
        tape = transforms.jacobian_tape(f.tape, mode=mode)
        values = interpreter.evaluate(tape, [point[n] for n in f.variables])
        for k, e in enumerate(exprs):
            for j, s in enumerate((x, y, z)):
                want = exact(sympy.diff(e, s), point)
                assert values[3 * k + j] == pytest.approx(want, rel=1e-15, abs=0.0), (mode, k, j)
    jac = f.jacobian(point)
    assert jac["exp(z)"]["x"] == 0.0 and jac["x + 2"]["y"] == 0.0
    assert set(jac) == {"x*y", "exp(z)", "x + 2"}


def test_hessian_methods_give_the_same_numbers() -> None:
    text = "x**2*y + exp(x*y) + sin(x)*cos(y)"
    tape = symgrad.compile(text).tape
    point = [0.3, -1.2]
    a = interpreter.evaluate(transforms.hessian_tape(tape, method="forward-over-reverse"), point)
    b = interpreter.evaluate(transforms.hessian_tape(tape, method="reverse-over-reverse"), point)
    assert a == pytest.approx(b, rel=1e-13)
    with pytest.raises(SymgradError, match="method"):
        transforms.hessian_tape(tape, method="sideways")


# -------------------------------------------- executors on the gradient tape ---


DEAD_BRANCHES = [
    ("max(x, sqrt(y))", {"x": 1.0, "y": 0.0}),
    ("relu(y) * sqrt(x)", {"x": 0.0, "y": -1.0}),
    ("relu(-x) * sqrt(x)", {"x": 0.0}),
    ("min(x, y) + 0*sqrt(x)", {"x": 0.0, "y": 1.0}),
]


@pytest.mark.parametrize(("text", "point"), DEAD_BRANCHES)
def test_dead_branches_do_not_raise_on_the_fast_path(text: str, point: dict[str, float]) -> None:
    f = symgrad.compile(text)
    x = [point[n] for n in f.variables]
    want = interpreter.value_and_grad(f.tape, x)  # the classic sweep skips the zero adjoint
    value, grads = f.vg(*x)
    assert value == want[0] and grads == want[1]
    assert f.grad(point, wrt=list(f.variables)) == dict(zip(f.variables, want[1], strict=True))


@settings(max_examples=EXAMPLES)
@given(cases(max_depth=4))
def test_every_executor_evaluates_the_gradient_tape_alike(case: Case) -> None:
    """Interpreter on the gradient tape, generated code and numpy all equal the classic sweeps."""
    f = symgrad.compile(case.text)
    x = [case.point[n] for n in f.variables]
    try:
        want_value, want_grads = interpreter.value_and_grad(f.tape, x)
    except DomainError as e:
        with pytest.raises(DomainError) as info:
            f.vg(*x)
        assert str(info.value) == str(e)
        return
    gradient = transforms.grad_tape(f.tape)
    try:
        on_tape = interpreter.evaluate(gradient, x)
    except DomainError:
        on_tape = None  # an undefined partial on a branch the classic sweep skips
    value, grads = f.vg(*x)
    arrays = f.value_and_grad(*[np.full(3, v) for v in x])
    array_grads = arrays[1] if isinstance(arrays[1], dict) else {f.variables[0]: arrays[1]}
    assert value == want_value
    for k, name in enumerate(f.variables):
        scale = abs(want_grads[k]) + 1e-300
        assert math.isclose(grads[k], want_grads[k], rel_tol=1e-9, abs_tol=1e-12 * scale)
        if on_tape is not None:
            assert on_tape[0] == want_value
            assert math.isclose(on_tape[1 + k], want_grads[k], rel_tol=1e-9, abs_tol=1e-12)
            assert np.allclose(array_grads[name], want_grads[k], rtol=1e-9, atol=1e-12)  # elementwise


def test_domain_errors_in_derivatives_point_at_the_primal_op() -> None:
    d = symgrad.diff("y + sqrt(x)", "x")
    with pytest.raises(DomainError) as info:
        d(x=0.0, y=1.0)
    assert "in the derivative of sqrt" in str(info.value)
    assert (info.value.line, info.value.column) == (1, 5)
    assert info.value.excerpt.splitlines()[1].strip() == "^" * len("sqrt(x)")
    # the gradient of the formula (classic sweep as the reference) says the same place
    with pytest.raises(DomainError, match="derivative of sqrt") as info2:
        symgrad.grad("y + sqrt(x)", x=0.0, y=1.0)
    assert info2.value.column == 5


# ------------------------------------------------------------------ formulas ---


@settings(max_examples=EXAMPLES)
@given(cases(max_depth=4))
def test_formula_round_trip(case: Case) -> None:
    """``compile(f.formula)`` computes the same numbers as ``f``, for formulas and their derivatives."""
    f = symgrad.compile(case.text)
    x = [case.point[n] for n in f.variables]
    for g in (f, f.derivative(f.variables[0])) if f.variables else (f,):
        again = symgrad.compile(g.formula)
        assert set(again.variables) <= set(g.variables)
        point = dict(zip(g.variables, x, strict=True))
        try:
            want = g(*x)
        except DomainError:
            with pytest.raises(DomainError):
                again({n: point[n] for n in again.variables})
            continue
        got = again({n: point[n] for n in again.variables})
        assert got == want or (math.isnan(got) and math.isnan(want)), (g.formula, got, want)


@pytest.mark.parametrize(
    ("text", "wrt", "want"),
    [
        ("3*x**2-4*x+5", ["x"], "6*x - 4"),
        ("x**3", ["x"], "3*x**2"),
        ("x**3", ["x", "x"], "6*x"),
        ("x**4 - 2*x**2 + 1", ["x", "x"], None),
        ("2*x*y + y**2 - x", ["x"], "2*y - 1"),
        ("2*x*y + y**2 - x", ["y"], None),
        ("5*x**5", ["x", "x", "x"], None),
    ],
)
def test_printed_derivatives_of_polynomials_have_no_identity_debris(
    text: str, wrt: list[str], want: str | None
) -> None:
    formula = symgrad.diff(text, *wrt).formula
    if want is not None:
        assert formula == want
    for debris in (
        r"\*1(?![\d.])",
        r"(?<![\d.e])1\*",
        r"\+ 0(?![\d.])",
        r"(?<![\d.e])0\*",
        r"--",
        r"\+ -",
        r"- -",
        r"\*-1\b",
    ):
        assert not re.search(debris, formula), (debris, formula)
    # and it means the right thing: sympy's derivative at a few points
    f = symgrad.compile(text)
    expr, syms = _real(symgrad.oracle.to_sympy(symgrad.parse(text)), list(f.variables))
    want_expr = sympy.diff(expr, *(syms[n] for n in wrt))
    d = symgrad.compile(formula)
    for value in (-1.5, 0.25, 2.0):
        point = {n: value + 0.5 * k for k, n in enumerate(f.variables)}
        assert d({n: point[n] for n in d.variables}) == pytest.approx(exact(want_expr, point), rel=1e-13, abs=1e-13)


def test_cost_grows_slowly_with_order() -> None:
    """CSE keeps repeated differentiation in check: no doubling per order."""
    for text in ("exp(x)*sin(x)/(1 + x*x)", "tanh(x*y + sin(x))", "x**5 - 3*x**2 + 1"):
        counts = [len(symgrad.compile(text).tape)]
        for k in range(1, 5):
            counts.append(len(symgrad.diff(text, *["x"] * k).tape))
        assert counts[4] <= 12 * max(counts[1], 1) + 40, (text, counts)


def test_multi_output_tapes_share_records() -> None:
    f = symgrad.compile(["sin(x)*y", "sin(x) + y"])
    assert sum(1 for instr in f.tape.instrs if instr.op is symgrad.OPS["sin"]) == 1
    assert f(x=0.5, y=2.0) == (math.sin(0.5) * 2.0, math.sin(0.5) + 2.0)
    assert f(x=np.array([0.5, 1.0]), y=2.0)[1].tolist() == [math.sin(0.5) + 2.0, math.sin(1.0) + 2.0]
    assert "sin(x)*y=" in str(f.tape).splitlines()[0]
    with pytest.raises(symgrad.InputError, match="jacobian"):
        f.grad(x=0.5, y=2.0)


def test_gradient_function_is_one_tape_with_value_and_partials() -> None:
    f = symgrad.compile("x*y + sin(x)")
    g = f.gradient_function()
    assert g.n_outputs == 3 and g.tape.output_names == ("f", "d/dx", "d/dy")
    assert g(x=1.0, y=2.0) == (2.0 + math.sin(1.0), 2.0 + math.cos(1.0), 1.0)
    assert "f=%" in str(g.tape) and "d/dy=%" in str(g.tape)
    assert g.formulas == ("x*y + sin(x)", "y + cos(x)", "x")


# ------------------------------------------------- a new op needs no other change ---


def test_a_new_row_of_the_op_table_works_everywhere() -> None:
    """Add a temporary op (cube): parser, lowering, transforms, interpreter, code, arrays, Value, formulas."""
    cube = ops.Op(
        "cube",
        1,
        "cube",
        lambda a: a * a * a,
        lambda a: a * a * a,
        "cube({0})",
        ("3 * a * a",),
        lambda a: a**3,
        "a ** 3",
        call_names=("cube",),
    )
    ops.register(cube)
    try:
        f = symgrad.compile("cube(x) + y")
        assert f(x=2.0, y=1.0) == 9.0
        assert f.grad(x=2.0, y=1.0) == {"x": 12.0, "y": 1.0}
        assert scalar_partials(cube)[0](8.0, 2.0) == 12.0
        assert symgrad.diff("cube(x)", "x", "x")(x=2.0) == 12.0
        assert symgrad.compile(symgrad.diff("cube(x)", "x").formula)(x=2.0) == 12.0  # printed, parsed back
        value, grads = f.value_and_grad(x=np.array([1.0, 2.0]), y=0.0)
        assert value.tolist() == [1.0, 8.0] and grads["x"].tolist() == [3.0, 12.0]
        v = symgrad.Value(2.0)
        out = v.cube()  # a method generated from the table
        out.backward()
        assert (out.data, v.grad) == (8.0, 12.0)
        assert symgrad.check("cube(x)", x=1.5).ok
        big = symgrad.compile(" + ".join(f"cube(x*{k} + y)" for k in range(1, 120)))  # > 200 records: "auto"
        assert len(big.tape) >= 200  # the native backend has no emitter for cube: auto runs it as Python
        assert big.grad(x=0.5, y=0.25)["y"] == pytest.approx(sum(3 * (0.5 * k + 0.25) ** 2 for k in range(1, 120)))
    finally:
        ops.unregister("cube")
    with pytest.raises(symgrad.UnknownFunctionError):
        symgrad.parse("cube(x)")


def test_explain_shows_the_sweeps_of_a_derivative_tape() -> None:
    """The reverse sweep over d/dx's tape gives the second partials (sympy: -y sin x and cos x)."""
    d = symgrad.diff("sin(x)*y", "x")
    table = d.explain(x=0.5, y=2.0)
    assert str(table).splitlines()[0].startswith("d/dx of 'sin(x)*y'")
    adjoints = {row.source: row.adjoint for row in table.rows if row.kind == "input"}
    assert adjoints["x"] == pytest.approx(-2.0 * math.sin(0.5), rel=1e-15)
    assert adjoints["y"] == pytest.approx(math.cos(0.5), rel=1e-15)
    g = symgrad.compile("x*y").gradient_function()
    assert (
        str(g.explain(x=1.0, y=2.0, output=1))
        .splitlines()[0]
        .startswith("d/dx, output 1 of value and gradient of 'x*y'")
    )
    with pytest.raises(symgrad.InputError, match="output"):
        g.explain(x=1.0, y=2.0, output=3)


@settings(max_examples=EXAMPLES // 2)
@given(cases(max_depth=3, kink_margin=1e-3))
def test_jacobians_of_several_outputs_agree_with_sympy(case: Case) -> None:
    """Outputs f, sin(f) and f*v over the random formula f (v its first variable), both modes."""
    f = symgrad.compile(case.text)
    names = list(f.variables)
    assume(names)
    first = names[0]
    texts = [case.text, f"sin({case.text})", f"({case.text})*{first}"]
    vf = symgrad.compile(texts)
    expr, syms = _real(case.sym, names)
    exprs = [expr, sympy.sin(expr), expr * syms[first]]
    x = [case.point[n] for n in vf.variables]
    for mode in ("reverse", "forward"):
        tape = transforms.jacobian_tape(vf.tape, mode=mode)
        try:
            values = interpreter.evaluate(tape, x)
        except DomainError:
            assume(False)
            return
        for k, e in enumerate(exprs):
            for j, name in enumerate(vf.variables):
                want = _exact_or_nan(sympy.diff(e, syms[name]), case.point)
                if math.isfinite(want):
                    got = values[k * len(vf.variables) + j]
                    single = symgrad.compile(texts[k])  # the terms one derivative combines set the tolerance
                    scale = 0.0
                    if name in single.variables:
                        d = single.derivative(name)
                        scale = magnitudes(d.tape, [case.point[n] for n in d.variables])[0]
                    assert agrees(got, want, scale), (mode, texts[k], name, got, want)


def test_a_traced_value_function_has_a_hessian() -> None:
    """trace() gives a Function, so Value users get Hessians too: x*x*y -> [[2y, 2x], [2x, 0]]."""
    a, b = symgrad.Value(1.5, label="x"), symgrad.Value(-2.0, label="y")
    traced = symgrad.trace(lambda ps: ps[0] * ps[0] * ps[1], [a, b])
    h = traced.hessian(x=1.5, y=-2.0)
    assert h == {"x": {"x": -4.0, "y": 3.0}, "y": {"x": 3.0, "y": 0.0}}
    assert traced.derivative("x", "y")(x=0.5, y=7.0) == 1.0
