"""One suite, every registered executor (``symgrad.backends.registry.EXECUTORS``).

A new executor is added to the registry and inherits these tests.  Scalar
entries must return the reference interpreter's numbers bit for bit (values,
partials, signed zeros, several outputs) and its errors (the same
``DomainError`` text), on small and big tapes.  Array entries must return the
numpy program's results (the array path's reference semantics) to a few ulp,
in numpy's shapes, under broadcasting and with summed partials.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from floats import bits, outcome
from hypothesis import given, settings
from strategies import Case, cases

import symgrad
from symgrad import DomainError, InputError, transforms
from symgrad.backends import interpreter
from symgrad.backends.protocol import Executor
from symgrad.backends.registry import EXECUTORS
from symgrad.tape import Tape


def _scalar_executors() -> list[Any]:
    params = []
    for name, executor in EXECUTORS.items():
        if executor.scalar_cost(1) is None:
            continue
        usable = executor.supports(symgrad.compile("x + 1").tape)
        params.append(pytest.param(executor, id=name, marks=[] if usable else pytest.mark.skip(f"{name}: not here")))
    return params


def _array_executors() -> list[Any]:
    params = []
    for name, executor in EXECUTORS.items():
        if executor.array_cost(1, 1) is None:
            continue
        usable = executor.supports(symgrad.compile("x + 1").tape)
        params.append(pytest.param(executor, id=name, marks=[] if usable else pytest.mark.skip(f"{name}: not here")))
    return params


SCALAR = _scalar_executors()
ARRAYS = _array_executors()


def _vg(executor: Executor, tape: Tape) -> Any:
    gradient = transforms.grad_tape(tape)

    def slow(*point: float) -> tuple[float, list[float]]:
        return interpreter.value_and_grad(tape, point)

    return executor.scalar_entry(gradient, slow, "value_and_grad"), gradient


def test_the_registry_lists_every_executor_module() -> None:
    assert set(EXECUTORS) == {"interpreter", "python", "numpy", "native"}
    for name, executor in EXECUTORS.items():
        assert executor.name == name
        assert executor.scalar_cost(10) is not None or executor.array_cost(10, 10) is not None, name


# ----------------------------------------------------------- scalar entries ---
@pytest.mark.parametrize("executor", SCALAR)
@settings(max_examples=60, deadline=None)
@given(cases(max_depth=3))
def test_values_and_partials_are_the_interpreters_bit_for_bit(executor: Executor, case: Case) -> None:
    f = symgrad.compile(case.text)
    point = [case.point[name] for name in f.variables]
    fn, gradient = _vg(executor, f.tape)
    want = interpreter.evaluate(gradient, point)
    reference = ("ok", [bits(v) for v in want])
    got = outcome(fn, *point)
    if got[0] == "error":  # the gradient tape's reference flagged it too: the classic sweeps decide
        assert outcome(lambda *p: interpreter.value_and_grad(f.tape, p), *point) == got
    else:
        assert got == reference


@pytest.mark.parametrize("executor", SCALAR)
def test_domain_errors_are_the_interpreters(executor: Executor) -> None:
    f = symgrad.compile("log(x) * y + sqrt(y - x)")
    fn, _ = _vg(executor, f.tape)
    reference = lambda *p: interpreter.value_and_grad(f.tape, p)  # noqa: E731
    for point in ([-1.0, 2.0], [3.0, 1.0], [0.0, 1.0]):
        want = outcome(reference, *point)
        assert want[:2] == ("error", "DomainError")
        assert outcome(fn, *point) == want, point


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("point", [("a", "b"), (None, 1.0), ([1.0, 2.0], 1.0), (1.0, {}), ("1", 2.0)])
def test_arguments_that_are_not_numbers_are_an_input_error_naming_them(
    executor: Executor, point: tuple[Any, ...]
) -> None:
    fn, _ = _vg(executor, symgrad.compile("x + y * sin(x)").tape)
    with pytest.raises(InputError, match=r"takes one real number per variable.*got \w+ "):
        fn(*point)


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("point", [(), (1.0,), (1.0, 2.0, 3.0)])
def test_a_wrong_number_of_arguments_is_an_error_never_a_result(executor: Executor, point: tuple[float, ...]) -> None:
    """(Generated Python raises Python's own TypeError here: checking the count would cost every call.)"""
    fn, _ = _vg(executor, symgrad.compile("x + y * sin(x)").tape)
    with pytest.raises(InputError if executor.name != "python" else TypeError, match=r"2 real numbers|positional"):
        fn(*point)


@pytest.mark.parametrize("executor", SCALAR)
def test_overflow_is_a_domain_error_naming_the_op(executor: Executor) -> None:
    f = symgrad.compile("exp(x) * y")
    fn, _ = _vg(executor, f.tape)
    with pytest.raises(DomainError, match="exp"):
        fn(800.0, 2.0)


@pytest.mark.parametrize("executor", SCALAR)
def test_signed_zeros_and_several_outputs(executor: Executor) -> None:
    tape = symgrad.compile(["x * y", "-x * y", "atan2(y, x)", "min(x, y) * 0.0"]).tape
    fn = executor.scalar_entry(tape, lambda *p: tuple(interpreter.evaluate(tape, p)), "tuple")
    for point in ([0.0, -1.0], [-0.0, 1.0], [1e100, -1e100], [-2.0, 0.0]):
        assert [bits(v) for v in fn(*point)] == [bits(v) for v in interpreter.evaluate(tape, point)], point


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("returns", ["value", "tuple", "value_and_grad"])
def test_each_return_convention(executor: Executor, returns: Any) -> None:
    tape = transforms.grad_tape(symgrad.compile("x * sin(y)").tape)
    ref = interpreter.evaluate(tape, [0.5, 2.0])
    want = {"value": ref[0], "tuple": tuple(ref), "value_and_grad": (ref[0], ref[1:])}[returns]
    fn = executor.scalar_entry(tape, lambda *p: want, returns)
    assert fn(0.5, 2.0) == want


@pytest.mark.parametrize("executor", SCALAR)
def test_big_tapes(executor: Executor) -> None:
    """A sum of 5,000 terms and a function of 2,000 variables: no nesting or chaining grows with size."""
    terms = symgrad.compile(" + ".join(f"sin(x*{k} + y)" for k in range(1, 5001)))
    fn, _ = _vg(executor, terms.tape)
    value, (dx, dy) = fn(0.001, 0.5)
    k = np.arange(1, 5001)
    assert math.isclose(value, float(np.sum(np.sin(0.001 * k + 0.5))), rel_tol=1e-10)
    assert math.isclose(dx, float(np.sum(k * np.cos(0.001 * k + 0.5))), rel_tol=1e-10)
    assert math.isclose(dy, float(np.sum(np.cos(0.001 * k + 0.5))), rel_tol=1e-10)
    wide = symgrad.compile(" + ".join(f"x{i}*x{i}" for i in range(2000)))
    fn, _ = _vg(executor, wide.tape)
    point = [0.001 * i for i in range(2000)]
    value, grads = fn(*point)
    assert grads == [2.0 * v for v in point]


# ------------------------------------------------------------ array entries ---
def _numpy_reference(tape: Tape, shapes: list[tuple[int, ...]], reduce_to: list[int | None]) -> Any:
    return EXECUTORS["numpy"].array_entry(tape, shapes, reduce_to, None)


@pytest.mark.parametrize("executor", ARRAYS)
@pytest.mark.parametrize(
    ("source", "shapes"),
    [
        ("sin(x)*cos(y) + log(1 + x*x)", [(1000,), (1000,)]),
        ("exp(-k*t)*cos(w*t)", [(1,), (300, 1), ()]),
        ("atan2(y, x) + sqrt(x*x + y*y)", [(20, 50), (50,)]),
        ("tanh(a*b) + a**2.5 + sigmoid(b)", [(999,), ()]),
    ],
)
def test_arrays_follow_the_numpy_program(executor: Executor, source: str, shapes: list[tuple[int, ...]]) -> None:
    f = symgrad.compile(source)
    rng = np.random.default_rng(0)
    tape = transforms.grad_tape(f.tape)
    reduce_to: list[int | None] = [None, *range(len(f.variables))]
    point = [rng.uniform(0.2, 1.5, shape) if shape else np.float64(rng.uniform(0.2, 1.5)) for shape in shapes]
    want = _numpy_reference(tape, shapes, reduce_to)(*point)
    fn = executor.array_entry(tape, shapes, reduce_to, _numpy_reference(tape, shapes, reduce_to))
    assert fn is not None
    got = fn(*point)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(w), initial=1.0)))


@pytest.mark.parametrize("executor", ARRAYS)
def test_arrays_out_of_the_domain_give_numpys_values(executor: Executor) -> None:
    tape = transforms.grad_tape(symgrad.compile("sqrt(x) + log(x)").tape)
    x = np.array([4.0, 0.0, -1.0, 2.0])
    with np.errstate(all="ignore"):
        want = _numpy_reference(tape, [(4,)], [None, 0])(x)
        fn = executor.array_entry(tape, [(4,)], [None, 0], _numpy_reference(tape, [(4,)], [None, 0]))
        assert fn is not None
        got = fn(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(np.nan_to_num(g), np.nan_to_num(w), rtol=1e-12)
