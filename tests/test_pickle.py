"""Functions, traced functions, tapes and ops pickle as plain data and work on the other side.

Every executor is checked after the round trip (reference interpreter, generated
scalar code, numpy arrays, dask arrays) against the same executor on the original,
also after the original has compiled and cached its code, which must not travel.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest

import symgrad
from symgrad import OPS, Value
from symgrad.backends import interpreter
from symgrad.tape import Tape

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
POINT = {"x": 0.7, "mu": 0.1, "s": 1.5}


def _roundtrip(obj: Any, dumps: Any = pickle.dumps, loads: Any = pickle.loads) -> Any:
    return loads(dumps(obj))


@pytest.mark.parametrize("op", list(OPS.values()), ids=list(OPS))
def test_an_op_unpickles_as_the_row_of_the_table(op: symgrad.Op) -> None:
    assert _roundtrip(op) is op


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_tape_pickles_as_plain_data(protocol: int) -> None:
    f = symgrad.compile(GAUSS)
    f.value_and_grad(**POINT)  # executors keep generated functions (which cannot pickle) outside the tape
    f.value_and_grad(x=np.linspace(0.0, 1.0, 5), mu=0.1, s=1.5)
    tape = pickle.loads(pickle.dumps(f.tape, protocol=protocol))
    assert isinstance(tape, Tape)
    assert str(tape) == str(f.tape)
    assert tape.source == f.tape.source
    assert [i.span for i in tape.instrs] == [i.span for i in f.tape.instrs]
    gradient = pickle.loads(pickle.dumps(f.gradient_function().tape, protocol=protocol))  # several outputs
    assert gradient.outputs == f.gradient_function().tape.outputs
    assert gradient.output_names == ("f", "d/dx", "d/dmu", "d/ds")


@pytest.mark.parametrize("compiled_first", [False, True])
@pytest.mark.parametrize("pickler", ["pickle", "cloudpickle"])
def test_a_function_round_trips_through_every_executor(compiled_first: bool, pickler: str) -> None:
    f = symgrad.compile(GAUSS)
    xs = np.linspace(-2.0, 2.0, 11)
    if compiled_first:
        f(**POINT), f.value_and_grad(**POINT), f.value_and_grad(x=xs, mu=0.1, s=1.5)
    dumps, loads = (pickle.dumps, pickle.loads) if pickler == "pickle" else (cloudpickle.dumps, cloudpickle.loads)
    g = _roundtrip(f, dumps, loads)
    assert type(g) is symgrad.Function
    assert g.variables == f.variables and g.source == f.source
    values = [POINT[name] for name in f.variables]
    # reference interpreter
    assert interpreter.value_and_grad(g.tape, values) == interpreter.value_and_grad(f.tape, values)
    # generated scalar code, checked and unchecked
    assert g.value_and_grad(**POINT) == f.value_and_grad(**POINT)
    assert g(**POINT) == f(**POINT)
    assert g.vg(*values) == f.vg(*values)
    # numpy arrays
    got, want = g.value_and_grad(x=xs, mu=0.1, s=1.5), f.value_and_grad(x=xs, mu=0.1, s=1.5)
    np.testing.assert_array_equal(got[0], want[0])
    for name in f.variables:
        np.testing.assert_array_equal(got[1][name], want[1][name])
    # dask arrays
    lazy_value, lazy_grads = g.value_and_grad(x=da.from_array(xs, chunks=4), mu=0.1, s=1.5)
    value, grads = dask.compute(lazy_value, lazy_grads, scheduler="sync")
    np.testing.assert_array_equal(value, want[0])
    np.testing.assert_allclose(grads["mu"], want[1]["mu"], rtol=1e-13)


def test_domain_errors_survive_the_round_trip() -> None:
    g = _roundtrip(symgrad.compile("log(x)"))
    with pytest.raises(symgrad.DomainError, match=r"log\(-1.0\) is undefined") as caught:
        g.value_and_grad(x=-1.0)
    assert "^^^^^^" in str(caught.value)


def test_a_traced_function_pickles_with_its_parameters() -> None:
    w, b = Value(2.0, label="w"), Value(-1.0, label="b")
    w.grad = 0.25
    step = symgrad.trace(lambda ps: (ps[0] * 3.0 + ps[1]).tanh(), [w, b])
    step.value_and_grad_list([0.5, 0.1])  # compile first: the code must not travel
    copy = _roundtrip(step)
    assert isinstance(copy, symgrad.Traced)
    assert copy.variables == ("w", "b")
    assert [(p.data, p.grad, p.label) for p in copy.params] == [(2.0, 0.25, "w"), (-1.0, 0.0, "b")]
    assert all(p is not q for p, q in zip(copy.params, step.params, strict=True))
    assert copy.value_and_grad_list([0.5, 0.1]) == step.value_and_grad_list([0.5, 0.1])
    assert copy.backward() == step.backward()
    assert copy.params[0].grad == w.grad  # both started at 0.25 and added the same partial


def test_parameters_pickled_together_with_a_traced_function_stay_shared() -> None:
    w = Value(2.0, label="w")
    step = symgrad.trace(lambda ps: ps[0] * ps[0], [w])
    params, copy = _roundtrip(([w], step))
    assert copy.params[0] is params[0]
    copy.backward()
    assert params[0].grad == 4.0  # d(w*w)/dw at 2 reached the copy the model holds
    assert w.grad == 0.0  # and not the original


def _evaluate(f: symgrad.Function) -> tuple[float, Any]:
    return f.value_and_grad(**POINT)


def test_a_function_evaluates_in_a_multiprocessing_pool() -> None:
    f = symgrad.compile(GAUSS)
    f.value_and_grad(**POINT)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = pool.submit(_evaluate, f).result(timeout=120)
    assert remote == f.value_and_grad(**POINT)
