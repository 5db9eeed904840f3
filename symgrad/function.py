"""A compiled expression: a tape plus the calling conventions users expect.

``Function`` binds a point (keyword arguments by variable name, positional
arguments in variable order, or one mapping) to the tape's inputs, checks it,
and runs the sweeps.  It never re-parses: build one with
:func:`symgrad.compile` and call it as often as you like.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from . import interpret
from .errors import InputError, MissingVariableError, UnknownVariableError
from .tape import Tape

__all__ = ["Function", "Gradient"]

Gradient = float | dict[str, float]
"""One partial (a float) or several (a dict from variable name to partial)."""


class Function:
    """A differentiable function of named scalar variables, backed by a tape.

    >>> f = compile("a*b + c")                          # doctest: +SKIP
    >>> f.variables
    ('a', 'b', 'c')
    """

    __slots__ = ("_index", "source", "tape", "variables")

    def __init__(self, tape: Tape, source: str | None = None) -> None:
        self.tape = tape
        self.source = source if source is not None else tape.source
        self.variables: tuple[str, ...] = tape.inputs
        """The variables, in order of first appearance in the source."""
        self._index = {name: i for i, name in enumerate(self.variables)}

    # -- binding a point ----------------------------------------------------
    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[float]:
        """The point as a list of floats in variable order; raises InputError."""
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
        return [_as_float(name, point[name]) for name in self.variables]

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
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        """The value at a point: ``f(a=2, b=-3, c=10)`` or ``f(2, -3, 10)``."""
        values = interpret.forward(self.tape, self.bind(args, kwargs))
        return values[self.tape.output]

    def grad(self, *args: Any, wrt: str | Iterable[str] | None = None, **kwargs: Any) -> Gradient:
        """The partials at a point.

        One variable (or ``wrt="x"``) gives a float; several give a dict from
        name to partial, in variable order.  ``wrt`` may also be a list of names.
        """
        return self.value_and_grad(*args, wrt=wrt, **kwargs)[1]

    def value_and_grad(
        self, *args: Any, wrt: str | Iterable[str] | None = None, **kwargs: Any
    ) -> tuple[float, Gradient]:
        """The value and the partials from one forward and one reverse sweep."""
        value, grads = interpret.value_and_grad(self.tape, self.bind(args, kwargs))
        return value, self._select(grads, wrt)

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


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool):
        raise InputError(f"value for '{name}' must be a number, got a bool ({value})")
    raise InputError(f"value for '{name}' must be a real number, got {type(value).__name__} {value!r}")
