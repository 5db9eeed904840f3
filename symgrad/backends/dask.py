"""dask arrays in a point: lazy, chunk-by-chunk evaluation through the Function's own array path.

When any value of a point is a dask array, ``f(...)`` and ``f.value_and_grad(...)``
return lazy dask arrays instead of numbers.  Nothing here knows how a tape is
evaluated: each chunk is handed to the function's public array call
(``f.value_and_grad(*numpy_blocks)``), which broadcasts like numpy and returns
each partial in its input's (block) shape.  This module only arranges the
chunks:

* one ``blockwise`` task per output chunk calls the function on the matching
  blocks of the inputs (dask aligns chunks of inputs that broadcast against
  each other, rechunking as it does for ``x + y``); numpy arrays and numbers in
  the point are shipped with the tasks;
* the value is that task's first result, chunked like the broadcast output;
* the partial of an input that is not broadcast is chunked like the input;
  the partial of an input that *was* broadcast (a number, a shorter array, a
  length-1 axis) comes out of each task summed over the chunk, and those
  per-chunk sums are tree-reduced (``Array.sum``, a ``da.reduction``) to the
  input's shape: the same shapes as the numpy path, the same numbers up to
  the order of the additions.  Inputs broadcast along every axis (the usual
  parameters) share one small stacked array per task and one reduction;
* only the partials ``wrt`` asks for are computed.

Domain errors follow the numpy path: nan or inf plus a ``RuntimeWarning``,
raised where the chunk runs (in a worker's log on a cluster).  ``np.errstate``
is per thread, so the caller's settings do not reach the workers.

The function travels to workers by pickle (by its tape, see
:class:`~symgrad.function.Function`); each process keeps the functions it has unpickled
for chunk tasks, keyed by a digest, so generated code is compiled once per
process, not once per chunk.

dask itself is imported only when a dask array is seen: it is an optional
dependency (``pip install 'symgrad[dask]'``).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import InputError, UnknownVariableError

__all__ = ["ArrayFunction", "checked", "compute", "forward", "is_dask", "value_and_grad"]

_FLOAT_META = np.float64


class ArrayFunction(Protocol):
    """What this module needs of a :class:`~symgrad.function.Function` (its public calls)."""

    @property
    def variables(self) -> tuple[str, ...]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def value_and_grad(self, *args: Any, wrt: Any = None, **kwargs: Any) -> tuple[Any, Any]: ...


def is_dask(value: Any) -> bool:
    """True for any dask collection (the dask protocol's marker); dask itself is not imported."""
    return hasattr(value, "__dask_graph__")


def checked(name: str, value: Any) -> Any:
    """A dask array of real numbers, as given; raises InputError for anything else dask makes."""
    dtype = getattr(value, "dtype", None)
    if not hasattr(value, "chunks") or not isinstance(dtype, np.dtype):
        raise InputError(
            f"value for '{name}' is a dask {type(value).__name__}; only dask arrays can be evaluated "
            f"(a dask dataframe column converts with .to_dask_array(lengths=True))"
        )
    if dtype.kind not in "fiu":
        raise InputError(f"value for '{name}' must be a dask array of real numbers, got a dask array of dtype {dtype}")
    return value


def compute(*collections: Any) -> tuple[Any, ...]:
    """``dask.compute``: one pass over the data for all of them, on whatever scheduler is active."""
    import dask.base

    computed: tuple[Any, ...] = dask.base.compute(*collections)  # type: ignore[no-untyped-call]
    return computed


def forward(function: ArrayFunction, point: Sequence[Any]) -> Any:
    """The value as a lazy dask array of the broadcast shape."""
    plan = _Plan(function, point)
    return plan.blockwise(_Kernel.for_function(function, plan.ndims, None), np.empty((0,) * plan.ndim))


def value_and_grad(function: ArrayFunction, point: Sequence[Any], wrt: Any = None) -> tuple[Any, Any]:
    """The value and the partials ``wrt`` asks for, lazy, shaped as the function's own call returns them.

    Each partial has its input's shape (broadcast inputs summed); like the
    public call, one variable or a ``wrt`` string gives the partial itself,
    otherwise a dict by name.  Only the partials asked for are computed.
    """
    names = _requested(function, wrt)
    plan = _Plan(function, point)
    index = {name: i for i, name in enumerate(function.variables)}
    # Inputs broadcast along every axis (parameters, typically) travel stacked: one small array per task.
    stacked = tuple(n for n in names if len(plan.broadcast_axes(index[n])) == plan.ndim)
    stacked_names = set(stacked)
    shaped = tuple(n for n in names if n not in stacked_names)
    kernel = _Kernel.for_function(function, plan.ndims, (shaped, stacked))
    results = plan.blockwise(kernel, np.empty((0,) * plan.ndim, dtype=object))
    meta = np.empty((0,) * plan.ndim)
    value = results.map_blocks(_pick, 0, dtype=_FLOAT_META, meta=meta, token="symgrad-value")
    partials = {name: plan.partial(results, 1 + k, index[name], meta) for k, name in enumerate(shaped)}
    if stacked:
        sums = plan.stacked_sums(results, len(stacked))
        for k, name in enumerate(stacked):
            partials[name] = sums[k].reshape(plan.shapes[index[name]])
    partials = {name: partials[name] for name in names}
    if isinstance(wrt, str) or (wrt is None and len(names) == 1):
        return value, partials[names[0]]
    return value, partials


def _requested(function: ArrayFunction, wrt: Any) -> tuple[str, ...]:
    """The names ``wrt`` asks for, in the order the result lists them; unknown names are an error."""
    names = function.variables if wrt is None else (wrt,) if isinstance(wrt, str) else tuple(wrt)
    known = set(function.variables)  # a set: a function of 10,000 variables is checked in linear time
    for name in names:
        if name not in known:
            listed = ", ".join(function.variables) if function.variables else "(none)"
            raise UnknownVariableError(
                f"cannot differentiate with respect to '{name}': it is not a variable; its variables are {listed}"
            )
    return names


class _Plan:
    """How the inputs of one point line up: their block indices and the output's dimensions."""

    def __init__(self, function: ArrayFunction, point: Sequence[Any]) -> None:
        self.names = function.variables
        self.point = list(point)
        # None for a value shipped whole with each task (a number or a 0-d array), else its ndim
        self.ndims: tuple[int | None, ...] = tuple(
            None if not is_dask(v) and np.ndim(v) == 0 else int(np.ndim(v)) for v in self.point
        )
        self.shapes = [
            tuple(np.shape(v)) if nd is not None else () for v, nd in zip(self.point, self.ndims, strict=True)
        ]
        self.ndim = max((nd for nd in self.ndims if nd is not None), default=0)
        self._check_shapes()

    def _check_shapes(self) -> None:
        blocked = [i for i, nd in enumerate(self.ndims) if nd is not None]
        unknown = [i for i in blocked if any(math.isnan(n) for n in self.shapes[i])]
        if unknown and len(blocked) > 1:
            name = self.names[unknown[0]]
            raise InputError(
                f"value for '{name}' is a dask array of unknown chunk sizes {self.shapes[unknown[0]]}, so its "
                f"chunks cannot be aligned with the other arrays; call {name}.compute_chunk_sizes() first"
            )
        try:
            np.broadcast_shapes(*(self.shapes[i] for i in blocked if i not in unknown))
        except ValueError:
            listed = ", ".join(f"'{self.names[i]}' {self.shapes[i]}" for i in blocked)
            raise InputError(f"the arrays of the point do not broadcast against each other: {listed}") from None

    def index(self, i: int) -> tuple[int, ...] | None:
        nd = self.ndims[i]
        return None if nd is None else tuple(range(self.ndim - nd, self.ndim))

    def blockwise(self, kernel: _Kernel, meta: Any) -> Any:
        import dask.array as da

        blockwise: Any = da.blockwise
        # The numbers travel as one array: dask's graph building is quadratic in the arguments of a task
        # (a function of 10,000 parameters took minutes).
        numbers = [float(v) for v, nd in zip(self.point, self.ndims, strict=True) if nd is None]
        args: list[Any] = [np.array(numbers, dtype=np.float64), None]
        for i, value in enumerate(self.point):
            if self.ndims[i] is not None:
                args += [value, self.index(i)]
        try:
            return blockwise(kernel, tuple(range(self.ndim)), *args, meta=meta, token="symgrad-chunk")
        except ValueError as error:  # chunks that dask cannot align: say which inputs
            listed = ", ".join(
                f"'{name}' chunks {getattr(v, 'chunks', None)}"
                for name, v in zip(self.names, self.point, strict=True)
                if is_dask(v)
            )
            raise InputError(f"the dask arrays of the point cannot be aligned ({error}): {listed}") from None

    def broadcast_axes(self, i: int) -> tuple[int, ...]:
        """The output axes along which input ``i`` was broadcast (missing, or of length 1)."""
        nd = self.ndims[i] or 0
        lead = self.ndim - nd
        return tuple(j for j in range(self.ndim) if j < lead or self.shapes[i][j - lead] == 1)

    def partial(self, results: Any, k: int, i: int, meta: Any) -> Any:
        """Input ``i``'s partial: result ``k`` of each task, summed over the chunks it was broadcast across."""
        axes = self.broadcast_axes(i)
        chunks = tuple((1,) * len(c) if j in axes else c for j, c in enumerate(results.chunks))
        blocks = results.map_blocks(_pick, k, chunks=chunks, dtype=_FLOAT_META, meta=meta, token="symgrad-partial")
        summed = tuple(j for j in axes if len(chunks[j]) > 1)
        if summed:
            blocks = blocks.sum(axis=summed, keepdims=True)
        lead = self.ndim - (self.ndims[i] or 0)
        return blocks[(0,) * lead] if lead else blocks

    def stacked_sums(self, results: Any, m: int) -> Any:
        """The stacked per-task partials (``m`` of them), summed over all tasks by one tree reduction."""
        chunks = (*((1,) * len(c) for c in results.chunks), (m,))
        blocks = results.map_blocks(
            _pick_stacked,
            chunks=chunks,
            new_axis=self.ndim,
            dtype=_FLOAT_META,
            meta=np.empty((0,) * (self.ndim + 1)),
            token="symgrad-partials",
        )
        return blocks.sum(axis=tuple(range(self.ndim)))


def _pick(results: tuple[Any, list[Any], Any], k: int) -> Any:
    """The value (``k == 0``) or the ``k``-th shaped partial of one task's results."""
    return results[0] if k == 0 else results[1][k - 1]


def _pick_stacked(results: tuple[Any, list[Any], Any]) -> Any:
    """One task's stacked partials of the inputs broadcast along every axis."""
    return results[2]


# Functions unpickled for chunk tasks, per process, by digest: compiled once per process, not per chunk.
_KERNELS: OrderedDict[str, _Kernel] = OrderedDict()
_KERNELS_LOCK = threading.Lock()
_KERNELS_KEPT = 16


def _kernel(token: str, function: ArrayFunction, ndims: tuple[int | None, ...], wrt: _Wrt | None) -> _Kernel:
    """Unpickling side: the kernel this process already has under ``token``, else this one, remembered."""
    with _KERNELS_LOCK:
        kernel = _KERNELS.get(token)
        if kernel is None:
            kernel = _KERNELS[token] = _Kernel(token, function, ndims, wrt)
            while len(_KERNELS) > _KERNELS_KEPT:
                _KERNELS.popitem(last=False)
        else:
            _KERNELS.move_to_end(token)
        return kernel


_Wrt = tuple[tuple[str, ...], tuple[str, ...]]
"""The partials a chunk task returns: those kept in their block's shape, and those stacked."""


class _Kernel:
    """One chunk task: the function's own numpy call on the blocks, results shaped for dask.

    ``wrt`` None: the value only; else ``(shaped, stacked)`` names and the task
    returns ``(value, [partial per shaped name], array of the stacked partials)``.
    """

    def __init__(self, token: str, function: ArrayFunction, ndims: tuple[int | None, ...], wrt: _Wrt | None) -> None:
        self.token = token
        self.function = function
        self.ndims = ndims
        self.wrt = wrt
        self.ndim = max((nd for nd in ndims if nd is not None), default=0)

    @classmethod
    def for_function(cls, function: ArrayFunction, ndims: tuple[int | None, ...], wrt: _Wrt | None) -> _Kernel:
        digest = hashlib.sha256(pickle.dumps((function, ndims, wrt))).hexdigest()
        return cls(f"symgrad-{digest[:32]}", function, ndims, wrt)

    def __reduce__(self) -> tuple[Any, ...]:
        return _kernel, (self.token, self.function, self.ndims, self.wrt)

    def __dask_tokenize__(self) -> str:
        return self.token

    def __call__(self, numbers: Any, *blocks: Any) -> Any:
        """One task: ``numbers`` holds the point's numbers in order, ``blocks`` the blocks of its arrays."""
        taken, arrays = iter(numbers), iter(blocks)
        point = [next(taken) if nd is None else np.asarray(next(arrays), dtype=np.float64) for nd in self.ndims]
        shape = np.broadcast_shapes(*(np.shape(b) for b in point))
        if self.wrt is None:
            return _filled(self.function(*point), shape)
        shaped, stacked = self.wrt
        value, grads = self.function.value_and_grad(*point, wrt=[*shaped, *stacked])  # a list: always a dict back
        partials = []
        for name in shaped:
            g = np.asarray(grads[name], dtype=np.float64)
            partials.append(g.reshape((1,) * (self.ndim - g.ndim) + g.shape))
        sums = np.array([np.asarray(grads[name], dtype=np.float64).reshape(()) for name in stacked])
        return _filled(value, shape), partials, sums.reshape((1,) * self.ndim + (len(stacked),))


def _filled(value: Any, shape: tuple[int, ...]) -> Any:
    """The value block in the block's broadcast shape (a formula may not depend on every input)."""
    value = np.asarray(value, dtype=np.float64)
    return value if value.shape == shape else np.broadcast_to(value, shape)
