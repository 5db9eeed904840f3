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
  a daemon, joined at exit so that a build in progress (LLVM inside, and a
  cache file being written) is never cut off; builds not yet started are
  dropped.
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

    __slots__ = ("_done", "_fallback", "build", "call", "current", "error", "publish", "upgraded")

    def __init__(
        self, interim: Fn, build: Callable[[], Fn], fallback: Callable[[], Fn] | None, publish: Callable[[Fn], None]
    ) -> None:
        self.current: Fn = interim
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
) -> Upgrade:
    """Start ``build()`` in the background; the returned job's ``call`` serves meanwhile.

    ``publish(fn)`` is where the caller keeps the callable: it is called at once
    with ``job.call``, and again with the built callable once that serves (so
    whoever reads the caller's slot later calls it directly).  ``fallback()``
    builds the replacement when ``build()`` raises (both run on the worker).
    With ``SYMGRAD_BACKGROUND=0`` everything runs now, here.
    """
    job = Upgrade(interim, build, fallback, publish)
    publish(job.call)  # before the build can finish and publish its own
    if not enabled():
        job._run()
        return job
    with _state.lock:
        _state.queue.append(job)
    _ensure_worker()
    return job


# ----------------------------------------------------------------- worker ---
class _State:
    """The worker's shared state (rebuilt in a forked child)."""

    def __init__(self, queue: collections.deque[Upgrade] | None = None) -> None:
        self.lock = threading.Lock()  # taken before ``busy`` wherever both are taken
        self.busy = threading.Lock()  # held while a build runs
        self.queue: collections.deque[Upgrade] = queue if queue is not None else collections.deque()
        self.worker: threading.Thread | None = None
        self.stopping = False


_state = _State()


def _ensure_worker() -> None:
    """Start the worker if builds are queued and none runs (it ends when the queue is empty)."""
    with _state.lock:
        if _state.worker is None and _state.queue and not _state.stopping:
            _state.worker = threading.Thread(target=_work, args=(_state,), name="symgrad-background", daemon=True)
            _state.worker.start()


def _work(state: _State) -> None:
    while True:
        with state.lock:
            if not state.queue or state.stopping:
                state.worker = None  # no thread lingers between bursts of builds
                return
            job = state.queue.popleft()
            state.busy.acquire()  # under the lock: a fork never falls between taking a job and marking busy
        try:
            job._run()
        finally:
            state.busy.release()


def _stop() -> None:
    """At exit: drop builds not started, let a running one finish (it may be writing a cache file)."""
    with _state.lock:
        _state.stopping = True
        dropped = list(_state.queue)
        _state.queue.clear()
        worker = _state.worker
    for job in dropped:
        job._done.set()
    if worker is not None:
        worker.join(timeout=120.0)


def _before_fork() -> None:
    if threading.current_thread() is _state.worker:  # pragma: no cover - builds do not fork
        return
    _state.lock.acquire()
    _state.busy.acquire()  # wait for a running build: the locks it holds (LLVM's, say) are free at the fork


def _after_fork_parent() -> None:
    if threading.current_thread() is _state.worker:  # pragma: no cover
        return
    _state.busy.release()
    _state.lock.release()


def _after_fork_child() -> None:
    global _state
    _state = _State(_state.queue)  # fresh locks and no worker: one starts when something waits


atexit.register(_stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
