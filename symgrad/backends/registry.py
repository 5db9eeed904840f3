"""Every executor, by name: the dispatcher builds its tiers from here, and ``tests/backends/`` runs its
conformance suite over each.  A new executor is one module with an ``EXECUTOR`` and one line here."""

from __future__ import annotations

from . import interpreter, native, numpy, python
from .protocol import Executor

__all__ = ["EXECUTORS"]

EXECUTORS: dict[str, Executor] = {
    executor.name: executor for executor in (interpreter.EXECUTOR, python.EXECUTOR, numpy.EXECUTOR, native.EXECUTOR)
}
"""In order of setup cost, cheapest first."""
