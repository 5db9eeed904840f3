"""Traced replay on machine code: same numbers and errors as the Python replay and as eager ``backward()``."""

from __future__ import annotations

import math
import pickle
import random
import threading

import numpy as np
import pytest

import symgrad
from symgrad import DomainError, InputError, Value, config, trace
from symgrad.backends.native.kernel import BufferEntry, compile_native
from symgrad.nn import MLP


def _data(seed: int = 0, n: int = 12) -> list[tuple[list[float], float]]:
    r = random.Random(seed)
    return [([r.uniform(-2, 2), r.uniform(-2, 2)], r.choice([-1.0, 1.0])) for _ in range(n)]


def _loss_fn(model: MLP, data: list[tuple[list[float], float]]):  # type: ignore[no-untyped-def]
    def loss(ps: list[Value]) -> Value:
        margins = [(1.0 - y * model(x)).relu() for x, y in data]  # type: ignore[operator]
        reg = 1e-3 * sum((p * p for p in ps), Value(0.0))
        return sum(margins, Value(0.0)) * (1.0 / len(margins)) + reg + (ps[0] * ps[1]).tanh()

    return loss


def _traced(backend: str, seed: int = 0) -> tuple[MLP, symgrad.Traced]:
    model = MLP(2, [6, 6, 1], seed=seed)
    return model, trace(_loss_fn(model, _data(seed)), model.parameters(), backend=backend)


def _eager(model: MLP, values: list[float]) -> tuple[float, list[float]]:
    params = model.parameters()
    for p, v in zip(params, values, strict=True):
        p.data, p.grad = v, 0.0
    out = _loss_fn(model, _data(0))(params)
    out.backward()
    return out.data, [p.grad for p in params]


def test_native_replay_equals_python_replay_and_eager_backward() -> None:
    model, fast = _traced("native")
    _, slow = _traced("python")
    assert fast.vg and slow.vg  # (the replay's entry, chosen on first use)
    assert isinstance(fast._buffer, BufferEntry) and slow._buffer is None
    r = random.Random(3)
    for _ in range(5):
        values = [r.uniform(-1.5, 1.5) for _ in model.parameters()]
        value, grads = fast.value_and_grad_list(values)
        assert (value, grads) == slow.value_and_grad_list(values)  # the same tape, the same IEEE operations
        e_value, e_grads = _eager(model, values)  # another tape (the eager sweep groups sums differently)
        assert value == pytest.approx(e_value, rel=1e-9, abs=1e-12)
        assert grads == pytest.approx(e_grads, rel=1e-9, abs=1e-12)


def test_native_partials_agree_with_central_differences() -> None:
    model, fast = _traced("native", seed=1)
    values = [p.data for p in model.parameters()]
    _, grads = fast.value_and_grad_list(values)
    h = 1e-6
    for i in range(0, len(values), 7):
        up, down = list(values), list(values)
        up[i] += h
        down[i] -= h
        fd = (fast.value_and_grad_list(up)[0] - fast.value_and_grad_list(down)[0]) / (2 * h)
        assert grads[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_training_steps_match_the_python_replay() -> None:
    runs = []
    for backend in ("native", "python"):
        model, traced = _traced(backend, seed=2)
        losses = []
        for _ in range(5):
            model.zero_grad()
            losses.append(traced.backward())
            for p in model.parameters():
                p.data -= 0.1 * p.grad
        runs.append((losses, [p.data for p in model.parameters()]))
    assert runs[0] == runs[1]
    assert runs[0][0][-1] < runs[0][0][0]  # it trains


def test_backward_accumulates_and_vg_and_named_calls_share_the_kernel() -> None:
    model, traced = _traced("native")
    params = model.parameters()
    model.zero_grad()
    v1 = traced.backward()
    first = [p.grad for p in params]
    v2 = traced.backward()
    assert v1 == v2 and [p.grad for p in params] == [2 * g for g in first]
    values = [p.data for p in params]
    assert traced.vg(*values) == (v1, first)
    value, named = traced.value_and_grad(*values)
    assert value == v1 and list(named.values()) == first
    with pytest.raises(InputError, match="takes"):
        traced.vg(1.0, 2.0)


def test_errors_are_those_of_the_python_path() -> None:
    w, b = Value(0.5, "w"), Value(2.0, "b")
    for backend in ("native", "python"):
        f = trace(lambda ps: (ps[0] * ps[1]).log() + ps[1] * 3.0, [w, b], backend=backend)
        assert f.value_and_grad_list([0.5, 2.0])[1] == pytest.approx([2.0, 0.5 + 3.0])
        with pytest.raises(DomainError, match="log") as domain:
            f.value_and_grad_list([-0.5, 2.0])
        assert "log" in str(domain.value)
        w.data = math.nan
        with pytest.raises(InputError, match="nan"):
            f.backward()
        w.data = "0.5"  # type: ignore[assignment]
        with pytest.raises(InputError, match="real number"):
            f.backward()
        w.data = 3  # an int is a number
        assert f.backward() == pytest.approx(math.log(6.0) + 6.0)
        w.data = 0.5


def test_auto_replays_on_python_first_then_on_the_kernel_and_loads_cached_kernels_at_once() -> None:
    model, first = _traced("auto", seed=5)
    _, reference = _traced("python", seed=5)
    values = [p.data for p in model.parameters()]
    assert first.value_and_grad_list(values) == reference.value_and_grad_list(values)
    assert first._buffer is None  # one replay has not paid for a compile
    assert first.wait_native(timeout=120)  # compile now
    assert isinstance(first._buffer, BufferEntry)
    assert first.value_and_grad_list(values) == reference.value_and_grad_list(values)
    assert first.vg(*values) == reference.value_and_grad_list(values)  # vg moved to the kernel too
    _, again = _traced("auto", seed=5)  # the same recording: its kernel is in the persistent cache
    again.value_and_grad_list(values)
    assert isinstance(again._buffer, BufferEntry)  # loaded at once


def test_with_batched_libm_calls_auto_compiles_at_once() -> None:
    """Such a kernel's numbers are not the Python replays' (a few ulp), so no replay runs in Python first."""
    with config.override(VECTOR_LIBM="all"):
        model, batched = _traced("auto", seed=6)
        batched.value_and_grad_list([p.data for p in model.parameters()])
        assert isinstance(batched._buffer, BufferEntry)  # compiled now, although nothing was cached
    model, exact = _traced("auto", seed=6)
    exact.value_and_grad_list([p.data for p in model.parameters()])
    assert exact._buffer is None  # the exact kernel: Python replays first


def test_auto_compiles_once_replays_have_cost_the_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rent or buy, counted in the cost model's seconds: with a compile priced at a few replays, a few
    replays start it (in the background) and the kernel then serves the replays."""
    from dataclasses import replace

    from symgrad.backends import native

    machine = native.EXECUTOR
    monkeypatch.setattr(machine, "figures", replace(machine.figures, setup_fixed=0.0, setup_per_record=1e-9))
    model, big = _traced("auto", seed=7)
    _, reference = _traced("python", seed=7)
    values = [p.data for p in model.parameters()]
    for _ in range(10):
        assert big.value_and_grad_list(values) == reference.value_and_grad_list(values)
    assert big.wait_native(timeout=120)
    assert isinstance(big._buffer, BufferEntry)
    model.zero_grad()
    assert big.backward() == reference.value_and_grad_list(values)[0]
    assert big.vg(*values) == reference.value_and_grad_list(values)


def test_pickle_keeps_the_backend_and_threads_share_one_traced() -> None:
    model, traced = _traced("native")
    copy = pickle.loads(pickle.dumps(traced))
    assert copy.backend == "native" and copy.vg and isinstance(copy._buffer, BufferEntry)
    r = random.Random(9)
    points = [[r.uniform(-1, 1) for _ in model.parameters()] for _ in range(8)]
    expected = [traced.value_and_grad_list(p) for p in points]
    results: dict[int, list[tuple[float, list[float]]]] = {}

    def work(k: int) -> None:
        results[k] = [copy.value_and_grad_list(p) for p in points * 20]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == expected * 20


def test_buffer_entry_reads_and_writes_views_of_one_buffer() -> None:
    f = symgrad.compile("x * sin(y) + log(x)")
    tape = f._gradient_tape(None)
    kernel = compile_native(tape, tape.outputs)
    work = np.zeros(kernel.layout.size + 3)
    entry = kernel.buffer_entry(work)
    assert entry.work is work and np.shares_memory(entry.inputs, work) and np.shares_memory(entry.outputs, work)
    entry.inputs[:] = [2.0, 0.5]
    assert entry() is False
    assert entry.outputs.tolist() == [2.0 * math.sin(0.5) + math.log(2.0), math.sin(0.5) + 0.5, 2.0 * math.cos(0.5)]
    entry.inputs[:] = [-1.0, 0.5]  # log(-1): flagged, the fallback raises the interpreter's error
    with pytest.raises(DomainError, match="log"):
        entry()
    for bad in (np.zeros(kernel.layout.size, dtype=np.float32), np.zeros(1), np.zeros((2, kernel.layout.size))):
        with pytest.raises(InputError, match="work buffer"):
            kernel.buffer_entry(bad)
