"""Record once, replay many: turn a ``Value`` computation into a reusable :class:`Function`.

An eager training step rebuilds the whole Python object graph every time.
:func:`trace` runs the computation once, linearises it onto a tape whose
inputs are the parameters, and from then on each step is one forward and one
reverse sweep over that tape at the parameters' new values: no Value objects,
no graph walk.

When replay is valid: the tape records *the operations that ran* during the
one call.  Anything decided in Python at recording time is frozen: a Python
``if`` on ``.data``, a loop whose length depends on a value, an early return.
Decisions made by ops (``relu``, ``abs``, ``min``, ``max``) are re-evaluated
at every replay, so networks built from them replay correctly.  Leaves that
are not parameters (training data, say) are recorded as constants at their
``data`` at tracing time; to vary them, pass them as parameters too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import InputError
from .function import Function
from .tape import Tape
from .value import Value, linearise

__all__ = ["Traced", "trace"]


class Traced(Function):
    """A :class:`Function` recorded from Value operations, remembering its parameters.

    It is a ``Function`` in every respect (call it, ``grad``, ``value_and_grad``
    by variable name); it adds list-in, list-out evaluation for training loops
    and :meth:`backward`, which reads and writes the parameters themselves.
    """

    __slots__ = ("params",)

    def __init__(self, tape: Tape, params: Sequence[Value]) -> None:
        super().__init__(tape)
        self.params: tuple[Value, ...] = tuple(params)
        """The parameter Values, in the order of the tape's inputs."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its tape and its parameters, which are leaf Values (``data``, ``grad``, ``label``).

        Pickle's memo keeps them shared with whatever else is pickled in the same
        call (``pickle.dumps((model, step))``); on the other side they are copies,
        so ``backward()`` there adds into the copies' ``grad``, not the originals'.
        """
        return type(self), (self.tape, self.params)

    def value_and_grad_list(self, values: Sequence[float]) -> tuple[float, list[float]]:
        """The value and the partials at ``values`` (one float per parameter, in order)."""
        if len(values) != len(self.params):
            raise InputError(f"{self!r} takes {len(self.params)} parameter values, got {len(values)}")
        value, grads = self.value_and_grad(*values)
        if isinstance(grads, dict):
            return value, list(grads.values())
        return value, [grads]

    def backward(self) -> float:
        """Replay at the parameters' current ``data``, add the partials to their ``grad``.

        Returns the value.  Like :meth:`Value.backward` it accumulates, so zero
        the gradients between steps (``model.zero_grad()``).
        """
        params = self.params
        value, grads = self.value_and_grad_list([p.data for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad += g
        return value


def trace(fn: Callable[[list[Value]], Value], params: Sequence[Value]) -> Traced:
    """Call ``fn(params)`` once and record the result as a :class:`Traced` function of ``params``.

    ``params`` are leaf Values (``model.parameters()``, say); they become the
    tape's inputs in the given order.  Other leaves ``fn`` touches become
    constants at their current ``data``.  See the module docstring for when
    replaying the recording is valid.

    >>> w = Value(2.0, label="w")
    >>> f = trace(lambda ps: (ps[0] * 3.0 - 1.0).relu(), [w])
    >>> f.value_and_grad_list([5.0])
    (14.0, [3.0])
    """
    params = list(params)
    out = fn(params)
    if not isinstance(out, Value):
        raise InputError(f"trace(): the function must return a Value, got {type(out).__name__} {out!r}")
    tape, _ = linearise(out, params)
    return Traced(tape, params)
