"""A symgrad formula as a differentiable PyTorch operation: ``symgrad.torch.function(f)``.

``import symgrad.torch`` (PyTorch is an optional extra: ``pip install 'symgrad[torch]'``;
``import symgrad`` alone never imports it).  The module is named after what it adapts to, so the
public name reads ``symgrad.torch.function``; inside it ``import torch`` is the PyTorch package
(imports are absolute), and this module imports nothing from PyTorch under its own name.

The forward pass evaluates the formula on the tensors' values with symgrad's array path (float64,
broadcasting like numpy, so like PyTorch); the backward pass evaluates the gradient tape and
multiplies by the incoming gradient, summed to each input's shape.  The backward pass is itself
a differentiable operation whose backward evaluates the Hessian tape, and so on
(:class:`~symgrad.interop.Derivatives`): ``create_graph=True``, ``gradgradcheck`` and
``torch.autograd.functional.hessian`` work to any order.  When the forward pass already knows a
gradient will be wanted (an input requires grad), it evaluates the gradient tape at once (value
and partials in one evaluation) and the backward pass reuses those partials.

Precision: symgrad computes in float64 whatever the tensors' dtype; results are cast to the inputs'
floating dtype (float32 in, float32 out: one rounding at the end).  Tensors must be real and on the
CPU; anything else is an :class:`~symgrad.errors.InputError` before any computation.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .api import compile
from .errors import InputError, MissingDependencyError, short_repr
from .function import Function
from .interop import Derivatives, bind_arguments, broadcast_shape, evaluate

try:
    import torch
except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
    raise MissingDependencyError(
        "symgrad.torch needs PyTorch: pip install 'symgrad[torch]' (or a PyTorch build of your choice)"
    ) from None

__all__ = ["TorchFunction", "function"]

_FIXED = 4
"""Arguments of :class:`_Apply` before the tensors: derivatives, level, known outputs, dtype."""


def function(f: str | Sequence[str] | Function) -> TorchFunction:
    """``f`` (a formula, a list of formulas, or a Function) as a differentiable PyTorch operation.

    >>> import torch, symgrad.torch
    >>> g = symgrad.torch.function("x*sin(y)")
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> g(x, y=torch.tensor(0.5)).sum().backward()
    >>> x.grad
    tensor([0.4794, 0.4794])
    """
    return TorchFunction(compile(f))


class TorchFunction:
    """A symgrad Function called on tensors: ``g(x, y)`` or ``g(x=..., y=...)`` returns a tensor.

    Arguments are tensors or real numbers, one per variable of the formula (positionally in
    :attr:`variables` order, or by name); they broadcast together like PyTorch's operations.
    A formula list gives a tuple of tensors.
    """

    __slots__ = ("derivatives", "function", "variables")

    def __init__(self, f: Function) -> None:
        self.function = f
        """The symgrad Function evaluated."""
        self.variables: tuple[str, ...] = f.variables
        """The argument order."""
        self.derivatives = Derivatives(f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        what = f"symgrad.torch.function({self.function._describe()})"
        values = bind_arguments(self.function, args, kwargs, what)
        tensors = [_tensor(name, v) for name, v in zip(self.variables, values, strict=True)]
        broadcast_shape(self.variables, [tuple(t.shape) for t in tensors])
        dtype = _result_dtype([v for v in values if isinstance(v, torch.Tensor)])
        outputs = _Apply.apply(self.derivatives, 0, None, dtype, *tensors)  # type: ignore[no-untyped-call]
        return outputs[0] if self.function.n_outputs == 1 else outputs

    def __repr__(self) -> str:
        return f"symgrad.torch.function({self.function._describe()})"


def _tensor(name: str, value: Any) -> torch.Tensor:
    """A checked tensor for one argument: real, strided, on the CPU; a number becomes a float64 0-d tensor."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise InputError(
                f"value for '{name}' is a tensor on {value.device}: symgrad computes on the CPU, "
                f"so pass {name}.cpu() (and move the result back)"
            )
        if value.layout != torch.strided:
            raise InputError(f"value for '{name}' is a {value.layout} tensor: pass a dense one ({name}.to_dense())")
        if value.is_complex() or value.dtype == torch.bool:
            raise InputError(f"value for '{name}' must be a tensor of real numbers, got dtype {value.dtype}")
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    raise InputError(
        f"value for '{name}' must be a tensor or a real number, got {type(value).__name__} {short_repr(value)}"
    )


def _result_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The result's dtype by PyTorch's promotion: the floating tensors with dimensions decide, else the
    floating 0-d ones, else PyTorch's default float dtype (numbers and integer tensors never decide)."""
    for group in ([t for t in tensors if t.dim()], [t for t in tensors if not t.dim()]):
        floating = [t.dtype for t in group if t.is_floating_point()]
        if floating:
            dtype = floating[0]
            for other in floating[1:]:
                dtype = torch.promote_types(dtype, other)
            return dtype
    return torch.get_default_dtype()


class _Apply(torch.autograd.Function):
    """Level ``level`` of the derivatives at the tensors, as an autograd node whose backward is level + 1.

    ``known``: outputs already computed (the partials the forward pass of level 0 evaluated with
    the value), used instead of evaluating again.
    """

    @staticmethod
    def forward(
        ctx: Any,
        derivatives: Derivatives,
        level: int,
        known: list[np.ndarray] | None,
        dtype: torch.dtype,
        *inputs: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        point = _float64(inputs)
        following = None
        if known is not None:
            outputs = known
        else:
            both = derivatives.value_and_gradient() if level == 0 and any(ctx.needs_input_grad[_FIXED:]) else None
            if both is not None:
                value, *following = evaluate(both, point)
                outputs = [value]
            else:
                outputs = evaluate(derivatives.level(level), point)
        ctx.save_for_backward(*inputs)
        ctx.derivatives, ctx.level, ctx.following, ctx.dtype = derivatives, level, following, dtype
        return tuple(torch.from_numpy(o).to(dtype) for o in outputs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs: tuple[torch.Tensor, ...] = ctx.saved_tensors
        n = len(inputs)
        known, ctx.following = ctx.following, None  # (a second backward with retain_graph evaluates again)
        if torch.is_grad_enabled():  # create_graph=True: the partials must be differentiable themselves
            jacobian = _Apply.apply(ctx.derivatives, ctx.level + 1, known, ctx.dtype, *inputs)  # type: ignore[no-untyped-call]
        else:  # a plain backward: numbers, without a graph node of their own
            if known is None:
                known = evaluate(ctx.derivatives.level(ctx.level + 1), _float64(inputs))
            jacobian = [torch.from_numpy(o).to(ctx.dtype) for o in known]
        result: list[torch.Tensor | None] = [None] * _FIXED
        for j, t in enumerate(inputs):
            if not ctx.needs_input_grad[_FIXED + j]:
                result.append(None)
                continue
            total = grads[0] * jacobian[j]
            for k in range(1, len(grads)):
                total = total + grads[k] * jacobian[k * n + j]
            if total.shape != t.shape:
                total = total.sum_to_size(t.shape)
            result.append(total.to(t.dtype))
        return tuple(result)


def _float64(tensors: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The tensors' values as float64 numpy arrays (shared with the tensor when it is float64 already)."""
    return [t.detach().to(torch.float64).numpy() for t in tensors]
