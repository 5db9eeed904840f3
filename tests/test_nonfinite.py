"""One policy for nan, inf and overflow on the scalar API and the CLI (docs/robustness.md).

* a non-finite input is an InputError naming the variable;
* a non-finite value or partial produced from finite inputs is a DomainError
  naming the op that produced it, with the caret, whichever executor ran;
* numpy arrays keep numpy's semantics (nan/inf plus a RuntimeWarning).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

import symgrad
from symgrad.backends import native
from symgrad.cli import main
from symgrad.errors import DomainError, InputError

BACKENDS = ["python", *(["native"] if native.available() else [])]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("call", ["grad", "value_and_grad", "value", "hessian"])
def test_a_non_finite_input_is_an_input_error_naming_the_variable(value: float, call: str) -> None:
    f = symgrad.compile("log(x) + y")
    run = {
        "grad": lambda: f.grad(x=value, y=1.0),
        "value_and_grad": lambda: f.value_and_grad(x=1.0, y=value),
        "value": lambda: f(value, 1.0),
        "hessian": lambda: f.hessian(x=value, y=1.0),
    }[call]
    with pytest.raises(InputError, match=r"is (nan|inf|-inf): formulas are evaluated at finite points"):
        run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("text", "point", "op", "column"),
    [
        ("x**2", {"x": 1e200}, "mul", 1),  # x**2 is x*x: the overflow is the mul's
        ("x**3", {"x": 1e200}, "pow", 1),
        ("y + x*x*1e300", {"x": 1e10, "y": 1.0}, "mul", 5),
        ("exp(x) + 1", {"x": 1000.0}, "exp", 1),
    ],
)
def test_an_overflow_of_the_value_is_a_domain_error_with_the_caret(
    backend: str, text: str, point: dict[str, float], op: str, column: int
) -> None:
    f = symgrad.compile(text, backend=backend)
    for run in (lambda: f(point), lambda: f.value_and_grad(point)):
        with pytest.raises(DomainError, match="overflows a 64-bit float") as info:
            run()
        assert info.value.op == op and info.value.column == column


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_infinite_partial_from_finite_inputs_is_a_domain_error(backend: str) -> None:
    f = symgrad.compile("y + 1/x", backend=backend)
    value, _ = f.value_and_grad(x=1e-150, y=0.0)  # value 1e150 is fine; d/dx = -1e300 too
    assert value == pytest.approx(1e150)
    with pytest.raises(DomainError, match="derivative of div") as info:
        f.grad(x=1e-200, y=0.0)  # value 1e200, but d/dx = -1e400 overflows
    assert info.value.column == 5
    assert f(x=1e-200, y=0.0) == pytest.approx(1e200)  # the value alone is finite: no error


def test_folding_constants_follows_the_same_rule() -> None:
    with pytest.raises(DomainError, match=r"mul\(1e\+300, 1e\+300\) overflows"):
        symgrad.compile("x + 1e300*1e300")


def test_arrays_keep_numpy_semantics() -> None:
    f = symgrad.compile("x*x + log(y)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grads = f.value_and_grad(x=np.array([1e200, 1.0]), y=np.array([1.0, -1.0]))
    assert math.isinf(value[0]) and math.isnan(value[1])
    assert grads["x"][0] == 2e200  # the partial itself is finite
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)
    assert math.isnan(f(x=np.array([math.nan]), y=1.0)[0])  # nan inputs are allowed in arrays


def test_the_cli_reports_an_overflow_and_keeps_json_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grad", "x*x", "x=1e200", "--json"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "overflows a 64-bit float" in out.err
    assert main(["grad", "x*x", "x=1e150", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)  # strict RFC 8259: no NaN or Infinity tokens
    assert payload["value"] == pytest.approx(1e300) and payload["grad"]["x"] == pytest.approx(2e150)
