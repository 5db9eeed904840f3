"""What the PyTorch and JAX wrappers share (:mod:`symgrad.torch`, :mod:`symgrad.jax`).

Both frameworks differentiate a formula by asking for its derivative *as another operation*
they can differentiate again.  :class:`Derivatives` is that ladder for a symgrad
:class:`~symgrad.function.Function` ``f`` with m outputs and n variables: level 0 is ``f``,
level k+1 is the Jacobian of level k (m·nᵏ⁺¹ outputs, row-major, so output ``i*n + j`` of
level k+1 is ∂(output i of level k)/∂(variable j)).  For one output, level 1 is the gradient
tape and level 2 the Hessian tape (forward over reverse, exactly symmetric); every level is a
Function built on first need and kept, so a training loop compiles each tape once.

Everything here is numpy and float64: the wrappers convert their tensors to float64 arrays,
:func:`evaluate` runs a level on symgrad's array path (broadcasting like numpy) and returns every
output in the broadcast shape, and the wrappers cast back to their own dtype.  No third-party
framework is imported here, so ``import symgrad`` never loads PyTorch or JAX.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError, MissingVariableError, UnknownVariableError, clip, did_you_mean
from .function import Function, broadcast_shape

__all__ = ["Derivatives", "bind_arguments", "broadcast_shape", "evaluate"]


class Derivatives:
    """``f`` and its derivatives of every order as Functions of the same variables, built on first need."""

    __slots__ = ("_levels", "_value_and_gradient", "function", "n")

    def __init__(self, f: Function) -> None:
        self.function = f
        self.n = len(f.variables)
        self._levels: list[Function] = [f]
        self._value_and_gradient: Function | None = None

    def level(self, k: int) -> Function:
        """The k-th derivative: m·nᵏ outputs, row-major (output, then one index per variable)."""
        while len(self._levels) <= k:
            previous = self._levels[-1]
            if len(self._levels) == 2 and self.function.n_outputs == 1:
                following = self.function.hessian_function()  # forward over reverse: symmetric by construction
            else:
                following = previous.jacobian_function()
            self._levels.append(following)
        return self._levels[k]

    def outputs(self, k: int) -> int:
        """How many outputs level k has."""
        return self.function.n_outputs * int(self.n**k)

    def value_and_gradient(self) -> Function | None:
        """Levels 0 and 1 as one tape (the value, then the partials) for one output; else None.

        A training step needs both; the gradient tape computes the value on the way, so one
        evaluation serves the forward pass and the backward pass.
        """
        if self.function.n_outputs != 1:
            return None
        if self._value_and_gradient is None:
            self._value_and_gradient = self.function.gradient_function()
        return self._value_and_gradient


def evaluate(fn: Function, point: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``fn``'s outputs at float64 arrays (in ``fn.variables`` order), each a fresh array in the broadcast shape.

    symgrad's array path returns an output that does not depend on every input in a smaller shape
    (the Hessian of ``x*y`` is constant); a framework wants one shape per output, so those are
    broadcast and copied (never a read-only view).
    """
    shape = np.broadcast_shapes(*(a.shape for a in point))
    if fn.n_outputs == 0:
        return []
    result = fn(*point)
    outputs = (result,) if fn.n_outputs == 1 else result
    return [
        o if isinstance(o, np.ndarray) and o.shape == shape and o.flags.writeable else np.full(shape, o, np.float64)
        for o in outputs
    ]


def bind_arguments(f: Function, args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> list[Any]:
    """The arguments in ``f.variables`` order (positional, by name, or mixed), unconverted.

    The same rules as :meth:`Function.bind`, whose conversion to numbers the frameworks' tensors
    must skip: too many values, a name given twice, an unknown or a missing name are
    :class:`~symgrad.errors.InputError` naming the variables (``what`` names the caller).
    """
    variables = f.variables
    if len(args) > len(variables):
        raise InputError(f"{what} takes {len(variables)} values ({_listed(variables)}), got {len(args)} positional")
    point: dict[str, Any] = dict(zip(variables, args, strict=False))
    for key, value in kwargs.items():
        name = unicodedata.normalize("NFKC", key)
        if name not in variables:
            hint = did_you_mean(name, variables) if len(variables) <= 10_000 else ""
            raise UnknownVariableError(
                f"'{clip(key, 60)}' is not a variable of {what}; its variables are {_listed(variables)}"
                + (f"; {hint}" if hint else "")
            )
        if name in point:
            raise InputError(f"variable '{name}' was given twice (positionally and by name)")
        point[name] = value
    missing = [name for name in variables if name not in point]
    if missing:
        raise MissingVariableError(f"no value given for {_listed(missing)} in {what}")
    return [point[name] for name in variables]


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{clip(name, 30)}'" for name in names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "") if names else "(none)"
