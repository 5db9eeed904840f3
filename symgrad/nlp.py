"""A nonlinear program's derivatives: what an optimiser asks for, at a point given as an array.

An optimiser for ``min f(x)`` subject to ``cl <= c(x) <= cu`` asks for the
objective and its gradient, the constraint values, the constraint Jacobian
and the Hessian of the Lagrangian ``σ ∇²f + Σ λᵢ ∇²cᵢ``.  Each is one tape
here, built once, run by the dispatcher like any other Function:

* the objective's value-and-gradient tape;
* one tape with every constraint as an output (the constraints' records are
  merged: common subexpressions are computed once), and its sparse Jacobian
  tape (:mod:`symgrad.sparse`), whose outputs are the structural nonzeros;
* the **Lagrangian** ``σ·f + Σ λᵢ·cᵢ`` as one tape whose inputs are the
  variables, then ``σ``, then the ``λᵢ``; its sparse Hessian by the variables
  alone is *one* derived tape whose outputs are the lower triangle's
  structural nonzeros, with ``σ`` and ``λ`` as plain inputs.  The
  multipliers have no domain in the sparsity pass, so the pattern is exactly
  the union of the objective's and the constraints' patterns.

When the objective is a model with sums that are one term per index, or the
constraints include such families, the derivatives are *assembled* instead
(:mod:`symgrad.elements`): each term is differentiated once (σ times each of
the objective's terms, λᵢ times each family's), placed per index, and evaluated
with numpy over all its indices at once; the objective's value is its terms'
values added left to right as the expanded tape adds them, and the families'
constraint values come from their terms too.  No tape of the whole problem's
derivatives is built, and no code is generated: a solver's few dozen calls run
at numpy's speed from the first.

Points outside a formula's domain (``log`` of a negative number, or a solver
probing with nan) give nan values instead of a :class:`DomainError`: that is
how scipy's and IPOPT's line searches learn to step back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import elements, sparse
from .builder import Ref, TapeBuilder
from .errors import DomainError
from .function import Function, csr_layout
from .model import Families, ModelTerms, ModelText, Term, TermInput
from .ops import OPS
from .tape import Tape
from .transforms import derivative_name

__all__ = [
    "SIGMA",
    "NonlinearProgram",
    "lagrangian_gradient_tape",
    "lagrangian_tape",
    "merge_outputs",
    "multiplier_names",
]

Array = np.ndarray[Any, np.dtype[np.float64]]
Indices = np.ndarray[Any, np.dtype[np.int64]]

SIGMA = "@sigma"
"""The Lagrangian's input for the objective's factor (not a name the grammar can write: no clash)."""


def multiplier_names(m: int) -> list[str]:
    """The Lagrangian's inputs for the constraints' multipliers."""
    return [f"@lambda[{i}]" for i in range(1, m + 1)]


def merge_outputs(tapes: Sequence[Tape], names: Sequence[str], labels: Sequence[str], source: str | None) -> Tape:
    """One tape with every output of ``tapes``, over the variables ``names`` in that order (records shared)."""
    b = TapeBuilder(source)
    for name in names:
        b.var(name)
    outputs: list[Ref] = []
    for tape in tapes:
        refs = b.import_tape(tape)
        outputs.extend(refs[slot] for slot in tape.outputs)
    return b.finish(outputs, labels, order=names)


def lagrangian_tape(objective: Tape, constraints: Tape | None, names: Sequence[str]) -> Tape:
    """``σ·f + Σ λᵢ·cᵢ`` over ``names``, then ``σ``, then the multipliers (one per constraint output)."""
    b = TapeBuilder(objective.source)
    for name in names:
        b.var(name)
    mul, add = OPS["mul"], OPS["add"]
    f = b.import_tape(objective)[objective.outputs[0]]
    total = b.emit(mul, (b.var(SIGMA), f))
    lambdas: list[str] = []
    if constraints is not None:
        refs = b.import_tape(constraints)
        lambdas = multiplier_names(len(constraints.outputs))
        for name, slot in zip(lambdas, constraints.outputs, strict=True):
            total = b.emit(add, (total, b.emit(mul, (b.var(name), refs[slot]))))
    return b.finish([total], ["lagrangian"], order=[*names, SIGMA, *lambdas])


def lagrangian_gradient_tape(
    objective: Function, jacobian: tuple[Tape, Sequence[int], Sequence[int]] | None, names: Sequence[str], m: int
) -> Tape:
    """∂L/∂x for ``L = σ·f + Σ λᵢ·cᵢ``, as ``σ·∇f + Jᵀλ``, inputs as :func:`lagrangian_tape`'s.

    Both parts are tapes the solver runs anyway: ``∇f`` is the objective's own value-and-gradient tape
    (the one its ``vg`` runs), ``J`` the sparse constraint Jacobian's tape (given with its entries'
    rows and columns, one output each; ``m`` constraints).  The Hessian's forward passes then run over
    them instead of over fresh reverse passes through the objective and the constraints.
    """
    if jacobian is not None and len(jacobian[0].outputs) < len(jacobian[1]):
        raise ValueError("the Jacobian tape has fewer outputs than entries")
    lambdas = multiplier_names(m)
    order = [*names, SIGMA, *lambdas]
    mul, add = OPS["mul"], OPS["add"]
    b = TapeBuilder(objective.tape.source)
    for name in order:
        b.var(name)
    own = objective._gradient_tape(None)
    refs = b.import_tape(own)
    sigma = b.var(SIGMA)
    partials = [b.emit(mul, (sigma, refs[slot])) for slot in own.outputs[1:]]
    if jacobian is not None:
        tape, rows, cols = jacobian
        jrefs = b.import_tape(tape)
        weights = [b.var(name) for name in lambdas]
        for slot, r, c in zip(tape.outputs, rows, cols, strict=False):
            partials[c] = b.emit(add, (partials[c], b.emit(mul, (weights[r], jrefs[slot]))))
    return b.finish(partials, [f"dL/d{name}" for name in names], order=order)


class NonlinearProgram:
    """Values and sparse derivatives of an objective and its constraints at points given as arrays."""

    def __init__(self, objective: Function, constraints: Function | None, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.n = len(self.names)
        self.m = constraints.n_outputs if constraints is not None else 0
        self.objective = objective
        self.constraints = constraints
        self._last: tuple[bytes, float, Array] | None = None
        self._zeros = np.zeros(self.m)
        # What the values come from: the objective's value and gradient at x; the Jacobian's entries at
        # x; the Hessian's entries at (x, σ, λ) as one array.
        self._value_and_grad: Callable[[Array], tuple[float, Array]] = self._from_vg(objective)
        self._jacobian_at: Callable[[Array], Array] = lambda x: np.zeros(0)
        self._constraints_at: Callable[[Array], Array] | None = None  # None: the constraints' own tape
        self._hessian_at: Callable[[Array], Array]
        self.assembled = False
        """Whether the derivatives are assembled from the terms of sums and families (:mod:`symgrad.elements`)."""
        empty = np.zeros(0, dtype=np.int64)
        self._jpattern: tuple[Indices, Indices] = (empty, empty)
        parts = _parts(objective, constraints, self.names)
        if parts is None:
            self._general(objective, constraints)
        else:
            self._assembled(objective, constraints, *parts)
        self.hessian_nnz = len(self._hpattern[0])
        self.jacobian_nnz = len(self._jpattern[0])
        n = self.n
        self._hlayout = csr_layout(*self._hpattern, (n, n), True)
        self._jlayout = csr_layout(*self._jpattern, (self.m, n), False)

    def _general(self, objective: Function, constraints: Function | None) -> None:
        """Every derivative tape from the expanded tapes, through the tape builder."""
        lagrangian = Function(
            lagrangian_tape(objective.tape, constraints.tape if constraints is not None else None, self.names),
            None,
            objective.backend,
            derivation=f"Lagrangian of {objective.source or 'the objective'}",
        )
        jacobian = None
        if constraints is not None:
            jacobian_fn = constraints.sparse_jacobian_function(self.names)
            self._jpattern = constraints._pattern("jacobian", self.names)
            jrows, jcols = self._jpattern
            jacobian = (jacobian_fn.tape, jrows.tolist(), jcols.tolist())
            self._jacobian_at = _tape_values(jacobian_fn, len(jrows))
        self._hpattern = rows, cols = lagrangian._pattern("hessian", self.names)
        gradient = lagrangian_gradient_tape(objective, jacobian, self.names, self.m)
        hessian = Function(
            sparse.sparse_hessian_tape(
                lagrangian.tape, range(self.n), rows.tolist(), cols.tolist(), gradient=(gradient, range(self.n))
            ),
            None,
            objective.backend,
            derivation="the sparse Hessian of the Lagrangian",
        )
        self._hessian_at = _tape_values(hessian, len(rows))

    def _assembled(
        self,
        objective: Function,
        constraints: Function | None,
        model: ModelTerms | None,
        constraint_rest: Tape | None,
        rest_rows: list[int],
        families: Sequence[tuple[int, Term]],
    ) -> None:
        """The derivatives assembled from the sums' and families' terms (:mod:`symgrad.elements`) and
        evaluated with numpy, each term's derivative over all its indices at once."""
        names, n, m = self.names, self.n, self.m
        objective_rest, objective_terms = (objective.tape, []) if model is None else (model.rest, model.terms)
        lambdas = multiplier_names(m)
        inputs = (*names, SIGMA, *lambdas)
        index = {name: k for k, name in enumerate(inputs)}
        # The Lagrangian's Hessian: σ times the objective's parts, λ times each constraint's.
        sigma: TermInput = ("scalar", SIGMA, 0, 0)
        parts = elements.hessian_parts(
            None if objective_rest is None else _weighted_sum(objective_rest, [(0, SIGMA)]),
            [elements.weighted(term, sigma) for term in objective_terms],
            index,
            n,
        )
        parts += elements.hessian_parts(
            None
            if constraint_rest is None
            else _weighted_sum(constraint_rest, list(enumerate(lambdas[r] for r in rest_rows))),
            [elements.weighted(term, ("vector", "@lambda", 1, first + 1 - term.lo)) for first, term in families],
            index,
            n,
        )
        hessian = elements.Assembly(
            inputs, objective.tape.source, parts, lambda k: derivative_name([names[k // n], names[k % n]], "lagrangian")
        )
        self._hpattern = (hessian.entries // n, hessian.entries % n)
        self._hessian_at = elements.Vectorised(hessian)
        variables = {name: k for k, name in enumerate(names)}
        if model is not None:  # the value and the gradient too
            gradient = elements.Assembly(
                names,
                objective.tape.source,
                elements.gradient_parts(objective_rest, objective_terms, variables, n),
                lambda k: derivative_name([names[k]]),
                entries=np.arange(n),
            )
            self._value_and_grad = self._from_terms(
                elements.ModelValue(model.value, model.terms, variables), elements.Vectorised(gradient)
            )
        if constraints is not None:
            jacobian = elements.Assembly(
                names,
                constraints.tape.source,
                elements.jacobian_parts(constraint_rest, rest_rows, families, variables, n),
                lambda k: derivative_name([names[k % n]], f"c{k // n + 1}"),
            )
            self._jpattern = (jacobian.entries // n, jacobian.entries % n)
            self._jacobian_at = elements.Vectorised(jacobian)
            self._constraints_at = _constraint_values(m, constraint_rest, rest_rows, families, variables)
        self.assembled = True

    def _from_vg(self, objective: Function) -> Callable[[Array], tuple[float, Array]]:
        """Value and gradient from the objective's value-and-gradient tape (built at the first call)."""

        def value_and_grad(x: Array) -> tuple[float, Array]:
            value, grad = objective.vg(*x.tolist())
            return float(value), np.asarray(grad, dtype=np.float64)

        return value_and_grad

    def _from_terms(
        self, value: Callable[[Array], float], gradient: Callable[[Array], Array]
    ) -> Callable[[Array], tuple[float, Array]]:
        """Value and gradient from the objective's terms (:mod:`symgrad.elements`)."""

        def value_and_grad(x: Array) -> tuple[float, Array]:
            v = value(x)
            return v, gradient(x) if math.isfinite(v) else np.full(self.n, math.nan)

        return value_and_grad

    # -- patterns ---------------------------------------------------------------------------
    def hessian_structure(self) -> tuple[Indices, Indices]:
        """The lower triangle's structural nonzeros ``(rows, cols)`` in the order of :meth:`hessian_values`."""
        return self._hpattern

    def jacobian_structure(self) -> tuple[Indices, Indices]:
        """The constraint Jacobian's structural nonzeros ``(rows, cols)`` in the order of :meth:`jacobian_values`."""
        return self._jpattern

    # -- values -------------------------------------------------------------------------------
    def value_and_grad(self, x: Array) -> tuple[float, Array]:
        """``f(x)`` and ``∇f(x)`` (nan outside the domain); the last point is remembered."""
        key = x.tobytes()
        last = self._last
        if last is not None and last[0] == key:
            return last[1], last[2]
        try:
            result = self._value_and_grad(x)
        except DomainError:
            result = (math.nan, np.full(self.n, math.nan))
        self._last = (key, *result)
        return result

    def value(self, x: Array) -> float:
        return self.value_and_grad(x)[0]

    def gradient(self, x: Array) -> Array:
        return self.value_and_grad(x)[1]

    def constraint_values(self, x: Array) -> Array:
        if self.constraints is None:
            return np.zeros(0)
        if self._constraints_at is not None:
            return self._constraints_at(x)
        return _outputs(self.constraints.entry, x.tolist(), self.m)

    def jacobian_values(self, x: Array) -> Array:
        """The Jacobian's structural nonzeros, in :meth:`jacobian_structure`'s order."""
        return self._jacobian_at(x)

    def hessian_values(self, x: Array, sigma: float, multipliers: Array | Sequence[float] | None) -> Array:
        """The lower triangle of ``σ ∇²f + Σ λᵢ ∇²cᵢ``'s structural nonzeros, in :meth:`hessian_structure`'s order."""
        lam = self._zeros if multipliers is None else np.asarray(multipliers, dtype=np.float64)
        return self._hessian_at(np.concatenate([x, [float(sigma)], lam]))

    # -- as scipy.sparse ------------------------------------------------------------------------
    def jacobian_csr(self, x: Array) -> Any:
        take, indices, indptr, shape = self._jlayout
        return _csr(self.jacobian_values(x)[take], indices, indptr, shape)

    def hessian_csr(self, x: Array, sigma: float, multipliers: Array | Sequence[float] | None) -> Any:
        """The full symmetric Hessian of the Lagrangian as a CSR array (what scipy's solvers take)."""
        take, indices, indptr, shape = self._hlayout
        return _csr(self.hessian_values(x, sigma, multipliers)[take], indices, indptr, shape)


def _parts(
    objective: Function, constraints: Function | None, names: tuple[str, ...]
) -> tuple[ModelTerms | None, Tape | None, list[int], Sequence[tuple[int, Term]]] | None:
    """The objective as ``rest + Σ terms`` (None when no sum is one term per index) and the
    constraints as the rows not in a family (a tape of them, and their rows) and the families, when
    some sum or family is one term per index; else None."""
    found = None
    if isinstance(objective._model, ModelText) and objective.variables == names:
        found = objective._model.terms(names)
        if found is not None and not found.terms:
            found = None
    families = (
        constraints._model.families if constraints is not None and isinstance(constraints._model, Families) else ()
    )
    if found is None and not families:
        return None
    if constraints is None:
        return found, None, [], ()
    covered: set[int] = set()
    for first, term in families:
        covered.update(range(first, first + term.hi - term.lo + 1))
    rest_rows = [r for r in range(constraints.n_outputs) if r not in covered]
    rest = None
    if rest_rows:
        b = TapeBuilder(constraints.tape.source)
        refs = b.import_tape(constraints.tape)
        rest = b.finish([refs[constraints.tape.outputs[r]] for r in rest_rows], (), constraints.tape.inputs)
    return found, rest, rest_rows, families


def _constraint_values(
    m: int, rest: Tape | None, rest_rows: list[int], families: Sequence[tuple[int, Term]], index: dict[str, int]
) -> Callable[[Array], Array]:
    """The constraints' values: each family's term over its indices with numpy, the other rows from a
    tape of them (nan everywhere outside a domain)."""
    runs = [(first, elements.TermValues(term, index)) for first, term in families]
    rest_fn = Function(rest) if rest is not None else None
    rows = np.asarray(rest_rows, dtype=np.int64)

    def values(x: Array) -> Array:
        out = np.empty(m)
        for first, term in runs:
            out[first : first + term.copies] = term(x)
        if rest_fn is not None:
            rest_values = _outputs(rest_fn.entry, x.tolist(), len(rest_rows))
            if np.isnan(rest_values).all():
                return np.full(m, math.nan)
            out[rows] = rest_values
        return out

    return values


def _weighted_sum(tape: Tape, weights: Sequence[tuple[int, str]]) -> Tape:
    """``Σ weight · output`` over ``(output, weight's input name)`` pairs: a part of the Lagrangian."""
    b = TapeBuilder(tape.source)
    refs = b.import_tape(tape)
    mul, add = OPS["mul"], OPS["add"]
    total: Ref | None = None
    for k, name in weights:
        term = b.emit(mul, (b.var(name), refs[tape.outputs[k]]))
        total = term if total is None else b.emit(add, (total, term))
    assert total is not None
    return b.finish([total])


def _tape_values(f: Function, count: int) -> Callable[[Array], Array]:
    """The first ``count`` outputs of ``f`` (a derived tape of entries) at a point given as one array
    (a tape with no entries still has one output: a constant)."""

    def values(point: Array) -> Array:
        return _outputs(f.entry, point.tolist(), f.n_outputs)[:count]

    return values


def _outputs(entry: Callable[..., Any], point: list[float], count: int) -> Array:
    """A Function's outputs at a point as an array; nan everywhere when the point is outside the domain."""
    try:
        result = entry(*point)
    except DomainError:
        return np.full(count, math.nan)
    if count == 1 and not isinstance(result, tuple):
        return np.array([result], dtype=np.float64)
    return np.fromiter(result, dtype=np.float64, count=count)


def _csr(values: Array, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
    import scipy.sparse

    return scipy.sparse.csr_array((values, indices, indptr), shape=shape)
