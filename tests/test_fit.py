"""symgrad.fit: scipy.optimize.minimize(jac=True) over parameters by name.

Oracles: data generated from known parameters (the minimum is known), central
differences of the objective for its gradient, and scipy's own report.
tests/test_distributed.py fits dask data on a cluster.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import dask.array as da
import numpy as np
import pytest

import symgrad
from symgrad import FitResult, Function, InputError, MissingDependencyError, UnknownVariableError
from symgrad.batch import BatchGradient
from symgrad.fit import _Objective

DECAY = "(y - a*exp(-b*t) - c)**2"
TRUE = {"a": 3.0, "b": 0.7, "c": 0.5}
START = {"a": 1.0, "b": 0.1, "c": 0.0}
T = np.linspace(0.0, 6.0, 400)
Y = TRUE["a"] * np.exp(-TRUE["b"] * T) + TRUE["c"]


class Counting(Function):
    """A Function that counts its value_and_grad calls."""

    __slots__ = ("calls",)

    def __init__(self, source: str) -> None:
        super().__init__(symgrad.compile(source).tape, source)
        self.calls = 0

    def value_and_grad(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.calls += 1
        return super().value_and_grad(*args, **kwargs)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_fit_recovers_known_parameters_from_numpy_data(reduce: str) -> None:
    res = symgrad.fit(DECAY, data={"t": T, "y": Y}, params=START, reduce=reduce)
    assert isinstance(res, FitResult)
    assert res.success, res.message
    assert list(res.params) == ["a", "b", "c"]
    assert res.params == pytest.approx(TRUE, abs=1e-5)
    assert 0.0 <= res.loss < 1e-9
    assert max(abs(g) for g in res.grad.values()) < 1e-4
    assert res.status == res.raw.status and res.message == res.raw.message and res.nfev == res.raw.nfev


def test_fit_recovers_known_parameters_from_dask_data_on_the_local_scheduler() -> None:
    t = da.from_array(T, chunks=90)
    y = da.from_array(Y, chunks=130)
    res = symgrad.fit(DECAY, data={"t": t, "y": y}, params=START, reduce="mean", method="L-BFGS-B")
    assert res.success, res.message
    assert res.params == pytest.approx(TRUE, abs=1e-4)


def test_the_objective_is_the_summed_loss_and_its_gradient_matches_central_differences() -> None:
    f = symgrad.compile(DECAY)
    rng = np.random.default_rng(5)
    y = Y + 0.1 * rng.normal(size=T.size)
    names = ["a", "b", "c"]
    x = np.array([2.0, 0.5, 0.3])
    for mean in (False, True):
        objective = _Objective(f, {"t": T, "y": y}, names, mean=mean)
        loss, grad = objective(x)
        residual = (y - x[0] * np.exp(-x[1] * T) - x[2]) ** 2
        assert loss == pytest.approx(residual.mean() if mean else residual.sum(), rel=1e-12)
        h = 1e-6
        for k in range(3):
            step = np.zeros(3)
            step[k] = h
            central = (objective(x + step)[0] - objective(x - step)[0]) / (2 * h)
            assert grad[k] == pytest.approx(central, rel=1e-6), names[k]


def test_one_symgrad_call_per_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Numpy data: one batch evaluation (trace_examples' evaluator) per evaluation; dask data: one
    value_and_grad call.  Every evaluation scipy counts is one call, plus at most the start (checked
    first) and the final report."""
    calls = []
    evaluate = BatchGradient.__call__

    def counted(self: BatchGradient, *args: Any) -> Any:
        calls.append(1)
        return evaluate(self, *args)

    monkeypatch.setattr(BatchGradient, "__call__", counted)
    f = Counting(DECAY)
    res = symgrad.fit(f, data={"t": T, "y": Y}, params=START, method="L-BFGS-B")
    assert res.success
    assert res.nfev <= len(calls) <= res.nfev + 2 and f.calls == 0


def test_numpy_data_of_different_shapes_are_broadcast_together() -> None:
    """A column of t against a row of y (a 2-d grid of points) and a scalar datum: the objective is
    the loss over every point of the broadcast grid (oracle: the closed-form partials in numpy)."""
    f = symgrad.compile("(y - a*exp(-b*t) - c)**2 * w")
    t, y = T[:40, None], Y[None, :30] + 0.1
    a, b, c = 2.0, 0.5, 0.3
    objective = _Objective(f, {"t": t, "y": y, "w": 0.5}, ["a", "b", "c"], mean=True)
    loss, grad = objective(np.array([a, b, c]))
    e = np.exp(-b * t)
    r = y - a * e - c
    assert loss == pytest.approx(np.mean(0.5 * r**2), rel=1e-12)
    expected = [np.mean(-r * e), np.mean(r * a * t * e), np.mean(-r)]  # 0.5 * 2 * r * ∂r
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_outside_the_domain_the_objective_is_nan_and_the_optimiser_backs_off() -> None:
    """As numpy gives nan there (the array path's rule), not a DomainError that would end the fit."""
    t = np.linspace(0.5, 3.0, 50)
    objective = _Objective(symgrad.compile("(y - log(b*t))**2"), {"t": t, "y": np.log(2.0 * t)}, ["b"], mean=True)
    loss, grad = objective(np.array([-1.0]))
    assert math.isnan(loss) and math.isnan(grad[0])
    res = symgrad.fit("(y - log(b*t))**2", data={"t": t, "y": np.log(2.0 * t)}, params={"b": 0.1}, method="BFGS")
    assert res.params["b"] == pytest.approx(2.0, rel=1e-6)


def test_bounds_by_name_are_passed_to_scipy() -> None:
    res = symgrad.fit(DECAY, data={"t": T, "y": Y}, params=START, bounds={"c": (None, 0.2)}, reduce="mean")
    assert res.success, res.message
    assert res.params["c"] == pytest.approx(0.2, abs=1e-9)  # the true 0.5 lies outside: the fit stops at the bound
    assert res.grad["c"] < 0  # the loss still falls towards larger c
    as_list = symgrad.fit(DECAY, data={"t": T, "y": Y}, params=START, bounds=[(None, None), (0, 1), (None, 0.2)])
    assert as_list.params == pytest.approx(res.params, abs=1e-4)


def test_a_formula_without_data() -> None:
    res = symgrad.fit("(p - 2)**2 + (q + 1)**2", data={}, params={"p": 0.0, "q": 0.0})
    assert res.params == pytest.approx({"p": 2.0, "q": -1.0}, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"params": {}}, InputError, r"at least one parameter"),
        ({"params": {"a": 1.0, "z": 0.0}}, UnknownVariableError, r"parameter 'z' is not a variable of the loss"),
        ({"data": {"t": T, "y": Y, "a": 1.0}}, InputError, r"'a' is given both as data and as a parameter"),
        ({"data": {"t": T}}, symgrad.MissingVariableError, r"no value given for 'y'"),
        ({"reduce": "median"}, InputError, r"reduce must be one of 'sum', 'mean'"),
        ({"params": {"a": "1", "b": 0.1, "c": 0.0}}, InputError, r"starting value of 'a' must be a real number"),
        ({"bounds": {"q": (0, 1)}}, UnknownVariableError, r"bounds for 'q', which is not a parameter"),
        ({"data": {"t": T, "y": np.full_like(T, np.nan)}}, InputError, r"the loss is nan at the starting parameters"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {"data": {"t": T, "y": Y}, "params": START, **kwargs}
    with pytest.raises(error, match=match):
        symgrad.fit(DECAY, **arguments)


def test_without_scipy_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # makes `import scipy.optimize` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'symgrad\[fit\]'"):
        symgrad.fit(DECAY, data={"t": T, "y": Y}, params=START)


# -- second-order methods get the exact Hessian ---------------------------------------------------


@pytest.mark.parametrize("method", ["trust-exact", "Newton-CG", "trust-ncg", "trust-krylov", "trust-constr"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_second_order_methods_get_the_exact_hessian(method: str, reduce: str) -> None:
    t = np.linspace(0.0, 4.0, 60)
    data = {"t": t, "y": 3.0 * np.exp(-0.7 * t) + 0.5}
    start = {"a": 1.0, "b": 1.0, "c": 0.0}
    res = symgrad.fit("(y - a*exp(-b*t) - c)**2", data, start, method=method, reduce=reduce)
    assert res.success, res.message
    assert res.params == pytest.approx({"a": 3.0, "b": 0.7, "c": 0.5}, abs=1e-3)
    assert getattr(res.raw, "nhev", 1) > 0  # scipy counts Hessian calls: 0 would mean finite differences


def test_the_hessian_fit_gives_scipy_is_the_sum_over_the_data_of_sympys() -> None:
    import sympy

    from symgrad.fit import _Hessian, _Objective

    t = np.linspace(0.0, 2.0, 7)
    y = np.cos(t)
    f = symgrad.compile("(y - a*exp(-b*t) - c)**2")
    names = ["a", "b", "c"]
    objective = _Objective(f, {"t": t, "y": y}, names, mean=True)
    got = _Hessian(f, {"t": t, "y": y}, names, objective)(np.array([1.5, 0.3, -0.2]))
    a, b, c, ts, ys = sympy.symbols("a b c t y")
    loss = (ys - a * sympy.exp(-b * ts) - c) ** 2
    hessian = sympy.hessian(loss, (a, b, c)).subs({a: 1.5, b: 0.3, c: -0.2})
    expected = sum(np.array(hessian.subs({ts: tk, ys: yk}), dtype=float) for tk, yk in zip(t, y, strict=True)) / len(t)
    assert np.allclose(got, expected, rtol=1e-12)
