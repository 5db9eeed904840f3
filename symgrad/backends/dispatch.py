"""The one place that chooses which executor runs a tape, and when to compile.

Every caller (:class:`~symgrad.function.Function` and its derived Functions,
:class:`~symgrad.trace.Traced`, the array path) asks here for an *entry*: a
callable of the point.  Under ``backend="auto"`` the same rule holds
everywhere, *rent or buy*:

* Start on the executor that is cheapest to start (the interpreter's record
  loop needs no setup; generated Python needs a CPython compile; machine code
  needs LLVM).
* Time the calls.  Once what has been spent (measured: the first executor's
  setup, the calls served, the setups bought since) is about what the next
  executor's setup costs (its estimate,
  :meth:`~symgrad.backends.protocol.Executor.scalar_cost`; for generated
  Python corrected by the code generations this process has paid: see
  :data:`_measured`), buy it: generated
  Python and short compiles of machine code are built in the caller (they
  are cheapest where they are bought), long compiles in a child process in
  the background (:data:`ISOLATED_FROM_SECONDS`, :mod:`.background`) while
  the current executor keeps serving.  So a workload spends at most about
  twice what the best choice made in advance would have spent, whatever its
  size or length, and a hot function always ends on the fastest executor:
  there is no size ceiling.
* A kernel already in the persistent cache is loaded at once for floats.  For
  arrays, asking the cache is itself a setup (the key is a digest of the loop
  the tape becomes: 0.05-0.1 ms for a small tape, about 2.5 µs a record; see
  :class:`Ask`), and so is linking a loop found there (1-3 ms): each is made
  once the calls have paid for it, at once where one call costs more (any
  sizeable array).  A loop loaded in this process serves at once.
* Batch entries (:func:`batch_entry`) are the exception: their executors agree
  to rounding, not bit for bit, so the kernel is compiled before the first call.

``backend="native"`` compiles before the first call, ``"python"`` never
compiles machine code.  Every executor returns the reference interpreter's
numbers bit for bit, so the switch is invisible except in speed (kernels
built with ``SYMGRAD_VECTOR_LIBM=all`` are not: they are compiled before the
first call).  Caches belong to their callers, keyed by what determines the code
(the tape and what is asked of it), never by ``id()``.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import config
from ..errors import InputError, MissingDependencyError
from ..tape import Tape
from . import background, native, registry
from . import numpy as numpy_code
from .protocol import ArrayEntry, BatchEntry, Fallback, Returns, Shape

if TYPE_CHECKING:
    from .native.kernel import NativeKernel

__all__ = [
    "BACKENDS",
    "ISOLATED_FROM_SECONDS",
    "Ask",
    "Rental",
    "array_entry",
    "array_tiers",
    "batch_entry",
    "native_ready",
    "resolve_backend",
    "scalar_entry",
    "scalar_tiers",
    "varying_records",
]

Fn = Callable[..., Any]
BACKENDS = config.BACKENDS


ISOLATED_FROM_SECONDS = 0.5
"""Machine code estimated (by the executor's cost) to take longer than this to compile is built and
compiled in a child process, in the background (:func:`symgrad.backends.native.jit.isolated`): the
calls go on meanwhile, and a process that exits during the compile stops the child instead of
waiting for it.  Below it, the kernel is compiled in the caller, at the call that has paid for it.
Measured (2 cores, W3 under auto, 10,000 calls): a compile on a background thread of this process
shares the GIL with the calls (building the IR is Python work) and took 2-2.5x its time in the
caller (N = 1,000: about 100 ms against 45 ms), while the calls it let through meanwhile at the
slower executor's speed were worth a few ms of machine code; a child first starts a Python and
imports symgrad (0.3 s idle, over 1 s loaded).  So a short compile is cheapest where it is paid
for, and the rent-or-buy bound holds for it as for generated Python."""

Tier = tuple[str, float, float]
"""``(executor name, setup seconds, seconds per call)``: one rung of a rental's ladder."""


class Ask(NamedTuple):
    """A question a rental pays for like a setup, once calls have paid for it: is there a cheaper way
    to tier ``tier`` than its estimate (its machine code in the persistent cache, say)?

    Asking is not free (the cache's key is a digest of the loop the tape becomes: 0.05-0.1 ms for
    a small tape, about 2.5 µs a record, and starting LLVM when this process has not), and a
    one-off call over a few points would pay it for a kernel it never uses."""

    tier: str
    cost: float
    """Seconds the ask is expected to take."""
    run: Callable[[], tuple[Callable[[], Any], float] | None]
    """``(build, setup)``: the way to the tier as the ask found it, re-priced (a kernel read from the
    cache, whose setup is linking it; or compiling, no longer paying for starting LLVM, which the ask
    did), or None (the estimate stands)."""


_measured: dict[tuple[str, str], float] = {}
"""Setup seconds measured / estimated, per (executor, "scalar" or "array"), in this process.

The estimates (each executor's ``figures``) are for an idle machine of the project's kind; a
process learns from each code generation it pays in the caller how far off they are here and
now (another CPU, another load), and later rentals use the corrected figure: rent or buy keeps
its bound of about twice the best choice only as far as the setup it expects is the one it pays
(a rental that buys at its last call pays the estimate in rent, then the setup itself)."""


def _observe(executor: str, kind: str, estimated: float, seconds: float) -> None:
    """Learn from one setup paid: a running mean of measured / estimated (within 0.2-10: one odd
    measurement must not make a whole class of setups look free or prohibitive)."""
    if estimated > 0.0:
        ratio = min(max(seconds / estimated, 0.2), 10.0)
        old = _measured.get((executor, kind))
        _measured[(executor, kind)] = ratio if old is None else 0.5 * (old + ratio)


def _setup(executor: str, kind: str, estimated: float) -> float:
    """The setup to expect: the executor's estimate, corrected by what this process has measured."""
    return estimated * _measured.get((executor, kind), 1.0)


def scalar_tiers(tape: Tape) -> list[Tier]:
    """The executors that can run ``tape`` on floats, cheapest to start first, with their estimates."""
    n = len(tape)
    tiers = []
    for executor in registry.EXECUTORS.values():
        cost = executor.scalar_cost(n)
        if cost is not None and executor.supports(tape):
            tiers.append((executor.name, _setup(executor.name, "scalar", cost.setup), cost.call))
    return sorted(tiers, key=lambda tier: tier[1])


def array_tiers(tape: Tape, n_points: int, n_varying: int | None = None) -> list[Tier]:
    """The same for array calls of ``n_points`` broadcast points (``n_varying``: see
    :func:`varying_records`; None: every record varies)."""
    n = len(tape)
    tiers = []
    for executor in registry.EXECUTORS.values():
        cost = executor.array_cost(n, n_points, n_varying)
        if cost is not None and executor.supports(tape):
            tiers.append((executor.name, _setup(executor.name, "array", cost.setup), cost.call))
    return sorted(tiers, key=lambda tier: tier[1])


_warned = False


def resolve_backend(backend: str | None) -> str:
    """The backend asked for: the argument, else ``SYMGRAD_BACKEND`` (checked by :mod:`symgrad.config`); checked."""
    name = backend if backend is not None else config.BACKEND.get()
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def native_ready(backend: str, tape: Tape) -> bool:
    """Whether ``backend`` may run ``tape`` as machine code here.

    ``native`` without llvmlite raises :class:`~symgrad.errors.MissingDependencyError`;
    ``auto`` answers False, with a one-line warning once per process, or when an op of
    the tape has no native emitter.
    """
    global _warned
    if backend == "python":
        return False
    reason = native.unavailable_reason(load=backend == "native")
    if reason is not None:
        if backend == "native":
            raise MissingDependencyError(f"the native backend needs llvmlite: {reason}")
        if not _warned:
            _warned = True
            warnings.warn(f"symgrad: native backend unavailable, using Python ({reason})", RuntimeWarning, stacklevel=4)
        return False
    return backend == "native" or native.emits(tape)


# ------------------------------------------------------------------ rentals ---
class Rental:
    """One entry under ``auto``: serves from the current executor, buys the next when calls have paid for it.

    ``call`` is the entry handed out: it times each call (``perf_counter``, about 0.1 µs) and
    forwards it to the executor serving now.  Rent is *measured*: once the seconds spent
    serving (and on setups already bought) reach the next executor's estimated setup, that
    executor is bought, so the total stays within about twice the best choice made in advance
    whatever the machine's load.  ``publish`` is told of every executor that takes over; once
    nothing more will be bought it is told of the executor itself, so the caller's slot then
    holds it with no timing around it.
    """

    __slots__ = (
        "_builders",
        "_lock",
        "_publish",
        "ask",
        "call",
        "costs",
        "current",
        "due",
        "entry",
        "failed",
        "job",
        "kind",
        "paid",
        "tier",
    )

    def __init__(
        self,
        tiers: Sequence[Tier],
        builders: dict[str, Callable[[], Fn]],
        publish: Callable[[Fn], None],
        first: Fn,
        kind: str = "scalar",
        ask: Ask | None = None,
        spent: float = 0.0,
    ) -> None:
        self.costs = tuple(tiers)
        self.kind = kind
        """``"scalar"`` or ``"array"``: which of an executor's setups this rental pays (see :func:`_observe`)."""
        self._builders = builders
        self._publish = publish
        self._lock = threading.Lock()
        self.tier = 0
        self.current: Fn = first
        self.paid = spent
        """Seconds spent so far: the first executor's setup (``spent``), calls served, and setups
        bought in the caller.  The first setup counts: a fixed choice of the last executor never pays
        it (a numpy program of 3,566 records costs 40-50 ms to generate, about what the fused loop
        costs to compile), so renting on top of it would pay up to three times the best choice."""
        self.due = math.inf
        """``paid`` at which the next executor is bought."""
        self.job: background.Upgrade | None = None
        self.failed = False
        """Whether a compile made in the caller failed (the executor serving then stays)."""
        self.ask = ask
        """Still to be made (see :class:`Ask`): before its tier is bought, once the calls have paid for it."""
        self._plan()
        self._buy_at_once()
        perf = time.perf_counter

        def call(*point: Any) -> Any:
            start = perf()
            result = self.current(*point)
            self.paid += perf() - start
            if self.paid >= self.due:
                self._step()
            return result

        self.call: Fn = call
        self.entry: Fn = call if self.due < math.inf else self.current
        """What the caller is handed now: the timed entry, or the executor itself when nothing is worth buying."""
        publish(self.entry)

    def _next(self) -> int | None:
        """The next tier worth buying (cheaper per call than the current one, least setup first), or None."""
        _, _, per_call = self.costs[self.tier]
        best: int | None = None
        for k in range(self.tier + 1, len(self.costs)):
            _, setup, cheaper = self.costs[k]
            if cheaper < per_call and (best is None or setup < self.costs[best][1]):
                best = k
        return best

    def _plan(self) -> None:
        k = self._next() if self.job is None else None
        self.due = math.inf if k is None else self.costs[k][1]
        if self.ask is not None and self._asking():
            self.due = min(self.due, self.ask.cost)

    def _asking(self) -> bool:
        """Whether the ask is still worth making: its tier is cheaper per call than the one serving."""
        ask = self.ask
        if ask is None or self.job is not None:
            return False
        _, _, per_call = self.costs[self.tier]
        return any(name == ask.tier and call < per_call for name, _, call in self.costs[self.tier + 1 :])

    def _answer(self) -> None:
        """Make the ask, in the caller (its time is paid like a setup's); a cheaper way re-prices its tier."""
        ask = self.ask
        if ask is None:
            return
        self.ask = None
        start = time.perf_counter()
        try:
            found = ask.run()
        except Exception:  # an unreadable cache entry, say: as if nothing were there
            found = None
        finally:
            self.paid += time.perf_counter() - start
        if found is not None:
            build, setup = found
            self.costs = tuple((name, setup if name == ask.tier else cost, call) for name, cost, call in self.costs)
            self._builders = {**self._builders, ask.tier: build}
        self._plan()

    def _buy_at_once(self) -> None:
        """Buy now, in the caller, what costs no more than one call of the current executor would.

        (An array call over a million points, say: waiting for the background compile would cost more
        than compiling, and the numpy program's temporaries more memory than the fused loop's.)
        The same holds for the ask."""
        if self.ask is not None and self._asking() and self.ask.cost <= self.costs[self.tier][2]:
            self._answer()
        while (k := self._next()) is not None and self.costs[k][1] <= self.costs[self.tier][2]:
            try:
                fn = self._builders[self.costs[k][0]]()
            except Exception:  # (no such kernel for these shapes, a failed compile): keep serving as now
                self.due = math.inf
                return
            self.paid += self.costs[k][1]
            self._take_over(fn, k)

    def _step(self) -> None:
        """Calls have paid for the next tier: buy it (a long native compile in the background)."""
        with self._lock:
            if self._asking():
                self._answer()
                self._buy_at_once()
                if self.due == math.inf:  # (nothing was bought, and nothing more will be)
                    self._publish(self.current)
                return
            k = self._next() if self.job is None else None
            if k is None:
                self.due = math.inf
                return
            self._buy(k)

    def _buy(self, k: int) -> None:
        name, setup, _ = self.costs[k]
        build = self._builders[name]
        if name == "native" and setup > ISOLATED_FROM_SECONDS:
            fallback = self._builders.get("python") if self.costs[self.tier][0] == "interpreter" else None
            tiers = {name: i for i, (name, _, _) in enumerate(self.costs)}
            self.due = math.inf  # nothing more to buy: the job publishes what serves next
            self.job = background.upgrade_later(
                self.current,
                _isolated(build),
                lambda fn: self._take_over(
                    fn, tiers["native"] if self.job is None or self.job.upgraded else tiers.get("python", self.tier)
                ),
                fallback,
                isolated=True,
                announce=False,
            )
            return
        build = self._learning(name, setup, build)
        start = time.perf_counter()
        try:
            fn = build()
        except Exception:  # a failed compile, as in the background: generated Python, or what serves now
            if name != "native":
                raise
            self.failed = True
            python = self._builders.get("python")
            if self.costs[self.tier][0] == "interpreter" and python is not None:
                self._take_over(python(), [tier for tier, _, _ in self.costs].index("python"))
            self.due = math.inf  # a failed compile is not retried
            self._publish(self.current)
            return
        finally:
            self.paid += time.perf_counter() - start
        self._take_over(fn, k)

    def _learning(self, name: str, expected: float, build: Callable[[], Fn]) -> Callable[[], Fn]:
        """``build`` (run in the caller), timed: what it cost against what was expected corrects later
        estimates (:func:`_observe`).

        Machine code teaches nothing.  A kernel found in the persistent cache would look like a very
        fast compile, and a background compile's wall time is not what the caller pays (measured:
        learning those made kernels serve later, W3 N = 3,000 under auto took 1.2-1.7 s for 10,000
        calls instead of 0.63 s).  Learning only from loops LLVM compiled in the caller was tried
        too, with the fused loop's figures set to the bare compile (idle: about half of
        :class:`~symgrad.backends.native.Figures`): together they made auto buy a 3,566-record
        tape's loop at its first call over 10 points, 4.35x the numpy program's time (1.13x
        without either).  A rental pays more for a loop than its bare compile."""
        if name == "native":
            return build
        kind = self.kind
        estimated = expected / _measured.get((name, kind), 1.0)

        def timed() -> Fn:
            start = time.perf_counter()
            fn = build()
            _observe(name, kind, estimated, time.perf_counter() - start)
            return fn

        return timed

    def _take_over(self, fn: Fn, k: int) -> None:
        """``fn`` (tier ``k``) serves from now on; the caller keeps it itself once nothing more will be bought."""
        self.current = fn
        self.tier = k
        self._plan()
        if self.due == math.inf:  # nothing more to buy (a failed compile is not retried)
            self._publish(fn)

    def buy_now(self) -> None:
        """Buy now what calls would buy in time: the executor cheapest per call (``wait_native``).

        Nothing is bought that the rule never would (the fused kernel for a few points, say,
        where the numpy program is cheaper per call)."""
        with self._lock:
            if self.job is not None:
                return
            if self._asking():
                self._answer()
            _, _, per_call = self.costs[self.tier]
            cheaper = [k for k in range(self.tier + 1, len(self.costs)) if self.costs[k][2] < per_call]
            if cheaper:
                self._buy(min(cheaper, key=lambda k: self.costs[k][2]))

    def wait(self, timeout: float | None) -> bool:
        """Wait for a background build; True if it took over (or none was started), False if a compile failed."""
        job = self.job
        return not self.failed if job is None else job.wait(timeout)


def scalar_entry(
    tape: Tape,
    slow: Fallback,
    returns: Returns,
    backend: str,
    publish: Callable[[Fn], None],
    *,
    on_kernel: Callable[[NativeKernel], None] | None = None,
    opt: int | None = None,
) -> tuple[Fn, Rental | None]:
    """The scalar entry of ``tape`` (``fn(*floats)`` returning as ``returns`` says) under ``backend``.

    ``slow(*floats)`` is the reference path every fast entry hands flagged points to.
    ``publish(fn)`` keeps the entry (and later the executor that takes over).
    ``on_kernel`` is told of the native kernel when one serves.
    Returns the entry, and the rental that may still upgrade it (None when it never will).
    """
    executors = registry.EXECUTORS
    machine = native.EXECUTOR

    def build(name: str) -> Callable[[], Fn]:
        if name != "native":

            def entry() -> Fn:
                fn = executors[name].scalar_entry(tape, slow, returns)
                if fn is None:
                    raise ValueError(f"the {name} executor has no scalar entry")
                return fn

            return entry

        def native_fn() -> Fn:
            kernel = machine.kernel(tape, slow, returns, opt)
            if on_kernel is not None:
                on_kernel(kernel)
            return kernel.entry(returns)

        return native_fn

    def settle(fn: Fn) -> tuple[Fn, None]:
        publish(fn)
        return fn, None

    if not native_ready(backend, tape):
        return settle(build("python")())
    if backend == "native" or native.vector_libm_everywhere():
        return settle(build("native")())
    if _worth_asking_the_cache(machine.scalar_cost(len(tape)).setup):
        cached = machine.cached_kernel(tape, slow, returns, opt)
        if cached is not None:
            if on_kernel is not None:
                on_kernel(cached)
            return settle(cached.entry(returns))
    if not background.enabled():  # builds would run in the caller anyway: compile before the first call
        return settle(build("native")())
    tiers = scalar_tiers(tape)
    builders = {name: build(name) for name, _, _ in tiers}
    start = time.perf_counter()
    first = builders[tiers[0][0]]()
    rental = Rental(tiers, builders, publish, first, spent=time.perf_counter() - start)
    return rental.entry, rental


def _worth_asking_the_cache(setup: float) -> bool:
    """Ask the persistent cache at once when LLVM is running already, or when the kernel (estimated
    to take ``setup`` to compile, starting LLVM included) would save more than starting LLVM costs;
    otherwise the cache is asked when the kernel is bought (a cached kernel is then loaded instead
    of compiled), so a one-off call never starts LLVM."""
    if native.llvm_started():
        return True
    start = native.EXECUTOR.figures.llvm_start
    return setup - start > start


def _isolated(build: Callable[[], Fn]) -> Callable[[], Fn]:
    """``build`` with its LLVM compiles in a child process (see :func:`symgrad.backends.native.jit.isolated`)."""

    def run() -> Fn:
        from .native import jit  # only importable with llvmlite

        with jit.isolated():
            return build()

    return run


# ------------------------------------------------------------------- arrays ---
def array_entry(
    tape: Tape,
    shapes: Sequence[Shape],
    reduce_to: Sequence[int | None],
    backend: str,
    publish: Callable[[ArrayEntry], None],
) -> tuple[ArrayEntry, Rental | None]:
    """``fn(*arrays) -> [outputs]`` for inputs of these shapes, under ``backend`` (numpy's semantics).

    The numpy program serves first; the fused native kernel takes over once the calls
    have paid for its compile (at once under ``native``).
    """
    numpy_fn = numpy_code.LazyArrayProgram(tape, shapes, reduce_to)  # generated once it serves or is handed a call
    if not _broadcasts(shapes) or not native_ready(backend, tape):
        fn = numpy_fn.program()
        publish(fn)
        return fn, None

    def native_fn() -> ArrayEntry:
        fused = native.EXECUTOR.array_entry(tape, shapes, reduce_to, numpy_fn)
        if fused is None:
            raise _NoFusedKernel
        return fused

    if backend == "native" or not background.enabled():
        try:
            fn = native_fn()
        except _NoFusedKernel:
            fn = numpy_fn.program()
        publish(fn)
        return fn, None
    loaded = native.EXECUTOR.loaded_array_entry(tape, shapes, reduce_to, numpy_fn)
    if loaded is not None:  # nothing to compile, read or link: it serves at once
        publish(loaded)
        return loaded, None
    n_points, n_varying = math.prod(_broadcast(shapes)), varying_records(tape, shapes)
    tiers = array_tiers(tape, n_points, n_varying)
    tiers.sort(key=lambda tier: tier[0] != "numpy")  # (stable) the tier serving first is the numpy program's

    def in_cache() -> tuple[Callable[[], ArrayEntry], float]:
        # Read from the persistent cache: linking it is a setup like any other (1-3 ms: more than 50
        # calls of a small tape over 1,000 points), bought by the same rule.  Not there: compiling it,
        # priced again now that the ask has started LLVM (the first estimate included starting it).
        found = native.EXECUTOR.cached_array_entry(tape, shapes, reduce_to, numpy_fn)
        if found is not None:
            return found
        return native_fn, next(setup for name, setup, _ in array_tiers(tape, n_points, n_varying) if name == "native")

    ask = Ask("native", native.EXECUTOR.ask_cost(len(tape)), in_cache)
    start = time.perf_counter()
    first = numpy_fn.program()
    spent = time.perf_counter() - start
    rental = Rental(tiers, {"native": native_fn}, publish, first, kind="array", ask=ask, spent=spent)
    return rental.entry, rental


def varying_records(tape: Tape, shapes: Sequence[Shape]) -> int:
    """How many records read, directly or not, an input of more than one value: the records a fused
    loop computes at every point (the others it computes once per call, and a loop of at most
    ``OPT1_MAX_RECORDS`` compiles at opt 1, several times slower: the cost model needs the count)."""
    varying = tape.depends_on(j for j, s in enumerate(shapes) if math.prod(s) != 1)
    return sum(varying[tape.first_instr_slot :])


# ------------------------------------------------------------------ batches ---
def batch_entry(
    tape: Tape, n_shared: int, backend: str, publish: Callable[[BatchEntry], None]
) -> tuple[BatchEntry, Rental | None]:
    """``fn(shared, data) -> (values, sums)`` for a per-example gradient tape (see
    :class:`~symgrad.backends.protocol.BatchEntry`), under ``backend``.

    ``tape``'s inputs are the ``n_shared`` shared scalars and then the data
    inputs; its outputs the value and its partials with respect to the shared
    inputs.  No executor compiles again when the batch size changes.

    One executor serves the entry for its whole life: the batch kernel,
    compiled (or loaded from the persistent cache) before the first call
    wherever the native backend can run the tape, under ``auto`` as under
    ``native``; the numpy version elsewhere (``python``, no llvmlite, an op
    without a native emitter, or, under ``auto``, a compile that failed).  Not
    rent-or-buy as for the other entries: the two executors add a batch's
    partials in different orders (and call different libm code), so a switch
    in the middle of a training run would make its numbers depend on when the
    kernel was ready; the same seed must give the same weights, bit for bit.
    Compiling is cheap here (the tape is one example's: tens of milliseconds
    for the moons net), and the numpy program the kernel hands odd calls to is
    only generated if such a call comes.  Returns the entry and None (no rental).
    """
    reference = numpy_code.LazyBatchProgram(tape, n_shared)
    fn: BatchEntry
    if not native_ready(backend, tape):
        fn = reference.program()
    elif backend == "native":
        fn = native.EXECUTOR.batch_entry(tape, n_shared, reference)
    else:
        try:
            fn = native.EXECUTOR.batch_entry(tape, n_shared, reference)
        except Exception:  # a failed compile (as a rental keeps its interim): the numpy version serves
            fn = reference.program()
    publish(fn)
    return fn, None


class _NoFusedKernel(Exception):
    """The fused kernel cannot give numpy's result shapes here: the numpy program keeps serving."""


def _broadcast(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    import numpy as np

    return tuple(np.broadcast_shapes(*shapes))


def _broadcasts(shapes: Sequence[tuple[int, ...]]) -> bool:
    try:
        _broadcast(shapes)
    except ValueError:
        return False
    return True
