"""Slow builds off the caller's thread: a callable that serves at once and upgrades itself when ready.

:func:`upgrade_later` returns an :class:`Upgrade` whose ``call`` runs an
*interim* implementation until a *build* (compiling a big tape to machine code,
say) has finished on a background thread, and the built one from then on.  It
is for builds whose result computes exactly what the interim computes, so a
caller cannot tell, from the numbers, which one answered (kernels built with
``SYMGRAD_VECTOR_LIBM=all`` differ from the interim by a few ulp, so they are
compiled before their first call instead, see
:func:`symgrad.backends.native.vector_libm_everywhere`).

* One worker thread runs the builds one at a time, in order (a burst of
  compiles does not start a thread each), and ends when none is left.  It is
  a daemon, joined at exit so that a build in progress in this process (a
  cache file being written, say) is never cut off; an *isolated* build, whose
  heavy part runs in a child process that the exit hooks stop, is given a
  quarter of a second.  Builds not yet started are dropped.  (Short compiles
  do not come here at all: the dispatcher runs them in the caller, so none
  waits behind a long one.)
* A build that raises leaves the interim in place (its ``fallback``, if given,
  is built instead); nothing is printed: :attr:`Upgrade.error` keeps the
  exception for whoever asks.
* ``os.fork`` waits for a running build, so a child process never inherits a
  lock that a build held; builds still queued run in the child when its code
  next waits for one (the interim serves until then).
* ``SYMGRAD_BACKGROUND=0`` runs every build at once, in the caller's thread.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import config

__all__ = ["Upgrade", "enabled", "upgrade_later"]

Fn = Callable[..., Any]


def enabled() -> bool:
    """Whether builds run in the background (``SYMGRAD_BACKGROUND``, default on)."""
    return config.BACKGROUND.get()


class Upgrade:
    """One build: ``call(*args)`` runs the interim until the build is done, then the built callable."""

    __slots__ = ("_done", "_fallback", "build", "call", "current", "error", "isolated", "publish", "upgraded")

    def __init__(
        self,
        interim: Fn,
        build: Callable[[], Fn],
        fallback: Callable[[], Fn] | None,
        publish: Callable[[Fn], None],
        isolated: bool = False,
    ) -> None:
        self.current: Fn = interim
        self.isolated = isolated
        """Whether the build's heavy part runs in a child process (stopped at exit, not waited for)."""
        self.build: Callable[[], Fn] | None = build
        self._fallback = fallback
        self.publish = publish
        self.error: BaseException | None = None
        """The exception the build raised, if it did."""
        self.upgraded = False
        """True once the build's callable serves the calls."""
        self._done = threading.Event()

        def call(*args: Any) -> Any:
            return self.current(*args)

        self.call: Fn = call

    @property
    def ready(self) -> bool:
        """Whether the build has finished (successfully or not)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build has finished (at most ``timeout`` seconds); True if it upgraded."""
        if not self._done.is_set():
            _ensure_worker()
            self._done.wait(timeout)
        return self.upgraded

    def _run(self) -> None:
        build, self.build = self.build, None  # run once; what the build needed is not kept
        try:
            built = None
            try:
                assert build is not None
                built = build()
            except Exception as e:  # the interim stays (or the fallback replaces it): same numbers either way
                self.error = e
                if self._fallback is not None:
                    with contextlib.suppress(Exception):
                        fallback = self._fallback()
                        self.current = fallback
                        self.publish(fallback)
            if built is not None:
                self.current = built  # one attribute store: atomic for the threads calling ``call``
                self.upgraded = True
                self.publish(built)
        except Exception as e:  # a failing publish: ``call`` still serves, nothing escapes to the worker
            self.error = self.error or e
        finally:
            self._fallback = None
            self._done.set()


def upgrade_later(
    interim: Fn,
    build: Callable[[], Fn],
    publish: Callable[[Fn], None] = lambda fn: None,
    fallback: Callable[[], Fn] | None = None,
    *,
    isolated: bool = False,
    announce: bool = True,
) -> Upgrade:
    """Start ``build()`` in the background; the returned job's ``call`` serves meanwhile.

    ``publish(fn)`` is where the caller keeps the callable: it is called at once
    with ``job.call`` (unless ``announce`` is False), and again with the built callable
    once that serves (so whoever reads the caller's slot later calls it directly).
    ``fallback()`` builds the replacement when ``build()`` raises (both run on the worker).
    ``isolated``: the build does its heavy part in a child process that an exit hook
    (:func:`on_exit`) stops, so exit need not wait for it.
    With ``SYMGRAD_BACKGROUND=0`` everything runs now, here.
    """
    job = Upgrade(interim, build, fallback, publish, isolated)
    if announce:
        publish(job.call)  # before the build can finish and publish its own
    if not enabled():
        job._run()
        return job
    with _state.lock:
        _state.queue.append(job)
    _ensure_worker()
    return job


# ----------------------------------------------------------------- workers ---
EXIT_WAIT_SECONDS = 0.25
"""At exit, how long to wait for an isolated build (its compile runs in a child process, which is
stopped first, so the worker is normally done within milliseconds)."""


class _State:
    """The queue's shared state (rebuilt in a forked child)."""

    def __init__(self, queue: collections.deque[Upgrade] | None = None) -> None:
        self.lock = threading.Lock()  # taken before ``busy`` wherever both are taken
        self.busy = threading.Lock()  # held while a build runs
        self.queue: collections.deque[Upgrade] = queue if queue is not None else collections.deque()
        self.worker: threading.Thread | None = None
        self.running: Upgrade | None = None
        self.stopping = False


_state = _State()
_exit_hooks: list[Callable[[], None]] = []


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at exit before the workers are joined (e.g. stop a child process compiling for one)."""
    _exit_hooks.append(hook)


def _ensure_worker() -> None:
    """Start the worker if builds are queued and none runs (it ends when the queue is empty)."""
    state = _state
    with state.lock:
        if state.worker is None and state.queue and not state.stopping:
            state.worker = threading.Thread(target=_work, args=(state,), name="symgrad-background", daemon=True)
            state.worker.start()


def _work(state: _State) -> None:
    _quick_switches(True)
    try:
        while True:
            with state.lock:
                if not state.queue or state.stopping:
                    state.worker = None  # no thread lingers between bursts of builds
                    return
                job = state.running = state.queue.popleft()
                state.busy.acquire()  # under the lock: a fork never falls between taking a job and marking busy
            try:
                job._run()
            finally:
                state.running = None
                state.busy.release()
    finally:
        _quick_switches(False)


BUILD_SWITCH_INTERVAL = 0.0002
"""The interpreter's switch interval (:func:`sys.setswitchinterval`, 5 ms by default) while a build
runs: a build gives up the GIL at every LLVM call, file write and child-process wait, and then
waits for the caller's thread to hand it back, up to one interval each time.  At 5 ms, builds
beside a caller making calls in a loop took 3-6x their own time (W3 N = 1,000 under auto: the
kernel served after 0.59 s instead of 0.26 s; N = 10,000: 6.3 s without serving); at 0.2 ms the
caller pays a few microseconds per switch, only while a build runs."""

_switches_lock = threading.Lock()
_switches_users = 0
_switches_saved = 0.0
_switches_set = 0.0


def _quick_switches(on: bool) -> None:
    """Lower the switch interval while any worker runs; restore it when the last one ends (unless
    someone else changed it meanwhile)."""
    global _switches_users, _switches_saved, _switches_set
    with _switches_lock:
        if on:
            _switches_users += 1
            if _switches_users == 1:
                _switches_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switches_saved, BUILD_SWITCH_INTERVAL))
                _switches_set = sys.getswitchinterval()  # as stored (whole microseconds)
        else:
            _switches_users -= 1
            if _switches_users == 0 and sys.getswitchinterval() == _switches_set:
                sys.setswitchinterval(_switches_saved)


def _stop() -> None:
    """At exit: drop builds not started, stop child compiles, let an in-process build finish.

    A build in this process (it may be writing a cache file) is joined.  An isolated build waits
    on a child process, stopped by the exit hooks: its worker is given :data:`EXIT_WAIT_SECONDS`
    and then left behind (a daemon thread).
    """
    state = _state
    with state.lock:
        state.stopping = True
        dropped = list(state.queue)
        state.queue.clear()
        worker, running = state.worker, state.running
    for job in dropped:
        job._done.set()
    for hook in _exit_hooks:
        with contextlib.suppress(Exception):
            hook()
    if worker is not None:
        worker.join(timeout=EXIT_WAIT_SECONDS if running is not None and running.isolated else 120.0)


def _before_fork() -> None:
    if threading.current_thread() is _state.worker:  # pragma: no cover
        return
    _state.lock.acquire()
    _state.busy.acquire()  # wait for a running build: the locks it holds (LLVM's, say) are free at the fork


def _after_fork_parent() -> None:
    if threading.current_thread() is _state.worker:  # pragma: no cover
        return
    _state.busy.release()
    _state.lock.release()


def _after_fork_child() -> None:
    global _state, _switches_users
    if _switches_users:  # the worker is not in the child (it gets the interval it had before it)
        _switches_users = 0
        if sys.getswitchinterval() == _switches_set:
            sys.setswitchinterval(_switches_saved)
    _state = _State(_state.queue)  # fresh locks, no worker


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
