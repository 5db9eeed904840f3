"""How Python calls a kernel's scalar entry: results, errors, references and threads.

On CPython the entry is a built-in function compiled from LLVM IR against the C
API (``symgrad/backends/native/pyentry.py``); elsewhere a ctypes call behind a lock.
Both are checked here against the reference interpreter, bit for bit.
"""

from __future__ import annotations

import gc
import inspect
import math
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import symgrad
from symgrad.backends import interpreter
from symgrad.backends.native import pyentry
from symgrad.backends.native.kernel import compile_native, function
from symgrad.errors import DomainError, InputError
from symgrad.lower import lower
from symgrad.parser import parse
from symgrad.tape import Tape

SRC = "log(x) * sin(y) + tanh(x*y) / (1 + z**2) - sqrt(z + x)"
NAMES = ("x", "y", "z")


def tape_of(src: str) -> Tape:
    return lower(parse(src), src)


@pytest.fixture(params=["c-api", "ctypes"])
def entry_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with the built-in entry and with the ctypes entry (as on PyPy or free-threaded builds)."""
    if request.param == "c-api" and not pyentry.available():
        pytest.fail("CPython with a GIL should have the built-in entry")
    if request.param == "ctypes":
        monkeypatch.setattr(pyentry, "available", lambda: False)
    symgrad.clear_cache()  # a cached Function would bring the other kind's entries
    yield request.param
    symgrad.clear_cache()


def assert_kind(fn: object, kind: str) -> None:
    built_in = type(fn).__name__ == "builtin_function_or_method"
    assert built_in == (kind == "c-api"), (fn, kind)


def reference_vg(src: str) -> Callable[..., tuple[float, list[float]]]:
    """The gradient tape run by the interpreter: the numbers every executor must give, bit for bit."""
    gtape = symgrad.compile(src, backend="python")._gradient_tape(None)

    def vg(*point: float) -> tuple[float, list[float]]:
        values = interpreter.forward(gtape, list(map(float, point)))
        value, *grads = (values[slot] for slot in gtape.outputs)
        return value, grads

    return vg


def test_every_result_shape_equals_the_interpreter(entry_kind: str) -> None:
    tape = tape_of(SRC)
    want = slow = reference_vg(SRC)
    gtape = symgrad.compile(SRC, backend="python")._gradient_tape(None)
    vg = function(gtape, slow, "value_and_grad")
    value = function(tape, lambda *p: slow(*p)[0], "value")
    outputs = function(gtape, lambda *p: (lambda v, g: (v, *g))(*slow(*p)), "tuple")
    for fn in (vg, value, outputs):
        assert_kind(fn, entry_kind)
        assert str(inspect.signature(fn)) == ("(*floats)" if entry_kind == "c-api" else "(*point)")
    rng = random.Random(3)
    for _ in range(200):
        point = (rng.uniform(0.1, 3.0), rng.uniform(-3.0, 3.0), rng.uniform(-0.05, 2.0))
        v, g = vg(*point)
        wv, wg = want(*point)
        assert (v, g) == (wv, wg) and type(g) is list and all(type(x) is float for x in g)
        assert value(*point) == wv and type(value(*point)) is float
        assert outputs(*point) == (wv, *wg) and type(outputs(*point)) is tuple


def test_arguments_are_read_like_struct_reads_them(entry_kind: str) -> None:
    """Floats, ints, numpy scalars and objects with ``__float__``; anything else is an InputError."""
    f = symgrad.compile(SRC, backend="native")
    vg = f.vg
    assert_kind(vg, entry_kind)
    want = reference_vg(SRC)(2.0, 1.0, 0.5)

    class Number:
        def __float__(self) -> float:
            return 2.0

    assert vg(2, 1, 0.5) == want
    assert vg(np.float64(2.0), np.int64(1), np.float32(0.5)) == want
    assert vg(Number(), True, 0.5) == want

    class Broken:
        def __float__(self) -> float:
            raise ZeroDivisionError("inside __float__")

    for bad in (("2", 1.0, 0.5), (None, 1.0, 0.5), (2.0, Broken(), 0.5), (2.0, 1.0, [0.5])):
        with pytest.raises(InputError, match="takes one real number per variable"):
            vg(*bad)
    for count in ((), (2.0,), (2.0, 1.0), (2.0, 1.0, 0.5, 4.0)):
        with pytest.raises(InputError, match=rf"takes 3 real numbers \(x, y, z\), got {len(count)}"):
            vg(*count)
    with pytest.raises(TypeError, match="keyword"):
        vg(2.0, 1.0, z=0.5)  # type: ignore[call-arg]
    assert vg(2.0, 1.0, 0.5) == want  # an error leaves nothing behind


def test_a_flagged_point_raises_the_interpreters_domain_error(entry_kind: str) -> None:
    f = symgrad.compile(SRC, backend="native")
    vg = f.vg
    assert_kind(vg, entry_kind)
    with pytest.raises(DomainError) as got:
        vg(-1.0, 1.0, 0.5)
    with pytest.raises(DomainError) as want:
        symgrad.compile(SRC, backend="python").vg(-1.0, 1.0, 0.5)
    assert str(got.value) == str(want.value) and "log" in str(got.value)
    # a false alarm (finite checked values whose sum overflows): the interpreter's numbers
    text = "(x * 1.5 - x * 1.25) + (y * 1.75 - y * 1.5)"
    g = symgrad.compile(text, backend="native").vg
    assert_kind(g, entry_kind)
    for point in ((1e308, 1e308), (1e308, -1e308), (2.0, 3.0)):
        assert g(*point) == reference_vg(text)(*point)


def test_no_reference_is_leaked_or_lost(entry_kind: str) -> None:
    """Every path (fast, flagged, bad arguments) leaves the arguments' reference counts as they were,
    and the results are fresh objects owned only by the caller."""
    f = symgrad.compile(SRC, backend="native")
    vg, value = f.vg, f
    assert_kind(vg, entry_kind)
    x, y, z = float("2e10"), float("1e-3"), float("0.25")  # floats no one else holds
    bad = "not " + "a number"

    def every_path() -> tuple[float, list[float]]:
        result = vg(x, y, z)
        value(x, y, z)
        with pytest.raises(DomainError):
            vg(-x, y, z)
        with pytest.raises(InputError):
            vg(x, bad, z)
        return result

    every_path()
    gc.collect()
    before = [sys.getrefcount(a) for a in (x, y, z, bad)]
    for _ in range(500):
        result = every_path()
    gc.collect()
    assert [sys.getrefcount(a) for a in (x, y, z, bad)] == before
    grads = result[1]
    counts = (sys.getrefcount(result), sys.getrefcount(grads), sys.getrefcount(grads[0]))
    # (counted outside ``assert``, which keeps its operands): `result` and the argument; the tuple,
    # `grads` and the argument; the list and the argument
    assert counts == (2, 3, 2)


def test_the_entry_keeps_its_machine_code_alive(entry_kind: str) -> None:
    tape = tape_of(SRC)
    scalar = compile_native(tape, [tape.output]).scalar  # the kernel object is gone after this line
    gc.collect()
    assert_kind(scalar, entry_kind)
    for point in ((2.0, 1.0, 0.5), (0.3, -2.0, 1.5)):
        assert scalar(*point) == (interpreter.forward(tape, list(point))[tape.output],)


def test_calls_from_several_threads_do_not_mix_their_points(entry_kind: str) -> None:
    """Two threads on one kernel: each gets its own point's results (a shared work vector must not
    let one thread's inputs into another's call)."""
    tape = tape_of(" + ".join(f"sin(x*{k}) * tanh(y - {k}) / (z + {k})" for k in range(1, 40)))
    kernel = compile_native(tape, [tape.output])
    scalar = kernel.scalar
    assert_kind(scalar, entry_kind)
    points = [(0.1 * i, 0.2 * i - 1.0, 1.0 + 0.05 * i) for i in range(64)]
    want = {p: (interpreter.forward(tape, list(p))[tape.output],) for p in points}
    wrong: list[Any] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:

        def run(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(3000):
                p = rng.choice(points)
                got = scalar(*p)
                if got != want[p]:
                    wrong.append((p, got))

        threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not wrong, f"{len(wrong)} calls returned another point's results, e.g. {wrong[0]}"
    assert math.isfinite(scalar(*points[5])[0])


def test_calls_made_in_the_middle_of_a_call_do_not_mix_their_points(entry_kind: str) -> None:
    """``__float__`` and the garbage collector run Python code in the middle of a call (reading the
    arguments, making the result); when that code calls the same kernel, each call still gets its
    own point's numbers."""
    vg = symgrad.compile(SRC, backend="native").vg
    assert_kind(vg, entry_kind)
    want = reference_vg(SRC)
    outer, inner = (2.0, 1.0, 0.5), (0.3, -2.0, 1.5)
    seen: list[object] = []

    class CallsTheKernel:
        def __float__(self) -> float:
            seen.append(vg(*inner))
            return 2.0

    assert vg(CallsTheKernel(), 1.0, 0.5) == want(*outer)
    assert vg(2.0, 1.0, CallsTheKernel()) == want(2.0, 1.0, 2.0)
    assert seen == [want(*inner)] * 2

    def during(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and len(seen) < 200:
            seen.append(vg(*inner))

    seen.clear()
    threshold = gc.get_threshold()
    gc.callbacks.append(during)
    gc.set_threshold(1)  # a collection at every allocation of a container, the result's too, once
    try:  # the free lists of tuples and lists (which the collector does not count) are used up
        results = [vg(*outer) for _ in range(3000)]
    finally:
        gc.callbacks.remove(during)
        gc.set_threshold(*threshold)
    assert len(seen) >= 20 and all(s == want(*inner) for s in seen)
    assert all(r == want(*outer) for r in results)
