"""The string front end: ``compile``, ``grad`` and ``value_and_grad``.

``compile`` parses and lowers once and caches the result by source text, so
``symgrad.grad(same_string, ...)`` in a loop parses only the first time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from . import native
from .function import Function, Gradient
from .lower import lower
from .parser import parse

__all__ = ["compile", "grad", "value_and_grad"]

_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(source: str, backend: str) -> Function:
    return Function(lower(parse(source), source), source, backend)


def compile(source: str | Function, backend: str | None = None) -> Function:
    """Parse and lower ``source`` once; the result is cached by its text and backend.

    ``backend``: ``"auto"`` (machine code via LLVM for tapes of a few hundred
    records or more, generated Python below), ``"native"`` or ``"python"``;
    default: the ``SYMGRAD_BACKEND`` environment variable, else ``"auto"``.

    >>> f = compile("a*b + c")
    >>> f.variables
    ('a', 'b', 'c')
    >>> f(a=2, b=-3, c=10)
    4.0
    """
    if isinstance(source, Function):
        if backend is None or native.resolve_backend(backend) == source.backend:
            return source
        return Function(source.tape, source.source, backend)
    if not isinstance(source, str):
        raise TypeError(f"compile() takes an expression string, got {type(source).__name__}")
    return _compile_cached(source, native.resolve_backend(backend))


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
