"""What every executor shares: the result conventions and the one fallback convention.

An executor evaluates a forward-only tape; it never knows about derivatives.
The types here are the vocabulary between the executors and the dispatcher
(:mod:`symgrad.backends.dispatch`), so that no executor imports another's
internals for a type.

* :data:`Returns` says what a scalar entry returns.
* A *fallback* is the reference path for one point, ``slow(*point)``: it
  returns what the fast entry would have returned, or raises the precise
  :class:`~symgrad.errors.DomainError`.  Every fast entry hands a point to it
  when an op fails or an output is not finite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Fallback", "Returns", "ScalarEntry"]

Returns = Literal["value", "tuple", "value_and_grad"]
"""What a scalar entry returns: the one output, a tuple of all outputs, or ``(first, [rest])``."""

ScalarEntry = Callable[..., Any]
"""A compiled function of one float per tape input (positionally), returning as :data:`Returns` says."""

Fallback = Callable[..., Any]
"""``slow(*point)``: the reference result for one point of floats, or the precise DomainError."""
