"""Per-example tracing (``symgrad.trace_examples``): the same loss and gradient as the whole-loss
trace and the eager Value graph, for any batch, on every backend; clear errors that change nothing."""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import symgrad
from symgrad import DomainError, InputError, Value, trace, trace_examples
from symgrad.nn import MLP, Layer, Neuron

BACKENDS = ["python", "auto"] + (["native"] if importlib.util.find_spec("llvmlite") is not None else [])

Loss = Callable[[Value, float | Value], Value]

LOSSES: dict[str, Loss] = {
    "hinge": lambda s, y: (1 - y * s).relu(),
    "squared": lambda s, y: (s - y) ** 2,
    "log": lambda s, y: (1 + (-y * s).exp()).log(),  # logistic loss, labels ±1
}


class Net:
    """A small random fully connected net of leaf Values with a chosen hidden activation."""

    def __init__(self, sizes: Sequence[int], activation: str, seed: int) -> None:
        r = random.Random(seed)
        self.layers = [
            [([Value(r.uniform(-1, 1)) for _ in range(n_in)], Value(r.uniform(-0.5, 0.5))) for _ in range(n_out)]
            for n_in, n_out in itertools.pairwise(sizes)
        ]
        self.activation = activation

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for w, b in layer for p in (*w, b)]

    def __call__(self, x: Sequence[Value | float]) -> Value:
        h: list[Any] = list(x)
        for k, layer in enumerate(self.layers):
            h = [sum((wi * xi for wi, xi in zip(w, h, strict=True)), b) for w, b in layer]
            if k < len(self.layers) - 1:
                h = [getattr(v, self.activation)() for v in h]
        return h[0]


def _data(n: int, seed: int, n_in: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), np.where(rng.normal(size=n) > 0, 1.0, -1.0)


def _penalty(ps: list[Value]) -> Value:
    return 1e-3 * sum((p * p for p in ps), Value(0.0))


def _whole_loss(
    net: Callable[[Sequence[Any]], Value], loss: Loss, X: np.ndarray, y: np.ndarray, reduce: str
) -> Callable[[list[Value]], Value]:
    """The batch's loss written out whole, as ``symgrad.trace`` and the eager graph see it."""

    def total(ps: list[Value]) -> Value:
        terms = [loss(net([float(a) for a in row]), float(yi)) for row, yi in zip(X, y, strict=True)]
        data = sum(terms, Value(0.0))
        if reduce == "mean":
            data = data * (1.0 / len(terms))
        return data + _penalty(ps)

    return total


def _eager(params: list[Value], total: Callable[[list[Value]], Value]) -> tuple[float, list[float]]:
    for p in params:
        p.grad = 0.0
    out = total(params)
    out.backward()
    grads = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    return out.data, grads


def _close(got: Sequence[float], want: Sequence[float]) -> None:
    """Equal to rounding: relative 1e-12 of each entry, or of the largest entry for ones that cancel."""
    scale = max(1.0, max(abs(v) for v in want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * scale)


# ------------------------------------------------------------------------ agreement ---
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_same_loss_and_gradient_as_whole_trace_and_eager(backend: str, activation: str, loss_name: str) -> None:
    net = Net([2, 5, 4, 1], activation, seed=hash((activation, loss_name)) % 1000)
    params = net.parameters()
    loss = LOSSES[loss_name]
    X, y = _data(13, seed=len(activation) + len(loss_name))
    step = trace_examples(
        lambda x, t: loss(net(x), t), params, example=([0.0, 0.0], 1.0), penalty=_penalty, backend=backend
    )
    total = _whole_loss(net, loss, X, y, "mean")
    e_loss, e_grads = _eager(params, total)
    whole = trace(total, params, backend=backend)
    t_loss, t_grads = whole.value_and_grad_list([p.data for p in params])

    value, grads = step.value_and_grad(step.weights(), X, y)
    _close([value], [e_loss])
    _close(grads.tolist(), e_grads)
    _close([t_loss], [e_loss])
    _close(t_grads, e_grads)
    got = step.backward(X, y)  # the same through the parameters' grad
    assert got == value
    assert [p.grad for p in params] == grads.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_batch_size_from_1_to_257(backend: str) -> None:
    """Every remainder of any vector width: batches of 1..257 examples, one traced step, no re-tracing."""
    net = Net([2, 3, 1], "tanh", seed=7)
    params = net.parameters()
    X, y = _data(257, seed=11)
    calls = []

    def example_loss(x: list[Value], t: Value) -> Value:
        calls.append(1)
        return LOSSES["squared"](net(x), t)

    step = trace_examples(example_loss, params, example=([0.0, 0.0], 0.0), reduce="sum", backend=backend)
    per_example = []  # the eager graph, one example at a time: its loss and gradient
    for row, t in zip(X, y, strict=True):
        for p in params:
            p.grad = 0.0
        out = example_loss([float(row[0]), float(row[1])], float(t))
        out.backward()
        per_example.append([out.data, *(p.grad for p in params)])
    prefix = np.cumsum(np.array(per_example), axis=0)
    w = step.weights()
    tape = step.gradient_tape
    for n in range(1, 258):
        value, grads = step.value_and_grad(w, X[:n], y[:n])
        _close([value, *grads.tolist()], prefix[n - 1].tolist())
    assert len(calls) == 1 + 257  # traced once (the rest are the eager oracle's calls)
    assert step.gradient_tape is tape and step.entries_built == 1


# ------------------------------------------------------------------------ nn models ---
def test_nn_models_work_unchanged() -> None:
    """MLP (relu), a tanh Layer and a Neuron: per-example steps equal the eager graph's."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=9)
    models: list[Any] = [
        MLP(3, [4, 4, 1], seed=1),
        Layer(3, 1, activation="tanh", seed=2),
        Neuron(3, activation="linear", seed=3),
    ]
    for model in models:
        _check_model(model, X, y)


def _check_model(model: Any, X: np.ndarray, y: np.ndarray) -> None:
    params = model.parameters()
    step = trace_examples(lambda x, t: (model(x) - t) ** 2, params, example=([0.0] * 3, 0.0), reduce="sum")

    def total(ps: list[Value]) -> Value:
        return sum(((model([float(v) for v in row]) - float(t)) ** 2 for row, t in zip(X, y, strict=True)), Value(0.0))

    e_loss, e_grads = _eager(params, total)
    model.zero_grad()
    _close([step.backward(X, y)], [e_loss])
    _close([p.grad for p in params], e_grads)


def test_nested_examples_reach_the_function_with_their_nesting() -> None:
    w = Value(0.5, "w")
    seen: list[Any] = []

    def fn(m: list[list[Value]], s: Value) -> Value:
        seen.append((m, s))
        return w * (m[0][0] * m[1][1] - m[0][1] * m[1][0]) + s

    step = trace_examples(fn, [w], example=([[1.0, 2.0], [3.0, 4.0]], 0.0), reduce="sum")
    m, s = seen[0]
    assert [[type(v) for v in row] for row in m] == [[Value, Value], [Value, Value]] and isinstance(s, Value)
    M = np.array([[[1.0, 2.0], [3.0, 4.0]], [[2.0, 0.0], [0.0, 2.0]]])
    value, grads = step.value_and_grad([0.5], M, [10.0, 20.0])
    dets = [1 * 4 - 2 * 3, 2 * 2 - 0]
    assert value == 0.5 * sum(dets) + 30.0
    assert grads.tolist() == [float(sum(dets))]


def test_losses_are_per_example_and_reduce_sum_and_mean() -> None:
    a, b = Value(2.0, "a"), Value(-1.0, "b")
    step_sum = trace_examples(lambda x: (a * x + b) ** 2, [a, b], example=0.0, reduce="sum")
    step_mean = trace_examples(lambda x: (a * x + b) ** 2, [a, b], example=0.0)
    xs = [0.0, 1.0, 3.0]
    expected = [(2.0 * x - 1.0) ** 2 for x in xs]
    assert step_sum.losses([2.0, -1.0], xs).tolist() == expected
    loss, grads = step_sum.value_and_grad([2.0, -1.0], xs)
    assert loss == sum(expected)
    assert grads.tolist() == [sum(2 * (2 * x - 1) * x for x in xs), sum(2 * (2 * x - 1) for x in xs)]
    mean, mean_grads = step_mean.value_and_grad([2.0, -1.0], xs)
    assert mean == pytest.approx(sum(expected) / 3, rel=1e-15)
    np.testing.assert_allclose(mean_grads, grads / 3, rtol=1e-15)


def test_functional_form_touches_no_parameter() -> None:
    model = MLP(2, [3, 1], seed=4)
    params = model.parameters()
    for k, p in enumerate(params):
        p.grad = 0.25 * k
    before = [(p.data.hex(), p.grad.hex()) for p in params]
    step = trace_examples(lambda x, t: (model(x) - t) ** 2, params, example=([0.0, 0.0], 0.0), penalty=_penalty)
    X, y = _data(6, seed=2)
    w = step.weights() + 0.5
    loss, grads = step.value_and_grad(w, X, y)
    assert [(p.data.hex(), p.grad.hex()) for p in params] == before
    for p, v in zip(params, w.tolist(), strict=True):  # the same, through the parameters
        p.data, p.grad = v, 0.0
    assert step.backward(X, y) == loss and [p.grad for p in params] == grads.tolist()


def test_penalty_is_added_once_per_batch_not_per_example() -> None:
    w = Value(3.0, "w")
    step = trace_examples(lambda x: w * x, [w], example=0.0, penalty=lambda ps: ps[0] * ps[0], reduce="sum")
    loss, grads = step.value_and_grad([3.0], [1.0, 2.0, 4.0])
    assert loss == 3.0 * 7.0 + 9.0 and grads.tolist() == [7.0 + 6.0]


# ------------------------------------------------------------------------- errors ---
def _net_step() -> tuple[Any, list[Value], symgrad.TracedExamples]:
    model = MLP(2, [3, 1], seed=9)
    params = model.parameters()
    step = trace_examples(lambda x, y: (1 - y * model(x)).relu(), params, example=([0.0, 0.0], 1.0), penalty=_penalty)
    return model, params, step


X5, Y5 = _data(5, seed=1)

BAD_DATA: list[tuple[tuple[Any, ...], str]] = [
    ((X5,), r"takes 2 data arguments \(x, y\).*got 1"),
    ((X5, Y5, Y5), r"takes 2 data arguments \(x, y\).*got 3"),
    ((X5[:, :1], Y5), r"data 'x' must have shape \(n, 2\).*got shape \(5, 1\)"),
    ((X5[0], Y5), r"data 'x' must have shape \(n, 2\).*got shape \(2,\)"),
    ((X5, Y5[:, None]), r"data 'y' must have shape \(n,\).*got shape \(5, 1\)"),
    ((X5, Y5[:4]), r"data 'y' has 4 examples but 'x' has 5"),
    ((np.where(np.arange(10).reshape(5, 2) == 7, np.nan, X5), Y5), r"data 'x' holds nan at index \(3, 1\)"),
    ((X5, np.where(np.arange(5) == 2, np.inf, Y5)), r"data 'y' holds inf at index 2"),
    (([[0.0, 1.0], [2.0]], [1.0, 1.0]), r"data 'x' is not a rectangular array"),
    ((X5, ["a"] * 5), r"data 'y' must hold real numbers"),
    ((X5.astype(object), Y5), r"not a rectangular array of numbers"),
    ((X5[:0], Y5[:0]), r"the batch is empty"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DATA, ids=[m for _, m in BAD_DATA])
def test_data_errors_name_the_input_and_leave_the_parameters_untouched(data: tuple[Any, ...], message: str) -> None:
    _, params, step = _net_step()
    step.backward(X5, Y5)  # some gradient in .grad already
    before = [(p.data.hex(), p.grad.hex()) for p in params]
    with pytest.raises(InputError, match=message):
        step.backward(*data)
    assert [(p.data.hex(), p.grad.hex()) for p in params] == before
    with pytest.raises(InputError, match=message):
        step.value_and_grad(step.weights(), *data)
    assert [(p.data.hex(), p.grad.hex()) for p in params] == before


def test_bad_weights_and_parameters_are_input_errors() -> None:
    _, params, step = _net_step()
    with pytest.raises(InputError, match=r"weights must have shape \(13,\)"):
        step.value_and_grad(np.zeros(12), X5, Y5)
    w = step.weights()
    w[4] = math.nan
    with pytest.raises(InputError, match=r"weights\[4\] .* is nan"):
        step.value_and_grad(w, X5, Y5)
    params[4].data = math.inf
    params[1].grad = 2.0
    before = [(p.data.hex(), p.grad.hex()) for p in params]
    with pytest.raises(InputError, match=r"parameter .* has data inf"):
        step.backward(X5, Y5)
    assert [(p.data.hex(), p.grad.hex()) for p in params] == before


def test_a_domain_error_names_the_example_and_changes_nothing() -> None:
    w = Value(1.0, "w")
    step = trace_examples(lambda x: (w * x).log(), [w], example=1.0)
    w.grad = 0.5
    with pytest.raises(DomainError, match=r"example 2 of the batch: .*log"):
        step.backward([1.0, 2.0, -3.0, 4.0])
    assert (w.data, w.grad) == (1.0, 0.5)


def test_a_domain_error_in_the_penalty_says_so_and_changes_nothing() -> None:
    w = Value(1.0, "w")
    step = trace_examples(lambda x: w * x, [w], example=1.0, penalty=lambda ps: ps[0].log())
    w.data, w.grad = -1.0, 0.5
    with pytest.raises(DomainError, match=r"the penalty: .*log"):
        step.backward([1.0, 2.0])
    assert (w.data, w.grad) == (-1.0, 0.5)
    with pytest.raises(DomainError, match=r"the penalty: .*log"):
        step.value_and_grad([-2.0], [1.0, 2.0])


def test_tracing_errors() -> None:
    w = Value(1.0, "w")
    with pytest.raises(InputError, match="must return one Value"):
        trace_examples(lambda x: 3.0, [w], example=1.0)
    with pytest.raises(InputError, match="reduce must be one of"):
        trace_examples(lambda x: w * x, [w], example=1.0, reduce="max")
    with pytest.raises(InputError, match="example x holds nan"):
        trace_examples(lambda x: w * x, [w], example=math.nan)
    with pytest.raises(InputError, match="not a rectangular array"):
        trace_examples(lambda x: w * x[0], [w], example=[[1.0], [1.0, 2.0]])
    with pytest.raises(InputError, match="listed twice"):
        trace_examples(lambda x: w * x, [w, w], example=1.0)


def test_control_flow_on_the_data_is_frozen_at_the_traced_example() -> None:
    """As with trace(): a Python ``if`` on the example's data is decided once, at the example given."""
    w = Value(1.0, "w")
    frozen = trace_examples(lambda x: w * x if x.data > 0 else -w * x, [w], example=1.0, reduce="sum")
    assert frozen.losses([1.0], [-2.0]).tolist() == [-2.0]  # the `if` chose w*x at x = 1
    op = trace_examples(lambda x: abs(w * x), [w], example=1.0, reduce="sum")
    assert op.losses([1.0], [-2.0]).tolist() == [2.0]


# ---------------------------------------------------------------- no re-tracing ---
def test_batches_of_any_size_reuse_one_trace_and_one_entry() -> None:
    _, _, step = _net_step()
    tape, gradient = step.tape, step.gradient_tape
    rng = np.random.default_rng(0)
    for n in (1, 7, 32, 100, 3, 32):
        step.backward(rng.normal(size=(n, 2)), np.sign(rng.normal(size=n)))
    assert step.tape is tape and step.gradient_tape is gradient
    assert step.entries_built == 1


@pytest.mark.skipif("native" not in BACKENDS, reason="the machine-code counter needs llvmlite")
@pytest.mark.parametrize("backend", ["auto", "native"])
def test_no_compile_after_tracing_whatever_the_batch(backend: str) -> None:
    """The batch kernel is compiled (or loaded) once, when the step is traced; batches of new sizes
    compile nothing (the kernel's own counter)."""
    from symgrad.backends.native import kernel

    model = MLP(2, [3 + len(backend), 1], seed=12)  # a tape of its own (weights are inputs: sizes, not seeds)
    before = dict(kernel.STATS)
    step = trace_examples(
        lambda x, y: (1 - y * model(x)).relu(), model.parameters(), example=([0.0, 0.0], 1.0), backend=backend
    )
    built = {k: kernel.STATS[k] - before[k] for k in ("compiled", "loaded")}
    assert built["compiled"] + built["loaded"] == 1
    after_tracing = dict(kernel.STATS)
    rng = np.random.default_rng(3)
    for n in (1, 4, 5, 32, 100, 7):
        step.backward(rng.normal(size=(n, 2)), np.sign(rng.normal(size=n)))
    assert after_tracing == kernel.STATS


@pytest.mark.skipif("native" not in BACKENDS, reason="the machine-code counter needs llvmlite")
@pytest.mark.parametrize("backend", ["auto", "native"])
def test_minibatches_of_32_of_1000_points_compile_nothing_after_the_first_step(backend: str) -> None:
    """micrograd's minibatch loop on the moons net with its L2 penalty: 1,000 points in batches of 32
    (each epoch ends with a partial batch of 8). After the first step no kernel is compiled or loaded,
    however long training goes on: ``wait_native`` (which buys now whatever later steps would buy,
    the penalty's kernel included) compiles nothing either."""
    from symgrad.backends.native import kernel

    model = MLP(2, [16, 16, 1], seed=7)
    params = model.parameters()
    step = trace_examples(
        lambda x, y: (1 - y * model(x)).relu(),
        params,
        example=([0.0, 0.0], 1.0),
        penalty=lambda ps: 1e-4 * sum((p * p for p in ps), Value(0.0)),
        backend=backend,
    )
    X, y = _data(1000, seed=8)
    order = np.random.default_rng(9).permutation(1000)
    sizes = []
    for epoch in range(2):
        for start in range(0, 1000, 32):
            batch = order[start : start + 32]
            model.zero_grad()
            loss = step.backward(X[batch], y[batch])
            for p in params:
                p.data -= 0.05 * p.grad
            sizes.append(len(batch))
            if epoch == start == 0:
                after_first = dict(kernel.STATS)
        order = order[::-1]
    assert sizes.count(8) == 2 and sizes.count(32) == 62
    assert math.isfinite(loss)
    step.wait_native()
    assert after_first == kernel.STATS
