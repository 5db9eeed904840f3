"""Function's array path on the fused native kernel against the numpy program (the reference on arrays).

The kernel performs numpy's IEEE arithmetic in the tape's order; its libm calls
go to libmvec on glibc (a few ulp from numpy's own SIMD functions), and sums
are taken in another order.  So values and full-size partials are compared
with a relative tolerance of 1e-13, sums against the sum of the magnitudes of
their terms.  Domain behaviour (nan/inf, RuntimeWarning, np.errstate) must be
numpy's exactly: the kernel hands such calls to the numpy program.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np
import pytest

import symgrad
from symgrad.backends import native
from symgrad.errors import InputError

pytestmark = pytest.mark.skipif(not native.available(), reason="needs llvmlite")

from symgrad.backends.native import arrays, libm  # noqa: E402
from symgrad.backends.native.kernel import NativeKernel  # noqa: E402
from symgrad.backends.native.program import Program  # noqa: E402

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
N = 10_003  # many points, and not a multiple of the vector width
RNG = np.random.default_rng(12)


def _calls(before: dict[str, int]) -> dict[str, int]:
    return {k: arrays.STATS[k] - before[k] for k in before}


def assert_close(got: Any, want: Any, what: str) -> None:
    """Elementwise within 1e-13 relative (1e-13 of the largest magnitude near zero), same shape."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(want)), what
    scale = float(np.max(np.abs(want), initial=0.0))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * scale, err_msg=what)


def compare(formula: str, point: dict[str, Any], *, wrt: Any = None) -> dict[str, int]:
    """value_and_grad and the value of ``formula`` on the kernel against backend="python"; the calls made."""
    fast, slow = symgrad.compile(formula, backend="native"), symgrad.compile(formula, backend="python")
    before = dict(arrays.STATS)
    value, grads = fast.value_and_grad(**point, wrt=wrt)
    forward = fast(**point)
    calls = _calls(before)
    want_value, want_grads = slow.value_and_grad(**point, wrt=wrt)
    assert_close(value, want_value, "value")
    assert_close(forward, want_value, "forward")
    if not isinstance(grads, dict):
        grads, want_grads = {wrt: grads}, {wrt: want_grads}
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        w = want_grads[name]
        assert np.shape(g) == np.shape(w) and type(g) is type(w), name
        if np.ndim(g) < np.ndim(value) or np.size(g) < np.size(value):  # summed: compare to the terms' size
            terms = np.abs(slow.value_and_grad(**point, wrt=name)[1])
            assert np.all(np.abs(np.asarray(g) - w) <= 1e-12 * np.sum(terms) + 1e-300), name
        else:
            assert_close(g, w, name)
    return calls


CASES = [
    (GAUSS, {"x": RNG.normal(size=N), "mu": 0.1, "s": 1.5}),
    ("sin(x)*cos(y) + log(1 + x*x)", {"x": RNG.normal(size=N), "y": RNG.normal(size=N)}),
    ("tanh(a*b) + a**2.5 + sigmoid(b)", {"a": RNG.uniform(0.1, 2.0, N), "b": 0.7}),
    ("atan2(y, x) + sqrt(x*x + y*y)", {"x": RNG.normal(size=(N // 100, 100)), "y": RNG.normal(size=100)}),
    ("exp(-k*t)*cos(w*t)", {"t": RNG.uniform(0.0, 5.0, (N, 1)), "k": np.array([0.5]), "w": 2.0}),
    ("asin(u) + acos(u)*v + atan(u)", {"u": RNG.uniform(-0.9, 0.9, N), "v": RNG.normal(size=N)}),
    ("sinh(z)/cosh(z) - tan(z/3) + relu(z) + abs(z) + min(z, 0.5)", {"z": RNG.normal(size=N)}),
]


@pytest.mark.parametrize(("formula", "point"), CASES, ids=[c[0] for c in CASES])
def test_the_kernel_agrees_with_the_numpy_program(formula: str, point: dict[str, Any]) -> None:
    calls = compare(formula, point)
    assert calls == {"native": 2, "numpy": 0}


def test_broadcast_grid_partials_are_summed_down_like_numpy() -> None:
    # a (1, m) and b (n, 1): every partial is summed over one axis (fit), not to a number
    point = {"a": RNG.normal(size=(1, 150)), "b": RNG.normal(size=(100, 1)), "c": 0.25}
    assert compare("a*exp(-b*b) + c*b", point) == {"native": 2, "numpy": 0}


def test_wrt_subsets_and_one_variable() -> None:
    point = {"x": RNG.normal(size=N), "mu": 0.1, "s": 1.5}
    assert compare(GAUSS, point, wrt=["s", "x"])["native"] == 2
    assert compare(GAUSS, point, wrt="mu")["native"] == 2


def test_the_sum_of_a_million_partials_is_accurate() -> None:
    x = np.linspace(-4.0, 4.0, 1_000_003)
    f = symgrad.compile(GAUSS, backend="native")
    _, grads = f.value_and_grad(x=x, mu=0.2, s=1.5)
    per_point = symgrad.compile(GAUSS, backend="python").value_and_grad(x=x, mu=np.full_like(x, 0.2), s=1.5)[1]
    exact = math.fsum(per_point["mu"].tolist())
    assert abs(grads["mu"] - exact) <= 1e-14 * math.fsum(np.abs(per_point["mu"]).tolist())


def test_inputs_of_other_dtypes_orders_and_strides() -> None:
    f, slow = symgrad.compile("x*y + exp(-x)", backend="native"), symgrad.compile("x*y + exp(-x)", backend="python")
    ints = np.arange(N, dtype=np.int32)
    x32 = RNG.normal(size=N).astype(np.float32)
    fortran = np.asfortranarray(RNG.normal(size=(150, 80)))
    strided = RNG.normal(size=2 * N)[::2]
    for x, y in [(ints, 0.5), (x32, np.float32(2.0)), (fortran, fortran), (strided, 1.0)]:
        before = dict(arrays.STATS)
        assert_close(f(x=x, y=y), slow(x=x, y=y), str(np.asarray(x).dtype))
        assert _calls(before) == {"native": 1, "numpy": 0}


EDGE_POINTS = [
    {"x": np.zeros(0), "mu": 0.1, "s": 1.5},
    {"x": np.array(0.3), "mu": 0.1, "s": 1.5},
    {"x": np.array([0.3]), "mu": np.array([0.1]), "s": 1.5},
    {"x": np.ones((1, 1)), "mu": np.zeros((3, 1)), "s": np.full((1, 4), 2.0)},
    {"x": np.linspace(0.0, 1.0, 7), "mu": np.linspace(0.0, 1.0, 7), "s": np.linspace(1.0, 2.0, 7)},
    {"x": np.zeros((0, 3)), "mu": np.zeros((2, 1, 1)), "s": 1.0},
]


@pytest.mark.parametrize("point", EDGE_POINTS, ids=lambda p: str([np.shape(v) for v in p.values()]))
def test_backend_native_on_small_empty_and_zero_d_arrays(point: dict[str, Any]) -> None:
    fast, slow = symgrad.compile(GAUSS, backend="native"), symgrad.compile(GAUSS, backend="python")
    value, grads = fast.value_and_grad(**point)
    want_value, want_grads = slow.value_and_grad(**point)
    assert_close(value, want_value, "value")
    assert type(fast(**point)) is type(slow(**point))
    for name, g in grads.items():
        assert type(g) is type(want_grads[name]), name
        assert_close(g, want_grads[name], name)


def test_nan_in_an_input_array_is_numpys_business() -> None:
    x = np.linspace(0.0, 1.0, N)
    x[3] = math.nan
    before = dict(arrays.STATS)
    with np.errstate(all="ignore"):
        got = symgrad.compile(GAUSS, backend="native")(x=x, mu=0.1, s=1.5)
    assert _calls(before) == {"native": 0, "numpy": 1}
    with np.errstate(all="ignore"):
        want = symgrad.compile(GAUSS, backend="python")(x=x, mu=0.1, s=1.5)
    np.testing.assert_array_equal(got, want)


def test_shape_errors_are_input_errors_before_any_kernel_runs() -> None:
    f = symgrad.compile("x*y", backend="native")
    with pytest.raises(InputError, match="do not broadcast"):
        f(x=np.zeros(N), y=np.zeros(N + 1))


def test_an_output_that_does_not_vary_keeps_numpys_shape() -> None:
    # the second output reads only the scalar: numpy returns a 0-d value there, so the call stays on numpy
    f = symgrad.compile(["x*y", "y*y"], backend="native")
    x = RNG.normal(size=N)
    before = dict(arrays.STATS)
    first, second = f(x=x, y=3.0)
    assert _calls(before) == {"native": 0, "numpy": 0}  # decided once, when the program is built
    assert np.shape(second) == () and second == 9.0 and first.shape == x.shape


# ----------------------------------------------------------- numpy's semantics --


def test_domain_violations_give_numpys_values_and_warnings() -> None:
    s = symgrad.compile("sqrt(x)", backend="native")
    x = np.abs(RNG.normal(size=N))
    x[[5, 77]] = [-1.0, 0.0]
    with np.errstate(all="ignore"):
        want = symgrad.compile("sqrt(x)", backend="python").value_and_grad(x=x)
    before = dict(arrays.STATS)
    with np.errstate(all="warn"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = s.value_and_grad(x=x)
    assert _calls(before) == {"native": 0, "numpy": 1}
    assert np.isnan(value[5]) and grad[77] == math.inf
    np.testing.assert_array_equal(value, want[0])
    np.testing.assert_array_equal(grad, want[1])
    messages = {str(w.message) for w in caught if w.category is RuntimeWarning}
    assert "invalid value encountered in sqrt" in messages
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        s(x=x)


def test_a_once_per_call_value_outside_its_domain_goes_to_numpy() -> None:
    f = symgrad.compile("x*log(k)", backend="native")
    before = dict(arrays.STATS)
    with np.errstate(invalid="ignore"):
        value = f(x=np.ones(N), k=-1.0)
    assert _calls(before) == {"native": 0, "numpy": 1} and np.all(np.isnan(value))


def test_a_non_finite_once_per_call_input_goes_to_numpy() -> None:
    # k enters the loop as it is (no record of it is computed once per call) and k*k as a record
    for formula in ("x*k", "x*(k*k)"):
        f = symgrad.compile(formula, backend="native")
        before = dict(arrays.STATS)
        with np.errstate(invalid="ignore"):
            value, grads = f.value_and_grad(x=np.ones(N), k=np.array([math.inf]))
            want_value, want_grads = symgrad.compile(formula, backend="python").value_and_grad(
                x=np.ones(N), k=np.array([math.inf])
            )
        assert _calls(before) == {"native": 0, "numpy": 1}, formula
        assert np.all(np.isinf(value)) and np.array_equal(value, want_value)
        for name in ("x", "k"):
            np.testing.assert_array_equal(grads[name], want_grads[name])


def test_underflow_reported_when_numpy_is_asked_to() -> None:
    f = symgrad.compile("exp(-x)", backend="native")
    x = np.full(N, 800.0)
    before = dict(arrays.STATS)
    assert np.all(f(x=x) == 0.0)  # underflow is silent by default: the kernel's result
    assert _calls(before) == {"native": 1, "numpy": 0}
    with np.errstate(under="raise"), pytest.raises(FloatingPointError, match="underflow"):
        f(x=x)


# ------------------------------------------------------------- the backend choice --


def test_backend_choice_for_arrays() -> None:
    small = RNG.normal(size=100)
    for backend, x, want in [("auto", small, 0), ("native", small, 1), ("python", RNG.normal(size=N), 0)]:
        f = symgrad.compile("x*x + 1", backend=backend)
        before = dict(arrays.STATS)
        f(x=x)
        assert _calls(before)["native"] == want, backend


def test_auto_moves_arrays_to_the_fused_kernel_once_calls_have_paid_for_it() -> None:
    """Rent or buy: the numpy program serves first, the kernel once the calls have cost its compile."""
    f = symgrad.compile("sin(x)*y + exp(-x*x)", backend="auto")
    x = RNG.normal(size=1000)
    before = dict(arrays.STATS)
    want = symgrad.compile("sin(x)*y + exp(-x*x)", backend="python").value_and_grad(x=x, y=0.5)
    for _ in range(2000):  # far more than the kernel's compile costs in numpy calls
        got = f.value_and_grad(x=x, y=0.5)
        if _calls(before)["native"]:
            break
    assert f.wait_native(timeout=120)
    got = f.value_and_grad(x=x, y=0.5)
    assert _calls(before)["native"] >= 1
    assert_close(got[0], want[0], "value")
    assert_close(got[1]["x"], want[1]["x"], "x")


def test_auto_loads_a_fused_kernel_from_the_persistent_cache_at_once() -> None:
    """As for floats: a kernel already compiled (here by another Function of the same formula, in
    this process) serves the first array call, with no numpy calls renting first."""
    formula = "cos(x)*y + x*x*y + 0.375"
    x = RNG.normal(size=1000)
    symgrad.compile(formula, backend="native").value_and_grad(x=x, y=0.5)  # compiles (and caches) it
    symgrad.clear_cache()  # a new Function, with no entries of its own
    before = dict(arrays.STATS)
    got = symgrad.compile(formula, backend="auto").value_and_grad(x=x, y=0.5)
    assert _calls(before)["native"] == 1 and _calls(before)["numpy"] == 0
    want = symgrad.compile(formula, backend="python").value_and_grad(x=x, y=0.5)
    assert_close(got[0], want[0], "value")
    assert_close(got[1]["y"], want[1]["y"], "y")


def test_a_kernel_serving_at_once_generates_the_numpy_program_only_when_handed_a_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The numpy program is the fused kernel's fallback; generating and compiling it costs more than a
    small kernel's first call, so a kernel that serves at once leaves it ungenerated until a call
    the kernel cannot take (here a point outside log's domain) needs it."""
    from symgrad.backends import numpy as numpy_code

    generated: list[object] = []
    real = numpy_code.array_function

    def counting(*args: Any, **kwargs: Any) -> Any:
        generated.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(numpy_code, "array_function", counting)
    f = symgrad.compile("log(x)*y + x*y", backend="native")
    x = RNG.uniform(0.5, 2.0, 1000)
    got = f.value_and_grad(x=x, y=0.5)
    assert generated == []
    want = symgrad.compile("log(x)*y + x*y", backend="python").value_and_grad(x=x, y=0.5)  # (generates one)
    assert_close(got[0], want[0], "value")
    generated.clear()
    bad = x.copy()
    bad[7] = -1.0
    before = dict(arrays.STATS)
    with np.errstate(invalid="ignore"):
        value, _ = f.value_and_grad(x=bad, y=0.5)
    assert _calls(before) == {"native": 0, "numpy": 1} and len(generated) == 1
    assert math.isnan(value[7]) and np.isfinite(np.delete(value, 7)).all()


def test_the_cache_is_asked_for_a_fused_loop_once_calls_have_paid_for_asking() -> None:
    """Asking the persistent cache costs 0.05-0.1 ms for a small tape (its key is a digest of the
    loop the tape becomes), more than a call over ten points: the ask is a setup too, made once the
    calls have paid for it, and at once where one call costs more (a million points)."""
    from symgrad.backends import dispatch
    from symgrad.backends.native import cache

    symgrad.compile("sin(x)*y", backend="native").vg(1.0, 2.0)  # LLVM running: asking starts nothing

    def asked() -> int:
        return cache.STATS["hits"] + cache.STATS["misses"]

    tape = symgrad.compile("cos(x)*y + x*y*y + 0.125")._gradient_tape(None)
    for n, at_once in [(10, False), (1_000_000, True)]:
        before = asked()
        entry, rental = dispatch.array_entry(tape, [(n,), ()], [None, 0, 1], "auto", lambda fn: None)
        assert rental is not None and (rental.ask is None) == at_once and (asked() > before) == at_once
        for _ in range(1000):
            if rental.ask is None:
                break
            entry(RNG.normal(size=n), 0.5)
        assert rental.ask is None and asked() > before  # a miss: the loop is compiled later (or now)


def test_a_missed_ask_prices_the_compile_without_starting_llvm_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first estimate of a loop's compile includes starting LLVM when this process has not; the
    ask starts it, so a miss leaves the compile priced without it (it was counted twice: the first
    array call of a process rented 0.08 s more than the compile costs)."""
    from dataclasses import replace

    from symgrad.backends import dispatch

    started = {"now": False}
    monkeypatch.setattr(native, "llvm_started", lambda: started["now"])
    monkeypatch.setattr(dispatch, "_measured", {})
    monkeypatch.setattr(native.EXECUTOR, "figures", replace(native.EXECUTOR.figures, llvm_start=10.0))
    asking = native.EXECUTOR.cached_array_entry

    def ask(*args: Any) -> Any:
        started["now"] = True
        return asking(*args)

    monkeypatch.setattr(native.EXECUTOR, "cached_array_entry", ask)
    tape = symgrad.compile("cos(x)*y + x*y*y + 0.1875")._gradient_tape(None)
    _, rental = dispatch.array_entry(tape, [(10,), ()], [None, 0, 1], "auto", lambda fn: None)
    assert rental is not None and rental.ask is not None

    def native_setup() -> float:
        assert rental is not None
        return next(setup for name, setup, _ in rental.costs if name == "native")

    assert native_setup() > 10.0
    rental._answer()
    assert native_setup() < 1.0


def test_a_fused_loop_compiled_by_a_rental_teaches_no_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Machine code teaches nothing (see ``Rental._learning``): a compile far over its estimate
    leaves later rentals' estimates as they were, where generated Python's would be corrected."""
    from dataclasses import replace

    from symgrad.backends import dispatch
    from symgrad.backends.native import kernel as kernel_module

    symgrad.compile("sin(x)*y", backend="native").vg(1.0, 2.0)  # LLVM running
    monkeypatch.setattr(dispatch, "_measured", {})
    figures = replace(native.EXECUTOR.figures, fused_opt1_setup_fixed=1e-3, fused_opt1_setup_per_record=1e-9)
    monkeypatch.setattr(native.EXECUTOR, "figures", figures)  # at least 15 ms in truth
    tape = symgrad.compile("cos(x)*y + x*y*y + 0.15625")._gradient_tape(None)
    _, rental = dispatch.array_entry(tape, [(10,), ()], [None, 0, 1], "auto", lambda fn: None)
    assert rental is not None
    compiled = kernel_module.STATS["compiled"]
    rental.buy_now()
    assert kernel_module.STATS["compiled"] == compiled + 1 and rental.tier == 1
    assert dispatch._measured == {}


def test_generating_the_numpy_program_counts_as_rent_paid() -> None:
    """A fixed choice of the fused loop never generates the numpy program (tens of ms for thousands of
    records, about what the loop costs to compile); auto pays it before its first call, so it counts
    towards the loop's price, as every setup bought in the caller does."""
    from symgrad.backends import dispatch

    src = " + ".join(f"cos(x*{k}.5 + y)*y" for k in range(300))
    tape = symgrad.compile(src)._gradient_tape(None)
    start = time.perf_counter()
    _, rental = dispatch.array_entry(tape, [(10,), ()], [None, 0, 1], "auto", lambda fn: None)
    elapsed = time.perf_counter() - start
    assert rental is not None and 0.0 < rental.paid <= elapsed


def test_a_fused_loop_on_disk_is_linked_once_the_calls_have_paid_for_linking() -> None:
    """Linking a loop read from the persistent cache costs 1-3 ms: more than many numpy calls over
    a few points, less than one over a million.  It is a setup like a compile, bought by the same
    rule; nothing is compiled either way."""
    from symgrad.backends.native import kernel as kernel_module

    few, many = RNG.normal(size=10), RNG.normal(size=1_000_000)
    for formula, x in [("cos(x)*y + x*x*y + 0.625", few), ("cos(x)*y + x*x*y + 0.875", many)]:
        symgrad.compile(formula, backend="native").value_and_grad(x=few, y=0.5)  # compiled and stored
        arrays.clear()
        symgrad.clear_cache()  # now on disk only
        compiled, loaded = kernel_module.STATS["compiled"], kernel_module.STATS["loaded"]
        before = dict(arrays.STATS)
        f = symgrad.compile(formula, backend="auto")
        got = f.value_and_grad(x=x, y=0.5)
        if x is many:
            assert _calls(before) == {"native": 1, "numpy": 0}  # one numpy call costs more than the link
        else:
            assert _calls(before)["native"] == 0  # the numpy program served (itself: not counted here)
            for _ in range(20_000):  # far more calls than pay for the link
                got = f.value_and_grad(x=x, y=0.5)
                if _calls(before)["native"]:
                    break
            assert _calls(before)["native"] == 1
        assert kernel_module.STATS["compiled"] == compiled and kernel_module.STATS["loaded"] == loaded + 1
        want = symgrad.compile(formula, backend="python").value_and_grad(x=x, y=0.5)
        assert_close(got[0], want[0], formula)
        assert_close(got[1]["x"], want[1]["x"], formula)


def test_written_outputs_share_blocks_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """One block per call for every output would go over glibc's largest mmap threshold for big calls
    (5 outputs of 10^6 points: 40 MB), and come back from the OS as fresh pages at every call."""
    from symgrad.backends.native import kernel as kernel_module

    monkeypatch.setattr(kernel_module, "BLOCK_BYTES", 2 * 8 * 1000)  # two outputs of 1,000 points per block
    f = symgrad.compile("x*y*z + w*x", backend="native")
    point = {name: RNG.normal(size=1000) for name in ("x", "y", "z", "w")}
    value, grads = f.value_and_grad(**point)
    outputs = [value, *grads.values()]
    bases = {id(o.base) for o in outputs if o.base is not None}
    assert len(bases) == 3  # 5 outputs: blocks of 2, 2 and 1
    want = symgrad.compile("x*y*z + w*x", backend="python").value_and_grad(**point)
    np.testing.assert_array_equal(value, want[0])
    for name in grads:
        np.testing.assert_array_equal(grads[name], want[1][name])


def test_threads_give_the_same_values() -> None:
    f = symgrad.compile(GAUSS, backend="native")
    x = RNG.normal(size=200_003)
    results = []
    for threads in (1, 2):
        arrays.THREADS = threads
        try:
            results.append(f.value_and_grad(x=x, mu=0.1, s=1.5))
        finally:
            arrays.THREADS = None
    (v1, g1), (v2, g2) = results
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(g1["x"], g2["x"])
    assert math.isclose(g1["s"], g2["s"], rel_tol=1e-13)  # sums of per-thread sums


# ------------------------------------------------------------ kernel building blocks --


def test_array_kernels_build_only_their_array_loop() -> None:
    # The array path calls the loop alone: compiling (or loading) a scalar entry per array
    # kernel cost a few ms of LLVM each, for nothing.
    arrays.clear()
    symgrad.clear_cache()  # a Function of another test would keep its entries on older kernels
    f = symgrad.compile(GAUSS, backend="native")
    x = RNG.normal(size=N)
    before = dict(arrays.STATS)
    f.value_and_grad(x=x, mu=0.3, s=1.2)
    f(x=x, mu=0.3, s=1.2)
    assert _calls(before) == {"native": 2, "numpy": 0}
    kernels = list(arrays._kernels.values())
    assert len(kernels) == 2
    assert [sorted(k._loaded) for k in kernels] == [["array"], ["array"]]


def test_divisions_by_once_per_call_values_become_multiplications() -> None:
    # x/2 (exact), x/3, x/2**-1024 (1/c overflows: kept), x/u and x/u again (u: the last input, one value)
    records = (("div", (0, 2)), ("div", (0, 3)), ("div", (0, 4)), ("div", (5, 1)), ("div", (6, 1)), ("add", (8, 9)))
    program = Program(2, (2.0, 3.0, 2.0**-1024), records, (5, 6, 7, 8, 9, 10))
    rewritten, recips = arrays.reciprocals(program, 1)
    assert recips == [1] and rewritten.n_inputs == 3  # one new input: 1/u
    assert [name for name, _ in rewritten.records] == ["mul", "mul", "div", "mul", "mul", "add"]
    x = np.concatenate([RNG.normal(size=1000) * 10.0 ** RNG.integers(-300, 300, 1000), [5e-324, -0.0, 1e308]])
    u = 0.7
    (*want,) = NativeKernel(program, lambda p: p).array(x, u, errors="ignore")
    (*got,) = NativeKernel(rewritten, lambda p: p).array(x, u, 1.0 / u, errors="ignore")
    np.testing.assert_array_equal(got[0], want[0])  # a power of two: the same bits
    np.testing.assert_array_equal(got[2], want[2])  # kept as a division
    for k in (1, 3, 4, 5):  # one more rounding: within 2 ulp
        assert np.all(np.abs(got[k] - want[k]) <= 2 * np.spacing(np.abs(want[k]))), k


def test_uniform_inputs_must_be_single_values() -> None:
    kernel = NativeKernel(Program(2, (), (("mul", (0, 1)),), (2,)), lambda p: p)
    kernel.uniform_inputs = 1
    (product,), count = kernel.array_count(np.arange(10.0), 3.0)
    assert count == 0 and np.array_equal(product, np.arange(10.0) * 3.0)
    with pytest.raises(InputError, match="one value per call"):
        kernel.array_count(np.arange(10.0), np.arange(10.0))


def test_one_value_inputs_given_as_floats() -> None:
    # x * u - w with u, w once per call: passed as floats, as arrays of one value, or mixed
    program = Program(3, (), (("mul", (0, 1)), ("sub", (3, 2))), (4,))
    kernel = NativeKernel(program, lambda p: p)
    kernel.uniform_inputs = 2
    x = RNG.normal(size=1001)
    want = x * 0.25 - 3.0
    for given, fixed in (((x, 0.25, 3.0), ()), ((x, np.array([0.25])), (3.0,)), ((x,), (0.25, 3.0))):
        (got,), count = kernel.array_count(*given, fixed=fixed)
        assert count == 0
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="takes 3 arrays"):
        kernel.array_count(x, fixed=(0.25,))
    with pytest.raises(InputError, match="one-value inputs"):
        kernel.array_count(fixed=(1.0, 0.25, 3.0))


def test_sums_of_a_kernel_compiled_for_some_outputs() -> None:
    # outputs: x*u (summed), x + u (written), x (written); u is one value per call
    kernel = NativeKernel(Program(2, (), (("mul", (0, 1)), ("add", (0, 1))), (2, 3, 0)), lambda p: p)
    kernel.uniform_inputs, kernel.summed_outputs = 1, (0,)
    x = RNG.normal(size=1003)
    for threads in (1, 2):
        (total, plus, same), count = kernel.array_count(x, 0.5, summed=(0,), threads=threads)
        assert count == 0 and np.shape(total) == ()
        assert abs(total - math.fsum((x * 0.5).tolist())) <= 1e-13 * math.fsum(np.abs(x).tolist())
        np.testing.assert_array_equal(plus, x + 0.5)
        np.testing.assert_array_equal(same, x)
    with pytest.raises(InputError, match="sums outputs"):
        kernel.array_count(x, 0.5, summed=(1,))


def test_without_libmvec_the_kernel_uses_scalar_libm() -> None:
    code = (
        "import numpy as np, symgrad\n"
        "from symgrad.backends.native import libm, arrays\n"
        "f = symgrad.compile('exp(x) + sin(x)', backend='native')\n"
        "x = np.linspace(-3, 3, 20_001)\n"
        "v = f(x=x)\n"
        "assert arrays.STATS['native'] == 1\n"
        "import math\n"
        "assert all(a == math.exp(b) + math.sin(b) for a, b in zip(v.tolist(), x.tolist()))\n"
        "print(libm.vector_width())\n"
    )
    env = {**os.environ, "SYMGRAD_VECTOR_LIBM": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


@pytest.mark.skipif(libm.vector_width() == 0, reason="no libmvec on this host")
@pytest.mark.parametrize("width", libm.widths() if native.available() else [])
@pytest.mark.parametrize("name", ["exp", "log", "sin", "tanh", "pow", "atan2"])
def test_libmvec_is_called_and_within_a_few_ulp(name: str, width: int) -> None:
    # every width this host has (the widest runs; an AVX2 or SSE machine would run the others)
    arity = 2 if name in ("pow", "atan2") else 1
    kernel = NativeKernel(Program(arity, (), ((name, tuple(range(arity))),), (arity,)), lambda p: p)
    kernel.vector_width = lambda: width  # type: ignore[method-assign]
    assert f"symgrad_v{width}_{name}" in kernel.llvm_ir("array")
    xs = [RNG.uniform(0.01, 30.0, 1001) for _ in range(arity)]
    (got,) = kernel.array(*xs)
    fn = getattr(math, name)
    want = np.array([fn(*p) for p in zip(*(x.tolist() for x in xs), strict=True)])
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want)))


def test_an_array_call_builds_no_scalar_entry() -> None:
    """Only the array loop is compiled for array calls: the scalar gradient kernel waits for a float call."""
    f = symgrad.compile("x*sin(y) + 0.25", backend="native")
    f.value_and_grad(x=RNG.normal(size=1000), y=0.5)
    assert f._vg is None
    assert f.value_and_grad(x=2.0, y=0.5) == symgrad.compile("x*sin(y) + 0.25", backend="python").value_and_grad(
        x=2.0, y=0.5
    )


def test_the_cost_of_a_fused_loop_follows_its_varying_records() -> None:
    from symgrad.backends import dispatch
    from symgrad.backends.native.program import OPT1_MAX_RECORDS

    f = symgrad.compile("x*k + sin(k)*exp(k) + x*x", backend="python")
    tape = symgrad.transforms.grad_tape(f.tape)
    every = dispatch.varying_records(tape, [(10,) for _ in f.variables])
    some = dispatch.varying_records(tape, [(10,) if name == "x" else () for name in f.variables])
    assert every == len(tape) and 0 < some < every  # sin(k)*exp(k) and its partials read only k
    figures = native.EXECUTOR.figures
    n = 2 * OPT1_MAX_RECORDS
    small = native.EXECUTOR.array_cost(n, 10, n_varying=OPT1_MAX_RECORDS)
    big = native.EXECUTOR.array_cost(n, 10, n_varying=OPT1_MAX_RECORDS + 1)
    opt1 = figures.fused_opt1_setup_fixed + figures.fused_opt1_setup_per_record * OPT1_MAX_RECORDS
    opt0 = figures.fused_setup_fixed + figures.fused_setup_per_record * (OPT1_MAX_RECORDS + 1)
    assert small.setup - big.setup == pytest.approx(opt1 - opt0)  # (the same LLVM start in both)
    once, every_point = figures.fused_call_per_uniform, figures.fused_call_per_element * 10
    assert small.call == pytest.approx(
        figures.fused_call_fixed + once * (n - OPT1_MAX_RECORDS) + every_point * OPT1_MAX_RECORDS
    )
