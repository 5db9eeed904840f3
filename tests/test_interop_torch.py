"""symgrad.torch: a formula as a PyTorch operation, checked against PyTorch's own autograd.

Each formula has a twin written in torch ops; values, gradients (first and second order) and
training steps must agree with what PyTorch computes for the twin, and ``gradcheck`` /
``gradgradcheck`` compare against PyTorch's finite differences.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="symgrad.torch needs PyTorch: pip install -e '.[dev]'")

import symgrad  # noqa: E402
import symgrad.torch  # noqa: E402
from symgrad.errors import InputError, MissingVariableError, UnknownVariableError  # noqa: E402

Tensor = torch.Tensor
T = torch

FORMULAS: list[tuple[str, Callable[[Tensor, Tensor], Tensor]]] = [
    ("x*sin(y) + exp(x*y)/(1 + y**2)", lambda x, y: x * T.sin(y) + T.exp(x * y) / (1 + y**2)),
    ("log(1 + x**2) * cos(y) - sqrt(y + 2)", lambda x, y: T.log(1 + x**2) * T.cos(y) - T.sqrt(y + 2)),
    ("tanh(x - y) * sigmoid(x*y) + atan2(y, x + 3)", lambda x, y: T.tanh(x - y) * T.sigmoid(x * y) + T.atan2(y, x + 3)),
    ("(x + 2)**y / (1 + abs(y))", lambda x, y: (x + 2) ** y / (1 + T.abs(y))),
]
IDS = [source for source, _ in FORMULAS]


def _points(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """x of shape (3, 1) and y of shape (4,): the result broadcasts to (3, 4); values in every formula's domain."""
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(3, 1, generator=g, dtype=torch.float64) * 1.6 - 0.8).to(dtype).requires_grad_()
    y = (torch.rand(4, generator=g, dtype=torch.float64) * 1.4 + 0.1).to(dtype).requires_grad_()
    return x, y


@pytest.mark.parametrize(("source", "twin"), FORMULAS, ids=IDS)
def test_values_and_gradients_match_torch_autograd(source: str, twin: Callable[[Tensor, Tensor], Tensor]) -> None:
    g = symgrad.torch.function(source)
    x, y = _points()
    out, ref = g(x, y), twin(x, y)
    assert out.shape == ref.shape == (3, 4) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    weights = torch.linspace(-1, 2, 12, dtype=torch.float64).reshape(3, 4)  # a grad_output that is not all ones
    got = torch.autograd.grad(out, (x, y), weights)
    want = torch.autograd.grad(ref, (x, y), weights)
    for a, b, t in zip(got, want, (x, y), strict=True):
        assert a.shape == t.shape  # summed over the broadcast axes, as PyTorch does
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("source", "twin"), FORMULAS, ids=IDS)
def test_second_derivatives_through_the_backward_match_torch(
    source: str, twin: Callable[[Tensor, Tensor], Tensor]
) -> None:
    """create_graph=True: the backward is differentiable (it runs the Hessian tape)."""
    g = symgrad.torch.function(source)
    x, y = _points()

    def second(fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, ...]:
        gx, gy = torch.autograd.grad(fn(x, y).sum(), (x, y), create_graph=True)
        return torch.autograd.grad((gx**2).sum() + (gy * torch.cos(y)).sum(), (x, y))

    for a, b in zip(second(g), second(twin), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
    point = (torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64))
    hessian = torch.autograd.functional.hessian(g, point)
    expected = torch.autograd.functional.hessian(twin, point)
    for row, want_row in zip(hessian, expected, strict=True):
        for h, want in zip(row, want_row, strict=True):
            torch.testing.assert_close(h, want, rtol=1e-12, atol=1e-12)


# gradcheck also runs each backward twice and wants equal results: symgrad's dispatcher may move a
# tape to another executor (compiled in the background) between two calls, which can change the last
# bit of a result (numpy's and glibc's sin/exp differ by an ulp), so "equal" is to a few ulp here.
NONDETERMINISM = 1e-14


def test_gradcheck_and_gradgradcheck() -> None:
    for source, _ in FORMULAS:
        g = symgrad.torch.function(source)
        x, y = _points()
        assert torch.autograd.gradcheck(g, (x, y), nondet_tol=NONDETERMINISM), source
        assert torch.autograd.gradgradcheck(g, (x, y), nondet_tol=NONDETERMINISM), source


def test_third_derivative_against_the_closed_form() -> None:
    """Derivatives to any order: d³/dx³ of sin(x)*y**2 is -cos(x)*y**2 (level 3 is the Hessian's Jacobian)."""
    g = symgrad.torch.function("sin(x)*y**2")
    x = torch.tensor([0.2, 1.1], dtype=torch.float64, requires_grad=True)
    y = torch.tensor(1.5, dtype=torch.float64)
    (d1,) = torch.autograd.grad(g(x, y).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
    (d3,) = torch.autograd.grad(d2.sum(), x)
    torch.testing.assert_close(d3, -torch.cos(x.detach()) * 1.5**2, rtol=1e-14, atol=1e-14)


def test_several_formulas_give_a_tuple_and_gradients_of_both() -> None:
    g = symgrad.torch.function(["x*y", "sin(x) + y**3"])
    x, y = _points()
    first, second = g(x, y)
    (first * 2 + second).sum().backward()
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    (xr * yr * 2 + torch.sin(xr) + yr**3).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(y.grad, yr.grad, rtol=1e-13, atol=1e-13)


def test_float32_is_computed_in_float64_and_rounded_once() -> None:
    g = symgrad.torch.function("x*sin(y) + exp(x*y)/(1 + y**2)")
    x, y = _points(torch.float32)
    out = g(x, y)
    assert out.dtype == torch.float32
    x64, y64 = x.detach().double(), y.detach().double()
    exact = x64 * torch.sin(y64) + torch.exp(x64 * y64) / (1 + y64**2)
    assert torch.equal(out.detach(), exact.float())  # float64 throughout, then one rounding
    out.sum().backward()
    assert x.grad is not None and y.grad is not None
    assert x.grad.dtype == torch.float32 and y.grad.dtype == torch.float32
    xr, yr = x64.clone().requires_grad_(), y64.clone().requires_grad_()
    (xr * torch.sin(yr) + torch.exp(xr * yr) / (1 + yr**2)).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad.float(), rtol=1e-6, atol=1e-6)


def test_arguments_by_name_numbers_and_integer_tensors() -> None:
    g = symgrad.torch.function("a*x + b")
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    out = g(x=x, b=torch.tensor([1, 2, 3]), a=2)  # a number and an integer tensor: values, not differentiated
    torch.testing.assert_close(out, torch.tensor([3.0, 6.0, 9.0], dtype=torch.float64))
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0, dtype=torch.float64))
    assert g(1, 2, 3).dtype == torch.get_default_dtype()  # nothing floating: PyTorch's default float dtype
    assert g(torch.tensor(2.0, dtype=torch.float64), torch.ones(2), 0.5).dtype == torch.float32  # as x*y in torch


def test_no_grad_gives_a_plain_tensor() -> None:
    g = symgrad.torch.function("x**2")
    x = torch.tensor([3.0], requires_grad=True)
    with torch.no_grad():
        out = g(x)
    assert out.grad_fn is None and not out.requires_grad and out.item() == 9.0


def test_backward_twice_with_retain_graph() -> None:
    g = symgrad.torch.function("x**3")
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    out = g(x)
    out.backward(retain_graph=True)
    out.backward()
    torch.testing.assert_close(x.grad, torch.tensor([24.0], dtype=torch.float64))  # 12 + 12


def test_an_eager_model_trains_like_its_twin() -> None:
    """A formula as a layer's nonlinearity in an nn.Module: same parameters after SGD steps as the torch twin."""

    class Model(torch.nn.Module):
        def __init__(self, activation: Callable[[Tensor, Tensor], Tensor]) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(3, 4, dtype=torch.float64)
            self.scale = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
            self.activation = activation

        def forward(self, inputs: Tensor) -> Tensor:
            return self.activation(self.linear(inputs), self.scale).sum(dim=1)

    formula = symgrad.torch.function("tanh(z*s) + s**2*z")
    ours, twin = Model(formula), Model(lambda z, s: torch.tanh(z * s) + s**2 * z)
    data = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for model in (ours, twin):
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(20):
            optimiser.zero_grad()
            loss = ((model(data) - target) ** 2).mean()
            loss.backward()
            optimiser.step()
    for p, q in zip(ours.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_domain_follows_the_array_path_and_torch() -> None:
    """Outside the domain on tensors: nan, as numpy and torch.log give (no exception mid-graph)."""
    g = symgrad.torch.function("log(x)")
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    with np.errstate(invalid="ignore"):
        out = g(x)
    assert torch.isnan(out[0]) and torch.isnan(torch.log(x)[0]) and out[1] == 0.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.ones(2, device="meta"), "tensor on meta: symgrad computes on the CPU"),
        (torch.ones(2, dtype=torch.complex128), "real numbers, got dtype torch.complex128"),
        (torch.ones(2, dtype=torch.bool), "real numbers, got dtype torch.bool"),
        (torch.ones(2).to_sparse(), "dense one"),
        ("2.0", "a tensor or a real number, got str"),
        (np.ones(2), "a tensor or a real number, got ndarray"),
        (True, "a tensor or a real number, got bool"),
    ],
    ids=["device", "complex", "bool", "sparse", "str", "ndarray", "bool-number"],
)
def test_arguments_that_are_not_real_cpu_tensors_are_input_errors(value: object, message: str) -> None:
    g = symgrad.torch.function("x*y")
    with pytest.raises(InputError, match="value for 'x'") as caught:
        g(value, torch.ones(2))
    assert message in str(caught.value)


def test_binding_errors_name_the_variables() -> None:
    g = symgrad.torch.function("x*y")
    with pytest.raises(MissingVariableError, match="'y'"):
        g(torch.ones(2))
    with pytest.raises(UnknownVariableError, match=r"'yy' is not a variable.*did you mean 'y'"):
        g(torch.ones(2), y=1.0, yy=2.0)
    with pytest.raises(InputError, match="given twice"):
        g(torch.ones(2), 1.0, x=2.0)
    with pytest.raises(InputError, match="takes 2 values"):
        g(1.0, 2.0, 3.0)
    with pytest.raises(InputError, match=r"'x' of shape \(2,\), 'y' of shape \(3,\)"):
        g(torch.ones(2), torch.ones(3))


def test_a_function_and_a_formula_string_are_the_same_operation() -> None:
    f = symgrad.compile("x**2*y")
    x, y = _points()
    torch.testing.assert_close(symgrad.torch.function(f)(x, y), symgrad.torch.function("x**2*y")(x, y))
    assert symgrad.torch.function(f).function is f and symgrad.torch.function(f).variables == ("x", "y")


def test_the_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(symgrad.torch, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
