"""A tiny neural-net library on :class:`~symgrad.value.Value`, with micrograd's names.

``Neuron``, ``Layer`` and ``MLP`` hold their weights as leaf Values, so an
eager loop (``loss.backward()``) and a record-once loop
(:func:`symgrad.trace` over ``model.parameters()``) both work on them.
Initialisation follows micrograd (weights uniform in [-1, 1], biases 0) and
draws from ``random.Random(seed)`` (or an ``rng`` you pass), so a seed makes a
run reproducible; ``seed=None`` draws a fresh seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .errors import InputError
from .value import Number, Value

__all__ = ["MLP", "Layer", "Module", "Neuron"]

Activation = str
_ACTIVATIONS = ("relu", "tanh", "linear")


class Module:
    """Something with parameters: ``parameters()`` and ``zero_grad()``."""

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        """Set every parameter's ``grad`` to 0 (gradients accumulate otherwise)."""
        for p in self.parameters():
            p.grad = 0.0


def _rng(seed: int | None, rng: random.Random | None) -> random.Random:
    if rng is not None and seed is not None:
        raise InputError("give either seed= or rng=, not both")
    return rng if rng is not None else random.Random(seed)


def _check_inputs(who: Module, nin: int, x: Sequence[Value | Number]) -> None:
    if len(x) != nin:  # the repr of a big layer is long to build: only on the error
        raise InputError(f"{who!r} takes {nin} inputs, got {len(x)}; pass a sequence of {nin} numbers or Values")


class Neuron(Module):
    """``activation(sum(w_i * x_i) + b)``.

    ``activation`` is ``"relu"`` (the default), ``"tanh"`` or ``"linear"``;
    micrograd's ``nonlin=True/False`` means ``"relu"``/``"linear"``.
    """

    def __init__(
        self,
        nin: int,
        activation: Activation = "relu",
        nonlin: bool | None = None,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if nin < 1:
            raise InputError(f"a Neuron needs at least one input, got nin={nin}")
        if activation not in _ACTIVATIONS:
            raise InputError(f"unknown activation {activation!r}; use one of {', '.join(_ACTIVATIONS)}")
        if nonlin is not None:
            if activation != "relu":
                raise InputError(f"give activation={activation!r} or nonlin={nonlin}, not both")
            activation = "relu" if nonlin else "linear"
        r = _rng(seed, rng)
        self.w = [Value(r.uniform(-1.0, 1.0)) for _ in range(nin)]
        self.b = Value(0.0)
        self.activation = activation

    @property
    def nonlin(self) -> bool:
        return self.activation != "linear"

    def __call__(self, x: Sequence[Value | Number]) -> Value:
        _check_inputs(self, len(self.w), x)
        act = sum((wi * xi for wi, xi in zip(self.w, x, strict=True)), self.b)
        if self.activation == "relu":
            return act.relu()
        if self.activation == "tanh":
            return act.tanh()
        return act

    def parameters(self) -> list[Value]:
        return [*self.w, self.b]

    def __repr__(self) -> str:
        kind = {"relu": "ReLU", "tanh": "Tanh", "linear": "Linear"}[self.activation]
        return f"{kind}Neuron({len(self.w)})"


class Layer(Module):
    """``nout`` neurons reading the same ``nin`` inputs; extra keywords go to each Neuron.

    Calling a layer of one neuron returns a single Value (as micrograd's does),
    otherwise a list.
    """

    def __init__(
        self,
        nin: int,
        nout: int,
        *,
        seed: int | None = None,
        rng: random.Random | None = None,
        activation: Activation = "relu",
        nonlin: bool | None = None,
    ) -> None:
        if nout < 1:
            raise InputError(f"a Layer needs at least one neuron, got nout={nout}")
        r = _rng(seed, rng)
        self.neurons = [Neuron(nin, activation, nonlin, rng=r) for _ in range(nout)]
        self.nin = nin

    def __call__(self, x: Sequence[Value | Number]) -> Value | list[Value]:
        _check_inputs(self, self.nin, x)
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """A multi-layer perceptron: relu hidden layers, a linear last layer.

    >>> len(MLP(2, [16, 16, 1], seed=0).parameters())
    337
    """

    def __init__(
        self, nin: int, nouts: Sequence[int], *, seed: int | None = None, rng: random.Random | None = None
    ) -> None:
        if not nouts:
            raise InputError("an MLP needs at least one layer: give nouts such as [16, 16, 1]")
        r = _rng(seed, rng)
        sizes = [nin, *nouts]
        last = len(nouts) - 1
        self.layers = [
            Layer(sizes[i], sizes[i + 1], activation="linear" if i == last else "relu", rng=r)
            for i in range(len(nouts))
        ]
        self.nin = nin

    def __call__(self, x: Sequence[Value | Number]) -> Value | list[Value]:
        _check_inputs(self, self.nin, x)
        out = self.layers[0](x)
        for layer in self.layers[1:]:
            out = layer([out] if isinstance(out, Value) else out)
        return out

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
