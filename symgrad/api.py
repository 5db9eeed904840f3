"""The string front end: ``compile``, ``grad``, ``value_and_grad`` and the derivatives beyond.

``compile`` parses and lowers once and caches the result by source text, so
``symgrad.grad(same_string, ...)`` in a loop parses only the first time.
``diff``, ``hessian``, ``jacobian``, ``jvp`` and ``hvp`` follow the JAX/sympy
names; each is a thin call on the :class:`~symgrad.function.Function`, whose
derivative tapes are built once and kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .backends import dispatch
from .builder import TapeBuilder
from .errors import InputError
from .expr import is_plain
from .function import Function, Gradient, merge_point
from .lower import declare, lower, lower_many
from .model import Declaration, Declared, ModelText, declared_inputs, lower_model, normalise_declaration
from .parser import parse
from .tape import Tape

if TYPE_CHECKING:
    import graphviz

__all__ = ["clear_cache", "compile", "diff", "draw", "grad", "hessian", "hvp", "jacobian", "jvp", "value_and_grad"]

Expression = str | Sequence[str] | Function
"""A formula, several formulas (one output each), or a compiled Function."""

# The compile cache keeps at most _CACHE_SIZE formulas and _CACHE_SLOTS tape slots in total
# (a larger formula is kept alone).  Measured: a 20,000-term sum is 80,000 slots and holds
# 16 MB compiled, 20 MB once its code is generated, so the slot bound is about 50-90 MB.
_CACHE_SIZE = 1024
_CACHE_SLOTS = 250_000

_Key = tuple[str | tuple[str, ...], str, Any, tuple[tuple[str, int], ...] | None]
"""(source text or texts, backend, declared variables, sizes)."""


class _CompileCache:
    """Least-recently-used ``source -> Function``, bounded by count and by total tape size."""

    def __init__(self, max_entries: int, max_slots: int) -> None:
        self.max_entries, self.max_slots = max_entries, max_slots
        self._entries: OrderedDict[_Key, Function] = OrderedDict()
        self._slots = 0
        self._lock = threading.Lock()

    def get(self, key: _Key, build: Callable[[], Function]) -> Function:
        with self._lock:
            f = self._entries.get(key)
            if f is not None:
                self._entries.move_to_end(key)
                return f
        f = build()  # outside the lock: parsing can take long
        with self._lock:
            if key in self._entries:  # another thread compiled it meanwhile
                return self._entries[key]
            self._entries[key] = f
            self._slots += f.tape.n_slots
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._slots > self.max_slots):
                _, old = self._entries.popitem(last=False)
                self._slots -= old.tape.n_slots
        return f

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._slots = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def slots(self) -> int:
        return self._slots


_cache = _CompileCache(_CACHE_SIZE, _CACHE_SLOTS)


def clear_cache() -> None:
    """Forget every formula :func:`compile` has cached (``Function`` objects you hold stay valid).

    The cache keeps at most 1,024 formulas and 250,000 tape slots in total,
    dropping the least recently used first; clearing it returns that memory now.
    """
    _cache.clear()


def _lower_any(sources: tuple[str, ...], declared: Declared | None, sizes: Mapping[str, int] | None) -> Tape:
    """Plain formulas through :func:`lower`; models (or sizes, or declared vectors) through :func:`lower_model`."""
    return _lowered(sources, declared, sizes)[0]


def _lowered(
    sources: tuple[str, ...], declared: Declared | None, sizes: Mapping[str, int] | None
) -> tuple[Tape, ModelText | None]:
    """:func:`_lower_any`'s tape, and for a one-formula model what it was lowered from (its sums'
    derivatives are then assembled from one term each: :mod:`symgrad.elements`)."""
    exprs = [parse(s) for s in sources]
    modelling = sizes is not None or (declared is not None and bool(declared) and not isinstance(declared[0], str))
    if modelling or not all(is_plain(e) for e in exprs):
        variables: Declaration | None = None
        if declared and not isinstance(declared[0], str):
            variables = {name: length for name, length in declared if isinstance(name, str)}
        elif declared is not None:
            variables = [name for name in declared if isinstance(name, str)]
        tape = lower_model(exprs, sources, sizes=sizes, variables=variables)
        return tape, ModelText(exprs[0], sources[0], sizes, variables) if len(exprs) == 1 else None
    names = declared  # plain names (a model is needed for vectors)
    assert names is None or all(isinstance(n, str) for n in names)
    if len(sources) == 1:
        return lower(exprs[0], sources[0], variables=names), None  # type: ignore[arg-type]
    return lower_many(exprs, sources, names), None  # type: ignore[arg-type]


def _model_function(source: str, declared: Declared | None, sizes: Mapping[str, int] | None, backend: str) -> Function:
    tape, model = _lowered((source,), declared, sizes)
    return Function(tape, source, backend, model=model)


def _compile_one(source: str, backend: str) -> Function:
    """One formula, no declarations: what :func:`compile` builds for a plain string."""
    return Function(_lower_any((source,), None, None), source, backend)


def _sizes_key(sizes: Mapping[str, int] | None) -> tuple[tuple[str, int], ...] | None:
    if sizes is None:
        return None
    if not isinstance(sizes, Mapping):
        raise InputError(f"sizes= takes a mapping from names to integers, got {type(sizes).__name__}")
    return tuple(sizes.items())


def _redeclare(f: Function, declared: Declared, backend: str | None) -> Function:
    """``f`` with its inputs declared as ``variables`` (same records, inputs reordered or added)."""
    names = [n if isinstance(n, str) else "" for n in declared]
    if declared and not isinstance(declared[0], str):
        names = declared_inputs({n: length for n, length in declared if isinstance(n, str)})
    unknown = [name for name in f.variables if name not in names]
    if unknown:
        raise InputError(f"'{unknown[0]}' is a variable of {f!r:.80} but not declared in variables=")
    builder = TapeBuilder(f.tape.source)
    if isinstance(declared[0] if declared else "", str):
        declare(builder, names)  # checks the names
    for name in names:
        builder.var(name)
    if len(builder.inputs) != len(names):
        raise InputError("a variable is declared twice in variables=")
    refs = builder.import_tape(f.tape)
    tape = builder.finish([refs[slot] for slot in f.tape.outputs], f.tape.output_names)
    return Function(tape, f.source, backend if backend is not None else f.backend, f.derivation)


def compile(
    source: Expression,
    backend: str | None = None,
    *,
    variables: Declaration | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Function:
    """Parse and lower ``source`` once; the result is cached by its text and backend (see :func:`clear_cache`).

    A list of formulas compiles to one Function with one output per formula;
    they share one tape (common subexpressions are computed once).

    ``backend``: ``"auto"`` (machine code via LLVM for tapes of a few hundred
    records or more, generated Python below), ``"native"`` or ``"python"``;
    default: the ``SYMGRAD_BACKEND`` environment variable, else ``"auto"``.

    >>> f = compile("a*b + c")
    >>> f.variables
    ('a', 'b', 'c')
    >>> f(a=2, b=-3, c=10)
    4.0
    >>> compile(["x*y", "x + y"])(x=2, y=3)
    (6.0, 5.0)

    ``variables`` declares the variables and their order (otherwise: order of
    first appearance).  A declared variable the formula does not use gets a
    zero partial; a variable the formula uses but the list omits, and a name
    listed twice, are an :class:`~symgrad.errors.InputError`.

    >>> compile("100*(x2 - x1**2)**2 + (1 - x1)**2").variables
    ('x2', 'x1')
    >>> g = compile("x**2", variables=["x", "y"])
    >>> g.grad(x=3, y=1)
    {'x': 6.0, 'y': 0.0}
    """
    declared = normalise_declaration(variables)
    size_key = _sizes_key(sizes)
    if isinstance(source, Function):
        if declared is not None and declared != source.variables:
            return _redeclare(source, declared, backend)
        if backend is None or dispatch.resolve_backend(backend) == source.backend:
            return source
        return Function(source.tape, source.source, backend, source.derivation, model=source._model)
    chosen = dispatch.resolve_backend(backend)
    if isinstance(source, str):
        if declared is None and size_key is None:
            return _cache.get((source, chosen, None, None), lambda: _compile_one(source, chosen))
        return _cache.get(
            (source, chosen, declared, size_key),
            lambda: _model_function(source, declared, sizes, chosen),
        )
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, str) for s in source):
        sources = tuple(source)
        return _cache.get(
            (sources, chosen, declared, size_key),
            lambda: Function(_lower_any(sources, declared, sizes), None, chosen),
        )
    raise InputError(
        f"compile() takes an expression string or a non-empty list of them, got {type(source).__name__} {source!r}"
    )


def grad(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    variables: Declaration | None = None,
    **values: Any,
) -> Gradient:
    """Partial derivatives of ``expr`` at a point given by keyword arguments.

    >>> grad("3*x**2-4*x+5", x=3)
    14.0
    >>> grad("a*b + c", a=2, b=-3, c=10)
    {'a': -3.0, 'b': 2.0, 'c': 1.0}
    >>> grad("a*b + c", wrt="a", a=2, b=-3, c=10)
    -3.0

    ``variables`` declares the variables (see :func:`compile`): a declared one
    the formula does not use gets a zero partial.

    >>> grad("x**2", variables=["x", "y"], x=3, y=1)
    {'x': 6.0, 'y': 0.0}

    A variable whose name clashes with ``wrt`` or ``variables`` can be given in
    the ``point`` mapping instead: ``grad("wrt*2", {"wrt": 1.0})``.
    """
    return value_and_grad(expr, point, wrt=wrt, variables=variables, **values)[1]


def value_and_grad(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    variables: Declaration | None = None,
    **values: Any,
) -> tuple[float, Gradient]:
    """The value and the partials of ``expr`` at a point, from one pair of sweeps.

    >>> value_and_grad("x*y", x=2, y=5)
    (10.0, {'x': 5.0, 'y': 2.0})
    """
    f = compile(expr, variables=variables)
    return f.value_and_grad(merge_point(point, values), wrt=wrt)


def diff(expr: str | Function, *wrt: str, variables: Iterable[str] | None = None) -> Function:
    """The derivative ∂ⁿf/∂wrt[0]…∂wrt[-1] as a Function (sympy's ``diff``, of any order).

    >>> d = diff("3*x**2-4*x+5", "x")
    >>> d(x=3)
    14.0
    >>> d.formula
    '6*x - 4'
    >>> diff("sin(x)*y", "x", "x").formula
    '-y*sin(x)'
    """
    return compile(expr, variables=variables).derivative(*wrt)


def hessian(
    expr: str | Function,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    variables: Declaration | None = None,
    **values: Any,
) -> Any:
    """The Hessian at a point, ``{x: {x: ∂²f/∂x², y: ∂²f/∂x∂y}, y: {...}}`` (exactly symmetric).

    >>> hessian("x**2*y", x=1, y=2)
    {'x': {'x': 4.0, 'y': 2.0}, 'y': {'x': 2.0, 'y': 0.0}}
    """
    return compile(expr, variables=variables).hessian(_merge(point, values), wrt=wrt)


def jacobian(
    exprs: Expression,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    wrt: str | Iterable[str] | None = None,
    variables: Declaration | None = None,
    **values: Any,
) -> dict[str, dict[str, Any]]:
    """``{output: {variable: ∂output/∂variable}}`` over the union of the outputs' variables.

    >>> jacobian(["x*y", "x + y"], x=1, y=2)
    {'x*y': {'x': 2.0, 'y': 1.0}, 'x + y': {'x': 1.0, 'y': 1.0}}
    """
    return compile(exprs, variables=variables).jacobian(_merge(point, values), wrt=wrt)


def jvp(
    expr: Expression,
    point: Mapping[str, Any],
    tangent: Mapping[str, Any],
    *,
    variables: Declaration | None = None,
) -> tuple[Any, Any]:
    """Forward mode: ``(value, directional derivative along tangent)``, as JAX's ``jvp``.

    >>> jvp("x*y", {"x": 2, "y": 3}, {"x": 1, "y": 0})
    (6.0, 3.0)
    """
    return compile(expr, variables=variables).jvp(point, tangent)


def hvp(
    expr: str | Function, point: Mapping[str, Any], vector: Mapping[str, Any], *, variables: Declaration | None = None
) -> Any:
    """The Hessian-vector product ``H @ vector`` without forming the Hessian.

    >>> hvp("x**2*y", {"x": 1, "y": 2}, {"x": 1, "y": 0})
    {'x': 4.0, 'y': 2.0}
    """
    return compile(expr, variables=variables).hvp(point, vector)


def _merge(point: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    return merge_point(point, values)  # a name in both is an InputError


def draw(
    target: str | Function | Tape,
    point: Mapping[str, Any] | None = None,
    /,
    *,
    rankdir: str = "LR",
    layout: str = "auto",
    **values: Any,
) -> graphviz.Digraph:
    """Draw an expression, a compiled function or a tape (see :meth:`Function.draw`).

    With a value for every variable it runs the forward and reverse sweeps and
    shows each slot's data and grad; with no values it draws the structure
    only.  A variable named like a keyword here (``rankdir``, ``layout``) can be
    given in the ``point`` mapping instead.

    >>> dot = draw("a*b + c", a=2, b=-3, c=10)
    >>> dot.source.count("| grad ")     # one per slot: a, b, c, a*b, the sum
    5
    """
    if isinstance(target, Tape):
        function = Function(target)
    elif isinstance(target, (str, Function)):
        function = compile(target)
    else:
        raise InputError(f"draw() takes an expression string, a Function or a Tape, got {type(target).__name__}")
    return function.draw(point, rankdir=rankdir, layout=layout, **values)
