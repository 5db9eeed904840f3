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

Which code replays: the gradient tape (value and every partial) runs as
machine code when the backend says native (:mod:`symgrad.backends.native`), through
one buffer: the parameters' ``data`` are packed into it with one C call, one
call runs the kernel, and the value and partials come back as one array.
Under ``auto``, a gradient tape of ``AUTO_MIN_RECORDS`` to
``AUTO_MAX_RECORDS`` records is compiled at once.  A bigger one (a training
loss over a batch, say: compiling it takes seconds) is loaded from the
persistent cache if it is there, else it replays as generated Python until
those replays have taken about as long as compiling would
(:data:`COMPILE_SECONDS_PER_RECORD`); the replay that crosses the line
starts the compile on symgrad's background worker (:mod:`symgrad.backends.background`)
and Python keeps serving until the kernel is ready.  A long training run gets
machine code without a pause, a short one never starts LLVM, and a process
that ends during the compile waits for it (the worker is joined at exit, never
cut off inside LLVM), which costs at most about what its replays already took.
``wait_native()`` blocks until that kernel serves.
"""

from __future__ import annotations

import math
import operator
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from .backends import background, interpreter, native
from .errors import InputError
from .function import Function
from .tape import Tape
from .value import Value, linearise

if TYPE_CHECKING:
    from .backends.native.kernel import BufferEntry, NativeKernel

__all__ = ["Traced", "trace"]

TRAIN_OPT: int | None = None
"""Optimisation level of a traced function's native kernel (None: the kernel's default by size)."""
COMPILE_SECONDS_PER_RECORD = 30e-6
"""Estimated LLVM time per gradient-tape record (measured 25-35 µs on W4's 188,114 records, loaded
2-core machine): ``auto`` compiles a big tape once its Python replays have taken about this long."""

_DATA = operator.attrgetter("data")
_UNSET: Any = object()


class Traced(Function):
    """A :class:`Function` recorded from Value operations, remembering its parameters.

    It is a ``Function`` in every respect (call it, ``grad``, ``value_and_grad``
    by variable name); it adds list-in, list-out evaluation for training loops
    and :meth:`backward`, which reads and writes the parameters themselves.
    """

    __slots__ = ("_budget", "_compiling", "_entry", "_lock", "_pack", "params")

    def __init__(self, tape: Tape, params: Sequence[Value], backend: str | None = None) -> None:
        super().__init__(tape, backend=backend)
        self.params: tuple[Value, ...] = tuple(params)
        """The parameter Values, in the order of the tape's inputs."""
        self._entry: BufferEntry | None = _UNSET  # chosen on first use (see _native)
        self._budget = math.inf  # seconds of Python replays after which auto compiles (see _kernel)
        self._lock = threading.Lock()  # the entry's buffer is shared by the calls
        self._pack: Callable[..., None] = struct.Struct(f"<{len(self.params)}d").pack_into
        self._compiling: background.Upgrade | None = None  # the budget's compile, once started

    def _native(self) -> BufferEntry | None:
        """The gradient tape's kernel on a buffer, or None to replay generated Python (decided once)."""
        entry = self._entry
        if entry is _UNSET:
            with self._lock:
                if self._entry is _UNSET:
                    kernel = self._kernel()
                    self._entry = None if kernel is None else kernel.buffer_entry()
                entry = self._entry
        return entry

    def _install(self, kernel: NativeKernel) -> None:
        """From now on replay on ``kernel`` (compiled for the gradient tape's outputs)."""
        entry = kernel.buffer_entry()
        with self._lock:
            self._entry = entry
            self._budget = math.inf
            self._vg = None  # rebuilt on the kernel by _vg_fn

    def _kernel(self, cached_only: bool = True) -> NativeKernel | None:
        """The backend's choice for the gradient tape (see the module docstring).

        A big tape under ``auto`` whose kernel is not cached gets a budget
        instead: :meth:`value_and_grad_list` compiles it once Python replays
        have cost about what compiling costs (then at most twice the time of
        the better choice made in advance is spent).  Not under
        ``SYMGRAD_VECTOR_LIBM=all``, whose kernel does not give the Python
        replays' numbers: it compiles at once.
        """
        tape = self._gradient_tape(None)
        n = len(tape)
        if self.backend == "python" or not native.use_native(self.backend, min(n, native.AUTO_MAX_RECORDS)):
            return None
        if self.backend == "auto" and not native.emits(tape):
            return None
        from .backends.native.kernel import cached_kernel, compile_native  # only importable with llvmlite

        primal = self.tape

        def slow(point: Sequence[float]) -> list[float]:
            """Flagged points: the bound point's errors, else the classic sweeps (the exact DomainError)."""
            values = self.bind(tuple(point), {})
            value, grads = interpreter.value_and_grad(primal, values)
            return [value, *grads]

        outputs = list(tape.outputs)
        if (
            cached_only
            and self.backend == "auto"
            and n > native.AUTO_MAX_RECORDS
            and not native.vector_libm_everywhere()
        ):
            kernel = cached_kernel(tape, outputs, fallback=slow, opt=TRAIN_OPT)
            if kernel is None:
                self._budget = n * COMPILE_SECONDS_PER_RECORD
            return kernel
        return compile_native(tape, outputs, fallback=slow, opt=TRAIN_OPT)

    def _vg_fn(self, positions: tuple[int, ...] | None) -> Callable[..., tuple[float, list[float]]]:
        """``vg`` and ``value_and_grad`` share the replay's kernel (one compile) when it is native."""
        if positions is None and self._vg is None:
            entry = self._native()
            if entry is not None:
                n = len(self.params)

                def vg(*point: float) -> tuple[float, list[float]]:
                    result = self._replay(entry, point) if len(point) == n else None
                    if result is None:
                        raise InputError(f"{self!r}.vg takes {n} floats, got {point!r}"[:300])
                    return result[0], result[1:]

                self._vg = vg
        return super()._vg_fn(positions)

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
        entry = self._entry if self._entry is not _UNSET else self._native()
        if entry is not None:
            result = self._replay(entry, values)
            if result is not None:
                return result[0], result[1:]
        if self._budget < math.inf:
            value, grads = self._timed_python(values)
        else:
            value, grads = self.value_and_grad(*values)
        if isinstance(grads, dict):
            return value, list(grads.values())
        return value, [grads]

    def _timed_python(self, values: Sequence[float]) -> tuple[float, Any]:
        """A Python replay charged to the compile budget; when it is spent, compile (auto, big tapes)."""
        if self._vg is None:
            self._vg_fn(None)  # generating the Python code is not a replay
        start = time.perf_counter()
        result = self.value_and_grad(*values)
        self._budget -= time.perf_counter() - start
        if self._budget <= 0.0:
            with self._lock:  # one replay starts the compile
                due, self._budget = self._budget <= 0.0, math.inf
            if due:
                self._compiling = background.upgrade_later(
                    interim=lambda: None, build=self._built_kernel, publish=self._publish
                )
        return result

    def _built_kernel(self) -> Callable[..., Any]:
        kernel = self._kernel(cached_only=False)
        if kernel is None:
            raise RuntimeError("the backend chose Python")  # kept on the job; Python keeps serving
        return kernel

    def _publish(self, fn: Callable[..., Any]) -> None:
        """The background job's result: the kernel (the job's own interim is not a replay)."""
        if hasattr(fn, "buffer_entry"):
            self._install(cast("NativeKernel", fn))

    def wait_native(self, timeout: float | None = None) -> bool:
        """Wait for machine code being compiled in the background (this Function's and the replay's).

        False on a timeout or if a compile failed (the replay then stays generated Python); True
        when it upgraded or nothing was compiling.
        """
        upgraded = super().wait_native(timeout)
        job = self._compiling
        if job is not None:
            upgraded = job.wait(timeout) and upgraded
        return upgraded

    def _replay(self, entry: BufferEntry, values: Any) -> list[float] | None:
        """``[value, *partials]`` from the kernel, or None when the values are not all numbers."""
        with self._lock:
            try:
                self._pack(entry.work, 0, *values)
            except struct.error:
                return None  # the Python path says what is wrong with them
            entry()
            result: list[float] = entry.outputs.tolist()
        return result

    def backward(self) -> float:
        """Replay at the parameters' current ``data``, add the partials to their ``grad``.

        Returns the value.  Like :meth:`Value.backward` it accumulates, so zero
        the gradients between steps (``model.zero_grad()``).
        """
        params = self.params
        entry = self._entry if self._entry is not _UNSET else self._native()
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
