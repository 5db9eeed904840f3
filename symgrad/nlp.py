"""A nonlinear program's derivatives as tapes: what an optimiser asks for, at a point given as an array.

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

Points outside a formula's domain (``log`` of a negative number, or a solver
probing with nan) give nan values instead of a :class:`DomainError`: that is
how scipy's and IPOPT's line searches learn to step back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import sparse
from .builder import Ref, TapeBuilder
from .errors import DomainError
from .function import Function
from .ops import OPS
from .tape import Tape

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
        self.lagrangian = Function(
            lagrangian_tape(objective.tape, constraints.tape if constraints is not None else None, self.names),
            None,
            objective.backend,
            derivation=f"Lagrangian of {objective.source or 'the objective'}",
        )
        self._vg = objective.vg
        self._last: tuple[bytes, float, Array] | None = None
        self._jacobian: Function | None = None
        jacobian = None
        if constraints is not None:
            self._jacobian = constraints.sparse_jacobian_function(self.names)
            jrows, jcols = constraints._pattern("jacobian", self.names)
            jacobian = (self._jacobian.tape, jrows.tolist(), jcols.tolist())
        rows, cols = self.lagrangian._pattern("hessian", self.names)
        gradient = lagrangian_gradient_tape(objective, jacobian, names, self.m)
        self._hessian = Function(
            sparse.sparse_hessian_tape(
                self.lagrangian.tape, range(self.n), rows.tolist(), cols.tolist(), gradient=(gradient, range(self.n))
            ),
            None,
            objective.backend,
            derivation="the sparse Hessian of the Lagrangian",
        )
        self._zeros = [0.0] * self.m
        self.hessian_nnz = len(self.hessian_structure()[0])
        self.jacobian_nnz = len(self.jacobian_structure()[0])

    # -- patterns ---------------------------------------------------------------------------
    def hessian_structure(self) -> tuple[Indices, Indices]:
        """The lower triangle's structural nonzeros ``(rows, cols)`` in the order of :meth:`hessian_values`."""
        rows, cols = self.lagrangian._pattern("hessian", self.names)
        return rows, cols

    def jacobian_structure(self) -> tuple[Indices, Indices]:
        """The constraint Jacobian's structural nonzeros ``(rows, cols)`` in the order of :meth:`jacobian_values`."""
        if self.constraints is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        rows, cols = self.constraints._pattern("jacobian", self.names)
        return rows, cols

    # -- values -------------------------------------------------------------------------------
    def value_and_grad(self, x: Array) -> tuple[float, Array]:
        """``f(x)`` and ``∇f(x)`` (nan outside the domain); the last point is remembered."""
        key = x.tobytes()
        last = self._last
        if last is not None and last[0] == key:
            return last[1], last[2]
        try:
            value, grad = self._vg(*x.tolist())
            result = (float(value), np.asarray(grad, dtype=np.float64))
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
        return _outputs(self.constraints.entry, x.tolist(), self.m)

    def jacobian_values(self, x: Array) -> Array:
        """The Jacobian's structural nonzeros, in :meth:`jacobian_structure`'s order."""
        if self._jacobian is None:
            return np.zeros(0)
        return _outputs(self._jacobian.entry, x.tolist(), self._jacobian.n_outputs)[: self.jacobian_nnz]

    def hessian_values(self, x: Array, sigma: float, multipliers: Array | Sequence[float] | None) -> Array:
        """The lower triangle of ``σ ∇²f + Σ λᵢ ∇²cᵢ``'s structural nonzeros, in :meth:`hessian_structure`'s order."""
        lam = self._zeros if multipliers is None else np.asarray(multipliers, dtype=np.float64).tolist()
        values = _outputs(self._hessian.entry, [*x.tolist(), float(sigma), *lam], self._hessian.n_outputs)
        return values[: self.hessian_nnz]  # (a tape with no entries still has one output: a constant)

    # -- as scipy.sparse ------------------------------------------------------------------------
    def jacobian_csr(self, x: Array) -> Any:
        assert self.constraints is not None
        take, indices, indptr, shape = self.constraints._layout("jacobian", self.names)
        return _csr(self.jacobian_values(x)[take], indices, indptr, shape)

    def hessian_csr(self, x: Array, sigma: float, multipliers: Array | Sequence[float] | None) -> Any:
        """The full symmetric Hessian of the Lagrangian as a CSR array (what scipy's solvers take)."""
        take, indices, indptr, shape = self.lagrangian._layout("hessian", self.names, False)
        return _csr(self.hessian_values(x, sigma, multipliers)[take], indices, indptr, shape)


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
