"""A compiled expression: a tape plus the calling conventions users expect.

``Function`` binds a point (keyword arguments by variable name, positional
arguments in variable order, or one mapping) to the tape's inputs, checks it,
and runs the sweeps.  It never re-parses: build one with
:func:`symgrad.compile` and call it as often as you like.

Evaluation runs code generated from the tape (:mod:`symgrad.codegen`), compiled
on first use; :mod:`symgrad.interpret` is the reference it is tested against.
A point of plain floats takes a short path (no dict building beyond Python's
own ``**kwargs``); if any value is a numpy array, the whole point is
evaluated with numpy, broadcasting like numpy, and each partial comes back in
its input's shape (adjoints of broadcast inputs summed).  On arrays, domain
violations follow numpy (nan or inf plus a ``RuntimeWarning``) instead of
raising :class:`~symgrad.errors.DomainError`.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import codegen
from .errors import InputError, MissingVariableError, UnknownVariableError
from .tape import Tape

__all__ = ["Function", "Gradient", "bind_scalars"]

Gradient = float | dict[str, float]
"""One partial (a float) or several (a dict from variable name to partial)."""


class Function:
    """A differentiable function of named scalar variables, backed by a tape.

    >>> f = compile("a*b + c")                          # doctest: +SKIP
    >>> f.variables
    ('a', 'b', 'c')
    """

    __slots__ = ("_fwd", "_getter", "_index", "_n", "_vg", "source", "tape", "variables")

    def __init__(self, tape: Tape, source: str | None = None) -> None:
        self.tape = tape
        self.source = source if source is not None else tape.source
        self.variables: tuple[str, ...] = tape.inputs
        """The variables, in order of first appearance in the source."""
        self._index = {name: i for i, name in enumerate(self.variables)}
        self._vg: Any = None  # the generated functions, compiled on first use
        self._n = len(self.variables)
        self._getter: Any = operator.itemgetter(*self.variables) if self.variables else None
        self._fwd: Any = None

    # -- binding a point ----------------------------------------------------
    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
        """The point in variable order: floats, or float64 arrays; raises InputError."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            kwargs = {**args[0], **kwargs}
            args = ()
        if len(args) > len(self.variables):
            raise InputError(
                f"{self._describe()} takes {len(self.variables)} values, got {len(args)} positional values"
            )
        point: dict[str, Any] = dict(zip(self.variables, args, strict=False))
        for name, value in kwargs.items():
            if name not in self._index:
                raise UnknownVariableError(
                    f"'{name}' is not a variable of {self._describe()}; its variables are {self._names()}"
                )
            if name in point:
                raise InputError(f"variable '{name}' was given twice (positionally and by name)")
            point[name] = value
        missing = [name for name in self.variables if name not in point]
        if missing:
            listed = ", ".join(f"'{m}'" for m in missing)
            raise MissingVariableError(f"no value given for {listed} in {self._describe()}")
        return [_as_value(name, point[name]) for name in self.variables]

    def _describe(self) -> str:
        return f"'{self.source}'" if self.source is not None else repr(self)

    def _names(self) -> str:
        return ", ".join(self.variables) if self.variables else "(none)"

    def _select(self, grads: list[float], wrt: str | Iterable[str] | None) -> Gradient:
        if wrt is None:
            if len(self.variables) == 1:
                return grads[0]
            return dict(zip(self.variables, grads, strict=True))
        if isinstance(wrt, str):
            return grads[self._position(wrt)]
        return {name: grads[self._position(name)] for name in wrt}

    def _position(self, name: str) -> int:
        if name not in self._index:
            raise UnknownVariableError(
                f"cannot differentiate with respect to '{name}': it is not a variable of "
                f"{self._describe()}; its variables are {self._names()}"
            )
        return self._index[name]

    # -- evaluating -----------------------------------------------------------
    def _floats(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The point when it is all plain floats given the usual way, else None (take the full path)."""
        point: Any = None
        if kwargs:
            if not args and len(kwargs) == self._n:
                try:
                    point = self._getter(kwargs)
                except KeyError:
                    return None
                if self._n == 1:
                    point = (point,)
        elif len(args) == self._n:
            point = args
        if point is not None:
            for v in point:
                if type(v) is not float:
                    return None
        return point

    @property
    def vg(self) -> codegen.ValueAndGradFn:
        """The compiled value-and-gradient function, for hot loops.

        ``f.vg(*floats)`` takes one float per variable, positionally in
        ``f.variables`` order, and returns ``(value, [∂/∂variable, ...])``.  It
        skips all checking of its arguments (pass floats); domain errors are
        still :class:`~symgrad.errors.DomainError`.  In a hot loop, bind it once
        (``vg = f.vg``) and call ``vg(x, y)``: that is the generated function
        itself, as fast as sympy's lambdified derivative.
        """
        fn: codegen.ValueAndGradFn | None = self._vg
        if fn is None:
            fn = self._vg = codegen.value_and_grad_function(self.tape)
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The value at a point: ``f(a=2, b=-3, c=10)`` or ``f(2, -3, 10)``."""
        point = self._floats(args, kwargs)
        if point is None:
            point = self.bind(args, kwargs)
            if _has_array(point):
                return codegen.array_forward_function(self.tape, _shapes(point))(*_numpy(point))
        fn = self._fwd
        if fn is None:
            fn = self._fwd = codegen.forward_function(self.tape)
        return fn(*point)

    def grad(self, *args: Any, wrt: str | Iterable[str] | None = None, **kwargs: Any) -> Any:
        """The partials at a point.

        One variable (or ``wrt="x"``) gives a float; several give a dict from
        name to partial, in variable order.  ``wrt`` may also be a list of names.
        """
        return self.value_and_grad(*args, wrt=wrt, **kwargs)[1]

    def value_and_grad(self, *args: Any, wrt: str | Iterable[str] | None = None, **kwargs: Any) -> tuple[Any, Any]:
        """The value and the partials from one forward and one reverse sweep."""
        fn = self._vg
        if fn is None:
            fn = self._vg = codegen.value_and_grad_function(self.tape)
        point = self._floats(args, kwargs)  # the hot path: plain floats, all by name or all by position
        if point is None:
            point = self.bind(args, kwargs)
            if _has_array(point):
                value, grads = codegen.array_value_and_grad_function(self.tape, _shapes(point))(*_numpy(point))
                return value, self._select(grads, wrt)
        value, grads = fn(*point)
        if wrt is None and len(grads) == 1:
            return value, grads[0]
        return value, self._select(grads, wrt)

    def draw(self, point: Mapping[str, Any] | None = None, /, *, rankdir: str = "LR", **values: Any) -> Any:
        """A graphviz drawing of the tape, with data and grads at a point if one is given.

        Delegates to :func:`symgrad.draw`; returns a ``graphviz.Digraph``.
        """
        from .drawing import draw  # deferred: draw imports this module

        return draw(self, point, rankdir=rankdir, **values)

    @property
    def code(self) -> str:
        """The Python source generated from the tape for value and gradient on floats."""
        return codegen.source(self.tape)

    # -- the oracle (sympy, imported only when these are called) ---------------
    def to_sympy(self) -> Any:
        """This function as a sympy expression, built from the op table (see :mod:`symgrad.oracle`)."""
        from . import oracle

        return oracle.to_sympy(oracle.tree_of(self))

    def symbolic_grad(self) -> dict[str, Any]:
        """``{name: sympy derivative}`` for every variable, in variable order."""
        from . import oracle

        return oracle.symbolic_grad(oracle.tree_of(self), self.variables)

    def __repr__(self) -> str:
        name = f" {self.source!r}" if self.source is not None else ""
        return f"<Function{name} f:({','.join(self.variables)})->out, {len(self.tape)} records>"


def _shapes(point: list[Any]) -> tuple[tuple[int, ...], ...]:
    return tuple(np.shape(v) for v in point)


def _numpy(point: list[Any]) -> list[Any]:
    """Floats become numpy scalars, so that float-only parts of the tape also follow numpy (no raising)."""
    return [np.float64(v) if type(v) is float else v for v in point]


def _has_array(point: list[Any]) -> bool:
    return any(type(v) is not float for v in point)


def _as_value(name: str, value: Any) -> Any:
    """A float, or a float64 array for a numpy array."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool):
        raise InputError(f"value for '{name}' must be a number, got a bool ({value})")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiu":
            raise InputError(
                f"value for '{name}' must be an array of real numbers, got an array of dtype {value.dtype}"
            )
        return value.astype(np.float64, copy=False)
    raise InputError(f"value for '{name}' must be a real number or an array, got {type(value).__name__} {value!r}")


def bind_scalars(function: Function, point: Mapping[str, Any], purpose: str) -> list[float]:
    """``point`` bound like :meth:`Function.bind`, for features that work at one point only.

    ``draw``, ``check`` and ``plot(fixed=...)`` show or compare single numbers, so a numpy array
    there is an :class:`~symgrad.errors.InputError` that names the variables (a 0-d array is a number).
    """
    values = function.bind((point,), {})
    arrays = [name for name, v in zip(function.variables, values, strict=True) if type(v) is not float]
    for i, name in enumerate(function.variables):
        if name in arrays and np.ndim(values[i]) == 0:
            values[i] = float(values[i])
            arrays.remove(name)
    if arrays:
        listed = ", ".join(f"'{name}'" for name in arrays)
        raise InputError(
            f"{purpose} evaluates at single points: give {listed} a single number, not an array "
            f"(evaluate arrays with f(...) or f.value_and_grad(...))"
        )
    return values
