"""Generated code and the numpy path against the reference interpreter.

The interpreter (:mod:`symgrad.backends.interpreter`) is the oracle here: every fast path
must give the same values, the same partials and the same domain errors.
Values agree exactly (the generated lines are the same float operations in the
same order); partials come from the simplified gradient tape, whose sums may be
grouped differently from the classic reverse sweep, so they agree to within
rounding; array results agree elementwise with the scalar path up to rounding
(numpy's ``exp``/``pow`` may differ from ``math`` by an ulp).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from floats import bits, same
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import symgrad
from symgrad.backends import interpreter
from symgrad.backends import python as codegen
from symgrad.function import MAX_SHAPES, Function
from symgrad.lower import lower
from symgrad.ops import OPS, Op
from symgrad.parser import parse
from symgrad.transforms import grad_tape


def close(a: float, b: float) -> bool:
    """Equal to within rounding (the derivative tape groups sums its own way)."""
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)


def outcome(fn: Any, *args: Any) -> Any:
    """The result, or the DomainError's message (both paths must agree on either)."""
    try:
        return fn(*args)
    except symgrad.DomainError as e:
        return ("DomainError", str(e))


def assert_agree(text: str, point: list[float], optimize: bool = True) -> None:
    tape = lower(parse(text), text, optimize=optimize)
    f = Function(tape, text)
    ref_vg = outcome(interpreter.value_and_grad, tape, point)
    gen_vg = outcome(f.vg, *point)
    ref_f = outcome(lambda p: interpreter.forward(tape, p)[tape.output], point)
    gen_f = outcome(f, *point)
    if isinstance(ref_f, tuple):
        assert gen_f == ref_f, (text, point)
    else:
        assert same(gen_f, ref_f), (text, point, gen_f, ref_f)
    if isinstance(ref_vg[0], str) and "the derivative of" in ref_vg[1] and not isinstance(gen_vg[0], str):
        # The classic sweep evaluates a local partial before multiplying it by the adjoint's factor;
        # the gradient tape never emits a term whose factor is a structural zero.  So at sqrt(0*x),
        # x = 0, the sweep meets sqrt'(0) and raises, while the tape gives the true derivative 0 of
        # this constant function.  Its reference is then the interpreter on the gradient tape.
        value, *grads = interpreter.evaluate(grad_tape(tape), point)
        assert gen_vg == (value, grads), (text, point)
        return
    if isinstance(ref_vg[0], str):
        assert gen_vg == ref_vg, (text, point)
        return
    assert not isinstance(gen_vg[0], str), (text, point, gen_vg)
    assert same(gen_vg[0], ref_vg[0]), (text, point)
    assert len(gen_vg[1]) == len(ref_vg[1])
    for g, r in zip(gen_vg[1], ref_vg[1], strict=True):
        assert close(g, r), (text, point, gen_vg, ref_vg)


def call_text(op: Op, args: tuple[str, ...]) -> str:
    if op.name == "neg":
        return f"-({args[0]})"
    if op.infix:
        return f"({args[0]}) {op.symbol} ({args[1]})"
    return f"{op.call_names[0]}({', '.join(args)})"


EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -2.5, 1e-200, 1e200, 710.0, -745.5)


@pytest.mark.parametrize("op", list(OPS.values()), ids=lambda op: op.name)
def test_every_op_at_domain_points_and_edges(op: Op) -> None:
    rng = np.random.default_rng(len(op.name))
    names = ("x", "y")[: op.arity]
    text = call_text(op, names)
    points = [[float(rng.uniform(lo, hi)) for lo, hi in op.domain] for _ in range(5)]
    points += [[e] * op.arity for e in EDGES]
    if op.arity == 2:
        points += [[a, b] for a in EDGES[:6] for b in EDGES[:6]]
    for p in points:
        assert_agree(text, p)
        assert_agree(f"2.5 * {text} + sin(x)", p)  # not the output record: adjoint is not the seed


@pytest.mark.parametrize(
    ("text", "point"),
    [
        # a dead relu branch hides sqrt'(0) = inf: the interpreter skips it, so must we
        ("relu(y) * sqrt(x)", [0.0, -1.0]),
        ("relu(y) * log(x) + y", [0.0, -1.0]),
        # 0 * inf behind a zero adjoint: x/y has a finite value but an infinite partial
        ("0 * (x/y)", [1.0, 1e-200]),
        ("max(x, y) + 0*sqrt(x)", [0.0, 1.0]),
        ("x*x", [3.0]),
        ("x*x*x - x", [-0.0]),
        ("a*b + b", [2.0, 3.0]),
        ("x * -0.0 + y", [2.0, 1.0]),
        ("x - x", [1e308]),
        ("x*x*1e300", [1e10]),  # overflow to inf in the forward sweep
        ("exp(x) + 1", [1000.0]),  # overflow raises
        ("sqrt(x)", [0.0]),  # derivative undefined
        ("2 + 3", []),
        ("x", [4.0]),
        ("pi", []),
    ],
)
def test_tricky_expressions(text: str, point: list[float]) -> None:
    assert_agree(text, point)
    assert_agree(text, point, optimize=False)


def _expressions() -> st.SearchStrategy[str]:
    unary = [op for op in OPS.values() if op.arity == 1]
    binary = [op for op in OPS.values() if op.arity == 2]
    leaves = st.sampled_from(["x", "y", "z", "0.5", "2", "0", "-1.5"])

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.builds(lambda op, a: call_text(op, (a,)), st.sampled_from(unary), children),
            st.builds(lambda op, a, b: call_text(op, (a, b)), st.sampled_from(binary), children, children),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_expressions(), st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3))
def test_random_expressions_agree(text: str, xyz: list[float]) -> None:
    try:
        tape = lower(parse(text), text)
    except symgrad.DomainError:
        assume(False)  # constant folding already reports it (log(0)): nothing to run
    point = [dict(zip("xyz", xyz, strict=True))[name] for name in tape.inputs]
    assert_agree(text, point)


# ------------------------------------------------------------------ source --


def test_source_is_built_from_slots_not_user_text() -> None:
    f = symgrad.compile("evil_name * sin(other) + 1")
    code = f.code
    assert "evil_name" not in code and "other" not in code
    assert "def generated(v0, v1):" in code


def test_non_finite_constants_are_passed_by_name() -> None:
    mul, add = OPS["mul"], OPS["add"]
    tape = symgrad.Tape(("x",), (math.inf, -0.0), (symgrad.Instr(mul, (0, 1)), symgrad.Instr(add, (3, 2))), (4,))
    code = codegen.source(tape)
    assert "inf" not in code and "-0.0" not in code and "k1" in code and "k2" in code
    f = Function(tape)
    assert f(2.0) == math.inf and f(-1.0) == -math.inf
    assert math.isnan(f(0.0))  # 0 * inf: nan from a non-finite argument is passed on, not an error of this op


def test_folding_an_overflow_is_a_domain_error_with_the_caret() -> None:
    with pytest.raises(symgrad.DomainError, match="overflows") as info:
        symgrad.compile("x * (1e300*1e300)")
    assert info.value.column == 5


def test_a_partial_times_a_structural_zero_is_never_evaluated() -> None:
    """d/dx sqrt(0*x) at 0: the function is constant, so 0; the classic sweep meets sqrt'(0) and raises."""
    f = symgrad.compile("sqrt(x*0)")
    assert f.value_and_grad(x=0.0) == (0.0, 0.0) and f.vg(0.0) == (0.0, [0.0])
    assert interpreter.evaluate(grad_tape(f.tape), [0.0]) == [0.0, 0.0]
    with pytest.raises(symgrad.DomainError, match=r"derivative of sqrt\(0.0\)"):
        interpreter.value_and_grad(f.tape, [0.0])
    assert_agree("sqrt(x*0)", [0.0])  # the executors agree with that reference


def test_vg_entry_point() -> None:
    f = symgrad.compile("a*b + c")
    assert f.vg(2.0, -3.0, 10.0) == (4.0, [-3.0, 2.0, 1.0])
    with pytest.raises(symgrad.DomainError, match=r"log\(-1.0\)"):
        symgrad.compile("log(x)").vg(-1.0)


def test_domain_error_from_generated_code_has_the_caret() -> None:
    f = symgrad.compile("1 + log(x)")
    with pytest.raises(symgrad.DomainError) as info:
        f.value_and_grad(x=-1.0)
    assert info.value.excerpt.endswith("    ^^^^^^")
    assert info.value.column == 5


def test_hundred_thousand_records() -> None:
    terms = [f"sin(x{i % 20} * {i + 1}.5) * x{(i * 7) % 20}" for i in range(26_000)]
    text = " + ".join(terms)
    f = symgrad.compile(text)
    assert len(f.tape) >= 100_000
    point = [0.01 * (i + 1) for i in range(20)]
    value, grads = f.vg(*point)
    ref_value, ref_grads = interpreter.value_and_grad(f.tape, point)
    assert value == ref_value and grads == ref_grads
    assert f(*point) == ref_value


# ------------------------------------------------------------------ arrays --

ARRAY_CASES = [
    "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)",
    "x*y + sin(x)*cos(y) - tanh(x*y)",
    "sigmoid(x) * relu(y) + abs(x - y) + max(x, y) - min(x, 2*y)",
    "atan2(x, y) + asin(x/4) + acos(y/4) + atan(x*y)",
    "x ** 2.5 + y ** 3 + 2 ** x",
    "x*x - x/y + -x + sinh(x) + cosh(y) + log(y*y + 1) + sqrt(y*y + 1) + tan(x/3)",
]


@pytest.mark.parametrize("text", ARRAY_CASES)
def test_array_path_equals_scalar_path_elementwise(text: str) -> None:
    f = symgrad.compile(text)
    rng = np.random.default_rng(3)
    n = 17
    columns = {name: rng.uniform(0.3, 2.5, n) for name in f.variables}
    value, grads = f.value_and_grad(**columns)
    assert value.shape == (n,)
    for k in range(n):
        point = {name: float(col[k]) for name, col in columns.items()}
        v, g = f.value_and_grad(**point)
        assert value[k] == pytest.approx(v, rel=1e-12)
        g = g if isinstance(g, dict) else {f.variables[0]: g}
        for name in f.variables:
            assert grads[name][k] == pytest.approx(g[name], rel=1e-11, abs=1e-14), (name, k)
    forward = f(**columns)
    np.testing.assert_allclose(forward, value, rtol=1e-15)


@settings(max_examples=150, deadline=None)
@given(_expressions(), st.lists(st.floats(0.3, 2.5), min_size=2, max_size=2))
def test_partials_of_scalar_inputs_are_sums_of_the_pointwise_partials(text: str, yz: list[float]) -> None:
    """x is an array of points, y and z are scalars: their partials are sums over the points (the array
    path takes those sums early, through linear records, and keeps their buffers alive for it)."""
    try:
        f = symgrad.compile(text)
    except symgrad.DomainError:
        assume(False)
    xs = np.linspace(0.4, 2.2, 7)
    fixed = dict(zip("yz", yz, strict=True))
    point = {name: xs if name == "x" else fixed[name] for name in f.variables}
    pointwise = []
    for x in xs:
        try:
            pointwise.append(
                f.value_and_grad({**point, **({"x": float(x)} if "x" in point else {})}, wrt=list(f.variables))
            )
        except symgrad.DomainError:
            assume(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, grads = f.value_and_grad(point, wrt=list(f.variables))
    for name in f.variables:
        if name == "x" or "x" not in f.variables:
            continue
        terms = [g[name] for _, g in pointwise]
        want = math.fsum(terms)
        scale = math.fsum(abs(t) for t in terms) + 1e-300
        assert abs(grads[name] - want) <= 1e-9 * scale, (text, name, grads[name], want)


@pytest.mark.parametrize(
    "text",
    ["(y - a*exp(-b*t) - c)**2", "exp(-((t-a)/b)**2/2)/(sqrt(2*pi)*b) - c*t", "(a*t + b - y)*(a*t - c) + sin(a - t*b)"],
)
def test_summed_partials_match_the_pointwise_sum_on_fitting_losses(text: str) -> None:
    """Losses over data (t, y arrays) with scalar parameters: the partials are sums over the points."""
    f = symgrad.compile(text)
    t = np.linspace(0.1, 3.0, 40)
    data = {"t": t, "y": 2.0 * np.exp(-0.5 * t) + 0.3}
    params = {"a": 1.3, "b": 0.7, "c": 0.2}
    point = {name: data.get(name, params.get(name)) for name in f.variables}
    _, grads = f.value_and_grad(point)
    for name in params:
        if name not in f.variables:
            continue
        terms = [
            f.grad({n: (float(v[k]) if isinstance(v, np.ndarray) else v) for n, v in point.items()}, wrt=name)
            for k in range(len(t))
        ]
        assert grads[name] == pytest.approx(math.fsum(terms), rel=1e-12, abs=1e-12), name


def test_broadcasting_sums_adjoints_back_to_input_shapes() -> None:
    f = symgrad.compile("x*y + sin(x)*z + y")
    x = np.linspace(-1.0, 1.0, 3).reshape(3, 1)
    y = np.linspace(0.5, 2.0, 4)
    z = 0.7
    value, grads = f.value_and_grad(x=x, y=y, z=z)
    assert value.shape == (3, 4)
    assert grads["x"].shape == (3, 1) and grads["y"].shape == (4,) and np.shape(grads["z"]) == ()
    # ∂/∂x = y + cos(x) z, summed over the 4 columns; ∂/∂y = x + 1 summed over rows; ∂/∂z = sin(x), over all 12
    np.testing.assert_allclose(grads["x"], (y + np.cos(x) * z).sum(axis=1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(grads["y"], (x + 1.0).sum(axis=0) * np.ones(4), rtol=1e-13)
    assert grads["z"] == pytest.approx(4 * np.sin(x).sum(), rel=1e-13)


def test_scalar_inputs_broadcast_through_scalar_records() -> None:
    # mu*s is a scalar record; its adjoint gathers one term per element of x
    f = symgrad.compile("x + mu*s")
    x = np.arange(5.0)
    value, grads = f.value_and_grad(x=x, mu=2.0, s=3.0)
    np.testing.assert_array_equal(value, x + 6.0)
    np.testing.assert_array_equal(grads["x"], np.ones(5))
    assert grads["mu"] == 15.0 and grads["s"] == 10.0


def test_array_results_are_fresh() -> None:
    f = symgrad.compile("x*y")
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    value, grads = f.value_and_grad(x=x, y=y)
    assert grads["x"] is not y and grads["y"] is not x
    grads["x"][0] = 99.0
    assert y[0] == 3.0
    g = symgrad.compile("x + 0*y")
    value, grads = g.value_and_grad(x=x, y=y)
    assert value is not x


def test_array_domain_errors_follow_numpy() -> None:
    f = symgrad.compile("log(x) + 1/y")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, _ = f.value_and_grad(x=np.array([-1.0, 1.0]), y=np.array([1.0, 0.0]))
    assert math.isnan(value[0]) and math.isinf(value[1])
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)
    # a float-only part of the tape also follows numpy instead of raising
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isinf(f(x=np.array([1.0]), y=0.0)[0])


def test_array_inputs_are_checked() -> None:
    f = symgrad.compile("x*2")
    with pytest.raises(symgrad.InputError, match="'x'"):
        f(x=np.array(["a"]))
    with pytest.raises(symgrad.InputError, match="'x'"):
        f(x=np.array([True]))


# ------------------------------------------------------------- lowering ----


@pytest.mark.parametrize(
    "text",
    [
        "x*1",
        "1*x",
        "x+0",
        "0+x",
        "x+(-0.0)",
        "x-0",
        "x-(-0.0)",
        "x/1",
        "x**1",
        "x**0",
        "--x",
        "x**2",
        "min(x, y) + min(y, x)",
        "min(x, y)*0 + atan2(min(y, x), -1)",
        "max(x, y)*0 + atan2(max(y, x), -1)",
        "x*y - y*x",
        "atan2(x + 0, -1)",
    ],
)
@pytest.mark.parametrize("x", [0.0, -0.0, 1.5, -2.0, math.inf, -math.inf, math.nan, 1e-310])
def test_lowering_identities_are_exact(text: str, x: float) -> None:
    # the optimised tape gives the very same floats as one record per operator (signed zeros, nan)
    optimised, plain = lower(parse(text), text), lower(parse(text), text, optimize=False)
    point = {"x": x, "y": 1.0 if x != x else -0.0}
    va = interpreter.forward(optimised, [point[n] for n in optimised.inputs])[optimised.output]
    vb = interpreter.forward(plain, [point[n] for n in plain.inputs])[plain.output]
    assert bits(va) == bits(vb), (text, x, va, vb)


def test_array_programs_per_shape_are_bounded() -> None:
    f = Function(lower(parse("x*y + 1"), "x*y + 1"), "x*y + 1")
    for n in range(1, 3 * MAX_SHAPES):
        value, grads = f.value_and_grad(x=np.ones(n), y=2.0)
        assert value.shape == (n,) and grads["y"] == n
    assert len(f._arrays) <= MAX_SHAPES


def test_array_calls_from_threads_do_not_share_scratch_buffers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    # The numpy program throughout: under auto the fused kernel (a few ulp apart) may take over mid-test.
    f = symgrad.compile("exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)", backend="python")
    xs = [np.linspace(-3.0, 3.0, 20_000) + k for k in range(8)]
    expected = [f.value_and_grad(x=x, mu=0.1, s=1.3) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: f.value_and_grad(x=x, mu=0.1, s=1.3), xs * 3))
    for k, (value, grads) in enumerate(got):
        ref_value, ref_grads = expected[k % 8]
        np.testing.assert_array_equal(value, ref_value)
        np.testing.assert_array_equal(grads["x"], ref_grads["x"])
        assert grads["s"] == ref_grads["s"]
