"""Fit a formula's parameters to data: a thin adapter to ``scipy.optimize.minimize(jac=True)``.

The loss is a formula in parameters and data, usually a residual per data
point such as ``(y - a*exp(-b*t) - c)**2``.  At each point the optimiser asks
for, symgrad makes *one* evaluation over the data: numpy data go through the
same evaluator as :func:`symgrad.trace_examples` (the loss's tape with the
parameters as shared inputs and one number per data point for each data
variable, built once; :class:`symgrad.batch.BatchGradient`), which returns the
loss per point and the parameters' partials already summed over the points; the
values are summed here.  Data arrays of different shapes are broadcast together
first, as the array path does.  Dask data are evaluated by
``f.value_and_grad({**data, **params}, wrt=params)`` chunk by chunk.  So the objective is the sum of the loss
over the data points (``reduce="mean"`` divides both by the number of points,
which keeps the loss and the gradient of order one however much data there is:
better conditioned for the optimiser's tolerances).

Data may be numpy arrays, numbers, or dask arrays; with dask arrays each
evaluation is one pass over the data, chunk by chunk, wherever dask runs (the
threaded scheduler, or a ``dask.distributed`` cluster when a ``Client`` is
active), and only the sum and the few partials come back to the client.

scipy is imported only here: it is an optional dependency
(``pip install 'symgrad[fit]'``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .api import compile
from .backends import dask as dask_arrays
from .batch import BatchGradient, shared_first
from .errors import DomainError, InputError, MissingDependencyError, UnknownVariableError
from .function import Function

__all__ = ["FitResult", "fit"]

REDUCTIONS = ("sum", "mean")
HESSIAN_METHODS = ("Newton-CG", "dogleg", "trust-ncg", "trust-krylov", "trust-exact", "trust-constr")
"""scipy methods that use second derivatives: :func:`fit` gives them the exact Hessian (a dense n×n
matrix over the few parameters) instead of letting scipy fall back to finite differences."""


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` found: the parameters by name, and the optimiser's verdict."""

    params: dict[str, float]
    """The fitted parameters, in the order they were given."""
    loss: float
    """The objective at ``params`` (the loss summed, or averaged, over the data)."""
    grad: dict[str, float]
    """The objective's partials at ``params`` (near 0 at an interior minimum)."""
    success: bool
    status: int
    """scipy's termination code for the method used (0 is usually success)."""
    message: str
    nit: int
    """Iterations of the optimiser."""
    nfev: int
    """Evaluations of the objective; each was one symgrad value-and-gradient call."""
    raw: Any = field(repr=False, compare=False)
    """scipy's ``OptimizeResult``, for everything else the method reports."""


def fit(
    loss: str | Function,
    data: Mapping[str, Any],
    params: Mapping[str, float],
    *,
    reduce: str = "sum",
    method: str | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | Sequence[Any] | Any | None = None,
    tol: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> FitResult:
    """Minimise ``loss`` over ``params`` (starting values by name), with ``data`` held fixed.

    ``loss`` is a formula or a compiled :class:`Function`; every variable must
    be in ``data`` (numbers, numpy or dask arrays) or in ``params``.  The loss
    is summed over the data points (``reduce="mean"`` averages).  ``method``,
    ``tol`` and ``options`` go to ``scipy.optimize.minimize`` unchanged;
    ``bounds`` may be a mapping from parameter name to ``(low, high)`` (None
    for no bound, missing names unbounded) or anything scipy takes.

    >>> import numpy as np
    >>> t = np.linspace(0.0, 4.0, 50)
    >>> res = fit("(y - a*t - b)**2", data={"t": t, "y": 2*t + 1}, params={"a": 0.0, "b": 0.0})
    >>> res.success, {k: round(v, 6) for k, v in res.params.items()}
    (True, {'a': 2.0, 'b': 1.0})
    """
    f = compile(loss)
    names = list(params)
    _check_names(f, data, names, bounds)
    if reduce not in REDUCTIONS:
        raise InputError(f"fit(): reduce must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduce!r}")
    x0 = np.array([_start(name, params[name]) for name in names], dtype=np.float64)
    optimize = _scipy_optimize()
    objective = _Objective(f, dict(data), names, mean=reduce == "mean")
    loss0, _ = objective(x0)
    if not math.isfinite(loss0):
        raise InputError(
            f"fit(): the loss is {loss0} at the starting parameters {dict(zip(names, x0.tolist(), strict=True))}; "
            f"start inside the loss's domain and check the data for nan or inf"
        )
    if isinstance(bounds, Mapping):
        bounds = [tuple(bounds.get(name, (None, None))) for name in names]
    second: dict[str, Any] = {}
    if isinstance(method, str) and method in HESSIAN_METHODS:
        second["hess"] = _Hessian(f, dict(data), names, objective)
    res = optimize.minimize(
        objective, x0, jac=True, method=method, bounds=bounds, tol=tol, options=dict(options or {}) or None, **second
    )
    final, grad = objective(np.asarray(res.x, dtype=np.float64))
    return FitResult(
        params=dict(zip(names, (float(v) for v in res.x), strict=True)),
        loss=final,
        grad=dict(zip(names, grad.tolist(), strict=True)),
        success=bool(res.success),
        status=int(res.status),
        message=str(res.message),
        nit=int(getattr(res, "nit", 0)),
        nfev=int(getattr(res, "nfev", 0)),
        raw=res,
    )


class _Objective:
    """``x -> (loss, gradient)`` for scipy: one symgrad evaluation per new ``x``, the last one remembered."""

    def __init__(self, f: Function, data: dict[str, Any], names: list[str], *, mean: bool) -> None:
        self.f, self.data, self.names, self.mean = f, data, names, mean
        self.lazy = any(dask_arrays.is_dask(v) for v in data.values())
        self.last: tuple[bytes, float, np.ndarray[Any, np.dtype[np.float64]]] | None = None
        self.batch: BatchGradient | None = None
        self.columns: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        if not self.lazy:
            self._batch()

    def _batch(self) -> None:
        """Numpy data: the loss's tape with the parameters first, evaluated over the data points as a batch."""
        point = self.f.bind(({**self.data, **dict.fromkeys(self.names, 0.0)},), {})  # checks names and values
        data = {name: v for name, v in zip(self.f.variables, point, strict=True) if name not in self.names}
        shape = np.broadcast_shapes(*(np.shape(v) for v in data.values()))
        if not shape or math.prod(shape) == 0:
            return  # no arrays (a formula of numbers), or no points: the Function's own path
        names = list(data)
        self.columns = [np.ascontiguousarray(np.broadcast_to(data[name], shape)).ravel() for name in names]
        self.batch = BatchGradient(shared_first(self.f.tape, self.names), len(self.names), self.f.backend)

    def __call__(self, x: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[float, np.ndarray[Any, np.dtype[np.float64]]]:
        key = np.asarray(x, dtype=np.float64).tobytes()
        if self.last is not None and self.last[0] == key:  # scipy re-asks for the point it stopped at
            return self.last[1], self.last[2].copy()
        if self.batch is not None:
            try:
                values, partials = self.batch(np.array(x, dtype=np.float64), self.columns)
            except DomainError:  # outside the loss's domain: nan, as numpy gives, so the optimiser backs off
                values, partials = np.full(1, math.nan), np.full(len(self.names), math.nan)
            scale = 1.0 / len(self.columns[0]) if self.mean else 1.0
            loss = float(np.sum(values)) * scale
            grad = partials * scale
            self.last = (key, loss, grad)
            return loss, grad.copy()
        point = {**self.data, **dict(zip(self.names, (float(v) for v in x), strict=True))}
        value, grads = self.f.value_and_grad(point, wrt=self.names)
        if self.lazy:
            count = value.size
            if self.mean and math.isnan(count):
                raise InputError("fit(reduce='mean'): the data has unknown chunk sizes; call .compute_chunk_sizes()")
            total, grads = dask_arrays.compute(value.sum(), grads)
        else:
            count, total = np.size(value), np.sum(value)
        scale = 1.0 / count if self.mean else 1.0
        loss = float(total) * scale
        grad = np.array([float(grads[name]) for name in self.names]) * scale
        self.last = (key, loss, grad)
        return loss, grad.copy()


class _Hessian:
    """``x -> ∇²(loss summed over the data)`` for scipy's second-order methods: one evaluation of the
    Hessian's tape over the data per new ``x`` (nan outside the loss's domain, as the gradient gives)."""

    def __init__(self, f: Function, data: dict[str, Any], names: list[str], objective: _Objective) -> None:
        self.f, self.data, self.names, self.objective = f, data, names, objective
        self.last: tuple[bytes, np.ndarray[Any, np.dtype[np.float64]]] | None = None

    def __call__(self, x: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
        key = np.asarray(x, dtype=np.float64).tobytes()
        if self.last is None or self.last[0] != key:
            self.last = (key, self._evaluate(x))
        result: np.ndarray[Any, np.dtype[np.float64]] = self.last[1].copy()
        return result

    def _evaluate(self, x: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.float64]]:
        n = len(self.names)
        point = {**self.data, **dict(zip(self.names, (float(v) for v in x), strict=True))}
        objective = self.objective
        try:
            if objective.lazy:
                entries = [self.f.derivative(a, b)(point) for a in self.names for b in self.names]
                sums: Sequence[Any] = dask_arrays.compute(*[e.sum() for e in entries])
                count = entries[0].size if objective.mean else 1
            else:
                table = self.f.hessian(point, wrt=self.names)
                sums = [np.sum(table[a][b]) for a in self.names for b in self.names]
                count = len(objective.columns[0]) if objective.mean and objective.columns else 1
        except DomainError:
            return np.full((n, n), math.nan)
        return np.array([float(v) for v in sums], dtype=np.float64).reshape(n, n) / count


def _check_names(f: Function, data: Mapping[str, Any], names: list[str], bounds: Any) -> None:
    if not names:
        raise InputError("fit() needs at least one parameter to fit, by name: params={'a': 1.0, ...}")
    listed = ", ".join(f.variables) if f.variables else "(none)"
    for name in names:
        if name not in f.variables:
            raise UnknownVariableError(
                f"fit(): parameter '{name}' is not a variable of the loss; its variables are {listed}"
            )
        if name in data:
            raise InputError(f"fit(): '{name}' is given both as data and as a parameter; give it once")
    if isinstance(bounds, Mapping):
        for name in bounds:
            if name not in names:
                raise UnknownVariableError(
                    f"fit(): bounds for '{name}', which is not a parameter; parameters are {', '.join(names)}"
                )


def _start(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            f"fit(): the starting value of '{name}' must be a real number, got {type(value).__name__} {value!r}"
        )
    return float(value)


def _scipy_optimize() -> Any:
    try:
        import scipy.optimize
    except ImportError:
        raise MissingDependencyError("fit() needs scipy: pip install 'symgrad[fit]' (or pip install scipy)") from None
    return scipy.optimize
