"""Trace one example, train on any batch: :func:`trace_examples` and the :class:`TracedExamples` it returns.

A loss over a batch is the *same small computation* repeated for every
example, with the weights shared.  :func:`symgrad.trace` records the whole
loss, so its tape grows with the batch and is frozen to the batch's points.
:func:`trace_examples` records the loss of *one* example instead, with the
example's numbers as inputs of the tape beside the parameters (the spirit of
JAX's ``vmap`` and PyTorch's per-sample functions): the tape is about as big
as one forward pass, and one call evaluates it over every example of a batch
of any size, summing the parameters' partials over the examples.  Nothing is
re-traced or re-compiled from one batch to the next.

The gradient tape (value and the partials with respect to the parameters
only) is built once by :func:`symgrad.transforms.grad_tape` from the
per-example tape; the executor that evaluates it over a batch is the
dispatcher's (:mod:`symgrad.backends.dispatch`).  A penalty on the
parameters alone (an L2 term) is recorded separately and evaluated once per
step, not once per example: as a batch of one on the same kind of evaluator, so
that its executor, too, is fixed when the step is traced (no compile later in
training) and the weights go in as the array they already are.

When replay is valid: as for :func:`symgrad.trace`, the tape records the
operations that ran during the one call, at the example given.  Anything
Python decided then is frozen: an ``if`` on ``.data`` (of a weight *or of
the example's data*), a loop whose length depends on a value.  Decisions made
by ops (``relu``, ``abs``, ``min``, ``max``) are made again for every example
at every step.  Every example of a batch must have the example's structure
(the same nesting and lengths).
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from . import transforms
from .backends import dispatch, interpreter
from .backends.protocol import BatchEntry
from .errors import DomainError, InputError, short_repr
from .tape import Tape
from .value import Value, linearise

__all__ = ["REDUCTIONS", "BatchGradient", "TracedExamples", "shared_first", "trace_examples"]

REDUCTIONS = ("mean", "sum")
"""How the examples' losses combine: averaged (micrograd's demo) or summed."""

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BatchFn = BatchEntry

_DATA = operator.attrgetter("data")
_PLACEHOLDER = (np.zeros(1),)  # the penalty's one example: its placeholder input's column


class TracedExamples:
    """A per-example loss recorded once, evaluated over batches: ``step.backward(X, Y)``.

    Made by :func:`trace_examples`.  :meth:`backward` works on the parameters
    (reads their ``data``, adds into their ``grad``); :meth:`value_and_grad` and
    :meth:`losses` are the functional forms, on arrays, touching no Value.
    """

    def __init__(
        self,
        tape: Tape,
        params: Sequence[Value],
        arg_names: Sequence[str],
        shapes: Sequence[tuple[int, ...]],
        penalty: Tape | None,
        reduce: str,
        backend: str | None,
    ) -> None:
        self.params: tuple[Value, ...] = tuple(params)
        """The parameter Values, in the order of the gradient's entries."""
        self.tape = tape
        """The tape of one example's loss: inputs are the parameters, then the example's numbers."""
        self.reduce = reduce
        self.backend = dispatch.resolve_backend(backend)
        self.arg_names = tuple(arg_names)
        """The data arguments' names (the function's parameter names where Python tells them)."""
        self.shapes = tuple(shapes)
        """Each data argument's shape for one example (``()`` for a number, ``(2,)`` for a pair)."""
        self.batch = BatchGradient(tape, len(self.params), self.backend)
        """The gradient tape and its evaluator over batches (built once, here)."""
        self.penalty = None if penalty is None else BatchGradient(penalty, len(self.params), self.backend)
        """The penalty's evaluator (None without one): its tape's inputs are the parameters and one
        placeholder, as a batch needs a data input; it is evaluated on a batch of one, once per step."""

    @property
    def gradient_tape(self) -> Tape:
        """Outputs: the example's loss, then its partials with respect to each parameter (not the data)."""
        return self.batch.gradient_tape

    @property
    def entries_built(self) -> int:
        """How many times an evaluator was asked for: once, at tracing time, whatever batches follow."""
        return self.batch.entries_built

    def wait_native(self, timeout: float | None = None) -> bool:
        """Compile the machine code ``auto`` would compile in time, now, and wait for it (see
        :meth:`symgrad.Function.wait_native`)."""
        done = self.batch.wait_native(timeout)
        if self.penalty is not None:
            done = self.penalty.wait_native(timeout) and done
        return done

    # -- checking a batch ---------------------------------------------------------------
    def _columns(self, data: tuple[Any, ...]) -> tuple[int, list[FloatArray]]:
        """The batch size and one float64 column per scalar data input, or an InputError saying what is wrong."""
        names = self.arg_names
        if len(data) != len(names):
            listed = ", ".join(names)
            raise InputError(
                f"the per-example function takes {len(names)} data argument{'s' if len(names) != 1 else ''} "
                f"({listed}), each with a leading batch axis; got {len(data)}"
            )
        n: int | None = None
        first = ""
        arrays = []
        for name, value, shape in zip(names, data, self.shapes, strict=True):
            array = _as_array(value, f"data '{name}'")
            if array.shape[1:] != shape or array.ndim != len(shape) + 1:
                want = _shape_text(("n", *shape))
                raise InputError(
                    f"data '{name}' must have shape {want} (a batch of examples shaped like the traced "
                    f"example's, {_shape_text(shape)}), got shape {_shape_text(array.shape)}"
                )
            if n is None:
                n, first = array.shape[0], name
            elif array.shape[0] != n:
                raise InputError(
                    f"data '{name}' has {array.shape[0]} examples but '{first}' has {n}; "
                    "every data argument needs one entry per example"
                )
            if not np.isfinite(array).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
                raise InputError(
                    f"data '{name}' holds {float(array[where])!r} at index {where if len(where) > 1 else where[0]}: "
                    "examples must be finite numbers"
                )
            arrays.append(array)
        if n is None or n == 0:
            raise InputError("the batch is empty: give at least one example")
        columns = [np.ascontiguousarray(a.reshape(n, -1)[:, j]) for a in arrays for j in range(a[0].size)]
        return n, columns

    def _weights(self, weights: Any) -> FloatArray:
        """``weights`` as a float64 array with one finite entry per parameter, or an InputError."""
        array = _as_array(weights, "weights")
        n = len(self.params)
        if array.shape != (n,):
            raise InputError(f"weights must have shape ({n},), one per parameter, got shape {_shape_text(array.shape)}")
        if not np.isfinite(array).all():
            k = int(np.flatnonzero(~np.isfinite(array))[0])
            raise InputError(
                f"weights[{k}] (parameter {self._param_name(k)}) is {float(array[k])!r}: weights must be finite"
            )
        return np.array(array, dtype=np.float64)  # a copy: the caller may change theirs while we run

    def _param_name(self, k: int) -> str:
        return f"'{self.tape.inputs[k]}'"

    # -- evaluating -----------------------------------------------------------------------
    def _run(self, weights: FloatArray, data: tuple[Any, ...]) -> tuple[int, FloatArray, FloatArray]:
        """Batch size, per-example losses and summed partials; a DomainError names the example at fault."""
        n, columns = self._columns(data)
        values, partials = self.batch(weights, columns)
        if not (np.isfinite(values).all() and np.isfinite(partials).all()):
            self._explain(weights, columns, values)
        return n, values, partials

    def _explain(self, weights: FloatArray, columns: list[FloatArray], values: FloatArray) -> None:
        """Raise the reference interpreter's DomainError for the first example whose loss or partials are
        not finite (the batch's sum may also overflow on its own: then say so)."""
        shared = weights.tolist()
        wrt = list(range(len(shared)))
        order = np.argsort(np.isfinite(values), kind="stable")  # examples with a bad value first
        for k in order.tolist():
            point = shared + [float(c[k]) for c in columns]
            try:
                value, grads = interpreter.value_and_grad(self.tape, point, wrt)
            except DomainError as e:
                raise DomainError(f"example {k} of the batch: {e.reason}", e.op, e.source, e.span) from None
            if not (math.isfinite(value) and all(map(math.isfinite, grads))):
                raise DomainError(f"example {k} of the batch: the loss or a partial is {value!r}", "add")
        raise DomainError("the loss or a partial summed over the batch is not finite (it overflows)", "add")

    def _combine(
        self, n: int, values: FloatArray, partials: FloatArray, weights: FloatArray
    ) -> tuple[float, FloatArray]:
        scale = 1.0 / n if self.reduce == "mean" else 1.0
        loss = float(values.sum()) * scale
        grads = partials * scale
        penalty = self.penalty
        if penalty is not None:
            try:
                value, extra = penalty(weights, _PLACEHOLDER)
            except DomainError:
                self._explain_penalty(penalty, weights)
                raise
            if not (math.isfinite(value[0]) and np.isfinite(extra).all()):
                self._explain_penalty(penalty, weights)  # a domain error; else an overflow: IEEE results stand
            loss += float(value[0])
            grads += extra
        return loss, grads

    def _explain_penalty(self, penalty: BatchGradient, weights: FloatArray) -> None:
        """Raise the reference interpreter's DomainError for the penalty, saying it is the penalty's
        (the batch evaluator would name an example of its batch of one)."""
        try:
            interpreter.value_and_grad(penalty.tape, [*weights.tolist(), 0.0], list(range(len(weights))))
        except DomainError as e:
            raise DomainError(f"the penalty: {e.reason}", e.op, e.source, e.span) from None

    def value_and_grad(self, weights: Any, /, *data: Any) -> tuple[float, FloatArray]:
        """The loss over the batch ``data`` at ``weights`` (one per parameter), and its gradient.

        Functional: nothing is read from or written to the parameters.  The loss is
        the examples' losses averaged (``reduce="mean"``) or summed, plus the penalty.
        """
        w = self._weights(weights)
        n, values, partials = self._run(w, data)
        loss, grads = self._combine(n, values, partials, w)
        return loss, grads

    def losses(self, weights: Any, /, *data: Any) -> FloatArray:
        """Each example's loss at ``weights`` (no penalty, no reduction): an array of the batch's length."""
        _, values, _ = self._run(self._weights(weights), data)
        return values

    def weights(self) -> FloatArray:
        """The parameters' current ``data`` as an array (the ``weights`` of :meth:`value_and_grad`)."""
        return np.fromiter(map(_DATA, self.params), dtype=np.float64, count=len(self.params))

    def backward(self, *data: Any) -> float:
        """The loss over the batch at the parameters' ``data``; adds its gradient into their ``grad``.

        ``data`` are the batch, one argument per argument of the traced function,
        each with a leading batch axis (``X`` of shape ``(n, 2)``, ``y`` of shape
        ``(n,)``).  Like :meth:`Value.backward` it accumulates (zero the gradients
        between steps).  On an error nothing about the parameters changes.
        """
        w = self.weights()
        if not np.isfinite(w).all():
            k = int(np.flatnonzero(~np.isfinite(w))[0])
            raise InputError(f"parameter {self._param_name(k)} (the {k}th) has data {float(w[k])!r}: it must be finite")
        n, values, partials = self._run(w, data)
        loss, grads = self._combine(n, values, partials, w)
        for p, g in zip(self.params, grads.tolist(), strict=True):
            p.grad += g
        return loss

    def __repr__(self) -> str:
        n_data = self.tape.n_inputs - len(self.params)
        return (
            f"<TracedExamples of {len(self.params)} parameters and {n_data} numbers per example, "
            f"{len(self.tape)} records ({len(self.gradient_tape)} with the gradient), reduce={self.reduce!r}>"
        )


def trace_examples(
    fn: Callable[..., Value],
    params: Sequence[Value],
    *,
    example: Any,
    penalty: Callable[[list[Value]], Value] | None = None,
    reduce: str = "mean",
    backend: str | None = None,
) -> TracedExamples:
    """Record ``fn``'s loss on one example, once, for training on batches of any size.

    ``example`` is one example's data: a tuple of ``fn``'s arguments (a lone
    argument may be given as is), each a number or a (nested) list of numbers.
    ``fn`` is called once with Values in the same nesting and must return one
    Value, the example's loss; it may read ``params`` (leaf Values, such as
    ``model.parameters()``) and anything else, which is recorded as constants.
    ``penalty(params)``, if given, is a loss on the parameters alone, added once
    per batch (not per example).  ``reduce`` is ``"mean"`` (the losses
    averaged over the batch, as micrograd's demo) or ``"sum"``.  ``backend``
    is as for :func:`symgrad.compile`.

    >>> from symgrad.nn import MLP
    >>> model = MLP(2, [4, 1], seed=0)
    >>> step = trace_examples(lambda x, y: (1 - y * model(x)).relu(), model.parameters(), example=([0.0, 0.0], 1.0))
    >>> loss = step.backward([[0.5, 1.0], [-1.0, 0.2], [0.3, 0.3]], [1.0, -1.0, 1.0])
    """
    if reduce not in REDUCTIONS:
        raise InputError(f"reduce must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduce!r}")
    if not callable(fn):
        raise InputError(f"trace_examples() needs a function of one example's data, got {short_repr(fn)}")
    params = list(params)
    args = example if isinstance(example, tuple) else (example,)
    names = _argument_names(fn, len(args))
    arrays = [_as_array(value, f"example {name}") for name, value in zip(names, args, strict=True)]
    for name, array in zip(names, arrays, strict=True):
        bad = ~np.isfinite(array)
        if bad.any():
            raise InputError(f"example {name} holds {float(array[bad][0])!r}: give a finite example")
    values = [_values(array, name) for array, name in zip(arrays, names, strict=True)]
    out = fn(*(nested for nested, _ in values))
    if not isinstance(out, Value):
        raise InputError(
            f"trace_examples(): the function must return one Value (the example's loss), "
            f"got {type(out).__name__} {short_repr(out)}"
        )
    leaves = [leaf for _, flat in values for leaf in flat]
    tape, _ = linearise(out, [*params, *leaves])
    penalty_tape = None
    if penalty is not None:
        total = penalty(params)
        if not isinstance(total, Value):
            raise InputError(
                f"trace_examples(): the penalty must return one Value (a loss on the parameters), "
                f"got {type(total).__name__} {short_repr(total)}"
            )
        penalty_tape, _ = linearise(total, [*params, Value(0.0, label="placeholder")])
    return TracedExamples(tape, params, names, [a.shape for a in arrays], penalty_tape, reduce, backend)


def _argument_names(fn: Callable[..., Any], n: int) -> list[str]:
    """``fn``'s positional parameter names for messages (``x``, ``y``), else ``argument 1``, …."""
    try:
        found = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        found = []
    if len(found) < n or len(set(found[:n])) < n:
        return [f"argument {k + 1}" for k in range(n)]
    return found[:n]


def _as_array(value: Any, name: str) -> FloatArray:
    """``value`` as a float64 array; an InputError for ragged nesting, masked entries or non-numbers."""
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray and isinstance(value, np.ma.MaskedArray):
        if np.ma.is_masked(value):  # (np.ma is imported only for a subclass: a 12 ms import)
            raise InputError(f"{name} is a masked array with masked entries; give .filled(...) or drop them")
        value = np.ma.getdata(value)
    try:
        array = np.asarray(value)
    except ValueError:
        raise InputError(f"{name} is not a rectangular array of numbers (its lists differ in length)") from None
    if array.dtype.kind not in "fiu":
        if array.dtype.kind == "O":
            raise InputError(
                f"{name} is not a rectangular array of numbers: got {short_repr(value)} "
                "(nested lists must have equal lengths and hold only numbers)"
            )
        raise InputError(f"{name} must hold real numbers, got {array.dtype} values ({short_repr(value)})")
    return array.astype(np.float64, copy=False)


def _shape_text(shape: Sequence[Any]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


def _values(array: FloatArray, name: str) -> tuple[Any, list[Value]]:
    """Leaf Values for one example's argument, nested like it, and the same leaves flat (row-major)."""
    flat = [Value(float(v), label=name if array.ndim == 0 else f"{name}{list(i)}") for i, v in np.ndenumerate(array)]
    if array.ndim == 0:
        return flat[0], flat
    nested: list[Any] = list(flat)
    for size in reversed(array.shape[1:]):  # innermost axis first: group into lists of its length
        nested = [nested[k : k + size] for k in range(0, len(nested), size)]
    return nested, flat


# ---------------------------------------------------------------- evaluator ---
class BatchGradient:
    """A tape whose first ``n_shared`` inputs are shared by every example of a batch and the rest
    are one number per example: the examples' values, and the shared inputs' partials summed over them.

    Its gradient tape (the value, then the partials by the shared inputs only) and the
    dispatcher's evaluator for it are built once; any number of examples can follow.
    :class:`TracedExamples` and :func:`symgrad.fit` evaluate their losses through it.
    """

    def __init__(self, tape: Tape, n_shared: int, backend: str) -> None:
        self.tape = tape
        self.n_shared = n_shared
        self.backend = backend
        self.gradient_tape = transforms.grad_tape(tape, tape.inputs[:n_shared])
        self.entries_built = 0
        self._fn: BatchFn | None = None
        self._rental: dispatch.Rental | None = None
        self._entry()  # (under "native" this compiles now, as compile() does: setup, not a call)

    def _entry(self) -> BatchFn:
        fn = self._fn
        if fn is None:

            def publish(entry: BatchFn) -> None:
                self._fn = entry

            self.entries_built += 1
            built, self._rental = dispatch.batch_entry(self.gradient_tape, self.n_shared, self.backend, publish)
            fn = self._fn if self._fn is not None else built
            self._fn = fn
        return fn

    def __call__(self, shared: FloatArray, data: Sequence[FloatArray]) -> tuple[FloatArray, FloatArray]:
        """``(values, summed partials)`` for ``shared`` (n_shared,) and one float64 column (n,) per data input."""
        fn = self._fn
        return (fn if fn is not None else self._entry())(shared, data)

    def wait_native(self, timeout: float | None = None) -> bool:
        """Buy now what calls would buy in time, and wait for it (True if nothing was to wait for)."""
        rental = self._rental
        if rental is None:
            return True
        rental.buy_now()
        return rental.wait(timeout)


def shared_first(tape: Tape, shared: Sequence[str]) -> Tape:
    """``tape`` with the inputs named ``shared`` moved to the front, in that order (the rest keep theirs)."""
    index = {name: i for i, name in enumerate(tape.inputs)}
    first = [index[name] for name in shared]
    chosen = set(first)
    order = first + [i for i in range(tape.n_inputs) if i not in chosen]
    moved = {old: new for new, old in enumerate(order)}

    def slot(k: int) -> int:
        return moved.get(k, k)

    instrs = tuple(replace(instr, args=tuple(map(slot, instr.args))) for instr in tape.instrs)
    return Tape(
        tuple(tape.inputs[i] for i in order),
        tape.consts,
        instrs,
        tuple(map(slot, tape.outputs)),
        tape.source,
        tape.output_names,
    )
