"""One suite, every registered executor (``symgrad.backends.registry.EXECUTORS``).

A new executor is added to the registry and inherits these tests.  Scalar
entries must return the reference interpreter's numbers bit for bit (values,
partials, signed zeros, several outputs) and its errors (the same
``DomainError`` text), on small and big tapes.  Array entries must return the
numpy program's results (the array path's reference semantics) to a few ulp,
in numpy's shapes, under broadcasting and with summed partials.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np
import pytest
from floats import bits, outcome
from hypothesis import given, settings
from strategies import Case, cases

import symgrad
from symgrad import DomainError, InputError, transforms
from symgrad.backends import interpreter, native
from symgrad.backends.protocol import Executor
from symgrad.backends.registry import EXECUTORS
from symgrad.tape import Tape
from symgrad.value import linearise


def _scalar_executors() -> list[Any]:
    params = []
    for name, executor in EXECUTORS.items():
        if executor.scalar_cost(1) is None:
            continue
        usable = executor.supports(symgrad.compile("x + 1").tape)
        params.append(pytest.param(executor, id=name, marks=[] if usable else pytest.mark.skip(f"{name}: not here")))
    return params


def _array_executors() -> list[Any]:
    params = []
    for name, executor in EXECUTORS.items():
        if executor.array_cost(1, 1) is None:
            continue
        usable = executor.supports(symgrad.compile("x + 1").tape)
        params.append(pytest.param(executor, id=name, marks=[] if usable else pytest.mark.skip(f"{name}: not here")))
    return params


SCALAR = _scalar_executors()
ARRAYS = _array_executors()


def _vg(executor: Executor, tape: Tape) -> Any:
    gradient = transforms.grad_tape(tape)

    def slow(*point: float) -> tuple[float, list[float]]:
        return interpreter.value_and_grad(tape, point)

    return executor.scalar_entry(gradient, slow, "value_and_grad"), gradient


def test_the_registry_lists_every_executor_module() -> None:
    assert set(EXECUTORS) == {"interpreter", "python", "numpy", "native"}
    for name, executor in EXECUTORS.items():
        assert executor.name == name
        assert executor.scalar_cost(10) is not None or executor.array_cost(10, 10) is not None, name


# ----------------------------------------------------------- scalar entries ---
@pytest.mark.parametrize("executor", SCALAR)
@settings(max_examples=60, deadline=None)
@given(cases(max_depth=3))
def test_values_and_partials_are_the_interpreters_bit_for_bit(executor: Executor, case: Case) -> None:
    f = symgrad.compile(case.text)
    point = [case.point[name] for name in f.variables]
    fn, gradient = _vg(executor, f.tape)
    want = interpreter.evaluate(gradient, point)
    reference = ("ok", [bits(v) for v in want])
    got = outcome(fn, *point)
    if got[0] == "error":  # the gradient tape's reference flagged it too: the classic sweeps decide
        assert outcome(lambda *p: interpreter.value_and_grad(f.tape, p), *point) == got
    else:
        assert got == reference


@pytest.mark.parametrize("executor", SCALAR)
def test_domain_errors_are_the_interpreters(executor: Executor) -> None:
    f = symgrad.compile("log(x) * y + sqrt(y - x)")
    fn, _ = _vg(executor, f.tape)
    reference = lambda *p: interpreter.value_and_grad(f.tape, p)  # noqa: E731
    for point in ([-1.0, 2.0], [3.0, 1.0], [0.0, 1.0]):
        want = outcome(reference, *point)
        assert want[:2] == ("error", "DomainError")
        assert outcome(fn, *point) == want, point


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("point", [("a", "b"), (None, 1.0), ([1.0, 2.0], 1.0), (1.0, {}), ("1", 2.0)])
def test_arguments_that_are_not_numbers_are_an_input_error_naming_them(
    executor: Executor, point: tuple[Any, ...]
) -> None:
    fn, _ = _vg(executor, symgrad.compile("x + y * sin(x)").tape)
    with pytest.raises(InputError, match=r"takes one real number per variable.*got \w+ "):
        fn(*point)


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("point", [(), (1.0,), (1.0, 2.0, 3.0)])
def test_a_wrong_number_of_arguments_is_an_error_never_a_result(executor: Executor, point: tuple[float, ...]) -> None:
    """(Generated Python raises Python's own TypeError here: checking the count would cost every call.)"""
    fn, _ = _vg(executor, symgrad.compile("x + y * sin(x)").tape)
    with pytest.raises(InputError if executor.name != "python" else TypeError, match=r"2 real numbers|positional"):
        fn(*point)


@pytest.mark.parametrize("executor", SCALAR)
def test_overflow_is_a_domain_error_naming_the_op(executor: Executor) -> None:
    f = symgrad.compile("exp(x) * y")
    fn, _ = _vg(executor, f.tape)
    with pytest.raises(DomainError, match="exp"):
        fn(800.0, 2.0)


@pytest.mark.parametrize("executor", SCALAR)
def test_signed_zeros_and_several_outputs(executor: Executor) -> None:
    tape = symgrad.compile(["x * y", "-x * y", "atan2(y, x)", "min(x, y) * 0.0"]).tape
    fn = executor.scalar_entry(tape, lambda *p: tuple(interpreter.evaluate(tape, p)), "tuple")
    for point in ([0.0, -1.0], [-0.0, 1.0], [1e100, -1e100], [-2.0, 0.0]):
        assert [bits(v) for v in fn(*point)] == [bits(v) for v in interpreter.evaluate(tape, point)], point


@pytest.mark.parametrize("executor", SCALAR)
@pytest.mark.parametrize("returns", ["value", "tuple", "value_and_grad"])
def test_each_return_convention(executor: Executor, returns: Any) -> None:
    tape = transforms.grad_tape(symgrad.compile("x * sin(y)").tape)
    ref = interpreter.evaluate(tape, [0.5, 2.0])
    want = {"value": ref[0], "tuple": tuple(ref), "value_and_grad": (ref[0], ref[1:])}[returns]
    fn = executor.scalar_entry(tape, lambda *p: want, returns)
    assert fn(0.5, 2.0) == want


@pytest.mark.parametrize("executor", SCALAR)
def test_big_tapes(executor: Executor) -> None:
    """A sum of 5,000 terms and a function of 2,000 variables: no nesting or chaining grows with size."""
    terms = symgrad.compile(" + ".join(f"sin(x*{k} + y)" for k in range(1, 5001)))
    fn, _ = _vg(executor, terms.tape)
    value, (dx, dy) = fn(0.001, 0.5)
    k = np.arange(1, 5001)
    assert math.isclose(value, float(np.sum(np.sin(0.001 * k + 0.5))), rel_tol=1e-10)
    assert math.isclose(dx, float(np.sum(k * np.cos(0.001 * k + 0.5))), rel_tol=1e-10)
    assert math.isclose(dy, float(np.sum(np.cos(0.001 * k + 0.5))), rel_tol=1e-10)
    wide = symgrad.compile(" + ".join(f"x{i}*x{i}" for i in range(2000)))
    fn, _ = _vg(executor, wide.tape)
    point = [0.001 * i for i in range(2000)]
    value, grads = fn(*point)
    assert grads == [2.0 * v for v in point]


# ------------------------------------------------------------ array entries ---
def _numpy_reference(tape: Tape, shapes: list[tuple[int, ...]], reduce_to: list[int | None]) -> Any:
    return EXECUTORS["numpy"].array_entry(tape, shapes, reduce_to, None)


@pytest.mark.parametrize("executor", ARRAYS)
@pytest.mark.parametrize(
    ("source", "shapes"),
    [
        ("sin(x)*cos(y) + log(1 + x*x)", [(1000,), (1000,)]),
        ("exp(-k*t)*cos(w*t)", [(1,), (300, 1), ()]),
        ("atan2(y, x) + sqrt(x*x + y*y)", [(20, 50), (50,)]),
        ("tanh(a*b) + a**2.5 + sigmoid(b)", [(999,), ()]),
    ],
)
def test_arrays_follow_the_numpy_program(executor: Executor, source: str, shapes: list[tuple[int, ...]]) -> None:
    f = symgrad.compile(source)
    rng = np.random.default_rng(0)
    tape = transforms.grad_tape(f.tape)
    reduce_to: list[int | None] = [None, *range(len(f.variables))]
    point = [rng.uniform(0.2, 1.5, shape) if shape else np.float64(rng.uniform(0.2, 1.5)) for shape in shapes]
    want = _numpy_reference(tape, shapes, reduce_to)(*point)
    fn = executor.array_entry(tape, shapes, reduce_to, _numpy_reference(tape, shapes, reduce_to))
    assert fn is not None
    got = fn(*point)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(w), initial=1.0)))


@pytest.mark.parametrize("executor", ARRAYS)
@pytest.mark.parametrize("source", ["(y - a*t)**2", "a*t*y + sin(a)*t", "exp(a*t) - y*a", "a*(t + y) - t/a"])
def test_partials_summed_down_equal_the_scalar_partials_summed_over_the_points(executor: Executor, source: str) -> None:
    """The oracle is the interpreter at each broadcast point, its partials summed by hand: a partial of
    ``a`` (one number) sums over every point, of ``t`` (a column) over each row, of ``y`` (a row) over
    each column.  The numpy program once took ``sum(t * g)`` for ``t * sum(g)`` with ``t`` a column."""
    f = symgrad.compile(source)
    names = f.variables
    values = {"t": np.array([[0.5], [1.25], [2.0]]), "y": np.array([[1.0, -0.75]]), "a": np.float64(1.5)}
    shapes = [np.shape(values[n]) for n in names]
    gradient = transforms.grad_tape(f.tape)
    reduce_to: list[int | None] = [None, *range(len(names))]
    fn = executor.array_entry(gradient, shapes, reduce_to, _numpy_reference(gradient, shapes, reduce_to))
    assert fn is not None
    _, *partials = fn(*(values[n] for n in names))
    want = {n: np.zeros(np.shape(values[n])) for n in names}
    for i in range(3):
        for j in range(2):
            point = {"t": values["t"][i, 0], "y": values["y"][0, j], "a": float(values["a"])}
            _, grads = interpreter.value_and_grad(f.tape, [float(point[n]) for n in names])
            want["t"][i, 0] += grads[names.index("t")] if "t" in names else 0.0
            want["y"][0, j] += grads[names.index("y")] if "y" in names else 0.0
            want["a"] += grads[names.index("a")] if "a" in names else 0.0
    for n, got in zip(names, partials, strict=True):
        assert np.shape(got) == np.shape(values[n]), n
        np.testing.assert_allclose(got, want[n], rtol=1e-13, atol=1e-13, err_msg=f"{source}: d/d{n}")


@pytest.mark.parametrize("executor", ARRAYS)
def test_arrays_out_of_the_domain_give_numpys_values(executor: Executor) -> None:
    tape = transforms.grad_tape(symgrad.compile("sqrt(x) + log(x)").tape)
    x = np.array([4.0, 0.0, -1.0, 2.0])
    with np.errstate(all="ignore"):
        want = _numpy_reference(tape, [(4,)], [None, 0])(x)
        fn = executor.array_entry(tape, [(4,)], [None, 0], _numpy_reference(tape, [(4,)], [None, 0]))
        assert fn is not None
        got = fn(x)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(np.nan_to_num(g), np.nan_to_num(w), rtol=1e-12)


# ----------------------------------------------------------- batch entries ---
def _batch_executors() -> list[Any]:
    params = []
    for name, executor in EXECUTORS.items():
        if executor.batch_cost(1, 1) is None:
            continue
        usable = executor.supports(symgrad.compile("x + 1").tape)
        params.append(pytest.param(executor, id=name, marks=[] if usable else pytest.mark.skip(f"{name}: not here")))
    return params


BATCHES = _batch_executors()


def _example_tape(build: Any, n_shared: int, n_data: int, seed: int = 0) -> tuple[Tape, np.ndarray]:
    """The gradient tape of a per-example function (inputs: shared weights, then data) w.r.t. the weights."""
    rng = np.random.default_rng(seed)
    ws = [symgrad.Value(float(rng.uniform(-1.0, 1.0)), label=f"w{i}") for i in range(n_shared)]
    xs = [symgrad.Value(0.5, label=f"x{j}") for j in range(n_data)]
    tape, _ = linearise(build(ws, xs), ws + xs)
    return transforms.grad_tape(tape, tape.inputs[:n_shared]), np.array([w.data for w in ws])


def _svm_mlp(ws: list[Any], xs: list[Any], sizes: tuple[int, ...] = (3, 3, 1), activation: str = "tanh") -> Any:
    """relu(1 - y * MLP(x0, x1)) with the weights ``ws`` (in MLP.parameters() order)."""
    x0, x1, y = xs
    h = [x0, x1]
    k = 0
    for layer, size in enumerate(sizes):
        last = layer == len(sizes) - 1
        out = []
        for _ in range(size):
            z = ws[k + len(h)]  # the bias, as in nn.Neuron: sum(w_i * x_i) + b
            for i, v in enumerate(h):
                z = z + ws[k + i] * v
            k += len(h) + 1
            out.append(z if last else (z.tanh() if activation == "tanh" else z.relu()))
        h = out
    return (1 - y * h[0]).relu()


BATCH_CASES = {
    # a small net (one chunk of records) and the moons net (MLP(2, [16, 16, 1]): several chunks)
    "mlp-tanh": (lambda ws, xs: _svm_mlp(ws, xs), 3 * 3 + 4 * 3 + 4, 3),
    "mlp-moons": (lambda ws, xs: _svm_mlp(ws, xs, (16, 16, 1), "relu"), 3 * 16 + 17 * 16 + 17, 3),
    "logistic": (lambda ws, xs: (1 + (-xs[2] * (ws[0] * xs[0] + ws[1] * xs[1] + ws[2])).exp()).log(), 3, 3),
    # log(s) reads only a weight (computed once per call); d/dmu, d/ds divide by a weight
    "gauss-nll": (lambda ws, xs: ((xs[0] - ws[0]) / ws[1].abs()) ** 2 / 2 + ws[1].abs().log(), 2, 1),
    # d/db is a constant and d/dw the data input itself; d/dc does not depend on the data
    "linear": (lambda ws, xs: ws[0] * xs[0] + ws[1] + ws[2] * ws[2], 3, 1),
}


def _batch_data(n_data: int, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = [rng.uniform(-2.0, 2.0, n) for _ in range(n_data)]
    if n_data == 3:  # (x0, x1, y): labels of +-1
        columns[2] = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
    return columns


def _reference_rows(tape: Tape, shared: np.ndarray, data: list[np.ndarray]) -> np.ndarray:
    """The interpreter's outputs at each example: one row per example."""
    return np.array(
        [interpreter.evaluate(tape, [*shared.tolist(), *(float(x[i]) for x in data)]) for i in range(len(data[0]))]
    )


def _batch_entry(executor: Executor, tape: Tape, n_shared: int) -> Any:
    fallback = EXECUTORS["numpy"].batch_entry(tape, n_shared, None)
    fn = executor.batch_entry(tape, n_shared, fallback)
    assert fn is not None
    return fn


def _assert_batch(got: Any, rows: np.ndarray, n: int, what: str) -> None:
    """Values to rounding, and each sum against the interpreter's partials summed in example order."""
    values, sums = got
    assert values.shape == (n,) and sums.shape == (rows.shape[1] - 1,), what
    np.testing.assert_allclose(values, rows[:n, 0], rtol=1e-13, atol=1e-300, err_msg=what)
    want = np.zeros(rows.shape[1] - 1)
    for i in range(n):  # in example order, as a loop over the examples would add them
        want = want + rows[i, 1:]
    scale = np.abs(rows[:n, 1:]).sum(axis=0)
    assert np.all(np.abs(sums - want) <= 1e-13 * scale + 1e-300), (
        f"{what}: {np.max(np.abs(sums - want) - 1e-13 * scale)}"
    )


@pytest.mark.parametrize("executor", BATCHES)
@pytest.mark.parametrize("case", sorted(BATCH_CASES))
def test_batches_agree_with_the_interpreter_summed_in_order(executor: Executor, case: str) -> None:
    """Every batch size 1..257 (each remainder of every vector width), one entry for all of them."""
    build, n_shared, n_data = BATCH_CASES[case]
    tape, shared = _example_tape(build, n_shared, n_data)
    data = _batch_data(n_data, 257)
    rows = _reference_rows(tape, shared, data)
    fn = _batch_entry(executor, tape, n_shared)
    for n in range(1, 258):
        _assert_batch(fn(shared, [x[:n] for x in data]), rows, n, f"{case}, n={n}")


@pytest.mark.parametrize("executor", BATCHES)
def test_batch_size_changes_compile_nothing(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    build, n_shared, n_data = BATCH_CASES["mlp-tanh"]
    tape, shared = _example_tape(build, n_shared, n_data)
    fn = _batch_entry(executor, tape, n_shared)
    data = _batch_data(n_data, 1000)
    rows = _reference_rows(tape, shared, [x[:40] for x in data])

    def no_compile(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled during a batch call")

    monkeypatch.setattr(builtins, "compile", no_compile)
    if native.available():
        from symgrad.backends.native import jit, kernel

        monkeypatch.setattr(jit, "compile_object", no_compile)
        monkeypatch.setattr(jit, "load_object", no_compile)
        before = dict(kernel.STATS)
    for n in (1, 40, 7, 1000, 33, 8, 9, 40):
        values, sums = fn(shared, [x[:n] for x in data])
        assert values.shape == (n,) and sums.shape == (n_shared,)
        if n == 40:
            _assert_batch((values, sums), rows, 40, "n=40")
    if native.available():
        assert before == kernel.STATS


@pytest.mark.parametrize("executor", BATCHES)
@pytest.mark.parametrize(("source", "at", "bad", "op"), [("log", 13, -1.0, "log"), ("exp", 200, 800.0, "exp")])
def test_batch_domain_errors_are_the_interpreters(
    executor: Executor, source: str, at: int, bad: float, op: str
) -> None:
    """The first failing example's DomainError, as the interpreter raises it there, in a vector or in the tail."""
    build = (
        (lambda ws, xs: (ws[0] * xs[0]).log() + ws[1])
        if source == "log"
        else (lambda ws, xs: (ws[0] * xs[0]).exp() * ws[1])
    )
    tape, shared = _example_tape(build, 2, 1)
    shared = np.array([1.0, 0.5])
    x = np.linspace(0.5, 2.0, 203)
    x[at] = bad
    x[at + 1] = bad  # the first one is reported
    with pytest.raises(DomainError) as want:
        interpreter.forward(tape, [1.0, 0.5, bad])
    fn = _batch_entry(executor, tape, 2)
    with pytest.raises(DomainError) as got:
        fn(shared, [x])
    assert str(got.value) == f"example {at} of the batch: {want.value.reason}" and op in str(got.value)
    assert got.value.op == want.value.op
    values, sums = fn(shared, [np.delete(x, [at, at + 1])])  # the entry still serves clean batches
    assert values.shape == (201,) and np.all(np.isfinite(sums))


@pytest.mark.parametrize("executor", BATCHES)
@pytest.mark.parametrize("n", [1, 5, 8, 13, 16, 203])
def test_a_domain_error_in_the_last_example_is_reported(executor: Executor, n: int) -> None:
    """The leftover vector's masked lanes repeat the last example: their flag once erased its own, and
    the kernel returned nan for ``log`` of a negative number there instead of the DomainError."""
    tape, _ = _example_tape(lambda ws, xs: (ws[0] * xs[0]).log() + ws[1], 2, 1)
    x = np.linspace(0.5, 2.0, n)
    x[-1] = -1.0
    fn = _batch_entry(executor, tape, 2)
    with pytest.raises(DomainError, match=f"example {n - 1} of the batch"):
        fn(np.array([1.0, 0.5]), [x])


@pytest.mark.parametrize("executor", BATCHES)
def test_batch_inputs_that_bring_inf_give_ieee_results(executor: Executor) -> None:
    """An inf in the data (no domain error at that example: the interpreter raises nothing) gives numpy's
    IEEE results rather than an error or a number that hides it."""
    tape, _ = _example_tape(lambda ws, xs: ws[0] * xs[0] + ws[1], 2, 1)
    shared = np.array([2.0, 1.0])
    x = np.arange(20.0)
    x[5] = np.inf
    values, sums = _batch_entry(executor, tape, 2)(shared, [x])
    assert values[5] == np.inf and np.isfinite(values[np.arange(20) != 5]).all()
    assert sums[0] == np.inf and sums[1] == 20.0


@pytest.mark.parametrize("executor", BATCHES)
def test_batch_inputs_are_checked(executor: Executor) -> None:
    tape, shared = _example_tape(lambda ws, xs: ws[0] * xs[0] + ws[1] * xs[1], 2, 2)
    fn = _batch_entry(executor, tape, 2)
    x = np.ones(5)
    for shared_in, data, message in [
        (np.ones(3), [x, x], "shared inputs must be 2 floats"),
        (shared, [x], "must be 2 arrays"),
        (shared, [x, np.ones(4)], "data input 1 has 4 examples"),
        (shared, [x, np.ones((5, 1))], "data input 1 must be a 1-d array"),
        (shared, [np.ones(0), np.ones(0)], "at least one example"),
        (shared, [x, "abc"], "data input 1 must be an array of floats"),
    ]:
        with pytest.raises(InputError, match=message):
            fn(shared_in, data)
    values, sums = fn([1.0, 2.0], [[1.0, 2.0], np.arange(2, dtype=np.int64)])  # converted where needed
    assert values.tolist() == [1.0, 4.0] and sums.tolist() == [3.0, 1.0]
