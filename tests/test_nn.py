"""``symgrad.nn``: Module, Neuron, Layer, MLP with micrograd's conventions."""

from __future__ import annotations

import math

import pytest

from symgrad import InputError, Value
from symgrad.nn import MLP, Layer, Module, Neuron


def test_mlp_has_337_parameters_and_a_scalar_output() -> None:
    model = MLP(2, [16, 16, 1], seed=0)
    assert len(model.parameters()) == 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1 == 337
    assert isinstance(model([0.5, -0.5]), Value)
    assert [n.activation for n in model.layers[0].neurons] == ["relu"] * 16
    assert model.layers[-1].neurons[0].activation == "linear"
    assert isinstance(MLP(2, [3, 2], seed=0)([1.0, 2.0]), list)


def test_seeded_initialisation_is_reproducible() -> None:
    def weights(seed: int) -> list[float]:
        return [p.data for p in MLP(3, [4, 1], seed=seed).parameters()]

    assert weights(7) == weights(7)
    assert weights(7) != weights(8)
    w = weights(7)
    assert all(-1.0 <= x <= 1.0 for x in w)
    n = Neuron(3, seed=7)
    assert n.b.data == 0.0  # micrograd: biases start at 0


def test_neuron_computes_its_formula() -> None:
    x = [0.5, -2.0]
    for activation, fn in [("relu", lambda t: max(t, 0.0)), ("tanh", math.tanh), ("linear", lambda t: t)]:
        n = Neuron(2, activation, seed=4)
        w = [p.data for p in n.w]
        out = n(x)
        assert out.data == pytest.approx(fn(w[0] * x[0] + w[1] * x[1] + n.b.data))
        out.backward()
        assert n.b.grad == pytest.approx(
            {"relu": float(out.data > 0), "tanh": 1 - out.data**2, "linear": 1.0}[activation]
        )
    assert Neuron(2, nonlin=False).activation == "linear"
    assert Neuron(2, nonlin=True).activation == "relu"
    assert repr(Neuron(2, "tanh")) == "TanhNeuron(2)"


def test_layer_of_one_neuron_returns_a_value() -> None:
    assert isinstance(Layer(2, 1, seed=0)([1.0, 2.0]), Value)
    out = Layer(2, 3, seed=0, activation="tanh")([1.0, 2.0])
    assert isinstance(out, list) and len(out) == 3
    assert len(Layer(2, 3).parameters()) == 9


def test_zero_grad() -> None:
    model = MLP(2, [2, 1], seed=1)
    out = model([Value(1.0), Value(-1.0)])
    assert isinstance(out, Value)
    (out * out + 1.0).backward()
    model.zero_grad()
    assert [p.grad for p in model.parameters()] == [0.0] * len(model.parameters())
    assert Module().parameters() == []


def test_clear_errors() -> None:
    with pytest.raises(InputError, match="takes 2 inputs, got 3"):
        MLP(2, [3, 1], seed=0)([1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="takes 2 inputs, got 1"):
        Neuron(2)([1.0])
    with pytest.raises(InputError, match="unknown activation 'sigmoidal'"):
        Neuron(2, "sigmoidal")
    with pytest.raises(InputError, match="not both"):
        Neuron(2, "tanh", nonlin=True)
    with pytest.raises(InputError, match="at least one layer"):
        MLP(2, [])
