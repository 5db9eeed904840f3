"""dask arrays in a point: the same numbers and shapes as the numpy path, computed chunk by chunk.

The numpy path (``f.value_and_grad(**numpy_arrays)``) is the oracle here: it is
itself tested against the interpreter and sympy.  Values and unbroadcast
partials must be equal exactly (the same numpy code on slices); partials that
are summed over the data may differ only by the order of the additions.
These run on dask's local schedulers; tests/test_distributed.py repeats the
main comparison on a cluster of worker processes.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest

import symgrad
from symgrad import InputError

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
RNG = np.random.default_rng(14)

SUM_RTOL = 1e-12  # summing in a different order


def _numpy(value: Any) -> Any:
    return value.compute(scheduler="sync") if hasattr(value, "compute") else value


def assert_matches_numpy(formula: str, point: dict[str, Any], scheduler: str = "sync") -> None:
    """value_and_grad and the forward call on ``point`` equal the numpy path on the computed point."""
    # The numpy program: the same bits chunk by chunk as on the whole array (the fused kernel, which
    # "auto" runs on big arrays, agrees with it to a few ulp: tests/test_native_arrays.py).
    f = symgrad.compile(formula, backend="python")
    plain = {name: _numpy(v) for name, v in point.items()}
    want_value, want_grads = f.value_and_grad(**plain, wrt=f.variables)
    lazy_value, lazy_grads = f.value_and_grad(**point, wrt=f.variables)
    assert isinstance(lazy_value, da.Array)
    assert all(isinstance(g, da.Array) for g in lazy_grads.values())
    assert lazy_value.shape == np.shape(want_value)
    value, grads, forward = dask.compute(lazy_value, lazy_grads, f(**point), scheduler=scheduler)
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(forward, want_value)
    for name in f.variables:
        assert lazy_grads[name].shape == np.shape(want_grads[name]) == np.shape(plain[name]), name
        assert np.shape(grads[name]) == np.shape(want_grads[name]), name
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=SUM_RTOL, atol=0, err_msg=name)


def test_gaussian_over_chunked_data_with_scalar_parameters() -> None:
    x = RNG.normal(size=10_001)
    assert_matches_numpy(GAUSS, {"x": da.from_array(x, chunks=1_000), "mu": 0.1, "s": 1.5})


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_two_dimensional_broadcasting_across_chunks(scheduler: str) -> None:
    point = {
        "a": da.from_array(RNG.normal(size=(7, 1)), chunks=(3, 1)),
        "b": RNG.normal(size=5),  # a numpy array beside dask arrays
        "c": da.from_array(RNG.normal(size=(1, 5)), chunks=(1, 2)),
    }
    assert_matches_numpy("a*b + sin(c)*a", point, scheduler)


def test_a_shorter_array_is_summed_over_the_leading_axis() -> None:
    point = {
        "a": da.from_array(RNG.normal(size=(6, 8)), chunks=(2, 3)),
        "b": da.from_array(RNG.normal(size=8), chunks=5),
        "k": np.float64(0.5),  # a 0-d numpy value
    }
    assert_matches_numpy("tanh(a*b) + k*b**2", point)


def test_inputs_broadcast_along_every_axis_keep_their_shapes() -> None:
    point = {
        "a": da.from_array(RNG.normal(size=(5, 4)), chunks=(2, 3)),
        "k": np.full((1, 1), 0.5),  # broadcast along both axes, summed, and still of shape (1, 1)
        "m": da.from_array(np.array([2.0])),  # a 1-element dask array
        "w": 3.0,
    }
    assert_matches_numpy("k*a**2 + m*exp(w*a)", point)


def test_inputs_with_different_chunks_are_aligned() -> None:
    x, y = RNG.normal(size=23), RNG.normal(size=23)
    assert_matches_numpy("x*y + exp(x - y)", {"x": da.from_array(x, chunks=4), "y": da.from_array(y, chunks=7)})


def test_integer_arrays_become_float64() -> None:
    x = da.arange(12, chunks=5)
    f = symgrad.compile("x / 2 + w")
    value, grads = dask.compute(*f.value_and_grad(x=x, w=1), scheduler="sync")
    assert value.dtype == np.float64 and grads["x"].dtype == np.float64
    np.testing.assert_array_equal(value, np.arange(12) / 2 + 1)
    assert grads["w"] == 12.0
    assert_matches_numpy("x / 2 + w", {"x": x, "w": 1.0})


def test_a_point_whose_arrays_are_all_zero_dimensional() -> None:
    assert_matches_numpy("x*y", {"x": da.from_array(np.array(3.0)), "y": 2.0})


def test_wrt_and_single_variable_results_keep_the_function_conventions() -> None:
    x = da.from_array(np.linspace(1.0, 4.0, 9), chunks=4)
    one = symgrad.compile("sqrt(x)")
    lazy = one.grad(x=x)
    assert isinstance(lazy, da.Array)  # one variable: the partial itself, not a dict
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), one.grad(x=np.linspace(1.0, 4.0, 9)))
    f = symgrad.compile(GAUSS)
    mu = f.grad(x=x, mu=0.5, s=2.0, wrt="mu")
    assert mu.shape == ()
    np.testing.assert_allclose(
        mu.compute(scheduler="sync"), f.grad(x=x.compute(), mu=0.5, s=2.0, wrt="mu"), rtol=SUM_RTOL
    )
    assert list(f.grad(x=x, mu=0.5, s=2.0, wrt=["s", "mu"])) == ["s", "mu"]
    assert f.grad(x=x, mu=0.5, s=2.0, wrt=[]) == {}
    with pytest.raises(symgrad.UnknownVariableError, match=r"with respect to 'q'.*variables are x, mu, s"):
        f.grad(x=x, mu=0.5, s=2.0, wrt=["mu", "q"])


def test_only_a_single_array_may_have_unknown_chunk_sizes() -> None:
    data = da.from_array(np.linspace(-1.0, 1.0, 20), chunks=6)
    positive = data[data > 0]  # chunk sizes unknown until computed
    assert np.isnan(positive.shape[0])
    f = symgrad.compile("log(x)*a")
    value, grads = dask.compute(*f.value_and_grad(x=positive, a=2.0), scheduler="sync")
    want_value, want_grads = f.value_and_grad(x=positive.compute(scheduler="sync"), a=2.0)
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_allclose(grads["a"], want_grads["a"], rtol=SUM_RTOL)
    with pytest.raises(InputError, match=r"'x' is a dask array of unknown chunk sizes.*compute_chunk_sizes\(\)"):
        symgrad.compile("x*y").value_and_grad(x=positive, y=data)


def test_shapes_that_do_not_broadcast_are_an_input_error() -> None:
    f = symgrad.compile("x*y")
    with pytest.raises(InputError, match=r"do not broadcast.*'x' \(10,\), 'y' \(7,\)"):
        f.value_and_grad(x=da.ones(10, chunks=5), y=da.ones(7, chunks=5))
    with pytest.raises(InputError, match=r"do not broadcast"):
        f(x=da.ones((4, 3), chunks=2), y=np.ones(4))


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (da.from_array(np.array(["a", "b"])), "<U1"),
        (da.from_array(np.array([True, False])), "bool"),
        (da.from_array(np.array([1 + 2j])), "complex128"),
        (da.from_array(np.array([1.0, None], dtype=object), chunks=1), "object"),
    ],
)
def test_non_numeric_dask_dtypes_are_an_input_error(array: da.Array, dtype: str) -> None:
    with pytest.raises(InputError, match=rf"value for 'x' must be a dask array of real numbers, got .* dtype {dtype}"):
        symgrad.compile("x + 1").value_and_grad(x=array)
    with pytest.raises(InputError, match=r"dask array of real numbers"):
        symgrad.compile("x + 1")(x=array)


def test_a_dask_collection_that_is_not_an_array_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"value for 'x' is a dask Delayed\w*; only dask arrays"):
        symgrad.compile("x + 1")(x=dask.delayed(1.0))


def test_domain_errors_follow_the_numpy_path() -> None:
    s = symgrad.compile("sqrt(x)")
    x = da.from_array(np.array([4.0, 0.0, -1.0, 9.0]), chunks=2)
    with np.errstate(all="warn"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grad = dask.compute(*s.value_and_grad(x=x), scheduler="sync")
    np.testing.assert_array_equal(value, [2.0, 0.0, np.nan, 3.0])
    np.testing.assert_array_equal(grad, [0.25, np.inf, np.nan, 1 / 6])
    assert {w.category for w in caught} == {RuntimeWarning}
    assert any("invalid value encountered in sqrt" in str(w.message) for w in caught)


def test_the_graph_has_one_symgrad_task_per_chunk_and_a_tree_reduction() -> None:
    f = symgrad.compile(GAUSS)
    x = da.ones(100, chunks=10)
    value, grads = f.value_and_grad(x=x, mu=0.0, s=1.0, wrt=["mu"])
    graph = dict(grads["mu"].__dask_graph__())
    calls = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("symgrad-chunk-")]
    assert len(calls) == 10
    assert any("sum-partial" in str(k[0]) for k in graph if isinstance(k, tuple))  # dask's tree reduction
    value2, _ = f.value_and_grad(x=x, mu=0.0, s=1.0, wrt=["mu"])
    assert value2.name == value.name  # deterministic keys: the same point, the same graph
