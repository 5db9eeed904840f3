"""Record once, replay many: ``symgrad.trace`` and the ``Traced`` function it returns."""

from __future__ import annotations

import math

import pytest

import symgrad
from symgrad import Function, InputError, Traced, Value, trace


def _loss(ps: list[Value]) -> Value:
    w, b = ps
    x = Value(1.5, "x")  # not a parameter: recorded as a constant
    return ((w * x + b).tanh() - 0.25) ** 2 + (w - b).relu()


def _eager(w0: float, b0: float) -> tuple[float, list[float]]:
    w, b = Value(w0), Value(b0)
    out = _loss([w, b])
    out.backward()
    return out.data, [w.grad, b.grad]


def test_replay_matches_eager_at_new_points() -> None:
    w, b = Value(0.3, "w"), Value(-0.2, "b")
    f = trace(_loss, [w, b])
    assert isinstance(f, Function) and isinstance(f, Traced)
    assert f.variables == ("w", "b")
    for point in [(0.3, -0.2), (-1.0, 0.5), (2.0, 2.5), (0.0, 0.0)]:
        value, grads = f.value_and_grad_list(list(point))
        e_value, e_grads = _eager(*point)
        assert value == e_value
        assert grads == e_grads  # the same records, the same sweep: bit for bit


def test_non_parameter_leaves_are_constants_and_params_keep_their_order() -> None:
    a, b, c = Value(2.0, "a"), Value(3.0, "b"), Value(5.0, "c")
    f = trace(lambda ps: a * b + c, [c, a])
    assert f.tape.inputs == ("c", "a")
    assert f.tape.consts == (3.0,)
    assert f.tape.records() == ["%0 = input c", "%1 = input a", "%2 = const 3.0", "%3 = mul %1 %2", "%4 = add %3 %0"]
    b.data = 100.0  # a constant of the recording: replays do not see this
    assert f.value_and_grad_list([1.0, 1.0]) == (4.0, [1.0, 3.0])


def test_it_is_a_full_function() -> None:
    x, y = Value(1.0, "x"), Value(2.0, "y")
    f = trace(lambda ps: ps[0] * ps[1].sin(), [x, y])
    assert f(x=2.0, y=0.5) == pytest.approx(2.0 * math.sin(0.5))
    assert f.grad(2.0, 0.5) == pytest.approx({"x": math.sin(0.5), "y": 2.0 * math.cos(0.5)})


def test_backward_reads_data_and_accumulates_grads() -> None:
    w = Value(3.0, "w")
    f = trace(lambda ps: ps[0] * ps[0], [w])
    assert f.backward() == 9.0
    assert w.grad == 6.0
    w.data = -1.0
    assert f.backward() == 1.0
    assert w.grad == 6.0 - 2.0


def test_ops_re_decide_at_replay_but_python_control_flow_is_frozen() -> None:
    w = Value(1.0, "w")
    relu = trace(lambda ps: ps[0].relu() * 3.0, [w])
    assert relu.value_and_grad_list([2.0]) == (6.0, [3.0])
    assert relu.value_and_grad_list([-2.0]) == (0.0, [0.0])  # relu is an op: re-evaluated

    def branchy(ps: list[Value]) -> Value:
        return ps[0] * 2.0 if ps[0].data > 0 else ps[0] * 3.0

    frozen = trace(branchy, [w])
    assert frozen.value_and_grad_list([-2.0]) == (-4.0, [2.0])  # the `if` was taken at recording time


def test_a_parameter_that_is_not_used_gets_zero() -> None:
    a, b = Value(2.0, "a"), Value(7.0, "b")
    f = trace(lambda ps: ps[0] * 2.0, [a, b])
    assert f.value_and_grad_list([1.0, 5.0]) == (2.0, [2.0, 0.0])


def test_errors() -> None:
    a = Value(1.0)
    with pytest.raises(InputError, match="leaf Values"):
        trace(lambda ps: ps[0], [a * 2])
    with pytest.raises(InputError, match="twice"):
        trace(lambda ps: ps[0], [a, a])
    with pytest.raises(InputError, match="must return a Value"):
        trace(lambda ps: 3.0, [a])  # type: ignore[arg-type, return-value]
    f = trace(lambda ps: ps[0] * 2.0, [a])
    with pytest.raises(InputError, match="takes 1 parameter values, got 2"):
        f.value_and_grad_list([1.0, 2.0])
    with pytest.raises(symgrad.DomainError, match="log"):
        trace(lambda ps: ps[0].log(), [a]).value_and_grad_list([-1.0])
