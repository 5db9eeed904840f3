"""A compiled expression: a tape plus the calling conventions users expect.

``Function`` binds a point (keyword arguments by variable name, positional
arguments in variable order, or one mapping) to the tape's inputs, checks it,
and evaluates.  It never re-parses: build one with :func:`symgrad.compile` and
call it as often as you like.

Derivatives are tapes (:mod:`symgrad.transforms`): the gradient of ``f`` is a
forward-only tape whose outputs are the value and the partials, and
``f.value_and_grad`` runs the straight-line code generated from it
(:mod:`symgrad.backends.python`).  When that code meets a point where an op raises or
an output is not finite, the point goes to the reference interpreter's classic
sweeps (:mod:`symgrad.backends.interpreter`), which skip dead branches (a zero adjoint)
and otherwise raise the precise :class:`~symgrad.errors.DomainError`.  Higher
derivatives (:meth:`Function.derivative`, :meth:`Function.hessian`, …) are
Functions of their own, whose reference is the interpreter evaluating their
tape.

A point of plain floats takes a short path; if any value is a numpy array,
the point is evaluated with numpy, broadcasting like numpy, and each partial
comes back in its input's shape (the gradient of the sum of the outputs).  On
arrays, domain violations follow numpy (nan or inf plus a ``RuntimeWarning``).

If any value of a point is a dask array, the result is lazy:
:mod:`symgrad.backends.dask` runs that same numpy evaluation chunk by chunk.  A
Function pickles as its tape (and its backend choice), so it can be sent to
other processes; executors are rebuilt there on first use.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import graphviz
import numpy as np

from . import display, drawing, export_c, sparse, symbolic, transforms
from . import explain as explain_mod
from .backends import dask as dask_arrays
from .backends import dispatch, interpreter
from .backends import python as python_code
from .backends.numpy import fit as fit_shape
from .backends.protocol import Returns
from .elements import Assembly, Vectorised, hessian_assembly
from .errors import (
    InputError,
    MissingDependencyError,
    MissingVariableError,
    UnknownVariableError,
    abbreviate,
    clip,
    did_you_mean,
    lookalike_hint,
    quote,
    short_repr,
)
from .explain import Explanation
from .formula import FormulaTooLongError, to_formula
from .model import Families, ModelText, declared_vectors, vector_items
from .tape import Tape

if TYPE_CHECKING:
    from .backends.native.kernel import NativeKernel

__all__ = ["Function", "Gradient", "bind_scalars", "csr_layout"]

Gradient = float | dict[str, float]
"""One partial (a float) or several (a dict from variable name to partial)."""

MAX_SHAPES = 8
"""Array programs kept per Function and tape (each with its scratch buffers), least recently used dropped first."""

Wrt = str | Iterable[str] | None


class Function:
    """A differentiable function of named scalar variables, backed by a tape.

    >>> f = compile("a*b + c")                          # doctest: +SKIP
    >>> f.variables
    ('a', 'b', 'c')
    """

    __slots__ = (
        "_array_rentals",
        "_arrays",
        "_derived",
        "_derived_functions",
        "_fwd",
        "_getter",
        "_index",
        "_model",
        "_n",
        "_patterns",
        "_rentals",
        "_vg",
        "_vg_wrt",
        "backend",
        "derivation",
        "source",
        "tape",
        "variables",
    )

    def __init__(
        self,
        tape: Tape,
        source: str | None = None,
        backend: str | None = None,
        derivation: str | None = None,
        *,
        model: ModelText | Families | None = None,
    ) -> None:
        self.tape = tape
        self._model = model
        """What a one-formula model was lowered from, or the families of constraints its outputs are:
        their derivatives are then assembled from one term each (:mod:`symgrad.elements`); None otherwise."""
        self.derivation = derivation
        """For a derived Function (``f.derivative("x")``, ``f.hessian_function()``, …) what it is derived
        from, as ``"d/dx of 'x**3'"``; None otherwise."""
        # A derived tape keeps its parent's source text (its records' spans point into it, for the carets
        # of domain errors), but that text is not what it computes: a derived Function has no source.
        self.source = None if derivation is not None else source if source is not None else tape.source
        self.variables: tuple[str, ...] = tape.inputs
        """The variables, in order of first appearance in the source."""
        self._index = {name: i for i, name in enumerate(self.variables)}
        self._n = len(self.variables)
        self._getter: Any = operator.itemgetter(*self.variables) if self.variables else None
        self._fwd: Any = None  # generated code, compiled on first use
        self._vg: Any = None
        self._vg_wrt: dict[tuple[int, ...], Any] = {}
        self._derived: dict[tuple[Any, ...], Tape] = {}  # derivative tapes by what was asked
        self._derived_functions: dict[tuple[Any, ...], Function] = {}
        self._patterns: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # sparsity (rows, cols) by what was asked
        self._arrays: OrderedDict[tuple[Any, ...], Callable[..., list[Any]]] = OrderedDict()
        self._rentals: list[dispatch.Rental] = []  # scalar entries that may still move to a faster executor
        self._array_rentals: dict[tuple[Any, ...], dispatch.Rental] = {}  # the same for the array entries kept
        self.backend = dispatch.resolve_backend(backend)
        """``"auto"`` (the dispatcher chooses, see :mod:`symgrad.backends.dispatch`), ``"native"`` or ``"python"``."""

    # -- shape ------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        """How many values the function returns (1 for a formula)."""
        return len(self.tape.outputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """A label per output (the source text of each formula, ``d/dx``, …)."""
        if self.tape.output_names:
            return self.tape.output_names
        if self.n_outputs == 1 and self.source is not None:
            return (self.source,)
        return tuple(f"out{k}" for k in range(self.n_outputs))

    # -- binding a point ----------------------------------------------------
    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
        """The point in variable order: floats, or float64 arrays; raises InputError."""
        if len(args) == 1 and isinstance(args[0], Mapping):
            kwargs = merge_point(args[0], kwargs)
            args = ()
        if len(args) > len(self.variables):
            raise InputError(
                f"{self._describe()} takes {len(self.variables)} values, got {len(args)} positional values"
            )
        point: dict[str, Any] = dict(zip(self.variables, args, strict=False))
        for key, value in kwargs.items():
            name = self._variable_name(key)
            if name is None and isinstance(key, str) and f"{key}[1]" in self._index:  # a vector, as one list
                length = declared_vectors(self.variables)[key]
                items = dict(vector_items(key, length, value))
                twice = next((item for item in items if item in kwargs), None)
                if twice is not None:
                    raise InputError(f"'{twice}' was given twice: alone and as an element of the vector '{key}'")
                kwargs = {**kwargs, **items}
                del kwargs[key]
                return self.bind(args, kwargs)
            if name is None:
                raise UnknownVariableError(
                    f"{_quoted(key)} is not a variable of {self._describe()}; its variables are {self._names()}"
                    + self._hint(key)
                )
            if name in point:
                raise InputError(f"variable '{name}' was given twice (positionally and by name)")
            point[name] = value
        missing = [name for name in self.variables if name not in point]
        if missing:
            listed = ", ".join(f"'{m}'" for m in missing)
            raise MissingVariableError(f"no value given for {listed} in {self._describe()}")
        values = [_as_value(name, point[name]) for name in self.variables]
        if _has_array(values):
            _check_broadcast(self.variables, values)
        return values

    def _variable_name(self, key: object) -> str | None:
        """The variable ``key`` names (NFKC-normalised like the parser's names), or None."""
        if not isinstance(key, str):
            return None
        if key in self._index:
            return key
        name = unicodedata.normalize("NFKC", key)
        return name if name in self._index else None

    def _describe(self) -> str:
        """The function in a message: what it derives, or its source abbreviated (never a whole big formula)."""
        if self.derivation is not None:
            return self.derivation
        return quote(self.source) if self.source is not None else repr(self)

    def _names(self) -> str:
        """The variables in a message: the first few, and how many there are."""
        if not self.variables:
            return "(none)"
        shown = ", ".join(clip(name, 30) for name in self.variables[:_NAMES_SHOWN])
        more = len(self.variables) - _NAMES_SHOWN
        return shown if more <= 0 else f"{shown}, … ({len(self.variables):,} variables)"

    def _hint(self, key: object) -> str:
        """``; did you mean 'x'?`` for a near miss or a look-alike letter (Cyrillic ``х``), or ``""``."""
        if not isinstance(key, str) or len(self.variables) > 10_000:
            return ""
        hint = lookalike_hint(key, self.variables) or did_you_mean(key, self.variables)
        return f"; {hint}" if hint else ""

    def _positions(self, wrt: Wrt) -> tuple[int, ...]:
        names = list(self.variables) if wrt is None else _wrt_names(wrt)
        positions = []
        for name in names:
            position = self._index.get(name)
            if position is None:
                variable = self._variable_name(name)
                if variable is None:
                    raise UnknownVariableError(
                        f"cannot differentiate with respect to {_quoted(name)}: it is not a variable of "
                        f"{self._describe()}; its variables are {self._names()}{self._hint(name)}"
                    )
                position = self._index[variable]
            positions.append(position)
        return tuple(positions)

    def _one_output(self, what: str, instead: str = "use jacobian() for several outputs") -> None:
        if self.n_outputs != 1:
            raise InputError(
                f"{what} needs a function with one output; {self._describe()} has {self.n_outputs} ({instead})"
            )

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
                if type(v) is not float or v - v != 0.0:  # not a float, or nan/inf: the full path says why
                    return None
        return point

    def _point(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, bool]:
        """The bound point, and whether it holds arrays."""
        point = self._floats(args, kwargs)
        if point is not None:
            return point, False
        point = self.bind(args, kwargs)
        return point, _has_array(point)

    def _array_run(
        self, what: tuple[Any, ...], tape: Tape, point: list[Any], reduce_to: tuple[int | None, ...]
    ) -> list[Any]:
        """Evaluate ``tape`` (``what`` was asked of this Function) on arrays: one entry per tuple of
        shapes, a few kept, each chosen by the dispatcher."""
        shapes = tuple(np.shape(v) for v in point)
        key = (what, shapes, reduce_to)
        fn = self._arrays.get(key)
        if fn is None:

            def keep(fn: Callable[..., list[Any]]) -> None:
                self._arrays[key] = fn
                while len(self._arrays) > MAX_SHAPES:
                    dropped, _ = self._arrays.popitem(last=False)
                    self._array_rentals.pop(dropped, None)

            fn, rental = dispatch.array_entry(tape, shapes, reduce_to, self.backend, keep)
            if rental is not None and key in self._arrays:
                self._array_rentals[key] = rental
        else:
            self._arrays.move_to_end(key)
        try:
            return fn(*_numpy(point))
        except ValueError as e:  # shapes that do not broadcast
            raise InputError(f"the shapes of the values do not broadcast together: {e}") from None

    def _forward_fn(self) -> Callable[..., Any]:
        fn = self._fwd
        if fn is None:
            tape = self.tape
            if self.n_outputs == 1:

                def slow(*point: float) -> float:
                    return interpreter.evaluate(tape, point)[0]

                fn = self._scalar(tape, slow, "value", self._store_forward)
            else:

                def slow_all(*point: float) -> tuple[float, ...]:
                    return tuple(interpreter.evaluate(tape, point))

                fn = self._scalar(tape, slow_all, "tuple", self._store_forward)
        result: Callable[..., Any] = fn
        return result

    @property
    def entry(self) -> Callable[..., Any]:
        """The compiled function itself, for hot loops: ``f.entry(*floats)`` is ``f(*floats)``.

        One float per variable, positionally in ``f.variables`` order; returns a
        float (a tuple for several outputs).  Like :attr:`vg` it skips the
        checking of its arguments, and domain errors are still
        :class:`~symgrad.errors.DomainError`.  Read it again after
        :meth:`wait_native` to get the machine code itself rather than the
        entry that counts calls towards compiling it.
        """
        fn = self._fwd
        return fn if fn is not None else self._forward_fn()

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """The value at a point: ``f(a=2, b=-3, c=10)`` or ``f(2, -3, 10)``; a tuple for several outputs."""
        point, arrays = self._point(args, kwargs)
        if arrays and _has_dask(point):
            if self.n_outputs != 1:
                raise InputError(
                    "dask arrays are supported for functions with one output; call each formula's Function"
                )
            return dask_arrays.forward(self, point)
        if arrays:
            results = self._array_run(("value",), self.tape, point, ())
            return results[0] if self.n_outputs == 1 else tuple(results)
        return self._forward_fn()(*point)

    def _gradient_tape(self, positions: tuple[int, ...] | None) -> Tape:
        key = ("grad", positions)
        tape = self._derived.get(key)
        if tape is None:
            wrt = None if positions is None else [self.variables[i] for i in positions]
            tape = self._derived[key] = transforms.grad_tape(self.tape, wrt)
        return tape

    def _vg_fn(self, positions: tuple[int, ...] | None) -> Callable[..., tuple[float, list[float]]]:
        fn = self._vg if positions is None else self._vg_wrt.get(positions)
        if fn is None:
            self._one_output("a gradient")
            primal = self.tape
            wrt = None if positions is None else list(positions)

            def slow(*point: float) -> tuple[float, list[float]]:  # the classic sweeps: dead branches skipped
                return interpreter.value_and_grad(primal, point, wrt)

            def store(fn: Callable[..., Any]) -> None:
                if positions is None:
                    self._vg = fn
                else:
                    self._vg_wrt[positions] = fn

            fn = self._scalar(
                self._gradient_tape(positions),
                slow,
                "value_and_grad",
                store,
                on_kernel=self._gradient_kernel if positions is None else None,
            )
        return fn

    def _store_forward(self, fn: Callable[..., Any]) -> None:
        self._fwd = fn

    @property
    def vg(self) -> Callable[..., tuple[float, list[float]]]:
        """The compiled value-and-gradient function, for hot loops.

        ``f.vg(*floats)`` takes one float per variable, positionally in
        ``f.variables`` order, and returns ``(value, [∂/∂variable, ...])``.  It
        checks nothing before it computes (pass floats): an argument that is not
        a real number is an :class:`~symgrad.errors.InputError` once the
        computation fails on it, and a wrong number of arguments is one too,
        except on generated Python (``backend="python"``, or early calls under
        ``auto``), where it is Python's own ``TypeError`` (checking the count would
        cost every call).  Domain errors are still :class:`~symgrad.errors.DomainError`.  In a hot loop, bind it once
        (``vg = f.vg``) and call ``vg(x, y)``: that is the generated function
        itself, as fast as sympy's lambdified derivative.
        """
        fn = self._vg
        return fn if fn is not None else self._vg_fn(None)

    def grad(self, /, *args: Any, wrt: Wrt = None, **kwargs: Any) -> Any:
        """The partials at a point.

        One variable (or ``wrt="x"``) gives a float; several give a dict from
        name to partial, in variable order.  ``wrt`` may also be a list of
        names: only those partials are computed.
        """
        return self.value_and_grad(*args, wrt=wrt, **kwargs)[1]

    def value_and_grad(self, /, *args: Any, wrt: Wrt = None, **kwargs: Any) -> tuple[Any, Any]:
        """The value and the partials, from the gradient tape (one forward evaluation)."""
        if wrt is None:
            point = self._floats(args, kwargs)  # the hot path: plain floats, all by name or all by position
            if point is not None:
                fn = self._vg
                value, grads = (fn if fn is not None else self._vg_fn(None))(*point)
            else:
                point = self.bind(args, kwargs)
                if _has_array(point):  # (the scalar entry is not built for arrays)
                    self._one_output("a gradient")
                    if _has_dask(point):
                        return dask_arrays.value_and_grad(self, point, wrt)
                    value, *grads = self._array_run(
                        ("grad", None), self._gradient_tape(None), point, (None, *range(self._n))
                    )
                else:
                    value, grads = (self._vg or self._vg_fn(None))(*point)
            if self._n == 1:
                return value, grads[0]
            return value, dict(zip(self.variables, grads, strict=True))
        positions = self._positions(wrt)
        point, arrays = self._point(args, kwargs)
        if arrays and _has_dask(point):
            return dask_arrays.value_and_grad(self, point, wrt)
        if arrays:
            value, *grads = self._array_run(
                ("grad", positions), self._gradient_tape(positions), point, (None, *positions)
            )
        else:
            value, grads = self._vg_fn(positions)(*point)
        if isinstance(wrt, str):
            return value, grads[0]
        return value, {self.variables[i]: g for i, g in zip(positions, grads, strict=True)}

    # -- derivatives as functions ------------------------------------------------
    def _derived_function(self, key: tuple[Any, ...], build: Callable[[], Tape]) -> Function:
        """The derivative Function for ``key``, built once (with its compiled code) and kept.

        It has no source text (its tape's ``source`` is this function's, for error carets): its
        :attr:`derivation` says what it is, and its sympy form, displays and ``check`` read its tape.
        """
        f = self._derived_functions.get(key)
        if f is None:
            f = self._derived_functions[key] = Function(build(), None, self.backend, self._derivation_of(key))
        return f

    _SOURCE_IN_DERIVATION = 200
    """Characters of the parent's source quoted in a derivation (longer ones end in ``…``)."""

    _DERIVED_KINDS: ClassVar[dict[str, str]] = {
        "gradient": "value and gradient",
        "hessian": "Hessian",
        "jacobian": "Jacobian",
        "jvp": "jvp",
        "hvp": "Hessian-vector product",
        "sparse_hessian": "sparse Hessian (lower triangle)",
        "sparse_jacobian": "sparse Jacobian",
    }

    def _derivation_of(self, key: tuple[Any, ...]) -> str:
        """``"d2/(dx dy) of 'x*y**2'"``, ``"Hessian (y) of 'x*y'"``: what ``_derived_function(key)`` makes."""
        kind, *rest = key
        if self.derivation is not None:
            parent = f"({self.derivation})"
        else:  # (a long source is cut: a 100,000-term sum need not be copied into every derivative's label)
            parent = f"'{clip(self.source, self._SOURCE_IN_DERIVATION)}'" if self.source is not None else repr(self)
        if kind == "diff":
            return f"{transforms.derivative_name(list(rest[0]))} of {parent}"
        what = self._DERIVED_KINDS[kind]
        if rest and rest[0] is not None:  # with respect to some variables only
            names = [self.variables[i] for i in rest[0]] if kind == "gradient" else list(rest[0])
            if tuple(names) != self.variables:
                what += f" ({', '.join(names)})"
        return f"{what} of {parent}"

    def gradient_function(self, wrt: Wrt = None) -> Function:
        """The value and the partials as one multi-output Function (one forward-only tape)."""
        self._one_output("gradient_function()")
        positions = self._positions(wrt) if wrt is not None else None
        return self._derived_function(("gradient", positions), lambda: self._gradient_tape(positions))

    def derivative(self, *wrt: str) -> Function:
        """∂ⁿf/∂wrt[0]…∂wrt[-1] as a Function: ``f.derivative("x", "x")`` is d²f/dx²."""
        self._one_output("derivative()")
        if not wrt:
            raise InputError("derivative() needs at least one variable, e.g. f.derivative('x')")
        self._positions(list(wrt))
        return self._derived_function(("diff", wrt), lambda: transforms.derivative_tape(self.tape, list(wrt)))

    def hessian_function(self, wrt: Wrt = None) -> Function:
        """The Hessian as a Function with n×n outputs, row-major (forward over reverse)."""
        self._one_output("hessian_function()")
        names = [self.variables[i] for i in self._positions(wrt)]
        if not names:
            raise InputError(f"{self._describe()} has no variables: its Hessian has no entries to compute")
        return self._derived_function(("hessian", tuple(names)), lambda: transforms.hessian_tape(self.tape, names))

    def hessian(self, /, *args: Any, wrt: Wrt = None, **kwargs: Any) -> Any:
        """The Hessian at a point: ``{x: {x: ..., y: ...}, y: {...}}`` (a float for one variable)."""
        names = [self.variables[i] for i in self._positions(wrt)]
        if not names:  # a constant: no entries (as grad gives {}), once the point is checked
            self._one_output("hessian()")
            self.bind(args, kwargs)
            return {}
        h = self.hessian_function(wrt)
        n = len(names)
        values, shapes = _outputs_at(h, args, kwargs)
        if shapes is not None:  # entry (i, j): of the sum over the points, on the points both i and j vary over
            shape_of = [shapes[h.variables.index(name)] for name in names]
            full = np.broadcast_shapes(*shapes)
            targets = [np.broadcast_shapes(shape_of[i], shape_of[j]) for i in range(n) for j in range(n)]
            values = tuple(fit_shape(v, full, t) for v, t in zip(values, targets, strict=True))
        if isinstance(wrt, str) or (wrt is None and n == 1):
            return values[0]
        return {names[i]: {names[j]: values[i * n + j] for j in range(n)} for i in range(n)}

    def jacobian_function(self, wrt: Wrt = None) -> Function:
        """∂(output k)/∂(variable j) as a Function with m×n outputs, row-major."""
        names = [self.variables[i] for i in self._positions(wrt)]
        if not names:
            raise InputError(f"{self._describe()} has no variables: its Jacobian has no entries to compute")
        return self._derived_function(("jacobian", tuple(names)), lambda: transforms.jacobian_tape(self.tape, names))

    def jacobian(self, /, *args: Any, wrt: Wrt = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """The Jacobian at a point: ``{output: {variable: ∂output/∂variable}}``."""
        names = [self.variables[i] for i in self._positions(wrt)]
        if not names:  # constants: a row with no entries per output, once the point is checked
            self.bind(args, kwargs)
            return {out: {} for out in self.output_names}
        j = self.jacobian_function(wrt)
        values, shapes = _outputs_at(j, args, kwargs)
        n = len(names)
        if shapes is not None:  # as grad: each partial of the sum over the points, in its variable's shape
            full = np.broadcast_shapes(*shapes)
            targets = [shapes[j.variables.index(name)] for name in names] * self.n_outputs
            values = tuple(fit_shape(v, full, t) for v, t in zip(values, targets, strict=True))
        return {out: {names[k]: values[row * n + k] for k in range(n)} for row, out in enumerate(self.output_names)}

    def jvp_function(self) -> Function:
        """Forward mode as a Function of the variables and a tangent per variable (``dx``, …)."""
        return self._derived_function(("jvp",), lambda: transforms.jvp_tape(self.tape))

    def jvp(self, point: Mapping[str, Any], tangent: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(value, directional derivative along tangent)``; tuples of both for several outputs.

        Tangent components not given are 0.
        """
        unknown = [name for name in tangent if name not in self._index]
        if unknown:
            raise UnknownVariableError(f"tangent for {unknown[0]!r}, which is not a variable of {self._describe()}")
        names = transforms.tangent_names(self.tape)
        args = {**point, **{t: tangent.get(v, 0.0) for v, t in zip(self.variables, names, strict=True)}}
        out, shapes = _outputs_at(self.jvp_function(), (args,), {})
        if shapes is not None:  # values and directional derivatives are per point
            full = np.broadcast_shapes(*shapes)
            out = tuple(fit_shape(v, full, full) for v in out)
        m = self.n_outputs
        if m == 1:
            return out[0], out[1]
        return tuple(out[:m]), tuple(out[m:])

    def hvp_function(self) -> Function:
        """The Hessian-vector product as a Function of the variables and a direction per variable."""
        self._one_output("hvp_function()")
        return self._derived_function(("hvp",), lambda: transforms.hvp_tape(self.tape))

    def hvp(self, point: Mapping[str, Any], vector: Mapping[str, Any]) -> Any:
        """``H @ vector`` without forming H: ``{variable: value}`` (a float for one variable)."""
        unknown = [name for name in vector if name not in self._index]
        if unknown:
            raise UnknownVariableError(f"direction for {unknown[0]!r}, which is not a variable of {self._describe()}")
        names = transforms.tangent_names(self.tape)
        args = {**point, **{t: vector.get(v, 0.0) for v, t in zip(self.variables, names, strict=True)}}
        h = self.hvp_function()
        out, shapes = _outputs_at(h, (args,), {})
        if shapes is not None:  # as grad: of the sum over the points, in each variable's shape
            full = np.broadcast_shapes(*shapes)
            out = tuple(
                fit_shape(v, full, shapes[h.variables.index(name)]) for v, name in zip(out, self.variables, strict=True)
            )
        if self._n == 1:
            return out[0]
        return dict(zip(self.variables, out, strict=True))

    # -- sparsity ----------------------------------------------------------------
    def _pattern(self, kind: str, names: tuple[str, ...]) -> tuple[Any, Any]:
        """``(rows, cols)`` of the structural nonzeros as int64 arrays in CSR order, computed once (for
        ``"hessian"``: the lower triangle)."""
        key = (kind, names)
        found = self._patterns.get(key)
        if found is None:
            positions = [self._index[name] for name in names]
            assembly = self._assembly(kind, names)
            rows: Any
            cols: Any
            if assembly is not None:
                rows, cols, _ = assembly
            elif kind == "hessian":
                rows, cols = sparse.hessian_pattern(self.tape, positions)
            else:
                per_row = sparse.jacobian_pattern(self.tape, positions)
                rows = [r for r, row in enumerate(per_row) for _ in row]
                cols = [c for row in per_row for c in row]
            found = self._patterns[key] = (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))
        return found

    def _assembly(self, kind: str, names: tuple[str, ...]) -> tuple[Any, Any, Assembly] | None:
        """The Hessian assembled from the model's sums, one term each (by every variable at once):
        ``(rows, cols, assembly)``; None where that does not apply (not a model, no sum with a term,
        a Hessian by some variables)."""
        if kind != "hessian" or not isinstance(self._model, ModelText) or names != self.variables:
            return None
        found = self._patterns.get(("assembly",))
        if found is None:
            terms = self._model.terms(self.variables)
            value_name = self.tape.output_names[0] if self.tape.output_names else "f"
            found = self._patterns[("assembly",)] = (
                None if terms is None else hessian_assembly(terms.rest, terms.terms, value_name),
            )
        assembled: tuple[Any, Any, Assembly] | None = found[0]
        return assembled

    def _wrt_tuple(self, wrt: Wrt) -> tuple[str, ...]:
        if wrt is None:  # (every call of a sparse derivative asks: no lookup per variable)
            return self.variables
        return tuple(self.variables[i] for i in self._positions(wrt))

    def _layout(self, kind: str, names: tuple[str, ...], lower: bool = True) -> tuple[Any, Any, Any, tuple[int, int]]:
        """How the derived tape's outputs fill a CSR array: ``(take, indices, indptr, shape)`` with
        ``data = outputs[take]`` (the full Hessian takes each off-diagonal output twice), kept."""
        key = ("layout", kind, names, lower)
        found = self._patterns.get(key)
        if found is None:
            rows, cols = self._pattern(kind, names)
            m = self.n_outputs if kind == "jacobian" else len(names)
            found = self._patterns[key] = csr_layout(rows, cols, (m, len(names)), kind == "hessian" and not lower)
        return found

    def jacobian_sparsity(self, wrt: Wrt = None) -> Any:
        """The structural nonzeros of the Jacobian: a boolean ``scipy.sparse.csr_array`` of shape
        (outputs, variables), from one pass over the tape (see :mod:`symgrad.sparse`).

        Structural, not numeric: an entry is in the pattern when the output depends on the variable
        through the records, even if the partial happens to be 0 (``x*y - y*x``, or at a point).
        """
        take, indices, indptr, shape = self._layout("jacobian", self._wrt_tuple(wrt))
        return _csr(np.ones(len(take), dtype=bool), indices, indptr, shape)

    def hessian_sparsity(self, wrt: Wrt = None, *, lower: bool = False) -> Any:
        """The structural nonzeros of the Hessian: a boolean ``scipy.sparse.csr_array`` (n×n, symmetric;
        ``lower=True``: the lower triangle only), from one pass over the tape, no evaluation."""
        self._one_output("hessian_sparsity()")
        take, indices, indptr, shape = self._layout("hessian", self._wrt_tuple(wrt), lower)
        return _csr(np.ones(len(take), dtype=bool), indices, indptr, shape)

    def sparse_jacobian_function(self, wrt: Wrt = None) -> Function:
        """The Jacobian's structural nonzeros as a Function, one output per entry in CSR order
        (:meth:`jacobian_sparsity`'s order): an ordinary tape, run by every executor."""
        return self._sparse_function("jacobian", self._wrt_tuple(wrt))

    def sparse_hessian_function(self, wrt: Wrt = None) -> Function:
        """The Hessian's structural nonzeros in the lower triangle as a Function, one output per entry
        in CSR order (``hessian_sparsity(lower=True)``'s order)."""
        self._one_output("sparse_hessian_function()")
        return self._sparse_function("hessian", self._wrt_tuple(wrt))

    def _sparse_function(self, kind: str, names: tuple[str, ...]) -> Function:
        def build() -> Tape:
            positions = [self._index[name] for name in names]
            rows, cols = self._pattern(kind, names)
            assembly = self._assembly(kind, names)
            if assembly is not None:
                return assembly[2].tape()
            if kind == "hessian":
                built = self._derived.get(("grad", None))  # the value-and-gradient tape vg already uses
                gradient = (built, [1 + p for p in positions]) if built is not None else None
                return sparse.sparse_hessian_tape(self.tape, positions, rows.tolist(), cols.tolist(), gradient=gradient)
            per_row: list[list[int]] = [[] for _ in range(self.n_outputs)]
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                per_row[r].append(c)
            return sparse.sparse_jacobian_tape(self.tape, positions, per_row)

        return self._derived_function((f"sparse_{kind}", names), build)

    def sparse_jacobian(self, /, *args: Any, wrt: Wrt = None, **kwargs: Any) -> Any:
        """The Jacobian at a point as a ``scipy.sparse.csr_array`` (outputs × variables), computing only
        the structural nonzeros (a structural entry that is 0 at the point is stored as an explicit 0)."""
        names = self._wrt_tuple(wrt)
        values = self._sparse_values(self._sparse_function("jacobian", names), args, kwargs)
        take, indices, indptr, shape = self._layout("jacobian", names)
        return _csr(values[take], indices, indptr, shape)

    def sparse_hessian(self, /, *args: Any, wrt: Wrt = None, lower: bool = False, **kwargs: Any) -> Any:
        """The Hessian at a point as a ``scipy.sparse.csr_array``: full and symmetric, or its lower
        triangle with ``lower=True`` (what IPOPT takes).  Only the lower triangle's structural
        nonzeros are computed; the upper one mirrors them.

        For a model whose sums are one term per index (by every variable), the entries are
        assembled from the terms and computed with numpy, each term over all its indices at once
        (:mod:`symgrad.elements`): no derived tape is built; the values agree with
        :meth:`sparse_hessian_function`'s to rounding (numpy's ``exp``, ``log`` and ``tanh`` may
        differ from the C library's in the last bit), and a point where an entry is not finite is
        evaluated by the derived tape (its :class:`DomainError`, or the same inf or nan)."""
        self._one_output("sparse_hessian()")
        names = self._wrt_tuple(wrt)
        assembly = self._assembly("hessian", names)
        if assembly is None:
            values = self._sparse_values(self._sparse_function("hessian", names), args, kwargs)
        else:
            values = self._assembled_values(assembly[2], args, kwargs)
        take, indices, indptr, shape = self._layout("hessian", names, lower)
        return _csr(values[take], indices, indptr, shape)

    def _assembled_values(self, assembly: Assembly, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A model's Hessian entries with numpy, each sum's term over all its indices at once
        (:class:`~symgrad.elements.Vectorised`: no tape of copies to build or generate code for);
        a point where some entry is not finite takes the derived tape, which says why (a
        :class:`DomainError` with its caret) or gives the same inf or nan."""
        point = self._point_of_numbers(args, kwargs)
        found = self._patterns.get(("vectorised",))
        if found is None:
            found = self._patterns[("vectorised",)] = (Vectorised(assembly),)
        values = found[0](np.asarray(point, dtype=np.float64))
        if not np.isfinite(values).all():
            g = self._sparse_function("hessian", self.variables)
            return np.asarray(_as_tuple(g._forward_fn()(*point), g.n_outputs), dtype=np.float64)
        return values

    def _point_of_numbers(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The point of a sparse derivative: plain numbers bound by this Function's names."""
        point = self._floats(args, kwargs)
        if point is None:
            point = self.bind(args, kwargs)
            point = [float(v) if type(v) is not float and np.ndim(v) == 0 else v for v in point]
            if _has_array(point):
                raise InputError("a sparse derivative is taken at one point: give numbers, not arrays")
        return point  # type: ignore[no-any-return]

    def _sparse_values(self, g: Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``g``'s outputs at one point of plain numbers (bound by this Function's names), as an array."""
        point = self._point_of_numbers(args, kwargs)
        out = g._forward_fn()(*point)
        return np.asarray(_as_tuple(out, g.n_outputs), dtype=np.float64)

    # -- looking at it ------------------------------------------------------------
    @property
    def formula(self) -> str:
        """The function as text in symgrad's language (``6*x - 4``), printed from the tape."""
        self._one_output("formula", "use .formulas for one formula per output")
        return to_formula(self.tape)[0]

    @property
    def formulas(self) -> tuple[str, ...]:
        """One formula per output."""
        return tuple(to_formula(self.tape))

    def draw(
        self, point: Mapping[str, Any] | None = None, /, *, rankdir: str = "LR", layout: str = "auto", **values: Any
    ) -> graphviz.Digraph:
        """A graphviz drawing of the tape, with data and grads at a point if one is given.

        With a value for every variable it runs the forward and reverse sweeps and
        shows each slot's data and grad; with no values it draws the structure
        only.  ``layout`` is as for :func:`symgrad.drawing.draw_tape`.  A variable
        named like a keyword here (``rankdir``, ``layout``) can be given in the
        ``point`` mapping instead.  :func:`symgrad.draw` is the same for a string.
        """
        merged = merge_point(point, values)
        if not merged and self.variables:  # (an expression without variables is always at a full point)
            return drawing.draw_tape(self.tape, rankdir=rankdir, layout=layout)
        missing = [name for name in self.variables if name not in merged]
        if missing and all(name in self.variables for name in merged):
            given = ", ".join(f"'{k}'" for k in merged)
            lacking = ", ".join(f"'{m}'" for m in missing)
            raise MissingVariableError(
                f"draw() got values for {given} but not for {lacking}: give every variable a value "
                f"to show data and grads, or none to draw the structure only"
            )
        inputs = bind_scalars(self, merged, "draw()")
        return drawing.draw_point(self.tape, inputs, rankdir=rankdir, layout=layout)

    # -- executors: the dispatcher chooses ---------------------------------------
    def _scalar(
        self,
        tape: Tape,
        slow: Callable[..., Any],
        returns: Returns,
        store: Callable[[Callable[..., Any]], None],
        on_kernel: Callable[[NativeKernel], None] | None = None,
    ) -> Callable[..., Any]:
        """The dispatcher's entry for ``tape`` on floats, kept with ``store`` (which it tells of every
        faster executor that takes over; see :mod:`symgrad.backends.dispatch`)."""
        fn, rental = dispatch.scalar_entry(tape, slow, returns, self.backend, store, on_kernel=on_kernel)
        if rental is not None:
            self._rentals.append(rental)
        return fn

    def _gradient_kernel(self, kernel: NativeKernel) -> None:
        """Told of the gradient tape's native kernel when it serves (a traced function replays through it)."""

    def wait_native(self, timeout: float | None = None) -> bool:
        """Compile this function's machine code now, if ``auto`` would in time, and wait for it.

        Under ``auto`` the first calls run on the interpreter or generated Python,
        and machine code is compiled in the background once they have cost about
        what compiling costs (see :mod:`symgrad.backends.dispatch`).  This starts
        those compiles at once and blocks until they are done (at most
        ``timeout`` seconds).  False on a timeout or if a compile failed (that
        code then runs as generated Python); True when nothing was to compile.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        upgraded = True
        for rental in [*self._rentals, *self._array_rentals.values()]:
            rental.buy_now()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            upgraded = rental.wait(left) and upgraded
        return upgraded

    @property
    def llvm_ir(self) -> str:
        """The LLVM IR the native backend compiles for ``vg`` (the gradient tape; needs llvmlite)."""
        dispatch.native_ready("native", self.tape)  # raises MissingDependencyError without llvmlite
        from .backends.native.kernel import llvm_ir

        tape = self.tape if self.n_outputs != 1 else self._gradient_tape(None)
        return llvm_ir(tape, list(tape.outputs))

    def to_c(self, name: str = "f", outputs: str | Iterable[str] | None = None) -> export_c.CCode:
        """C99 source (``.c`` and ``.h``) with one function per output set, for use outside Python.

        ``outputs``: any of ``"value"``, ``"grad"`` (the value and the gradient), ``"hessian"``
        (n×n, row-major), ``"jacobian"`` (outputs × variables, row-major), ``"sparse_hessian"``
        (the lower triangle's structural nonzeros) and ``"sparse_jacobian"`` (the Jacobian's), each
        in CSR order with the pattern as constants in the header; by default the value and the
        gradient (the Jacobian for several outputs).  The functions are ``NAME_value``,
        ``NAME_grad``, …; see :mod:`symgrad.export_c` for the calling convention and status codes.
        """
        export_c.check_name(name)
        if outputs is None:
            kinds = ["value", "grad" if self.n_outputs == 1 else "jacobian"]
        else:
            kinds = list(dict.fromkeys([outputs] if isinstance(outputs, str) else outputs))
        functions = []
        patterns: dict[str, export_c.Pattern] = {}
        m, n = self.n_outputs, len(self.variables)
        for kind in kinds:
            if kind not in export_c.OUTPUT_SETS:
                listed = ", ".join(repr(k) for k in export_c.OUTPUT_SETS)
                hint = did_you_mean(kind, export_c.OUTPUT_SETS) if isinstance(kind, str) else ""
                raise InputError(f"{kind!r} is not an output set; choose from {listed}" + (f"; {hint}" if hint else ""))
            if kind != "value" and kind != "grad" and n == 0:
                raise InputError(f"{self._describe()} has no variables, so it has no {kind.replace('_', ' ')}")
            if kind == "value":
                functions.append((kind, self.tape, [export_c.Group("value", m)]))
            elif kind == "grad":
                self._one_output("a gradient")
                groups = [export_c.Group("value", 1), export_c.Group("grad", n)]
                functions.append((kind, self._gradient_tape(None), groups))
            elif kind == "hessian":
                functions.append((kind, self.hessian_function().tape, [export_c.Group("hessian", n * n)]))
            elif kind == "jacobian":
                functions.append((kind, self.jacobian_function().tape, [export_c.Group("jacobian", m * n)]))
            else:
                which = kind.removeprefix("sparse_")
                g = self.sparse_hessian_function() if which == "hessian" else self.sparse_jacobian_function()
                _, indices, indptr, shape = self._layout(which, self.variables)
                about = "the Hessian's lower triangle (row >= column)" if which == "hessian" else "the Jacobian"
                patterns[kind] = export_c.Pattern(tuple(indptr.tolist()), tuple(indices.tolist()), shape, about)
                functions.append((kind, g.tape, [export_c.Group("nonzeros", len(indices))]))
        if not functions:
            raise InputError(f"no output set asked for; choose from {', '.join(export_c.OUTPUT_SETS)}")
        return export_c.export(name, functions, self._describe(), patterns)

    @property
    def code(self) -> str:
        """The Python source generated from the gradient tape (value and partials on floats)."""
        if self.n_outputs != 1:
            return python_code.source(self.tape, "tuple")
        return python_code.source(self._gradient_tape(None), "value_and_grad")

    # -- the oracle (sympy, imported only when these are called) ---------------
    def to_sympy(self) -> Any:
        """This function as a sympy expression, built from the op table (see :mod:`symgrad.symbolic`).

        From the source text when there is one; a derived Function (``f.derivative("x")``) and a
        recorded one convert their own tape.  Several outputs give a tuple, one expression each.
        """
        if self.n_outputs != 1:
            return symbolic.to_sympy_outputs(self.tape)
        return symbolic.to_sympy(symbolic.tree_of(self.source, self.tape))

    def symbolic_grad(self) -> dict[str, Any]:
        """``{name: sympy derivative}`` for every variable, in variable order (of :meth:`to_sympy`'s form)."""
        self._one_output("symbolic_grad()")
        return symbolic.symbolic_grad(symbolic.tree_of(self.source, self.tape), self.variables)

    # -- for learners: the sweeps shown, and Jupyter's rich display ------------
    def explain(
        self, *args: Any, max_rows: int | None = explain_mod.DEFAULT_MAX_ROWS, output: int = 0, **kwargs: Any
    ) -> Explanation:
        """Both sweeps at a point, slot by slot: value, local partials, adjoint.

        ``f.explain(x1=2, w1=-3, ...)`` takes a point the way ``f.grad`` does
        (floats only).  The result prints as a table (``str()``), displays as
        HTML in Jupyter, and has ``.rows``, ``.to_markdown()`` and
        ``.to_dict()``; ``max_rows=None`` shows every slot of a big tape.  For a
        function with several outputs (a gradient function, say), ``output``
        picks the one whose adjoints the reverse sweep computes.
        """
        point = self.bind(args, kwargs)
        if _has_array(point):
            raise InputError("explain() takes one point of plain numbers, not arrays")
        at = ", ".join(
            f"{name}={explain_mod.format_number(v, 6)}" for name, v in zip(self.variables, point, strict=True)
        )
        if not 0 <= output < self.n_outputs:
            raise InputError(f"output must be 0..{self.n_outputs - 1}, got {output!r}")
        if self.derivation is not None:  # e.g. "d/dx of 'x**3'"; "d/dy, output 2 of value and gradient of ..."
            name = self.derivation
            if self.n_outputs > 1:
                name = f"{self.output_names[output]}, output {output} of {name}"
        else:
            name = abbreviate(self.source, 100) if self.source is not None else repr(self)
            if self.tape.output_names:  # several formulas: say which one
                name = f"{self.tape.output_names[output]} of {name}"
        title = f"{name}  at  {at}" if at else name
        return explain_mod.explain_tape(
            self.tape, point, title=title, max_rows=max_rows, output=self.tape.outputs[output]
        )

    _LATEX_MAX_RECORDS = 200
    """Bigger functions get no LaTeX form: the formula would fill the screen."""

    def _repr_latex_(self) -> str | None:
        """Jupyter: the formula typeset (via the oracle's sympy form; None when too big)."""
        if len(self.tape) > self._LATEX_MAX_RECORDS:
            return None
        import sympy  # the oracle's library, only when a notebook asks for LaTeX

        expression = self.to_sympy()
        names = {sympy.Symbol(name): display.latex_text(name) for name in self.variables}  # (to_sympy's symbols)
        return f"$\\displaystyle {sympy.latex(expression, symbol_names=names)}$"

    def _repr_html_(self) -> str:
        """Jupyter: the formula (for a derived Function: what it is and its printed formula), its
        variables and the size of its tape."""
        if self.derivation is not None:
            printed = self._short_formulas()
            rows = [["derivative", self.derivation]]
            if printed is not None:
                rows += [[name, text] for name, text in printed] if self.n_outputs > 1 else [["formula", printed[0][1]]]
        else:
            formula = abbreviate(self.source, 500) if self.source is not None else "(recorded from Value operations)"
            rows = [["formula", formula]]
        rows += [
            ["variables", ", ".join(self.variables) or "(none)"],
            ["tape", f"{len(self.tape)} records, {self.tape.n_slots} slots"],
        ]
        return display.html_table(["Function", ""], rows)

    _SHORT_RECORDS, _SHORT_CHARS = 60, 120
    """Displays print a derived Function's formula up to this many records and characters (per output)."""

    def _short_formulas(self) -> list[tuple[str, str]] | None:
        """``(output name, formula)`` per output when every formula is short, else None."""
        if len(self.tape) > self._SHORT_RECORDS:
            return None
        try:
            texts = to_formula(self.tape)
        except FormulaTooLongError:  # records read many times, written out each time
            return None
        if any(len(text) > self._SHORT_CHARS for text in texts):
            return None
        return list(zip(self.output_names, texts, strict=True))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its tape, source, backend and derivation; compiled code is rebuilt lazily where it
        is unpickled."""
        return type(self), (self.tape, self.source, self.backend, self.derivation)

    def __repr__(self) -> str:
        outs = "out" if self.n_outputs == 1 else f"{self.n_outputs} outputs"
        if self.derivation is not None:
            printed = self._short_formulas() if self.n_outputs == 1 else None
            name = f" {self.derivation}" + (f" = {printed[0][1]}" if printed else "")
        else:
            name = f" {quote(self.source)}" if self.source is not None else ""
        return f"<Function{name} f:({','.join(self.variables)})->{outs}, {len(self.tape)} records>"


def _scipy_sparse() -> Any:
    try:
        import scipy.sparse
    except ImportError:
        raise MissingDependencyError(
            "sparse Jacobians and Hessians are scipy.sparse arrays: install scipy (pip install 'symgrad[fit]')"
        ) from None
    return scipy.sparse


def _csr(values: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
    """A CSR array with exactly these entries (explicit zeros kept: the pattern is structural)."""
    return _scipy_sparse().csr_array((values, indices, indptr), shape=shape)


def csr_layout(rows: Any, cols: Any, shape: tuple[int, int], mirror: bool) -> tuple[Any, Any, Any, tuple[int, int]]:
    """How values at ``(rows, cols)`` (CSR order) fill a CSR array: ``(take, indices, indptr, shape)``
    with ``data = values[take]``; ``mirror``: the entries are a lower triangle and the array is the
    full symmetric matrix (each off-diagonal value taken twice)."""
    take = np.arange(len(rows))
    if mirror:
        take = np.concatenate([take, np.flatnonzero(rows != cols)])
        rows, cols = _mirror(rows, cols)
        order = np.lexsort((cols, rows))
        take, rows, cols = take[order], rows[order], cols[order]
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    return take, cols, indptr, shape


def _mirror(rows: Any, cols: Any) -> tuple[Any, Any]:
    """A lower triangle's entries followed by the upper triangle's mirror images (diagonal once)."""
    off = rows != cols
    return np.concatenate([rows, cols[off]]), np.concatenate([cols, rows[off]])


def _as_tuple(result: Any, n: int) -> tuple[Any, ...]:
    return (result,) if n == 1 else tuple(result)


def _outputs_at(f: Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], list[Any] | None]:
    """``f``'s outputs at a point, and the shapes of its inputs there if the point holds numpy arrays.

    Derivative outputs that constant folding freed from an array input come out as numbers (the
    Hessian of ``x*x*y*y`` by ``x`` is ``2*y*y``): the caller shapes them by the shapes of the inputs.
    """
    point, arrays = f._point(args, kwargs)
    values = _as_tuple(f(*point), f.n_outputs)
    if not arrays or _has_dask(point):
        return values, None
    return values, [np.shape(v) for v in point]


def _numpy(point: list[Any]) -> list[Any]:
    """Floats become numpy scalars, so that float-only parts of the tape also follow numpy (no raising)."""
    return [np.float64(v) if type(v) is float else v for v in point]


def _broadcasts(shapes: tuple[tuple[int, ...], ...]) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _has_array(point: list[Any]) -> bool:
    return any(type(v) is not float for v in point)


def _has_dask(point: list[Any]) -> bool:
    return any(dask_arrays.is_dask(v) for v in point)


def _as_value(name: str, value: Any) -> Any:
    """A float, or a float64 array for a numpy array."""
    if isinstance(value, Decimal):
        value = _decimal(name, value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            raise InputError(
                f"value for '{name}' is too large for a 64-bit float (largest: {_FLOAT_MAX:.6g}), "
                f"got {_short_number(value)}"
            ) from None
        if number - number != 0.0:
            raise InputError(
                f"value for '{name}' is {number!r}: formulas are evaluated at finite points "
                f"(numpy arrays may hold nan and inf, and follow numpy)"
            )
        return number
    if isinstance(value, bool):
        raise InputError(f"value for '{name}' must be a number, got a bool ({value})")
    if isinstance(value, np.ndarray):
        if type(value) is not np.ndarray and isinstance(value, np.ma.MaskedArray):  # (np.ma: a 12 ms import)
            if np.ma.is_masked(value):
                raise InputError(
                    f"value for '{name}' is a masked array with masked entries, and symgrad would evaluate "
                    f"the hidden values too: give {name}.filled(...) or {name}.compressed() instead"
                )
            value = np.ma.getdata(value)  # nothing is masked: its plain data
        if value.dtype.kind not in "fiu":
            raise InputError(
                f"value for '{name}' must be an array of real numbers, got an array of dtype {value.dtype}"
            )
        return value.astype(np.float64, copy=False)
    if dask_arrays.is_dask(value):
        return dask_arrays.checked(name, value)
    raise InputError(
        f"value for '{name}' must be a real number or an array, got {type(value).__name__} {short_repr(value)}"
    )


def _decimal(name: str, value: Decimal) -> float:
    """A Decimal as the nearest float: a finite Decimal beyond the float range is too large, not inf."""
    try:
        number = float(value)
    except ValueError:  # a signalling nan
        raise InputError(f"value for '{name}' is {value!r}: formulas are evaluated at finite points") from None
    if value.is_finite() and number - number != 0.0:
        raise InputError(
            f"value for '{name}' is too large for a 64-bit float (largest: {_FLOAT_MAX:.6g}), got {short_repr(value)}"
        )
    return number


# -- binding helpers (shared by the string front end, drawing and the oracle) --

_FLOAT_MAX = sys.float_info.max


def merge_point(point: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """One point from a mapping and keyword values; a name in both is an InputError.

    The mapping exists for names that cannot be keywords (``wrt``, ``if``),
    so a name given both ways is a mistake, not an override.
    """
    if point is None:
        return dict(values)
    if not isinstance(point, Mapping):
        raise InputError(f"the point must be a mapping from variable name to value, got {type(point).__name__}")
    both = [name for name in values if name in point]
    if both:
        listed = ", ".join(f"'{name}'" for name in both)
        raise InputError(f"variable {listed} was given twice (in the mapping and by keyword)")
    return {**point, **values}


def _wrt_names(wrt: object) -> list[str]:
    """``wrt`` as a list of names: a str or an iterable of str, else an InputError."""
    if isinstance(wrt, str):
        return [wrt]
    if isinstance(wrt, (bytes, bytearray)) or not isinstance(wrt, Iterable):
        raise InputError(f"wrt must be a variable name or a list of names, got {type(wrt).__name__} {short_repr(wrt)}")
    names = list(wrt)
    for name in names:
        if not isinstance(name, str):
            raise InputError(
                f"wrt must be a variable name or a list of names, got {type(name).__name__} {short_repr(name)} in it"
            )
    return names


def _check_broadcast(names: tuple[str, ...], point: list[Any]) -> None:
    """An InputError naming the variables whose array shapes do not broadcast together."""
    if any(dask_arrays.is_dask(v) for v in point):
        return  # chunked arrays (whose sizes may be unknown) are checked by the dask path
    broadcast_shape(names, [np.shape(v) for v in point])


def broadcast_shape(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    """The shape the variables' arrays broadcast to, or an InputError naming the ones that do not fit."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        arrays = [f"'{n}' of shape {tuple(s)}" for n, s in zip(names, shapes, strict=True) if s]
        raise InputError(
            f"array shapes do not broadcast together: {', '.join(arrays)}; "
            "give arrays of one shape, or shapes numpy can broadcast (e.g. (3,) with (2, 1))"
        ) from None


def _quoted(key: object) -> str:
    return f"'{_short(key)}'" if isinstance(key, str) else f"{type(key).__name__} {short_repr(key)}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_NAMES_SHOWN = 10
"""Variables a message lists before it says how many there are."""


def _short_number(value: Any) -> str:
    if isinstance(value, int):  # (str() of a huge int is slow, and refused beyond 4,300 digits)
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return short_repr(value)


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
