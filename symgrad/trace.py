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

Which code replays: the gradient tape (value and every partial), on the
executor the dispatcher (:mod:`symgrad.backends.dispatch`) chooses, as for
any Function: under ``auto`` the first replays run on the interpreter or
generated Python, and machine code is compiled in the background once the
replays have cost about what compiling costs (at once when the persistent
cache holds it).  A long training run gets machine code without a pause, a
short one never starts LLVM.  Once machine code serves, a replay goes through
one buffer: the parameters' ``data`` are packed into it with one C call, one
call runs the kernel, and the value and partials come back as one array.
``wait_native()`` compiles at once and blocks until that kernel serves.
"""

from __future__ import annotations

import math
import operator
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DomainError, InputError
from .function import Function
from .tape import Tape
from .value import Value, linearise

if TYPE_CHECKING:
    from .backends.native.kernel import BufferEntry, NativeKernel

__all__ = ["Traced", "trace"]

_DATA = operator.attrgetter("data")


class Traced(Function):
    """A :class:`Function` recorded from Value operations, remembering its parameters.

    It is a ``Function`` in every respect (call it, ``grad``, ``value_and_grad``
    by variable name); it adds list-in, list-out evaluation for training loops
    and :meth:`backward`, which reads and writes the parameters themselves.
    """

    __slots__ = ("_buffer", "_lock", "_pack", "params")

    def __init__(self, tape: Tape, params: Sequence[Value], backend: str | None = None) -> None:
        super().__init__(tape, backend=backend)
        self.params: tuple[Value, ...] = tuple(params)
        """The parameter Values, in the order of the tape's inputs."""
        self._buffer: BufferEntry | None = None  # the gradient kernel's buffer, once machine code serves
        self._lock = threading.Lock()  # the buffer is shared by the calls
        self._pack: Callable[..., None] = struct.Struct(f"<{len(self.params)}d").pack_into

    def _gradient_kernel(self, kernel: NativeKernel) -> None:
        """Replays go through ``kernel``'s buffer from now on (one C call in, one call, one array out)."""
        entry = kernel.buffer_entry()
        with self._lock:
            self._buffer = entry

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its tape and its parameters, which are leaf Values (``data``, ``grad``, ``label``).

        Pickle's memo keeps them shared with whatever else is pickled in the same
        call (``pickle.dumps((model, step))``); on the other side they are copies,
        so ``backward()`` there adds into the copies' ``grad``, not the originals'.
        """
        return type(self), (self.tape, self.params, self.backend)

    def value_and_grad_list(self, values: Sequence[float]) -> tuple[float, list[float]]:
        """The value and the partials at ``values`` (one float per parameter, in order)."""
        if len(values) != len(self.params):
            raise InputError(f"{self!r} takes {len(self.params)} parameter values, got {len(values)}")
        entry = self._buffer
        if entry is not None:
            result = self._replay(entry, values)
            if result is not None:
                return result[0], result[1:]
        value, grads = self.value_and_grad(*values)
        if isinstance(grads, dict):
            return value, list(grads.values())
        return value, [grads]

    def _replay(self, entry: BufferEntry, values: Any) -> list[float] | None:
        """``[value, *partials]`` from the kernel, or None when the values are not all numbers."""
        with self._lock:
            try:
                self._pack(entry.work, 0, *values)
            except struct.error:
                return None  # the Python path says what is wrong with them
            try:
                entry()
            except DomainError:
                point = entry.work[: len(self.params)].tolist()
                if not all(map(math.isfinite, point)):
                    return None  # a nan or inf parameter: the Python path names it (an InputError)
                raise
            result: list[float] = entry.outputs.tolist()
        return result

    def backward(self) -> float:
        """Replay at the parameters' current ``data``, add the partials to their ``grad``.

        Returns the value.  Like :meth:`Value.backward` it accumulates, so zero
        the gradients between steps (``model.zero_grad()``).
        """
        params = self.params
        entry = self._buffer
        result = None if entry is None else self._replay(entry, map(_DATA, params))
        if result is None:
            value, grads = self.value_and_grad_list([p.data for p in params])
        else:
            value, grads = result[0], result[1:]
        for p, g in zip(params, grads, strict=True):
            p.grad += g
        return value


def trace(fn: Callable[[list[Value]], Value], params: Sequence[Value], *, backend: str | None = None) -> Traced:
    """Call ``fn(params)`` once and record the result as a :class:`Traced` function of ``params``.

    ``params`` are leaf Values (``model.parameters()``, say); they become the
    tape's inputs in the given order.  Other leaves ``fn`` touches become
    constants at their current ``data``.  See the module docstring for when
    replaying the recording is valid.  ``backend`` is as for
    :func:`symgrad.compile` (``"native"`` compiles the gradient tape to machine
    code whatever its size).

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
    return Traced(tape, params, backend)
