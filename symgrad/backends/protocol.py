"""What every executor shares: the result conventions and the one fallback convention.

An executor evaluates a forward-only tape; it never knows about derivatives.
The types here are the vocabulary between the executors and the dispatcher
(:mod:`symgrad.backends.dispatch`), so that no executor imports another's
internals for a type.

* :data:`Returns` says what a scalar entry returns.
* :class:`BatchEntry` is the entry of a per-example gradient tape over a batch.
* A *fallback* is the reference path for one point, ``slow(*point)``: it
  returns what the fast entry would have returned, or raises the precise
  :class:`~symgrad.errors.DomainError`.  Every fast entry hands a point to it
  when an op fails or an output is not finite.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import InputError, short_repr
from ..tape import Tape

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "ArrayEntry",
    "BaseExecutor",
    "BatchEntry",
    "Cost",
    "Executor",
    "Fallback",
    "Returns",
    "ScalarEntry",
    "Shape",
    "unseen",
    "wrong_arguments",
]

Shape = tuple[int, ...]

Returns = Literal["value", "tuple", "value_and_grad"]
"""What a scalar entry returns: the one output, a tuple of all outputs, or ``(first, [rest])``."""

ScalarEntry = Callable[..., Any]
"""A compiled function of one float per tape input (positionally), returning as :data:`Returns` says."""

Fallback = Callable[..., Any]
"""``slow(*point)``: the reference result for one point of floats, or the precise DomainError."""


def wrong_arguments(point: Sequence[Any], n_inputs: int, names: Sequence[str] | None = None) -> InputError:
    """The one error of every scalar entry called with something other than one real number per input.

    Made only after the call failed (an exception handler costs nothing until it runs), so the
    hot paths check nothing."""
    listing = f" ({', '.join(names)})" if names else ""
    if len(point) != n_inputs:
        return InputError(
            f"the compiled function takes {n_inputs} real number{'' if n_inputs == 1 else 's'}{listing}, "
            f"got {len(point)}: {short_repr(tuple(point))}"
        )
    for k, value in enumerate(point):
        if not _is_number(value):
            where = f"'{names[k]}'" if names else f"argument {k + 1}"
            return InputError(
                f"the compiled function takes one real number per variable{listing}, "
                f"got {type(value).__name__} {short_repr(value)} for {where}"
            )
    return InputError(
        f"the compiled function takes one real number per variable{listing}, got {short_repr(tuple(point))}"
    )


def _is_number(value: Any) -> bool:
    """What the entries read as a float: a real number, or an object whose ``__float__`` works (not a str)."""
    if isinstance(value, numbers.Real):
        return True
    if isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        return False
    try:
        float(value)
    except Exception:
        return False
    return True


ArrayEntry = Callable[..., list[Any]]
"""``fn(*arrays) -> [outputs]`` for float64 inputs of fixed shapes, broadcasting like numpy."""


class BatchEntry(Protocol):
    """``fn(shared, data) -> (values, sums)``: a per-example gradient tape evaluated over a batch.

    The tape's inputs are ``n_shared`` shared scalars (the weights) and then one
    input per data column; its outputs are the example's value and its partials
    with respect to the shared inputs.  ``shared`` is a float64 array of shape
    ``(n_shared,)``, ``data`` one float64 array of shape ``(n,)`` per data input
    (any ``n >= 1``, which may change from call to call without a new compile).
    Returns the value at each example, shape ``(n,)``, and each partial summed over
    the examples, shape ``(n_shared,)`` (each executor documents its order of
    summation; all agree with the reference interpreter's per-example partials
    summed in example order to rounding).  Where an example meets a domain error,
    the reference interpreter raises its :class:`~symgrad.errors.DomainError`.
    """

    def __call__(
        self, shared: NDArray[np.float64], data: Sequence[NDArray[np.float64]], /
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...


@dataclass(frozen=True)
class Cost:
    """An executor's estimate for one tape: seconds before its first call, and seconds per call."""

    setup: float
    call: float


class Executor(Protocol):
    """What the dispatcher needs of an executor; each module in ``symgrad/backends/`` provides one.

    An entry method returns None where the executor has no such entry (the
    interpreter has no array entry), or none for this tape and these shapes.
    Every scalar entry hands points it cannot evaluate cleanly to ``slow``
    (the fallback convention above), so that all of them give the reference
    interpreter's numbers and errors; an array entry hands whole calls to
    ``fallback``, the numpy program, whose semantics (IEEE values, numpy's
    warnings) are the array path's.
    """

    name: str
    """How ``bench/dispatch.py``, the tests and the dispatcher's tiers name it."""

    def supports(self, tape: Tape) -> bool:
        """Whether it can run every op of ``tape`` here (a dependency present, an emitter per op)."""
        ...

    def scalar_entry(self, tape: Tape, slow: Fallback, returns: Returns) -> ScalarEntry | None: ...

    def array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry | None
    ) -> ArrayEntry | None: ...

    def batch_entry(self, tape: Tape, n_shared: int, fallback: BatchEntry | None) -> BatchEntry | None:
        """The :class:`BatchEntry` of ``tape``; calls it cannot finish go to ``fallback`` (the numpy version)."""
        ...

    def scalar_cost(self, n_records: int) -> Cost | None:
        """Estimated setup and per-call seconds of its scalar entry, None without one."""
        ...

    def array_cost(self, n_records: int, n_points: int, n_varying: int | None = None) -> Cost | None:
        """The same for array calls of ``n_points`` broadcast points, of which ``n_varying`` records
        (None: all) vary from point to point; the others read only one-value inputs."""
        ...

    def batch_cost(self, n_records: int, n_points: int) -> Cost | None:
        """The same for batch calls of ``n_points`` examples."""
        ...


class BaseExecutor:
    """Defaults for an :class:`Executor`: runs every tape, has no entry and no cost until it says so.

    Each executor overrides what it has; ``figures`` holds its measured seconds (a frozen
    dataclass, replaced whole to model another machine, as tests do).
    """

    name = "base"
    figures: Any = None

    def supports(self, tape: Tape) -> bool:
        return True

    def scalar_entry(self, tape: Tape, slow: Fallback, returns: Returns) -> ScalarEntry | None:
        return None

    def array_entry(
        self, tape: Tape, shapes: Sequence[Shape], reduce_to: Sequence[int | None], fallback: ArrayEntry | None
    ) -> ArrayEntry | None:
        return None

    def batch_entry(self, tape: Tape, n_shared: int, fallback: BatchEntry | None) -> BatchEntry | None:
        return None

    def scalar_cost(self, n_records: int) -> Cost | None:
        return None

    def array_cost(self, n_records: int, n_points: int, n_varying: int | None = None) -> Cost | None:
        return None

    def batch_cost(self, n_records: int, n_points: int) -> Cost | None:
        return None


def unseen(tape: Tape) -> list[bool]:
    """Per slot: a record whose inf or nan no reader passes on (see the op table's ``propagates``).

    Such a record is checked itself; any other record's inf or nan reaches one
    of them or an output (``x*y`` read by ``+``), so checking those and the
    outputs finds every non-finite record, as the native kernel's flags do.
    """
    marks = [False] * tape.first_instr_slot + [True] * len(tape.instrs)
    for instr in tape.instrs:
        flows = instr.op.propagates
        if flows:
            for a, flow in zip(instr.args, flows, strict=False):
                if flow:
                    marks[a] = False
    return marks
