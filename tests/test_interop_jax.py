"""symgrad.jax: a formula as a JAX function, checked against JAX's own derivatives of a jax.numpy twin.

Every test runs in float64 (``jax_enable_x64``, restored afterwards) except the float32 one.  The
twins' derivatives are computed under ``jax.jit``: eager JAX compiles every primitive it meets,
which costs seconds for a Hessian on a loaded machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="symgrad.jax needs JAX: pip install -e '.[dev]'")

import jax.numpy as jnp  # noqa: E402

import symgrad  # noqa: E402
import symgrad.jax  # noqa: E402
from symgrad.errors import InputError, MissingVariableError  # noqa: E402

FORMULAS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    ("x*sin(y) + exp(x*y)/(1 + y**2)", lambda x, y: x * jnp.sin(y) + jnp.exp(x * y) / (1 + y**2)),
    ("log(1 + x**2) * cos(y) - sqrt(y + 2)", lambda x, y: jnp.log(1 + x**2) * jnp.cos(y) - jnp.sqrt(y + 2)),
    (
        "tanh(x - y) * sigmoid(x*y) + atan2(y, x + 3)",
        lambda x, y: jnp.tanh(x - y) * jax.nn.sigmoid(x * y) + jnp.arctan2(y, x + 3),
    ),
    ("(x + 2)**y / (1 + abs(y))", lambda x, y: (x + 2) ** y / (1 + jnp.abs(y))),
]
IDS = [source for source, _ in FORMULAS]


@pytest.fixture(autouse=True)
def x64() -> Iterator[None]:
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def _points() -> tuple[Any, Any]:
    """x of shape (3, 1) and y of shape (4,): the result broadcasts to (3, 4); values in every formula's domain."""
    rng = np.random.default_rng(7)
    return jnp.asarray(rng.uniform(-0.8, 0.8, (3, 1))), jnp.asarray(rng.uniform(0.1, 1.5, 4))


def _close(got: Any, want: Any, tol: float = 1e-12) -> None:
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _loss(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    weights = jnp.linspace(-1.0, 2.0, 12).reshape(3, 4)
    return lambda x, y: jnp.sum(weights * fn(x, y))


@pytest.mark.parametrize(("source", "twin"), FORMULAS, ids=IDS)
def test_values_and_grad_match_jax_grad_of_the_twin(source: str, twin: Callable[[Any, Any], Any]) -> None:
    g = symgrad.jax.function(source)
    x, y = _points()
    _close(g(x, y), jax.jit(twin)(x, y))
    want = jax.jit(jax.grad(_loss(twin), (0, 1)))(x, y)
    _close(jax.grad(_loss(g), (0, 1))(x, y), want)  # eager; summed to each input's shape


@pytest.mark.parametrize(("source", "twin"), FORMULAS, ids=IDS)
def test_under_jit(source: str, twin: Callable[[Any, Any], Any]) -> None:
    g = symgrad.jax.function(source)
    x, y = _points()
    _close(jax.jit(g)(x, y), jax.jit(twin)(x, y))
    _close(jax.jit(jax.grad(_loss(g), (0, 1)))(x, y), jax.jit(jax.grad(_loss(twin), (0, 1)))(x, y))


@pytest.mark.parametrize(("source", "twin"), FORMULAS, ids=IDS)
def test_second_derivatives_match_jax_hessian(source: str, twin: Callable[[Any, Any], Any]) -> None:
    g = symgrad.jax.function(source)
    hessian = lambda fn: jax.jit(jax.hessian(fn, (0, 1)))  # noqa: E731
    _close(hessian(g)(0.3, 0.7), hessian(twin)(0.3, 0.7), 1e-11)
    x, y = _points()
    hvp = lambda fn: jax.jit(jax.grad(lambda x, y: jnp.vdot(jax.grad(_loss(fn), 0)(x, y), jnp.cos(x)), (0, 1)))  # noqa: E731
    _close(hvp(g)(x, y), hvp(twin)(x, y), 1e-11)


def test_vmap_with_and_without_jit() -> None:
    source, twin = FORMULAS[0]
    g = symgrad.jax.function(source)
    xs, y = jnp.linspace(-0.5, 0.5, 5), jnp.linspace(0.1, 0.9, 4)
    by_x = lambda fn: jax.vmap(fn, in_axes=(0, None))  # noqa: E731  (a scalar x per batch element, y a vector)
    _close(by_x(g)(xs, y), jax.jit(by_x(twin))(xs, y))
    ys = jnp.linspace(1.0, 2.0, 5)
    per_example = lambda fn: jax.jit(jax.vmap(jax.grad(fn, (0, 1))))  # noqa: E731
    _close(per_example(g)(xs, ys), per_example(twin)(xs, ys))
    hessians = lambda fn: jax.jit(jax.vmap(jax.hessian(fn)))  # noqa: E731
    _close(hessians(g)(xs, ys), hessians(twin)(xs, ys), 1e-11)


def test_forward_mode_jvp_and_jacfwd() -> None:
    source, twin = FORMULAS[1]
    g = symgrad.jax.function(source)
    x, y = _points()
    tangents = (jnp.cos(x), jnp.sin(y))
    _close(jax.jvp(g, (x, y), tangents), jax.jit(lambda *p: jax.jvp(twin, p, tangents))(x, y))
    jacobian = lambda fn: jax.jit(jax.jacfwd(fn, (0, 1)))  # noqa: E731
    _close(jacobian(g)(x[:, 0], y[:3]), jacobian(twin)(x[:, 0], y[:3]))


def test_third_derivative_against_the_closed_form() -> None:
    g = symgrad.jax.function("sin(x)*y**2")
    d3 = jax.jit(jax.grad(jax.grad(jax.grad(g))))
    for x in (0.2, 1.1):
        np.testing.assert_allclose(float(d3(x, 1.5)), -np.cos(x) * 1.5**2, rtol=1e-14)


def test_several_formulas_give_a_tuple() -> None:
    g = symgrad.jax.function(["x*y", "sin(x) + y**3"])
    x, y = _points()

    def both(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return lambda x, y: jnp.sum(fn(x, y)[0] * 2 + fn(x, y)[1])

    def twin(x: Any, y: Any) -> tuple[Any, Any]:
        return x * y, jnp.sin(x) + y**3

    _close(g(x, y), jax.jit(twin)(x, y))
    _close(jax.jit(jax.grad(both(g), (0, 1)))(x, y), jax.jit(jax.grad(both(twin), (0, 1)))(x, y))


def test_the_first_derivative_is_one_callback() -> None:
    """jax.grad of a one-output formula evaluates the gradient tape once (value and partials together)."""
    g = symgrad.jax.function("x*sin(y)")
    calls: list[int] = []
    original = symgrad.jax.evaluate

    def counting(fn: symgrad.Function, point: Any) -> Any:
        calls.append(fn.n_outputs)
        return original(fn, point)

    symgrad.jax.evaluate = counting  # type: ignore[assignment]
    try:
        grads = jax.grad(g, (0, 1))(2.0, 0.5)
    finally:
        symgrad.jax.evaluate = original  # type: ignore[assignment]
    assert calls == [3]  # the value and two partials
    np.testing.assert_allclose([float(v) for v in grads], [np.sin(0.5), 2 * np.cos(0.5)], rtol=1e-15)


def test_float32_without_x64_is_computed_in_float64_and_rounded_once() -> None:
    jax.config.update("jax_enable_x64", False)
    g = symgrad.jax.function("x*sin(y) + exp(x*y)/(1 + y**2)")
    x, y = np.float32([0.3, -0.7]), np.float32(1.25)
    out = g(x, y)
    assert out.dtype == jnp.float32
    x64, y64 = x.astype(np.float64), np.float64(y)
    exact = x64 * np.sin(y64) + np.exp(x64 * y64) / (1 + y64**2)
    np.testing.assert_array_equal(np.asarray(out), exact.astype(np.float32))
    gx = jax.grad(lambda x: jnp.sum(g(x, y)))(x)
    assert gx.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(gx), np.sin(y64) + y64 * np.exp(x64 * y64) / (1 + y64**2), rtol=1e-6)


def test_arguments_by_name_and_numbers() -> None:
    g = symgrad.jax.function("a*x + b")
    out = g(x=jnp.arange(3.0), b=jnp.arange(3), a=2)
    np.testing.assert_array_equal(np.asarray(out), [0.0, 3.0, 6.0])
    assert out.dtype == jnp.float64
    assert jax.grad(lambda a: jnp.sum(g(a, jnp.arange(3.0), 1.0)))(2.0) == 3.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (jnp.ones(2, dtype=jnp.complex64), "real numbers, got dtype complex64"),
        (jnp.ones(2, dtype=bool), "real numbers, got dtype bool"),
        ("2.0", "an array or a real number, got str"),
        (True, "an array or a real number, got bool"),
    ],
    ids=["complex", "bool", "str", "bool-number"],
)
def test_arguments_that_are_not_real_are_input_errors(value: object, message: str) -> None:
    g = symgrad.jax.function("x*y")
    with pytest.raises(InputError, match="value for 'x'") as caught:
        g(value, jnp.ones(2))
    assert message in str(caught.value)


def test_binding_errors_name_the_variables() -> None:
    g = symgrad.jax.function("x*y")
    with pytest.raises(MissingVariableError, match="no value given for 'y'"):
        g(jnp.ones(2))
    with pytest.raises(InputError, match=r"'x' of shape \(2,\), 'y' of shape \(3,\)"):
        g(jnp.ones(2), jnp.ones(3))
    with pytest.raises(InputError, match=r"'x' of shape \(2,\), 'y' of shape \(3,\)"):
        jax.jit(g)(jnp.ones(2), jnp.ones(3))  # at trace time, before any callback


def test_a_function_and_a_formula_string_are_the_same_operation() -> None:
    f = symgrad.compile("x**2*y")
    x, y = _points()
    _close(symgrad.jax.function(f)(x, y), symgrad.jax.function("x**2*y")(x, y), 0.0)
    assert symgrad.jax.function(f).function is f


def test_the_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(symgrad.jax, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
