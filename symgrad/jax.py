"""A symgrad formula as a JAX function with exact derivative rules: ``symgrad.jax.function(f)``.

``import symgrad.jax`` (JAX is an optional extra: ``pip install 'symgrad[jax]'``; ``import
symgrad`` alone never imports it).  Inside this module ``import jax`` is the JAX package
(imports are absolute).

Each derivative level of the formula (:class:`~symgrad.interop.Derivatives`: the value, the
gradient tape, the Hessian tape, …) runs on the host through :func:`jax.pure_callback`, so it
works under ``jit`` (a compiled program calls back into Python), and ``vmap``
(``vmap_method="expand_dims"``: symgrad's array path broadcasts, so a batch is one call).  A level
is a :func:`jax.custom_jvp` function whose JVP rule contracts the next level (the Jacobian, per
point) with the tangents in ``jax.numpy``.  That contraction is linear in the tangents and made of
JAX's own operations, so JAX can transpose it: ``grad``, ``vjp`` and ``jacrev`` work, not only
forward mode, and differentiating the rule again reaches the next level (``jax.hessian`` uses the
Hessian tape).  symgrad's forward-mode tape (``f.jvp_function()``) would compute a JVP in one
evaluation, but as a callback it would be opaque to JAX's transposition, so reverse mode could
not use it; the Jacobian tape contracted in JAX serves both modes.  For one output, the first
derivative evaluates the value and the gradient together (one callback: the gradient tape).

Precision: symgrad computes in float64; results are cast to the arguments' floating dtype
(float32 unless ``jax_enable_x64`` is on).  Arguments must be real.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .api import compile
from .errors import InputError, MissingDependencyError, short_repr
from .function import Function
from .interop import Derivatives, bind_arguments, broadcast_shape, evaluate

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
    raise MissingDependencyError("symgrad.jax needs JAX: pip install 'symgrad[jax]' (or pip install jax)") from None

__all__ = ["JaxFunction", "function"]


def function(f: str | Sequence[str] | Function) -> JaxFunction:
    """``f`` (a formula, a list of formulas, or a Function) as a JAX function with exact derivatives.

    >>> import jax, jax.numpy as jnp, symgrad.jax
    >>> g = symgrad.jax.function("x*sin(y)")
    >>> round(float(jax.grad(lambda x: g(x, 0.5))(1.0)), 6)  # sin(0.5)
    0.479426
    """
    return JaxFunction(compile(f))


class JaxFunction:
    """A symgrad Function called on JAX arrays: ``g(x, y)`` or ``g(x=..., y=...)`` returns an array.

    Arguments are arrays or real numbers, one per variable of the formula (positionally in
    :attr:`variables` order, or by name); they broadcast together like ``jax.numpy``'s
    operations.  A formula list gives a tuple of arrays.
    """

    __slots__ = ("__weakref__", "_levels", "_value_and_gradient", "derivatives", "function", "variables")

    def __init__(self, f: Function) -> None:
        self.function = f
        """The symgrad Function evaluated."""
        self.variables: tuple[str, ...] = f.variables
        """The argument order."""
        self.derivatives = Derivatives(f)
        self._levels: dict[int, Callable[..., tuple[Any, ...]]] = {}
        self._value_and_gradient: Callable[..., tuple[Any, ...]] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        what = repr(self)
        values = bind_arguments(self.function, args, kwargs, what)
        arrays = [_array(name, v) for name, v in zip(self.variables, values, strict=True)]
        broadcast_shape(self.variables, [tuple(a.shape) for a in arrays])
        floating = [a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
        dtype = jnp.result_type(*floating) if floating else jnp.result_type(float)
        # One rank for all, leading axes of 1 (free: a reshape): under vmap every argument's batch axis is
        # then the same leading axis, and numpy's broadcasting in the callback lines the points up.
        rank = max((a.ndim for a in arrays), default=0)
        arrays = [jnp.reshape(a.astype(dtype), (1,) * (rank - a.ndim) + a.shape) for a in arrays]
        outputs = self._level(0)(*arrays)
        return outputs[0] if self.function.n_outputs == 1 else outputs

    def __repr__(self) -> str:
        return f"symgrad.jax.function({self.function._describe()})"

    def _level(self, k: int) -> Callable[..., tuple[Any, ...]]:
        """Level k as a custom_jvp function whose JVP rule uses level k + 1."""
        fn = self._levels.get(k)
        if fn is None:
            fn = self._levels[k] = jax.custom_jvp(_host(self.derivatives.level(k)))

            def rule(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
                both = self._both() if k == 0 else None
                if both is not None:  # value and gradient: one evaluation of the gradient tape
                    value, *jacobian = both(*primals)
                    outputs: tuple[Any, ...] = (value,)
                else:
                    outputs, jacobian = fn(*primals), list(self._level(k + 1)(*primals))
                return outputs, _contract(jacobian, tangents, outputs)

            fn.defjvp(rule)
        return fn

    def _both(self) -> Callable[..., tuple[Any, ...]] | None:
        """Levels 0 and 1 in one callback (one output only), differentiable through level 2."""
        if self._value_and_gradient is None:
            tape = self.derivatives.value_and_gradient()
            if tape is None:
                return None
            both = self._value_and_gradient = jax.custom_jvp(_host(tape))

            def rule(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
                value, *gradient = outputs = both(*primals)
                hessian = list(self._level(2)(*primals))
                dvalue = _contract(gradient, tangents, (value,))
                dgradient = _contract(hessian, tangents, tuple(gradient))
                return outputs, (*dvalue, *dgradient)

            both.defjvp(rule)
        return self._value_and_gradient


def _host(fn: Function) -> Callable[..., tuple[Any, ...]]:
    """``fn`` on the host through pure_callback: float64 inside, the arguments' dtype outside.

    One host function per dtype, made once: JAX caches what it compiles by the callback it is
    given, so a new closure per call would compile again at every eager call.
    """
    on_host_by_dtype: dict[Any, Callable[..., tuple[np.ndarray, ...]]] = {}

    def on_host_for(dtype: Any) -> Callable[..., tuple[np.ndarray, ...]]:
        on_host = on_host_by_dtype.get(dtype)
        if on_host is None:

            def on_host(*arrays: Any) -> tuple[np.ndarray, ...]:
                outputs = evaluate(fn, [np.asarray(a, dtype=np.float64) for a in arrays])
                return tuple(o.astype(dtype, copy=False) for o in outputs)

            on_host_by_dtype[dtype] = on_host
        return on_host

    def call(*xs: Any) -> tuple[Any, ...]:
        shape = jnp.broadcast_shapes(*(x.shape for x in xs)) if xs else ()
        dtype = xs[0].dtype if xs else jnp.result_type(float)
        spec = tuple(jax.ShapeDtypeStruct(shape, dtype) for _ in range(fn.n_outputs))  # type: ignore[no-untyped-call]
        return tuple(jax.pure_callback(on_host_for(dtype), spec, *xs, vmap_method="expand_dims"))

    return call


def _contract(jacobian: Sequence[Any], tangents: tuple[Any, ...], outputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Σⱼ ∂(output i)/∂(variable j) · tangent j per output, pointwise (a formula is elementwise)."""
    n = len(tangents)
    result = []
    for i, out in enumerate(outputs):
        total = jnp.zeros_like(out)
        for j, t in enumerate(tangents):
            total = total + jacobian[i * n + j] * t
        result.append(total)
    return tuple(result)


def _array(name: str, value: Any) -> Any:
    """A checked array for one argument: real numbers only."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return jnp.asarray(float(value))
    if isinstance(value, (jax.Array, np.ndarray)) or hasattr(value, "aval"):
        dtype = value.dtype
        if jnp.issubdtype(dtype, jnp.complexfloating) or dtype == jnp.bool_ or not jnp.issubdtype(dtype, jnp.number):
            raise InputError(f"value for '{name}' must be an array of real numbers, got dtype {dtype}")
        return jnp.asarray(value)
    raise InputError(
        f"value for '{name}' must be an array or a real number, got {type(value).__name__} {short_repr(value)}"
    )
