"""``symgrad.minimize``: constrained optimisation with exact, sparse first and second derivatives.

The problem is ``min f(x)`` subject to ``cl <= c(x) <= cu`` and ``lb <= x <= ub``,
with the variables named by ``x0``.  The objective, the constraints, the sparse
constraint Jacobian and the sparse Hessian of the Lagrangian are tapes
(:mod:`symgrad.nlp`); the solver is scipy's ``trust-constr`` (always there) or
IPOPT through cyipopt (``pip install 'symgrad[ipopt]'``).  Everything the user
gives is checked, with errors naming what is wrong, before any solver starts.

Sign convention for the multipliers, whatever the solver: at a solution
``∇f(x) + J(x)ᵀλ + z = 0``, with ``λ`` the constraints' multipliers and ``z``
the bounds' (IPOPT's convention for ``λ``; ``z = z_U − z_L`` in its terms).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .api import compile
from .errors import (
    InputError,
    MissingDependencyError,
    UndeclaredVariableError,
    UnknownSizeError,
    UnknownVariableError,
    clip,
)
from .function import Function
from .model import Families, Term
from .nlp import Indices, NonlinearProgram, merge_outputs
from .tape import Tape

__all__ = ["Constraint", "OptimizeResult", "minimize"]

Array = np.ndarray[Any, np.dtype[np.float64]]

CONSTRAINED_METHODS = ("trust-constr", "ipopt")
SCIPY_METHODS = (
    "Nelder-Mead", "Powell", "CG", "BFGS", "Newton-CG", "L-BFGS-B", "TNC", "COBYLA", "COBYQA", "SLSQP",
    "trust-constr", "dogleg", "trust-ncg", "trust-exact", "trust-krylov",
)  # fmt: skip
"""The methods of ``scipy.optimize.minimize`` (scipy 1.10-1.17)."""
_SCIPY_HESSIAN = ("Newton-CG", "trust-ncg")
_SCIPY_HESSP = ("trust-krylov",)
_SCIPY_DENSE_HESSIAN = ("dogleg", "trust-exact")
_SCIPY_BOUNDED = ("L-BFGS-B", "TNC", "SLSQP", "Powell", "Nelder-Mead", "COBYLA", "COBYQA", "trust-constr")
DENSE_LIMIT = 5_000
"""Largest n for which a method that needs a dense Hessian (``trust-exact``, ``dogleg``) is given one."""


@dataclass(frozen=True)
class Constraint:
    """``lower <= body <= upper``: ``body`` is a formula (in the objective's variables) or a Function
    (every output gets these bounds).  ``lower == upper`` is an equality.

    Relations written as text (``"x1*x2 >= 25"``, ``"x[i]**2 + x[i+1] == 1 for i in 1..n-1"``) need no
    Constraint: pass the string.
    """

    body: str | Function
    lower: float = -math.inf
    upper: float = math.inf


ConstraintLike = str | Constraint


@dataclass(frozen=True)
class OptimizeResult:
    """What :func:`minimize` found, by name."""

    x: dict[str, Any]
    """The solution: a float per scalar variable, a numpy array per vector variable (``x[1]`` … ``x[n]``)."""
    fun: float
    """The objective at ``x``."""
    success: bool
    status: int
    """The solver's own status code (IPOPT: 0 solved, 1 solved to acceptable level, …; scipy: its codes)."""
    message: str
    solver: str
    """``"ipopt"``, ``"trust-constr"`` or the scipy method used."""
    nit: int
    """Iterations of the solver."""
    nfev: int
    """Evaluations of the objective (each one tape run)."""
    multipliers: Array
    """The constraints' multipliers λ, in the order of :attr:`constraint_labels` (see the module's convention)."""
    bound_multipliers: Array
    """The bounds' multipliers ``z`` per variable (0 where no bound is active)."""
    constraints: Array
    """The constraint bodies ``c(x)`` at the solution."""
    constraint_labels: tuple[str, ...]
    constraint_violation: float
    """The largest amount by which ``x`` violates a constraint or a bound (0 when feasible)."""
    x_array: Array = field(repr=False)
    """The solution as one array in the order of :attr:`variables`."""
    variables: tuple[str, ...] = field(repr=False)
    raw: Any = field(repr=False, compare=False)
    """The solver's own result (scipy's ``OptimizeResult``, or IPOPT's info dict)."""


def minimize(
    objective: str | Function,
    x0: Mapping[str, Any],
    *,
    constraints: ConstraintLike | Sequence[ConstraintLike] = (),
    bounds: Mapping[str, tuple[Any, Any]] | None = None,
    method: str = "trust-constr",
    sizes: Mapping[str, int] | None = None,
    tol: float | None = None,
    options: Mapping[str, Any] | None = None,
) -> OptimizeResult:
    """Minimise ``objective`` from the starting point ``x0`` (values by name) subject to ``constraints`` and ``bounds``.

    ``x0`` names every variable and fixes their order: a number for a scalar,
    a list or array for a vector of a model (``{"x": np.zeros(n)}`` for
    ``x[1]`` … ``x[n]``).  ``constraints``: relations as text (``"x*y >= 1"``,
    ``"1 <= x + y <= 2"``, families ``"... == 0 for i in 1..n-1"``) or
    :class:`Constraint` objects.  ``bounds``: ``{name: (low, high)}``, None
    for no bound (for a vector, numbers or arrays).  ``sizes``: the sizes
    models use (``{"n": 1000}``).

    ``method``: ``"trust-constr"`` (scipy, the default) or ``"ipopt"``
    (cyipopt), which take constraints; without constraints any method of
    ``scipy.optimize.minimize`` (Newton-CG, trust-krylov, trust-exact, … get
    the exact Hessian).  ``tol`` and ``options`` go to the solver (IPOPT:
    ``options`` are its options by name, e.g. ``{"max_iter": 200}``).

    >>> res = minimize("x + y", {"x": 1.0, "y": 1.0}, constraints="x**2 + y**2 <= 2", tol=1e-10)
    >>> res.success, round(res.x["x"], 4), round(res.x["y"], 4), round(float(res.multipliers[0]), 4)
    (True, -1.0, -1.0, 0.5)
    """
    layout = _Layout(x0)
    method = _method(method)
    specs = _constraint_list(constraints)
    if specs and method not in CONSTRAINED_METHODS:
        raise InputError(
            f"minimize(): method {method!r} does not take constraints; use method='trust-constr' or method='ipopt'"
        )
    lb, ub = layout.bounds(bounds)
    bounded = bool(np.isfinite(lb).any() or np.isfinite(ub).any())
    if bounded and method not in CONSTRAINED_METHODS and method not in _SCIPY_BOUNDED:
        raise InputError(
            f"minimize(): method {method!r} does not take bounds; use 'trust-constr', 'ipopt' or 'L-BFGS-B'"
        )
    solve_ipopt = _cyipopt() if method == "ipopt" else None
    optimize = _scipy_optimize()
    f = _objective(objective, layout, sizes)
    c, cl, cu, labels = _constraints(specs, layout, sizes, f.backend)
    posed = Posed(NonlinearProgram(f, c, layout.names), layout, lb, ub, cl, cu, labels)
    _check_start(posed.nlp, layout.start, labels)
    if solve_ipopt is not None:
        return _ipopt(solve_ipopt, posed, tol, options)
    return _scipy(optimize, method, posed, tol, options)


def _method(method: object) -> str:
    """The solver's name as scipy spells it (scipy takes any case), or ``"ipopt"``; anything else named."""
    known = {name.lower(): name for name in (*SCIPY_METHODS, "ipopt")}
    found = known.get(method.lower()) if isinstance(method, str) else None
    if found is None:
        raise InputError(
            f"minimize(): unknown method {method!r:.60}; use 'trust-constr' or 'ipopt' (constraints), or one of "
            f"scipy.optimize.minimize's: {', '.join(SCIPY_METHODS)}"
        )
    return found


# -- the problem as given -----------------------------------------------------------------------------


class _Layout:
    """The variables as ``x0`` names them: scalars and vectors, flattened to one array in that order."""

    def __init__(self, x0: Mapping[str, Any]) -> None:
        if not isinstance(x0, Mapping) or not x0:
            raise InputError(
                "minimize(): x0 names the variables with their starting values: {'x': 1.0, 'y': 2.0} "
                "(a list or array for a vector of a model)"
            )
        self.vectors: dict[str, int] = {}
        names: list[str] = []
        values: list[float] = []
        for name, value in x0.items():
            if not isinstance(name, str):
                raise InputError(f"minimize(): x0's keys are variable names, got {type(name).__name__} {name!r:.60}")
            if _is_real(value):
                names.append(name)
                values.append(float(value))
                continue
            items = np.asarray(value, dtype=np.float64) if _is_sequence(value) else None
            if items is None or items.ndim != 1:
                raise InputError(
                    f"minimize(): the starting value of '{name}' must be a real number, or a list or 1-d array "
                    f"for a vector, got {type(value).__name__}"
                )
            self.vectors[name] = len(items)
            names.extend(f"{name}[{k}]" for k in range(1, len(items) + 1))
            values.extend(items.tolist())
        self.names = tuple(names)
        self.given = tuple(x0)
        self.start: Array = np.array(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(self.start))
        if len(bad):
            raise InputError(
                f"minimize(): the starting value of '{self.names[bad[0]]}' is {self.start[bad[0]]}: give a finite number"
            )
        self.index = {name: i for i, name in enumerate(self.names)}

    def declaration(self) -> dict[str, int | None]:
        return {name: self.vectors.get(name) for name in self.given}

    def bounds(self, bounds: Mapping[str, tuple[Any, Any]] | None) -> tuple[Array, Array]:
        lb = np.full(len(self.names), -math.inf)
        ub = np.full(len(self.names), math.inf)
        if bounds is None:
            return lb, ub
        if not isinstance(bounds, Mapping):
            raise InputError("minimize(): bounds= maps variable names to (low, high) pairs: {'x': (0, None)}")
        for name, pair in bounds.items():
            if name not in self.given:
                raise UnknownVariableError(
                    f"minimize(): bounds for '{name}', which x0 does not name; the variables are {', '.join(self.given)}"
                )
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise InputError(f"minimize(): the bounds of '{name}' must be a (low, high) pair, got {pair!r:.60}")
            length = self.vectors.get(name)
            start = self.index[f"{name}[1]"] if length is not None else self.index[name]
            span = slice(start, start + (length if length is not None else 1))
            for side, value, default, target in (("low", pair[0], -math.inf, lb), ("high", pair[1], math.inf, ub)):
                target[span] = self._bound(name, side, value, default, length)
            wrong = np.flatnonzero(lb[span] > ub[span])
            if len(wrong):
                k = span.start + int(wrong[0])
                raise InputError(f"minimize(): the bounds of '{self.names[k]}' are empty: low {lb[k]} > high {ub[k]}")
        return lb, ub

    @staticmethod
    def _bound(name: str, side: str, value: Any, default: float, length: int | None) -> Any:
        if value is None:
            return default
        result: Any
        if _is_real(value):
            result = float(value)
        elif length is not None and _is_sequence(value):
            result = np.asarray(value, dtype=np.float64)
            if result.shape != (length,):
                raise InputError(
                    f"minimize(): the {side} bound of '{name}' has {result.size} values; '{name}' has {length} elements"
                )
        else:
            raise InputError(f"minimize(): the {side} bound of '{name}' must be a number or None, got {value!r:.60}")
        if np.isnan(result).any():
            raise InputError(f"minimize(): the {side} bound of '{name}' is nan; use None for no bound")
        return result

    def grouped(self, x: Array) -> dict[str, Any]:
        """A flat solution by the names ``x0`` used: floats for scalars, arrays for vectors."""
        out: dict[str, Any] = {}
        for name in self.given:
            length = self.vectors.get(name)
            if length is None:
                out[name] = float(x[self.index[name]])
            else:
                start = self.index[f"{name}[1]"] if length else 0
                out[name] = np.array(x[start : start + length])
        return out


def _objective(objective: str | Function, layout: _Layout, sizes: Mapping[str, int] | None) -> Function:
    if isinstance(objective, Function):
        objective._one_output("an objective", "give one formula; constraints go in constraints=")
        _check_variables(objective.tape, layout, "the objective")
        return Function(
            merge_outputs([objective.tape], layout.names, ("f",), objective.source), objective.source, objective.backend
        )
    if not isinstance(objective, str):
        raise InputError(f"minimize(): the objective is a formula or a Function, got {type(objective).__name__}")
    f = _compile(objective, layout, sizes)
    f._one_output("an objective", "give one formula; constraints go in constraints=")
    return f


def _compile(text: str, layout: _Layout, sizes: Mapping[str, int] | None) -> Function:
    with _in_minimize_terms():
        return compile(text, variables=layout.declaration(), sizes=sizes)


@contextmanager
def _in_minimize_terms() -> Iterator[None]:
    """Errors of lowering that tell the user to change ``variables=`` or ``sizes=`` of ``compile``, said
    the way ``minimize`` takes them: variables from ``x0``, sizes from ``sizes=``."""
    try:
        yield
    except UndeclaredVariableError as e:
        raise UnknownVariableError(
            f"minimize(): {e.located}\ngive '{clip(e.name)}' a starting value in x0 (x0 names every variable)"
        ) from None
    except UnknownSizeError as e:
        raise UnknownSizeError(
            e.name, e.reason, e.source, e.span, e.context, f"give it with minimize(..., sizes={{'{e.name}': ...}})"
        ) from None


def _check_variables(tape: Tape, layout: _Layout, what: str) -> None:
    for name in tape.inputs:
        if name not in layout.index:
            raise UnknownVariableError(
                f"minimize(): {what} uses '{name}', which x0 does not give a starting value; "
                f"the variables are {', '.join(layout.given)}"
            )


def _constraint_list(constraints: ConstraintLike | Sequence[ConstraintLike]) -> list[ConstraintLike]:
    if isinstance(constraints, (str, Constraint)):
        return [constraints]
    if not isinstance(constraints, Sequence):
        raise InputError(
            "minimize(): constraints= takes a relation such as 'x*y >= 1', a Constraint, or a list of them, "
            f"got {type(constraints).__name__}"
        )
    for item in constraints:
        if not isinstance(item, (str, Constraint)):
            raise InputError(
                f"minimize(): a constraint is a relation such as 'x*y >= 1' or a Constraint, got {type(item).__name__} {item!r:.60}"
            )
    return list(constraints)


def _constraints(
    specs: list[ConstraintLike], layout: _Layout, sizes: Mapping[str, int] | None, backend: str
) -> tuple[Function | None, Array, Array, tuple[str, ...]]:
    """Every constraint as one Function (one output each), with the bounds and labels of its outputs."""
    if not specs:
        return None, np.zeros(0), np.zeros(0), ()
    tapes: list[Tape] = []
    lower: list[float] = []
    upper: list[float] = []
    labels: list[str] = []
    families: tuple[tuple[int, Term], ...] = ()
    texts = [spec for spec in specs if isinstance(spec, str)]
    if texts:
        from .constraints import lower_constraints

        with _in_minimize_terms():
            lowered = lower_constraints(texts, variables=layout.declaration(), sizes=sizes)
        if lowered.tape is not None:  # (None: every family's range is empty)
            tapes.append(lowered.tape)  # (first: its families' outputs keep their places)
            families = lowered.families
        lower.extend(lowered.lower)
        upper.extend(lowered.upper)
        labels.extend(lowered.labels)
    for spec in specs:
        if isinstance(spec, str):
            continue
        lo, hi = _constraint_bounds(spec)
        if isinstance(spec.body, Function):
            body = spec.body
            _check_variables(body.tape, layout, f"the constraint {body!r:.60}")
            names = body.output_names if body.n_outputs > 1 else (body.source or "constraint",)
        elif isinstance(spec.body, str):
            body = _compile(spec.body, layout, sizes)
            names = body.output_names if body.n_outputs > 1 else (spec.body,)
        else:
            raise InputError(
                f"minimize(): a Constraint's body is a formula or a Function, got {type(spec.body).__name__}"
            )
        tapes.append(body.tape)
        lower.extend([lo] * body.n_outputs)
        upper.extend([hi] * body.n_outputs)
        labels.extend(_bounded_label(name, lo, hi) for name in names)
    if not tapes:
        return None, np.zeros(0), np.zeros(0), ()
    if len(tapes) == 1 and tapes[0].inputs == layout.names and tapes[0].output_names == tuple(labels):
        tape = tapes[0]  # (text relations alone: already one tape over the variables, in order)
    else:
        tape = merge_outputs(tapes, layout.names, labels, None)
    model = Families(families) if families else None
    return Function(tape, None, backend, model=model), np.array(lower), np.array(upper), tuple(labels)


def _bounded_label(body: str, lo: float, hi: float) -> str:
    if lo == hi:
        return f"{body} == {lo:g}"
    if math.isinf(lo):
        return f"{body} <= {hi:g}"
    if math.isinf(hi):
        return f"{body} >= {lo:g}"
    return f"{lo:g} <= {body} <= {hi:g}"


def _constraint_bounds(spec: Constraint) -> tuple[float, float]:
    bounds = []
    for side, value in (("lower", spec.lower), ("upper", spec.upper)):
        if value is None:
            value = -math.inf if side == "lower" else math.inf
        if not _is_real(value) or math.isnan(float(value)):
            raise InputError(
                f"minimize(): the {side} bound of the constraint {spec.body!r:.60} must be a number, got {value!r:.60}"
            )
        bounds.append(float(value))
    lo, hi = bounds
    if lo > hi:
        raise InputError(f"minimize(): the constraint {spec.body!r:.60} has lower bound {lo:g} > upper bound {hi:g}")
    if math.isinf(lo) and math.isinf(hi):
        raise InputError(f"minimize(): the constraint {spec.body!r:.60} has no bounds: give lower=, upper= or both")
    return lo, hi


def _check_start(nlp: NonlinearProgram, x0: Array, labels: tuple[str, ...]) -> None:
    """A solver started where the objective or a constraint is undefined would fail without saying why."""
    value = nlp.value(x0)
    if not math.isfinite(value):
        raise InputError(
            f"minimize(): the objective is {value} at x0; start inside its domain (e.g. log needs a positive argument)"
        )
    values = nlp.constraint_values(x0)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(
            f"minimize(): the constraint '{labels[bad[0]]}' is {values[bad[0]]} at x0; start inside its domain"
        )


# -- solvers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posed:
    """A problem ready for a solver: its tapes, its variables, and the bounds on ``x`` and on ``c(x)``."""

    nlp: NonlinearProgram
    layout: _Layout
    lb: Array
    ub: Array
    cl: Array
    cu: Array
    labels: tuple[str, ...]


def _scipy(
    optimize: Any, method: str, posed: Posed, tol: float | None, options: Mapping[str, Any] | None
) -> OptimizeResult:
    nlp, lb, ub = posed.nlp, posed.lb, posed.ub
    counter = _Counted(nlp)
    extra: dict[str, Any] = {}
    if method == "trust-constr" or method in _SCIPY_HESSIAN:
        extra["hess"] = lambda x: nlp.hessian_csr(np.asarray(x, dtype=np.float64), 1.0, None)
    elif method in _SCIPY_HESSP:  # (trlib takes products, not sparse matrices)
        extra["hessp"] = _HessianProducts(nlp)
    elif method in _SCIPY_DENSE_HESSIAN:
        if nlp.n > DENSE_LIMIT:
            raise InputError(
                f"minimize(): method {method!r} needs a dense Hessian, {nlp.n}×{nlp.n} here; "
                "use 'trust-krylov', 'trust-constr' or 'ipopt', which take it sparse"
            )
        extra["hess"] = lambda x: nlp.hessian_csr(np.asarray(x, dtype=np.float64), 1.0, None).toarray()
    if nlp.m:
        extra["constraints"] = [
            optimize.NonlinearConstraint(
                lambda x: nlp.constraint_values(np.asarray(x, dtype=np.float64)),
                posed.cl,
                posed.cu,
                jac=lambda x: nlp.jacobian_csr(np.asarray(x, dtype=np.float64)),
                hess=lambda x, v: nlp.hessian_csr(np.asarray(x, dtype=np.float64), 0.0, v),
            )
        ]
    bounded = bool(np.isfinite(lb).any() or np.isfinite(ub).any())
    if bounded:
        extra["bounds"] = optimize.Bounds(lb, ub)
    res = optimize.minimize(
        counter,
        posed.layout.start,
        jac=True,
        method=method,
        tol=tol,
        options=dict(options) if options else None,
        **extra,
    )
    x = np.asarray(res.x, dtype=np.float64)
    multipliers, bound_multipliers = np.zeros(nlp.m), np.zeros(nlp.n)
    if method == "trust-constr":
        v = list(getattr(res, "v", []))
        if nlp.m and v:
            multipliers = np.asarray(v[0], dtype=np.float64)  # scipy: ∇f + Jᵀv = 0 too
        if bounded and len(v) > (1 if nlp.m else 0):
            bound_multipliers = np.asarray(v[-1], dtype=np.float64)
    return _result(
        posed,
        x,
        method,
        res,
        (bool(res.success), int(res.status), str(res.message)),
        (int(getattr(res, "nit", 0)), counter.count),
        multipliers,
        bound_multipliers,
    )


class _Counted:
    """The objective for scipy (``x -> (f, ∇f)``), counting evaluations."""

    def __init__(self, nlp: NonlinearProgram) -> None:
        self.nlp, self.count = nlp, 0

    def __call__(self, x: Array) -> tuple[float, Array]:
        self.count += 1
        value, grad = self.nlp.value_and_grad(np.asarray(x, dtype=np.float64))
        return value, grad.copy()


class _HessianProducts:
    """``(x, p) -> ∇²f(x) p`` with the sparse Hessian at the last ``x`` kept (a solver asks for many ``p``)."""

    def __init__(self, nlp: NonlinearProgram) -> None:
        self.nlp = nlp
        self.last: tuple[bytes, Any] | None = None

    def __call__(self, x: Array, p: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        key = x.tobytes()
        if self.last is None or self.last[0] != key:
            self.last = (key, self.nlp.hessian_csr(x, 1.0, None))
        product: Array = self.last[1] @ np.asarray(p, dtype=np.float64)
        return product


class _IpoptProblem:
    """The callbacks cyipopt calls, each one tape run."""

    def __init__(self, nlp: NonlinearProgram) -> None:
        self.nlp = nlp
        self.nit = 0
        self.nfev = 0
        self._hessian = nlp.hessian_structure()
        self._jacobian = nlp.jacobian_structure()

    def objective(self, x: Array) -> float:
        self.nfev += 1
        return self.nlp.value(x)

    def gradient(self, x: Array) -> Array:
        return self.nlp.gradient(x)

    def constraints(self, x: Array) -> Array:
        return self.nlp.constraint_values(x)

    def jacobian(self, x: Array) -> Array:
        return self.nlp.jacobian_values(x)

    def jacobianstructure(self) -> tuple[Indices, Indices]:
        return self._jacobian

    def hessianstructure(self) -> tuple[Indices, Indices]:
        return self._hessian

    def hessian(self, x: Array, lagrange: Array, obj_factor: float) -> Array:
        return self.nlp.hessian_values(x, obj_factor, lagrange)

    def intermediate(self, alg_mod: int, iter_count: int, *rest: Any) -> bool:
        self.nit = iter_count
        return True


def _ipopt(cyipopt: Any, posed: Posed, tol: float | None, options: Mapping[str, Any] | None) -> OptimizeResult:
    nlp = posed.nlp
    callbacks = _IpoptProblem(nlp)
    problem = cyipopt.Problem(
        n=nlp.n, m=nlp.m, problem_obj=callbacks, lb=posed.lb, ub=posed.ub, cl=posed.cl, cu=posed.cu
    )
    settings: dict[str, Any] = {"print_level": 0, "sb": "yes"}
    if tol is not None:
        settings["tol"] = float(tol)
    settings.update(options or {})
    for key, value in settings.items():
        try:
            problem.add_option(key, value)
        except TypeError as e:
            raise InputError(f"minimize(): IPOPT option {key}={value!r:.60} was refused: {e}") from None
    x, info = problem.solve(posed.layout.start)
    x = np.asarray(x, dtype=np.float64)
    status = int(info["status"])
    message = info["status_msg"]
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    bound_multipliers = np.asarray(info["mult_x_U"], dtype=np.float64) - np.asarray(info["mult_x_L"], dtype=np.float64)
    return _result(
        posed,
        x,
        "ipopt",
        info,
        (status in (0, 1), status, str(message)),
        (callbacks.nit, callbacks.nfev),
        np.asarray(info["mult_g"], dtype=np.float64),
        bound_multipliers,
    )


def _result(
    posed: Posed,
    x: Array,
    solver: str,
    raw: Any,
    verdict: tuple[bool, int, str],
    counts: tuple[int, int],
    multipliers: Array,
    bound_multipliers: Array,
) -> OptimizeResult:
    """The solver's answer by name; ``verdict`` is (success, status, message), ``counts`` (nit, nfev)."""
    nlp, layout, lb, ub, cl, cu = posed.nlp, posed.layout, posed.lb, posed.ub, posed.cl, posed.cu
    success, status, message = verdict
    nit, nfev = counts
    values = nlp.constraint_values(x)
    violation = 0.0
    if len(values):
        violation = float(max(np.max(cl - values, initial=0.0), np.max(values - cu, initial=0.0)))
    violation = max(violation, float(np.max(lb - x, initial=0.0)), float(np.max(x - ub, initial=0.0)))
    return OptimizeResult(
        x=layout.grouped(x),
        fun=nlp.value(x),
        success=success,
        status=status,
        message=message,
        solver=solver,
        nit=nit,
        nfev=nfev,
        multipliers=multipliers,
        bound_multipliers=bound_multipliers,
        constraints=values,
        constraint_labels=posed.labels,
        constraint_violation=violation,
        x_array=x,
        variables=layout.names,
        raw=raw,
    )


# -- small helpers ------------------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_sequence(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _scipy_optimize() -> Any:
    try:
        import scipy.optimize
    except ImportError:
        raise MissingDependencyError(
            "minimize() needs scipy: pip install 'symgrad[fit]' (or pip install scipy)"
        ) from None
    return scipy.optimize


def _cyipopt() -> Any:
    try:
        import cyipopt
    except ImportError:
        raise MissingDependencyError(
            "method='ipopt' needs cyipopt: pip install 'symgrad[ipopt]' (it builds against Ipopt: on Debian or "
            "Ubuntu first apt-get install coinor-libipopt-dev liblapack-dev libblas-dev pkg-config)"
        ) from None
    return cyipopt
