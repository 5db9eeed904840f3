"""The micrograd-style front end: ``Value`` objects that record onto symgrad's tape.

Building an expression from :class:`Value` objects with Python operators
computes each forward value at once (with the op table's ``scalar`` column) and
remembers, per ``Value``, its op-table :class:`~symgrad.ops.Op`, its argument
Values (in order, duplicates kept, so ``a*a`` is right) and a creation number.
Nothing else is stored and nothing global holds the graph: it lives exactly as
long as the Values that reference it.

``backward()`` finds the Values the graph reaches (an iterative walk, so a
100,000-deep chain works) and sorts them by creation number, a topological
order; then it runs the reverse sweep over them with the op table's partials
and adds each adjoint to ``.grad``.  :func:`linearise` turns the same graph
into the :class:`~symgrad.tape.Tape` the string front end produces (``.tape``,
``trace``, drawing), with its records in that same order, so the interpreter's
sweep over that tape gives the same numbers bit for bit.  There is no second
set of derivative rules.

Every operator emits the op of the same name: ``-`` is ``sub`` (not ``add`` of
``neg``) and ``/`` is ``div``, so ``a*b + c`` through Values and through
``symgrad.compile("a*b + c")`` give tapes with the same records.
"""

from __future__ import annotations

import itertools
import math
import numbers
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from . import display
from . import explain as explain_mod
from .backends import interpreter
from .errors import DomainError, InputError, short_repr
from .explain import Explanation, local_partials
from .ops import ON_REGISTER, ON_UNREGISTER, OPS, Op, domain_message
from .rules import scalar_partials
from .tape import Instr, Tape

if TYPE_CHECKING:
    import graphviz

__all__ = ["Number", "Value", "linearise"]

Number = float | int
"""A plain Python number; it becomes a constant leaf when mixed with Values."""


class Value:
    """A scalar with a gradient, micrograd's way.

    >>> a = Value(2.0, label="a"); b = Value(-3.0, label="b")
    >>> L = a * b + 10
    >>> L.backward()
    >>> a.grad, b.grad
    (-3.0, 2.0)
    >>> Value(4.0)
    Value(data=4.0, grad=0.0)
    """

    __slots__ = ("__weakref__", "_args", "_mark", "_n", "_need", "_opr", "_slot", "data", "grad", "label")

    data: float
    grad: float
    label: str
    _opr: Op | None
    _args: tuple[Value, ...]
    _need: bool  # depends on a leaf that is not a constant: only then does its adjoint matter
    _n: int  # creation number (see _SERIAL)
    _mark: object  # scratch space for the graph walks
    _slot: int  # scratch space for linearise() and backward()

    def __init__(self, data: Number, label: str = "") -> None:
        self.data = _real(data, "Value() data")
        self.grad = 0.0
        self.label = label
        self._opr = None
        self._args = ()
        self._need = True
        self._mark = None
        self._n = next(_SERIAL)

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickling and ``copy.deepcopy``: the saved slots, and a new creation number.

        Both rebuild a Value's arguments before the Value itself, so taking
        the next number here keeps numbers increasing along every edge in
        this process (a number from another process would not).
        """
        for name, value in state[1].items():
            setattr(self, name, value)
        self._mark = None
        self._n = next(_SERIAL)

    # -- structure (read-only views for printing and drawing) ---------------
    @property
    def op(self) -> Op | None:
        """The op-table row that made this Value, or None for a leaf."""
        return self._opr

    @property
    def args(self) -> tuple[Value, ...]:
        """The argument Values of ``op``, in order (empty for a leaf)."""
        return self._args

    @property
    def is_constant(self) -> bool:
        """True for the leaves made from plain numbers (``a * 2`` makes one)."""
        return self._opr is None and not self._need

    @property
    def tape(self) -> Tape:
        """The graph that ends at this Value, as a symgrad :class:`Tape`."""
        return linearise(self)[0]

    def __repr__(self) -> str:
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    # -- micrograd's private names, so the lecture's own helpers run unchanged --
    @property
    def _prev(self) -> set[Value]:
        """micrograd's ``_prev``: the set of argument Values (``a*a`` has one)."""
        return set(self._args)

    @property
    def _op(self) -> str:
        """micrograd's ``_op``: the op's symbol (``"+"``, ``"*"``, ``"tanh"``), ``""`` for a leaf."""
        return self._opr.symbol if self._opr is not None else ""

    @property
    def _backward(self) -> Callable[[], None]:
        """micrograd's ``_backward``: one local step of the chain rule, by hand.

        Calling it adds ``self.grad * ∂self/∂arg`` to each argument's ``grad``
        (twice for ``a + a``), with the partials of the op table, exactly
        what the lecture does node by node before it automates the loop.
        """
        op = self._opr
        if op is None:
            return _leaf_backward
        node = self

        def step() -> None:
            args = node._args
            data = [a.data for a in args]
            try:
                partials = local_partials(op, node.data, data)
            except (ArithmeticError, ValueError) as e:
                raise DomainError(domain_message(op, data, e, derivative_of=op), op.name) from None
            for arg, partial in zip(args, partials, strict=True):
                arg.grad += node.grad * partial

        return step

    # -- display ---------------------------------------------------------------
    def explain(
        self, *, reverse: bool | None = None, max_rows: int | None = explain_mod.DEFAULT_MAX_ROWS
    ) -> Explanation:
        """The sweeps over this Value's graph, slot by slot (see :mod:`symgrad.explain`).

        The forward values are the ``data`` the Values already hold.  The
        reverse sweep (adjoints, local partials, each contribution) is shown
        once ``backward()`` has run, i.e. when ``self.grad`` is nonzero, or
        when ``reverse=True``.
        """
        tape, nodes = linearise(self)
        labels = {slot: node.label for slot, node in enumerate(nodes) if node.label}
        run_reverse = self.grad != 0.0 if reverse is None else reverse
        title = f"the graph of {self.label}" if self.label else "a Value graph"
        return explain_mod.explain_tape(
            tape,
            values=[node.data for node in nodes],
            reverse=run_reverse,
            labels=labels,
            title=title,
            max_rows=max_rows,
        )

    def _repr_html_(self) -> str:
        """Jupyter: label, data, grad and op in a one-row table."""
        op = "constant" if self.is_constant else "leaf" if self._opr is None else self._opr.symbol
        return display.html_table(["Value", "data", "grad", "op"], [[self.label, repr(self.data), repr(self.grad), op]])

    # -- differentiation -----------------------------------------------------
    def backward(self) -> None:
        """Add ∂self/∂v to ``v.grad`` for every Value ``v`` in the graph.

        Accumulates (``+=``), as micrograd does, so calling it twice doubles
        every gradient (this Value's own ``grad`` included) until you zero
        them.  The reverse sweep uses the ``data`` each Value got when it was
        built.
        """
        with _LINEARISING:  # one graph walk at a time; the += below is not atomic either
            order = _reachable(self)
            steps, spread, values = _plan(order)
            adjoint = [0.0] * len(order)
            adjoint[self._slot] = 1.0
            bad = interpreter.sweep(steps, spread, values, adjoint)
            if bad >= 0:
                node = order[bad]
                assert node._opr is not None
                raise interpreter.derivative_error(node._opr, [x.data for x in node._args]) from None
            for node, g in zip(order, adjoint, strict=True):
                node.grad += g

    def draw(self, *, rankdir: str = "LR") -> graphviz.Digraph:
        """The graph that ends at this Value, drawn with each node's ``data`` and ``grad``.

        Shows the ``grad`` values as they are now (call :meth:`backward`
        first); constants show no grad.  Returns a ``graphviz.Digraph``.
        """
        from .drawing import draw_tape  # deferred: drawing is optional at import time

        tape, nodes = linearise(self)
        labels = {slot: node.label for slot, node in enumerate(nodes) if node.label}
        n_inputs = tape.n_inputs
        grads = [None if n_inputs <= slot < tape.first_instr_slot else node.grad for slot, node in enumerate(nodes)]
        return draw_tape(tape, [node.data for node in nodes], grads, labels=labels, rankdir=rankdir)

    # -- operators (each emits the op-table op of the same name) ------------
    def __add__(self, other: Value | Number) -> Value:
        return _apply2(_ADD, self, _lift(other))

    def __radd__(self, other: Number) -> Value:
        return _apply2(_ADD, _lift(other), self)

    def __sub__(self, other: Value | Number) -> Value:
        return _apply2(_SUB, self, _lift(other))

    def __rsub__(self, other: Number) -> Value:
        return _apply2(_SUB, _lift(other), self)

    def __mul__(self, other: Value | Number) -> Value:
        return _apply2(_MUL, self, _lift(other))

    def __rmul__(self, other: Number) -> Value:
        return _apply2(_MUL, _lift(other), self)

    def __truediv__(self, other: Value | Number) -> Value:
        return _apply2(_DIV, self, _lift(other))

    def __rtruediv__(self, other: Number) -> Value:
        return _apply2(_DIV, _lift(other), self)

    def __pow__(self, other: Value | Number) -> Value:
        return _apply2(_POW, self, _lift(other))

    def __rpow__(self, other: Number) -> Value:
        return _apply2(_POW, _lift(other), self)

    def __neg__(self) -> Value:
        return _apply1(_NEG, self)

    def __pos__(self) -> Value:
        return self

    def __abs__(self) -> Value:
        return _apply1(_ABS, self)

    if TYPE_CHECKING:  # for type checkers only: at run time the methods are set on the class (below)

        def __getattr__(self, name: str) -> Callable[..., Value]:
            """``v.tanh()``, ``v.max(w)``, …: every op of the table is a method (see :func:`_method`)."""
            ...


def _method(op: Op) -> Callable[..., Value]:
    """``Value.<op.name>``: the op applied to self (and one more operand if binary, any more if variadic)."""
    if op.arity == 1:

        def unary(self: Value) -> Value:
            return _apply1(op, self)

        fn: Callable[..., Value] = unary
    elif op.variadic:

        def variadic(self: Value, *others: Value | Number) -> Value:
            if not op.takes(1 + len(others)):
                raise InputError(f"{op.name}() takes at least {op.arity} values, got {1 + len(others)}")
            return _apply(op, self, *map(_lift, others))

        fn = variadic
    else:

        def binary(self: Value, other: Value | Number) -> Value:
            return _apply2(op, self, _lift(other))

        fn = binary
    fn.__name__ = fn.__qualname__ = op.name
    fn.__doc__ = f"``{op.name}``: {op.doc}."
    return fn


# Methods are generated from the table: every op that is not spelled by an
# operator above gets one, now for the rows already there and through the table's
# hooks for rows registered later.  They are set on the class rather than found by
# a class ``__getattr__``: a class with ``__getattr__`` makes CPython 3.11 skip its
# fast path for every attribute read (``node.data``, ``node._args``), which cost
# about a fifth of an eager training step (measured on the moons step).
_OPERATOR_OPS = frozenset({"add", "sub", "mul", "div", "neg"})
_GENERATED: dict[str, Callable[..., Value]] = {}
"""The methods made by :func:`_add_method`, by name: :func:`_remove_method` deletes only these."""


def _add_method(op: Op) -> None:
    """Give ``Value`` a method for ``op``, unless an operator spells it or the name is taken
    (a row called ``backward`` or ``_x`` leaves those attributes alone)."""
    name = op.name
    if name in _OPERATOR_OPS or name.startswith("_") or name in Value.__dict__:
        return
    method = _GENERATED[name] = _method(op)
    setattr(Value, name, method)


def _remove_method(op: Op) -> None:
    """Take back the method of a row leaving the table, if :func:`_add_method` made it."""
    method = _GENERATED.get(op.name)
    if method is not None and Value.__dict__.get(op.name) is method:
        delattr(Value, op.name)
        del _GENERATED[op.name]


for _row in OPS.values():
    _add_method(_row)
ON_REGISTER.append(_add_method)
ON_UNREGISTER.append(_remove_method)

_ADD, _SUB, _MUL, _DIV, _POW, _NEG, _ABS = (OPS[n] for n in ("add", "sub", "mul", "div", "pow", "neg", "abs"))


def _leaf_backward() -> None:
    """A leaf's ``_backward``: nothing to pass on."""


def _made(data: float, op: Op | None, args: tuple[Value, ...], need: bool) -> Value:
    """A new Value, every slot set: the one place besides ``Value.__init__`` that lists them."""
    v = _new_value(Value)
    v.data = data
    v.grad = 0.0
    v.label = ""
    v._opr = op
    v._args = args
    v._need = need
    v._mark = None
    v._n = next(_SERIAL)
    return v


def _constant(data: float) -> Value:
    return _made(data, None, (), False)


def _lift(x: Value | Number | Any) -> Value:
    """A Value as is; a plain number as a constant leaf."""
    if isinstance(x, Value):
        return x
    if type(x) is float and x - x == 0.0:  # the common case (finite), before the slower checks below
        return _constant(x)
    if isinstance(x, Decimal):
        return _constant(_real(x, "a Value operand"))
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InputError(
            f"cannot combine a Value with {type(x).__name__} {short_repr(x)}; use a Value or a real number"
        )
    return _constant(_real(x, "a Value operand"))


def _real(x: object, what: str) -> float:
    """``x`` as an exact Python ``float`` (never a subclass); InputError unless a real number in float range.

    Whatever becomes a tape constant passes here, so generated code only ever
    prints the ``repr`` of a plain float, never text from a user's object.
    """
    if isinstance(x, Decimal):
        finite = x.is_finite()
        x = math.nan if x.is_snan() else float(x)
        if finite and math.isinf(x):  # (float() of a Decimal rounds to inf rather than raise)
            raise InputError(f"{what} is too large for a 64-bit float (largest about 1.8e308)")
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InputError(f"{what} must be a real number, got {type(x).__name__} {short_repr(x)}")
    try:
        number = float(x)  # float() of a float subclass is an exact float
    except OverflowError:
        raise InputError(f"{what} is too large for a 64-bit float (largest about 1.8e308)") from None
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must convert to float: {type(x).__name__}.__float__ failed ({e})") from None
    if number - number != 0.0:
        raise InputError(
            f"{what} is {number!r}: Values hold finite numbers (as formulas are evaluated at finite points)"
        )
    return number


# One applier per arity: building Values is the eager step's hot loop, and a
# list or a *args tuple per op cost about a tenth of it (measured).


def _apply1(op: Op, a: Value) -> Value:
    """A new Value: unary ``op`` applied to ``a``, forward value computed now."""
    try:
        data = op.scalar(a.data)
    except _CATCH as e:
        raise DomainError(domain_message(op, [a.data], e), op.name) from None
    if data - data != 0.0:
        _overflow(op, (a,))
    return _made(float(data), op, (a,), a._need)


def _apply2(op: Op, a: Value, b: Value) -> Value:
    """A new Value: binary ``op`` applied to ``a`` and ``b``, forward value computed now."""
    try:
        data = op.scalar(a.data, b.data)
    except _CATCH as e:
        raise DomainError(domain_message(op, [a.data, b.data], e), op.name) from None
    if data - data != 0.0:
        _overflow(op, (a, b))
    return _made(float(data), op, (a, b), a._need or b._need)


def _apply(op: Op, *args: Value) -> Value:
    """A new Value: ``op`` applied to any number of ``args`` (variadic ops), forward value computed now."""
    data = [a.data for a in args]
    try:
        result = op.scalar(*data)
    except _CATCH as e:
        raise DomainError(domain_message(op, data, e), op.name) from None
    if result - result != 0.0:
        _overflow(op, args)
    return _made(float(result), op, args, any(a._need for a in args))


def _overflow(op: Op, args: Sequence[Value]) -> None:
    """The DomainError for an inf or nan made from finite ``args`` (the interpreter's rule, and a traced
    replay's); from an inf or nan that was already there (a ``.data`` set by hand) it passes on."""
    data = [a.data for a in args]
    if all(v - v == 0.0 for v in data):
        raise DomainError(domain_message(op, data, None), op.name)


_new_value = object.__new__
_CATCH = (ArithmeticError, ValueError)
_SERIAL = itertools.count()
"""Every Value takes the next number when it is made.  Its arguments exist before it, so
increasing numbers are a topological order of any graph: a walk only has to find the Values
it reaches and sort them (half the cost of a post-order walk, measured on the moons step)."""


# ---------------------------------------------------------- graph walks ---


_LINEARISING = threading.Lock()
"""Held while a graph is walked: the walk marks the Values it visits, so two walks over
shared Values at once would read each other's marks (measured: 8 threads on one graph
raised TapeError or returned wrong gradients).  Uncontended, it costs well under 1%."""


def _reachable(root: Value) -> list[Value]:
    """Every Value the graph of ``root`` reaches, ``root`` included, in creation order.

    Iterative (graph depth is limited only by memory).  It marks the Values
    it visits (``_mark``, a fresh marker per call) instead of keeping a set
    keyed by ``id``: that is why walks take a lock (threads may share Values).
    A depth-first walk finds the Values in nearly reverse creation order,
    which the sort handles in a few passes.
    """
    seen = object()
    root._mark = seen
    found = [root]
    stack = [root]
    pop, push, append = stack.pop, stack.append, found.append
    while stack:
        for arg in pop()._args:
            if arg._mark is not seen:
                arg._mark = seen
                push(arg)
                append(arg)
    found.sort(key=_creation_number)
    return found


_creation_number = attrgetter("_n")


def _plan(order: list[Value]) -> tuple[list[Any], list[interpreter.Spread], list[float]]:
    """The plan of :func:`symgrad.backends.interpreter.sweep` for the Values in ``order``, and their data.

    A Value's slot is its place in ``order``; records come last first, as in
    the interpreter's plan of the tape ``linearise`` makes (same partials,
    same arguments skipped, same order), so the one sweep adds the same
    numbers in the same order (tests/test_value.py compares them bit for
    bit).  This loop over the Values is the price of sharing the sweep;
    building a tape for a graph that is swept once cost three times as much
    (measured on the moons step).  The plan is made first record first and
    then reversed; it is flat so that the garbage collector tracks no tuple
    per record.
    """
    steps: list[Any] = []
    extend = steps.extend
    spread: list[interpreter.Spread] = []
    values = [node.data for node in order]
    binary, unary = _BINARY, _UNARY
    da: interpreter.Partial
    db: interpreter.Partial
    j = -1
    for node in order:
        j += 1
        node._slot = j
        if not node._need:
            continue
        args = node._args
        n = len(args)
        if n == 2:
            a, b = args
            sa = a._slot
            sb = b._slot
            try:
                da, db = binary[node._opr]  # type: ignore[index]
            except KeyError:
                da, db = binary[node._opr] = interpreter.partial_steps(node._opr, 2)  # type: ignore[arg-type,index]
            if not a._need:
                da = None
            elif da.__class__ is int:
                da = sb if da == 2 else sa if da == 1 else j
            if not b._need:
                db = None
            elif db.__class__ is int:
                db = sb if db == 2 else sa if db == 1 else j
            extend((db, sb, da, sa, j))
        elif n == 1:
            a = args[0]
            sa = a._slot
            try:
                (da,) = unary[node._opr]  # type: ignore[index]
            except KeyError:
                (da,) = unary[node._opr] = interpreter.partial_steps(node._opr, 1)  # type: ignore[arg-type,index]
            if not a._need:
                da = None
            elif da.__class__ is int:
                da = sa if da == 1 else j
            extend((None, interpreter.UNARY, da, sa, j))
        elif n:
            op = node._opr
            assert op is not None
            partials = scalar_partials(op, n)
            slots = tuple([x._slot for x in args])
            spread.append((slots, tuple([dx if x._need else None for x, dx in zip(args, partials, strict=True)])))
            extend((None, interpreter.NARY, None, len(spread) - 1, j))
    steps.reverse()
    return steps, spread, values


_BINARY: dict[Op, tuple[Callable[..., float] | int | float, ...]] = {}
_UNARY: dict[Op, tuple[Callable[..., float] | int | float, ...]] = {}
"""The partials of each op as a plan gives them (:func:`symgrad.backends.interpreter.partial_steps`),
looked up once per op instead of once per Value."""


def linearise(root: Value, params: Sequence[Value] | None = None) -> tuple[Tape, list[Value]]:
    """The tape of the graph ending at ``root``, and the Value at each of its slots.

    Records come in the order the Values were made, which for an expression
    written out in one go is post-order (arguments left to right, each
    shared Value once): the order the string front end emits.  Inputs are
    the leaf Values that are not constants, in order of first appearance
    (left to right, as in the text; named by ``label``, or ``v0``, ``v1``,
    ... when unlabelled or taken).  With ``params``, the inputs are exactly ``params`` in that order
    and every other leaf is recorded as a constant at its current ``data``.
    Constants with equal values share one slot, as in the string front end.
    A leaf whose ``data`` was set to an int or a numpy scalar is recorded as
    a plain float.
    """
    with _LINEARISING:
        return _linearise(root, params)


def _linearise(root: Value, params: Sequence[Value] | None) -> tuple[Tape, list[Value]]:
    """:func:`linearise` without the lock (the caller holds it)."""
    numbered = object()  # marks a Value that has its slot (or, for a record, its place in ops)
    inputs: list[Value] = []
    if params is not None:
        for p in params:
            if not isinstance(p, Value) or p._opr is not None or not p._need:
                raise InputError(f"trace() parameters must be leaf Values (made with Value(...)), got {p!r}")
            if p._mark is numbered:
                raise InputError(f"parameter {p!r} is listed twice; list each parameter once")
            p._mark = numbered
            p._slot = len(inputs)
            inputs.append(p)

    consts: list[float] = []
    const_nodes: list[Value] = []  # one representative Value per constant slot
    const_leaves: list[Value] = []  # every constant leaf reached; _slot = its index into consts
    const_index: dict[str, int] = {}
    ops: list[Value] = []
    stack = [root]
    pop, push = stack.pop, stack.append
    while stack:  # depth first, arguments left to right: leaves get slots in order of appearance
        node = pop()
        if node._mark is numbered:
            continue
        node._mark = numbered
        if node._opr is not None:
            ops.append(node)
            args = node._args
            for k in range(len(args) - 1, -1, -1):
                if args[k]._mark is not numbered:
                    push(args[k])
        elif not node._need or params is not None:  # a non-parameter leaf under trace() is a constant
            data = node.data
            if type(data) is not float:  # set after construction: np.float64, int, bool (as eager accepts)
                data = _real(float(data) if isinstance(data, bool) else data, "the data of a leaf Value")
            h = data.hex()  # tells 0.0 from -0.0
            c = const_index.get(h)
            if c is None:
                c = const_index[h] = len(consts)
                consts.append(data)
                const_nodes.append(node)
            node._slot = c
            const_leaves.append(node)
        else:
            node._slot = len(inputs)
            inputs.append(node)
    ops.sort(key=_creation_number)  # the order backward() sweeps in

    n_in = len(inputs)
    base = n_in + len(consts)
    for leaf in const_leaves:
        leaf._slot += n_in
    for j, node in enumerate(ops):
        node._slot = base + j
    instrs = tuple([Instr(node._opr, tuple([a._slot for a in node._args])) for node in ops])  # type: ignore[arg-type]
    tape = Tape(_names(inputs), tuple(consts), instrs, (root._slot,))
    return tape, [*inputs, *const_nodes, *ops]


def _names(inputs: list[Value]) -> tuple[str, ...]:
    """Unique input names: each label if free, else ``v<k>``."""
    used: set[str] = set()
    names = []
    for k, v in enumerate(inputs):
        name = v.label if v.label and v.label not in used else f"v{k}"
        while name in used:
            name += "_"
        used.add(name)
        names.append(name)
    return tuple(names)
