"""The batch kernel's internals (threads, pointers, the disk cache) and which executor serves a batch entry.

What every executor's batch entry must return is in ``backends/test_conformance.py``; here the
native kernel's own promises: bit-for-bit results for a given thread count, the same bits whichever
way it finds the arrays' data, calls from several threads at once, a kernel compiled once and then
loaded from the disk cache, and the dispatcher's rent-or-buy (numpy first, the kernel once bought).
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import symgrad
from symgrad import DomainError, config, transforms
from symgrad.backends import dispatch, interpreter, native
from symgrad.backends import numpy as numpy_code
from symgrad.tape import Tape
from symgrad.value import linearise

pytestmark = pytest.mark.skipif(not native.available(), reason="needs llvmlite")

from symgrad.backends.native import batch, jit, kernel  # noqa: E402


def _tape(hidden: int = 6, extra: float = 0.0) -> tuple[Tape, np.ndarray]:
    """A per-example SVM loss of a one-hidden-layer tanh net; ``extra`` makes another tape (another kernel)."""
    rng = np.random.default_rng(hidden)
    n_shared = 4 * hidden + 1
    ws = [symgrad.Value(float(rng.uniform(-1, 1)), label=f"w{i}") for i in range(n_shared)]
    x0, x1, y = (symgrad.Value(0.5, label=name) for name in ("x0", "x1", "y"))
    score = ws[-1] + extra
    for j in range(hidden):
        score = score + ws[3 * hidden + j] * (ws[3 * j] * x0 + ws[3 * j + 1] * x1 + ws[3 * j + 2]).tanh()
    tape, _ = linearise((1 - y * score).relu(), [*ws, x0, x1, y])
    return transforms.grad_tape(tape, tape.inputs[:n_shared]), np.array([w.data for w in ws])


def _data(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n), rng.normal(size=n), np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)]


def _entry(tape: Tape, n_shared: int) -> Any:
    return native.EXECUTOR.batch_entry(tape, n_shared, numpy_code.BatchProgram(tape, n_shared))


def _bits(result: tuple[np.ndarray, np.ndarray]) -> tuple[bytes, bytes]:
    return result[0].tobytes(), result[1].tobytes()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty kernel cache of this test's own, and no batch kernels kept in this process."""
    batch.clear()
    with config.override(CACHE_DIR=tmp_path / "cache", CACHE=True):
        yield tmp_path / "cache"
    batch.clear()


def test_threads_give_the_same_bits_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a given thread count the results are the same bits at every call; other counts add the
    examples in another order, so they agree to rounding."""
    tape, shared = _tape()
    fn = _entry(tape, len(shared))
    data = _data(1003)
    results = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(batch, "THREADS", threads)
        first = fn(shared, data)
        assert _bits(fn(shared, data)) == _bits(first)
        results[threads] = first
    for threads in (2, 3):
        assert results[threads][0].tobytes() == results[1][0].tobytes()  # each example's value: the same bits
        np.testing.assert_allclose(results[threads][1], results[1][1], rtol=1e-12)
    monkeypatch.setattr(batch, "THREADS", None)
    assert batch.threads_for(100, len(tape)) == 1  # a small batch stays on the caller's thread
    assert batch.threads_for(10**6, 10**4) == min(2, batch._CPUS) or batch._CPUS == 1


def test_a_domain_error_in_the_second_threads_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "THREADS", 2)
    w, b, x_ = symgrad.Value(1.0, label="w"), symgrad.Value(0.0, label="b"), symgrad.Value(1.0, label="x")
    primal, _ = linearise((w * x_).log() + b, [w, b, x_])
    tape, shared = transforms.grad_tape(primal, ["w", "b"]), np.array([1.0, 0.0])
    x = np.linspace(1.0, 2.0, 1000)
    x[900] = -3.0
    with pytest.raises(DomainError) as want:
        interpreter.forward(tape, [1.0, 0.0, -3.0])
    with pytest.raises(DomainError) as got:
        _entry(tape, 2)(shared, [x])
    assert str(got.value) == f"example 900 of the batch: {want.value}"


def test_pointers_read_from_the_arrays_or_given_directly_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    tape, shared = _tape()
    data = _data(77)
    through_objects = _entry(tape, len(shared))
    monkeypatch.setattr(batch, "data_offset", lambda: -1)
    direct = _entry(tape, len(shared))
    assert _bits(direct(shared, data)) == _bits(through_objects(shared, data))
    view = np.arange(10.0)[2:]  # a view: its data pointer is not its base's
    assert batch._address(view) == view.ctypes.data


def test_data_offset_finds_numpys_data_pointer() -> None:
    offset = batch.data_offset()
    assert offset > 0
    for a in (np.empty(3), np.arange(9.0)[4:], np.zeros(100_000)):
        assert ctypes.c_void_p.from_address(id(a) + offset).value == a.ctypes.data


def test_calls_from_several_threads_each_get_their_own_results() -> None:
    """The entry's own buffers serve one call at a time; a call that finds them taken makes its own."""
    tape, shared = _tape()
    fn = _entry(tape, len(shared))
    batches = [_data(50 + k, seed=k) for k in range(4)]
    want = [_bits(fn(shared, data)) for data in batches]
    wrong: list[int] = []

    def work(k: int) -> None:
        for _ in range(200):
            if _bits(fn(shared, batches[k])) != want[k]:
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_the_kernel_is_compiled_once_then_loaded_from_the_disk_cache(cache_dir: Path) -> None:
    tape, shared = _tape(extra=0.25)
    before = dict(kernel.STATS)
    first = _entry(tape, len(shared))
    assert kernel.STATS["compiled"] == before["compiled"] + 1
    batch.clear()  # a new process, as far as the kernels are concerned
    second = _entry(tape, len(shared))
    assert kernel.STATS["compiled"] == before["compiled"] + 1
    assert kernel.STATS["loaded"] == before["loaded"] + 1
    data = _data(30)
    assert _bits(second(shared, data)) == _bits(first(shared, data))


# -------------------------------------------------------------- the dispatcher ---
def _dispatched(tape: Tape, n_shared: int, backend: str) -> tuple[Any, Any, list[Any]]:
    published: list[Any] = []
    fn, rental = dispatch.batch_entry(tape, n_shared, backend, published.append)
    return fn, rental, published


def test_python_never_compiles_machine_code(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compile(*args: Any) -> Any:
        raise AssertionError("compiled under backend='python'")

    monkeypatch.setattr(jit, "compile_object", no_compile)
    tape, shared = _tape(extra=0.5)
    fn, rental, published = _dispatched(tape, len(shared), "python")
    assert rental is None and published == [fn] and isinstance(fn, numpy_code.BatchProgram)
    assert fn(shared, _data(9))[0].shape == (9,)


def test_native_compiles_before_the_first_call(cache_dir: Path) -> None:
    tape, shared = _tape(extra=0.75)
    before = kernel.STATS["compiled"]
    fn, rental, published = _dispatched(tape, len(shared), "native")
    assert rental is None and published == [fn] and isinstance(fn.kernel, batch.BatchKernel)
    assert kernel.STATS["compiled"] == before + 1


@config.override(BACKGROUND=True)
def test_auto_compiles_before_the_first_call(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The executors add a batch in different orders, so one executor serves an entry all its life: under
    auto the kernel, compiled before the first call (a training run's numbers never depend on when a
    kernel was ready); the numpy program it falls back on is generated only when a call needs it."""
    generated: list[Any] = []

    class Counted(numpy_code.BatchProgram):
        def __init__(self, tape: Tape, n_shared: int) -> None:
            generated.append(tape)
            super().__init__(tape, n_shared)

    monkeypatch.setattr(numpy_code, "BatchProgram", Counted)
    tape, shared = _tape(extra=1.0)
    before = kernel.STATS["compiled"]
    fn, rental, published = _dispatched(tape, len(shared), "auto")
    assert rental is None and published == [fn] and isinstance(fn.kernel, batch.BatchKernel)
    assert kernel.STATS["compiled"] == before + 1 and not generated
    data = _data(40)
    first = fn(shared, data)
    again, _, _ = _dispatched(tape, len(shared), "auto")  # from the disk cache: the same kernel, the same bits
    assert kernel.STATS["compiled"] == before + 1 and _bits(again(shared, data)) == _bits(first)
    data[0][7] = np.inf  # no domain error (the inf came with the data): the numpy program's IEEE results
    values, sums = fn(shared, data)
    assert len(generated) == 1
    want = numpy_code.BatchProgram(tape, len(shared)).ieee(shared, data)
    np.testing.assert_array_equal(values, want[0])  # (nan where numpy has nan)
    np.testing.assert_array_equal(sums, want[1])


def test_auto_after_a_failed_compile_serves_numpy(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise OSError("no compiler today")

    monkeypatch.setattr(jit, "compile_object", broken)
    tape, shared = _tape(extra=1.5)
    fn, rental, published = _dispatched(tape, len(shared), "auto")
    assert rental is None and published == [fn] and isinstance(fn, numpy_code.BatchProgram)
    assert fn(shared, _data(3))[0].shape == (3,)
    with pytest.raises(OSError, match="no compiler today"):
        _dispatched(tape, len(shared), "native")


def test_auto_without_the_native_backend_serves_numpy() -> None:
    tape, shared = _tape(extra=2.0)
    with config.override(NATIVE=False), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (the one warning that native is off)
        fn, rental, published = _dispatched(tape, len(shared), "auto")
    assert rental is None and published == [fn] and isinstance(fn, numpy_code.BatchProgram)
    values, _ = fn(shared, _data(12))
    rows = [interpreter.evaluate(tape, [*shared, *(float(x[i]) for x in _data(12))]) for i in range(12)]
    np.testing.assert_allclose(values, [r[0] for r in rows], rtol=1e-13)


def test_a_compile_in_a_child_process_gives_the_same_kernel(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long compiles run in a child process (``jit.isolated``), which builds the IR from the pickled recipe."""
    tape, shared = _tape(extra=3.0)
    children: list[Any] = []
    in_child = jit._compile_in_child
    monkeypatch.setattr(jit, "_compile_in_child", lambda ir, opt: children.append(ir) or in_child(ir, opt))
    with jit.isolated():
        child = _entry(tape, len(shared))
    assert len(children) == 1 and isinstance(children[0], batch.BatchRecipe)
    assert isinstance(child.kernel.recipe("batch"), batch.BatchRecipe)
    batch.clear()
    with config.override(CACHE=False):
        here = _entry(tape, len(shared))
    data = _data(21)
    assert _bits(child(shared, data)) == _bits(here(shared, data))
