"""What the PyTorch and JAX wrappers share (symgrad/interop.py), tested without either framework."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sympy

import symgrad
from symgrad.errors import InputError, MissingVariableError, UnknownVariableError
from symgrad.interop import Derivatives, bind_arguments, broadcast_shape, evaluate


def test_importing_symgrad_imports_neither_torch_nor_jax() -> None:
    """They are optional extras, loaded by `import symgrad.torch` / `import symgrad.jax` only."""
    code = "import sys, symgrad; symgrad.grad('x*x', x=1.0); print(sorted({'torch', 'jax'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_each_level_is_the_jacobian_of_the_one_before_against_sympy() -> None:
    """Output i*n + j of level k+1 is ∂(output i of level k)/∂(variable j), to the third level."""
    source = "x**3*sin(y) + exp(x*y)"
    ladder = Derivatives(symgrad.compile(source))
    x, y = sympy.symbols("x y")
    expressions = [sympy.sympify(source, locals={"x": x, "y": y})]
    point = {x: 0.4, y: -1.3}
    for k in range(4):
        level = ladder.level(k)
        assert level.n_outputs == ladder.outputs(k) == 2**k and level.variables == ("x", "y")
        got = evaluate(level, [np.array(0.4), np.array(-1.3)])
        want = [float(e.subs(point)) for e in expressions]
        np.testing.assert_allclose([float(v) for v in got], want, rtol=1e-12)
        expressions = [sympy.diff(e, v) for e in expressions for v in (x, y)]


def test_value_and_gradient_is_levels_zero_and_one_for_one_output_only() -> None:
    one = Derivatives(symgrad.compile("x*y"))
    both = one.value_and_gradient()
    assert both is not None and both.n_outputs == 3
    assert Derivatives(symgrad.compile(["x*y", "x"])).value_and_gradient() is None


def test_evaluate_gives_every_output_in_the_broadcast_shape_as_a_fresh_writable_array() -> None:
    hessian = Derivatives(symgrad.compile("x*y + x**3")).level(2)  # d2/dy^2 = 0 and d2/(dx dy) = 1: constants
    x, y = np.linspace(0, 1, 3)[:, None], np.linspace(1, 2, 4)
    outputs = evaluate(hessian, [x, y])
    assert [o.shape for o in outputs] == [(3, 4)] * 4
    assert all(o.flags.writeable and o.dtype == np.float64 for o in outputs)
    np.testing.assert_array_equal(outputs[0], np.broadcast_to(6 * x, (3, 4)))
    np.testing.assert_array_equal(outputs[1], np.ones((3, 4)))
    np.testing.assert_array_equal(outputs[3], np.zeros((3, 4)))


def test_binding_by_position_and_name() -> None:
    f = symgrad.compile("a*b + c")
    assert bind_arguments(f, (1, 2), {"c": 3}, "g") == [1, 2, 3]
    assert bind_arguments(f, (), {"c": "C", "a": "A", "b": "B"}, "g") == ["A", "B", "C"]  # values untouched
    with pytest.raises(MissingVariableError, match="no value given for 'c' in g"):
        bind_arguments(f, (1, 2), {}, "g")
    with pytest.raises(UnknownVariableError, match="'d' is not a variable of g"):
        bind_arguments(f, (1, 2, 3), {"d": 4}, "g")
    with pytest.raises(InputError, match="given twice"):
        bind_arguments(f, (1,), {"a": 2, "b": 3, "c": 4}, "g")
    with pytest.raises(InputError, match=r"g takes 3 values \('a', 'b', 'c'\), got 4"):
        bind_arguments(f, (1, 2, 3, 4), {}, "g")


def test_broadcast_shape() -> None:
    assert broadcast_shape(("x", "y"), [(3, 1), (4,)]) == (3, 4)
    with pytest.raises(InputError, match=r"'x' of shape \(2,\), 'y' of shape \(3,\)"):
        broadcast_shape(("x", "y"), [(2,), (3,)])
