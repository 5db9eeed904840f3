"""The string front end: ``compile``, ``grad``, ``value_and_grad`` and the derivatives beyond.

``compile`` parses and lowers once and caches the result by source text, so
``symgrad.grad(same_string, ...)`` in a loop parses only the first time.
``diff``, ``hessian``, ``jacobian``, ``jvp`` and ``hvp`` follow the JAX/sympy
names; each is a thin call on the :class:`~symgrad.function.Function`, whose
derivative tapes are built once and kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InputError
from .function import Function, Gradient
from .lower import lower, lower_many
from .parser import parse

__all__ = ["compile", "diff", "grad", "hessian", "hvp", "jacobian", "jvp", "value_and_grad"]

Expression = str | Sequence[str] | Function
"""A formula, several formulas (one output each), or a compiled Function."""

_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(source: str) -> Function:
    return Function(lower(parse(source), source), source)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_many_cached(sources: tuple[str, ...]) -> Function:
    return Function(lower_many([parse(s) for s in sources], sources))


def compile(source: Expression) -> Function:
    """Parse and lower ``source`` once; the result is cached by its text.

    A list of formulas compiles to one Function with one output per formula;
    they share one tape (common subexpressions are computed once).

    >>> f = compile("a*b + c")
    >>> f.variables
    ('a', 'b', 'c')
    >>> f(a=2, b=-3, c=10)
    4.0
    >>> compile(["x*y", "x + y"])(x=2, y=3)
    (6.0, 5.0)
    """
    if isinstance(source, Function):
        return source
    if isinstance(source, str):
        return _compile_cached(source)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, str) for s in source):
        return _compile_many_cached(tuple(source))
    raise InputError(
        f"compile() takes an expression string or a non-empty list of them, got {type(source).__name__} {source!r}"
    )


def grad(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    **values: Any,
) -> Gradient:
    """Partial derivatives of ``expr`` at a point given by keyword arguments.

    >>> grad("3*x**2-4*x+5", x=3)
    14.0
    >>> grad("a*b + c", a=2, b=-3, c=10)
    {'a': -3.0, 'b': 2.0, 'c': 1.0}
    >>> grad("a*b + c", wrt="a", a=2, b=-3, c=10)
    -3.0

    A variable whose name clashes with ``wrt`` can be given in the ``point``
    mapping instead: ``grad("wrt*2", {"wrt": 1.0})``.
    """
    return value_and_grad(expr, point, wrt=wrt, **values)[1]


def value_and_grad(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    **values: Any,
) -> tuple[float, Gradient]:
    """The value and the partials of ``expr`` at a point, from one pair of sweeps.

    >>> value_and_grad("x*y", x=2, y=5)
    (10.0, {'x': 5.0, 'y': 2.0})
    """
    f = compile(expr)
    merged = {**(point or {}), **values}
    return f.value_and_grad(merged, wrt=wrt)


def diff(expr: str | Function, *wrt: str) -> Function:
    """The derivative ∂ⁿf/∂wrt[0]…∂wrt[-1] as a Function (sympy's ``diff``, of any order).

    >>> d = diff("3*x**2-4*x+5", "x")
    >>> d(x=3)
    14.0
    >>> d.formula
    '6*x - 4'
    >>> diff("sin(x)*y", "x", "x").formula
    '-y*sin(x)'
    """
    return compile(expr).derivative(*wrt)


def hessian(
    expr: str | Function, point: Mapping[str, Any] | None = None, /, *, wrt: str | Iterable[str] | None = None,
    **values: Any,
) -> Any:
    """The Hessian at a point, ``{x: {x: ∂²f/∂x², y: ∂²f/∂x∂y}, y: {...}}`` (exactly symmetric).

    >>> hessian("x**2*y", x=1, y=2)
    {'x': {'x': 4.0, 'y': 2.0}, 'y': {'x': 2.0, 'y': 0.0}}
    """
    return compile(expr).hessian(_merge(point, values), wrt=wrt)


def jacobian(
    exprs: Expression, point: Mapping[str, Any] | None = None, /, *, wrt: str | Iterable[str] | None = None,
    **values: Any,
) -> dict[str, dict[str, Any]]:
    """``{output: {variable: ∂output/∂variable}}`` over the union of the outputs' variables.

    >>> jacobian(["x*y", "x + y"], x=1, y=2)
    {'x*y': {'x': 2.0, 'y': 1.0}, 'x + y': {'x': 1.0, 'y': 1.0}}
    """
    return compile(exprs).jacobian(_merge(point, values), wrt=wrt)


def jvp(expr: Expression, point: Mapping[str, Any], tangent: Mapping[str, Any]) -> tuple[Any, Any]:
    """Forward mode: ``(value, directional derivative along tangent)``, as JAX's ``jvp``.

    >>> jvp("x*y", {"x": 2, "y": 3}, {"x": 1, "y": 0})
    (6.0, 3.0)
    """
    return compile(expr).jvp(point, tangent)


def hvp(expr: str | Function, point: Mapping[str, Any], vector: Mapping[str, Any]) -> Any:
    """The Hessian-vector product ``H @ vector`` without forming the Hessian.

    >>> hvp("x**2*y", {"x": 1, "y": 2}, {"x": 1, "y": 0})
    {'x': 4.0, 'y': 2.0}
    """
    return compile(expr).hvp(point, vector)


def _merge(point: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    return {**(point or {}), **values}
