"""How each op becomes LLVM IR: the emitting code behind the op table's ``native`` column.

Each row of :data:`symgrad.ops.OPS` says in plain data how machine code computes
it (:class:`~symgrad.ops.NativeRule`: an IEEE instruction, a libm function or a
named recipe of a few selects; whether its result is checked; a fused libm
pair; a reciprocal form), and
:func:`emitter` turns that row into the code that writes its IR.  An emitter
receives the :class:`Emit` context (which writes IR text) and the argument
values, and returns the result value.  Emitters reproduce the
interpreter's arithmetic exactly: the same IEEE operations in the same order,
and the same libm functions (called under a private name, see
:mod:`symgrad.backends.native.libm`, so that LLVM cannot rewrite ``pow(x, 2.0)`` into
``x * x`` or use its own ``exp``).  No fast-math flags anywhere.

Domain flags: where the interpreter raises (``math.log(-1)``, ``1 / 0``,
``math.exp(1000)``, and, in the interpreter of the derivative-tape rewrite, an
overflow of ``+ - * /``), the emitter raises the function's flag instead, and
the caller hands the point to the interpreter for the exact
:class:`~symgrad.errors.DomainError`.  The test is deliberately conservative:
a non-finite result of any op that can make one from finite arguments (libm
calls, ``sqrt``, ``+ - * /``, ``xlogy``: ``native.checked``) flags the point.  A flag where the
interpreter would not raise (``exp(inf)``, ``inf + 1``) only costs an
interpreter call that returns the same numbers.  Ops that cannot leave the
finite numbers (``neg``, ``abs``, ``relu``, ``min``, ``max``, ``sigmoid``,
``heaviside``, ``sign``) emit no test at all.  The tests are cheap: checked
values are summed and only the sum is tested (:meth:`Emit.check`), and a
record whose inf or nan would reach a checked reader anyway (``x*y`` read by
``+``: see :func:`propagates`) is not checked itself.

Two libm calls on one argument can be one call (``sin``/``cos`` as
``sincos``: :data:`PAIRS`) where the C library's combined function gives the
same bits (checked in :mod:`symgrad.backends.native.libm`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from ...ops import OPS, NativeRule, Op

__all__ = [
    "LIBM",
    "LIBM_PAIRS",
    "PAIRS",
    "PREFIX",
    "RECIPES",
    "Block",
    "Builder",
    "Emit",
    "Emitter",
    "Phi",
    "Value",
    "by_reciprocal",
    "calls_libm",
    "checks_result",
    "constant",
    "double",
    "emit_pair",
    "emitter",
    "propagates",
    "rules_of",
    "supported",
]

_EXPONENT = 0x7FF0000000000000
_MAGNITUDE = 0x7FFFFFFFFFFFFFFF


def double(value: float) -> str:
    """An exact LLVM constant for any float (hex bits: also nan, inf and -0.0)."""
    return f"0x{struct.unpack('<Q', struct.pack('<d', value))[0]:016X}"


class Emit:
    """Writes one function's instructions as LLVM IR text; emitters call its methods.

    Text rather than llvmlite's IR objects: building objects for a 100,000-record
    tape took several times longer than LLVM's own compilation (measured).  The
    text is parsed and verified by LLVM before anything runs.  Values are
    strings: ``%tN`` names (made here, never by a caller) or constants; methods
    say which type they make.  It writes the straight-line body of a function
    that a :class:`Builder` frames (``Emit(b.block.lines)``: arguments, return,
    loops); the two never give the same name (``%tN`` against ``%hint.N``).

    ``width`` > 1 emits the same operations on vectors of that many points
    (``<4 x double>``): IEEE arithmetic, comparisons and selects act lane by
    lane, so every lane is bit-identical to the scalar code, and libm calls are
    made once per lane.  The flag is then one bit per lane.  ``vector`` (2, 4 or 8)
    instead calls libmvec on that many lanes at once (``symgrad_v4_exp``; see
    :mod:`symgrad.backends.native.libm`): a few ulp from libm, for the array loop only.
    """

    def __init__(self, lines: list[str], width: int = 1, vector: int = 0) -> None:
        self.lines = lines
        self.width = width
        self.vector = vector if width > 1 and vector and width % vector == 0 else 0
        self.d = "double" if width == 1 else f"<{width} x double>"
        self.i1 = "i1" if width == 1 else f"<{width} x i1>"
        self.i64 = "i64" if width == 1 else f"<{width} x i64>"
        self._count = 0
        self.libm: set[str] = set()
        """The libm functions called (to declare in the module)."""
        self.vector_libm: set[str] = set()
        """The libmvec functions called on ``vector`` doubles (to declare in the module)."""
        self.no = "false" if width == 1 else "zeroinitializer"
        self.flag = self.no
        """true (per lane) where a :meth:`mark` condition held (see :meth:`finish`)."""
        self._sums: list[tuple[int, str]] = []
        """Pairwise partial sums of the values :meth:`check` was given: (level, value), levels decreasing."""
        self.checking = True
        """False while emitting a record whose value need not be checked (see :func:`propagates`)."""
        self.checks = 0
        """How many times :meth:`check` was called (checking or not)."""
        self.batched: dict[tuple[str, tuple[str, ...]], str] = {}
        """Scalar code: results of libm calls already made for several records at once by
        :meth:`lanes_call`, by (function, arguments); :meth:`call` returns them."""
        self.batched_pairs: dict[tuple[str, str], tuple[str, str]] = {}
        """The same for :meth:`call_pair` (both results of ``sincos``, by (function, argument))."""

    def _new(self, text: str) -> str:
        name = f"%t{self._count}"
        self._count += 1
        self.lines.append(f"  {name} = {text}")
        return name

    def _splat(self, scalar_type: str, text: str) -> str:
        if self.width == 1:
            return text
        return "<" + ", ".join([f"{scalar_type} {text}"] * self.width) + ">"

    # -- memory --------------------------------------------------------------
    def load(self, base: str, index: int) -> str:
        """Element ``index`` of the array of doubles (vectors of ``width``) at pointer ``base``."""
        p = self._new(f"getelementptr inbounds {self.d}, ptr {base}, i64 {index}")
        return self._new(f"load {self.d}, ptr {p}, align 8")

    def store(self, value: str, base: str, index: int) -> None:
        """``value`` into element ``index`` of the array at pointer ``base``."""
        p = self._new(f"getelementptr inbounds {self.d}, ptr {base}, i64 {index}")
        self.lines.append(f"  store {self.d} {value}, ptr {p}, align 8")

    # -- doubles -------------------------------------------------------------
    def const(self, value: float) -> str:
        return self._splat("double", double(value))

    def binary(self, instruction: str, a: str, b: str) -> str:
        """``fadd``, ``fsub``, ``fmul`` or ``fdiv``."""
        return self._new(f"{instruction} {self.d} {a}, {b}")

    def fneg(self, a: str) -> str:
        return self._new(f"fneg {self.d} {a}")

    def select(self, condition: str, a: str, b: str) -> str:
        """``a`` where ``condition`` holds, else ``b``."""
        return self._new(f"select {self.i1} {condition}, {self.d} {a}, {self.d} {b}")

    def call(self, name: str, *args: str) -> str:
        """A libm function (``exp``, ``atan2``...) under its private name, once per lane."""
        if self.vector:
            return self._vector_call(name, args)
        if self.width == 1:
            done = self.batched.get((name, args))
            if done is not None:
                return done
            self.libm.add(name)
            return self._new(f"call double @{PREFIX}{name}({', '.join(f'double {a}' for a in args)})")
        self.libm.add(name)
        result = "poison"
        for lane in range(self.width):
            lanes = [self._new(f"extractelement {self.d} {a}, i32 {lane}") for a in args]
            one = self._new(f"call double @{PREFIX}{name}({', '.join(f'double {x}' for x in lanes)})")
            result = self._new(f"insertelement {self.d} {result}, double {one}, i32 {lane}")
        return result

    def _vector_call(self, name: str, args: tuple[str, ...]) -> str:
        """One libmvec call per ``vector`` lanes (two 2-wide calls for four lanes on SSE)."""
        self.vector_libm.add(name)
        v, n = self.vector, self.width // self.vector
        vd = f"<{v} x double>"
        symbol = f"@{PREFIX}v{v}_{name}"
        if n == 1:
            return self._new(f"call {vd} {symbol}({', '.join(f'{vd} {a}' for a in args)})")
        parts = []
        for k in range(n):
            mask = "<" + ", ".join(f"i32 {k * v + j}" for j in range(v)) + ">"
            lanes = [self._new(f"shufflevector {self.d} {a}, {self.d} poison, <{v} x i32> {mask}") for a in args]
            parts.append(self._new(f"call {vd} {symbol}({', '.join(f'{vd} {x}' for x in lanes)})"))
        m = v
        while len(parts) > 1:  # concatenate pairwise: 2+2 → 4, ...
            mask = "<" + ", ".join(f"i32 {j}" for j in range(2 * m)) + ">"
            parts = [
                self._new(f"shufflevector <{m} x double> {a}, <{m} x double> {b}, <{2 * m} x i32> {mask}")
                for a, b in zip(parts[::2], parts[1::2], strict=True)
            ]
            m *= 2
        return parts[0]

    def lanes_call(self, name: str, scalars: Sequence[str], width: int) -> list[str]:
        """libmvec's ``name`` (one argument) on up to ``width`` scalars in one call, one result per scalar.

        Idle lanes repeat the first scalar.  For scalar code whose independent
        libm calls are batched (``SYMGRAD_VECTOR_LIBM=all``, see
        :func:`symgrad.backends.native.build.batches`): a few ulp from libm.
        """
        self.vector_libm.add(name)
        vd = f"<{width} x double>"
        packed = "poison"
        for lane in range(width):
            x = scalars[lane] if lane < len(scalars) else scalars[0]
            packed = self._new(f"insertelement {vd} {packed}, double {x}, i32 {lane}")
        result = self._new(f"call {vd} @{PREFIX}v{width}_{name}({vd} {packed})")
        return [self._new(f"extractelement {vd} {result}, i32 {lane}") for lane in range(len(scalars))]

    def call_pair(self, name: str, a: str) -> tuple[str, str]:
        """A libm function of one argument with two results written through pointers (``sincos``), per lane
        (also in ``vector`` mode: libmvec's are not used for pairs)."""
        if self.width == 1:
            done = self.batched_pairs.get((name, a))
            if done is not None:
                return done
        self.libm.add(name)
        firsts, seconds = [], []
        for lane in range(self.width):
            x = a if self.width == 1 else self._new(f"extractelement {self.d} {a}, i32 {lane}")
            p, q = self._new("alloca double, align 8"), self._new("alloca double, align 8")
            self.lines.append(f"  call void @{PREFIX}{name}(double {x}, ptr {p}, ptr {q})")
            firsts.append(self._new(f"load double, ptr {p}, align 8"))
            seconds.append(self._new(f"load double, ptr {q}, align 8"))
        if self.width == 1:
            return firsts[0], seconds[0]
        results = []
        for lanes in (firsts, seconds):
            result = "poison"
            for lane, one in enumerate(lanes):
                result = self._new(f"insertelement {self.d} {result}, double {one}, i32 {lane}")
            results.append(result)
        return results[0], results[1]

    def sqrt(self, a: str) -> str:
        suffix = "f64" if self.width == 1 else f"v{self.width}f64"
        return self._new(f"call {self.d} @llvm.sqrt.{suffix}({self.d} {a})")

    def fabs(self, a: str) -> str:
        """|a| as a bit mask (the same bits as libm's fabs, cheap for the fast instruction selector)."""
        bits = self._new(f"bitcast {self.d} {a} to {self.i64}")
        masked = self._new(f"and {self.i64} {bits}, {self._splat('i64', str(_MAGNITUDE))}")
        return self._new(f"bitcast {self.i64} {masked} to {self.d}")

    # -- conditions (i1 per lane) ---------------------------------------------
    def fcmp(self, predicate: str, a: str, b: str) -> str:
        """An LLVM fcmp: ``olt``, ``ole``, ``ogt``, ``oge``, ``oeq`` (false on nan), ``une`` (true on nan)."""
        return self._new(f"fcmp {predicate} {self.d} {a}, {b}")

    def both(self, a: str, b: str) -> str:
        return self._new(f"and {self.i1} {a}, {b}")

    def nonfinite(self, a: str) -> str:
        """``a`` is inf or nan (exponent bits all ones; integer ops only)."""
        bits = self._new(f"bitcast {self.d} {a} to {self.i64}")
        exponent = self._splat("i64", str(_EXPONENT))
        return self._new(f"icmp eq {self.i64} {self._new(f'and {self.i64} {bits}, {exponent}')}, {exponent}")

    def mark(self, condition: str) -> None:
        """Raise the domain flag where ``condition`` holds."""
        self.flag = condition if self.flag == self.no else self._new(f"or {self.i1} {self.flag}, {condition}")

    def check(self, value: str) -> None:
        """Raise the domain flag where ``value`` is inf or nan.

        Cheaper than ``mark(nonfinite(value))`` for each value (measured: that
        was a quarter of a big kernel's time): the checked values are summed,
        one ``fadd`` each, and only the sum is tested, in :meth:`finish`.
        A non-finite value makes the sum non-finite (inf + -inf is nan, nan
        sticks); finite values can only make it non-finite by overflowing near
        1.8e308, a flag the interpreter then clears.  The sum is pairwise, so
        the additions do not form one long chain of dependent instructions.
        Does nothing while :attr:`checking` is off.
        """
        self.checks += 1
        if not self.checking:
            return
        level = 0
        while self._sums and self._sums[-1][0] == level:
            value = self.binary("fadd", self._sums.pop()[1], value)
            level += 1
        self._sums.append((level, value))

    def finish(self) -> str:
        """The function's flag (``i1`` per lane), once every record is emitted: any :meth:`mark` condition,
        or a non-finite checked value."""
        flag = self.flag
        if self._sums:
            total = self._sums[-1][1]
            for _, partial in reversed(self._sums[:-1]):
                total = self.binary("fadd", partial, total)
            self._sums = [(0, total)]
            nonfinite = self.nonfinite(total)
            flag = nonfinite if flag == self.no else self._new(f"or {self.i1} {flag}, {nonfinite}")
        return flag

    def checked(self, name: str, *args: str) -> str:
        """A libm call whose non-finite result raises the flag."""
        result = self.call(name, *args)
        self.check(result)
        return result


class Value:
    """An LLVM value of a :class:`Builder`: its reference (``%vi.3``, ``7``, ``zeroinitializer``) and type."""

    __slots__ = ("ref", "type")

    def __init__(self, ref: str, type: str) -> None:
        self.ref = ref
        self.type = type

    def __str__(self) -> str:
        return self.ref


def constant(type: str, value: int | str) -> Value:
    """An integer constant, or a constant as LLVM spells it (``zeroinitializer``, ``poison``, ``null``)."""
    return Value(str(value), type)


class Block:
    """A basic block of a :class:`Builder`: its label, its phis (filled in later) and its other lines.

    The phis are written first, as LLVM requires; the lines are plain text, so
    an :class:`Emit` can write a block's straight-line code into them directly.
    """

    __slots__ = ("label", "lines", "phis")

    def __init__(self, label: str) -> None:
        self.label = label
        self.phis: list[Phi] = []
        self.lines: list[str] = []

    def __str__(self) -> str:
        return "%" + self.label


class Phi(Value):
    """A ``phi`` whose incoming values are added when their blocks are built (:meth:`add_incoming`)."""

    __slots__ = ("incoming",)

    def __init__(self, ref: str, type: str) -> None:
        super().__init__(ref, type)
        self.incoming: list[tuple[Value, Block]] = []

    def add_incoming(self, value: Value, block: Block) -> None:
        self.incoming.append((value, block))

    def line(self) -> str:
        pairs = ", ".join(f"[ {v}, {b} ]" for v, b in self.incoming)
        return f"  {self.ref} = phi {self.type} {pairs}"


def _bits(type: str) -> str:
    """The type of a comparison of ``type``: ``i1``, or ``<n x i1>`` for a vector."""
    return type.split(" x ")[0] + " x i1>" if type.startswith("<") else "i1"


_PARAMETER_ATTRIBUTES = frozenset({"noalias", "nocapture", "readonly", "writeonly", "noundef", "nonnull"})


def _without_attributes(declared: str) -> str:
    """A parameter's type without its attributes (``ptr noalias`` -> ``ptr``; ``<8 x i1>`` stays whole)."""
    return " ".join(word for word in declared.split() if word not in _PARAMETER_ATTRIBUTES)


class Builder:
    """One function's IR text, written through calls in the spirit of llvmlite's ``IRBuilder``.

    Every value gets a fresh name (``%vi.3``, from an optional hint), blocks keep
    the order they were made in, and a ``phi`` is made first and given its
    incoming values once their blocks exist, so no code formats SSA names or
    keeps them apart by hand.  Text rather than llvmlite's IR objects, for the
    reason :class:`Emit` gives (measured on the array loop of a 20-input
    gradient, 2,700 instructions: 24 ms with ``llvmlite.ir.IRBuilder``, about
    2 ms here, 0.8 ms as hand-formatted lines; compiling it takes about 70 ms).
    """

    def __init__(self, header: str, args: Sequence[tuple[str, str]]) -> None:
        """``header`` is ``define ...`` with ``{}`` where the typed, named arguments go; an argument's
        type may carry parameter attributes after it (``"ptr noalias"``)."""
        self.header = header
        self._params = [f"{type} %{name}" for type, name in args]
        self.args = [Value(f"%{name}", _without_attributes(type)) for type, name in args]
        self.blocks: list[Block] = []
        self._labels = {name for _, name in args}  # arguments and blocks share one namespace
        self._count = 0
        self.block = self.append_basic_block("entry")

    # -- blocks ---------------------------------------------------------------
    def append_basic_block(self, label: str) -> Block:
        """A new block labelled ``label`` (``label.N`` if that is taken: helpers can make blocks too)."""
        if label in self._labels:
            label = f"{label}.{self._count}"
            self._count += 1
        self._labels.add(label)
        block = Block(label)
        self.blocks.append(block)
        return block

    def position_at_end(self, block: Block) -> None:
        self.block = block

    def text(self) -> list[str]:
        """The function's lines, blocks in the order they were made."""
        lines = [self.header.format(", ".join(self._params))]
        for block in self.blocks:
            lines.append(f"{block.label}:")
            lines += [phi.line() for phi in block.phis]
            lines += block.lines
        lines.append("}")
        return lines

    @contextmanager
    def for_range(self, count: Value, name: str = "i") -> Iterator[Value]:
        """A loop over ``0 <= i < count`` (in the spirit of numba's ``cgutils.for_range``), yielding ``i``.

        The body is built inside the ``with``, from a block of its own; it may
        branch out of the loop, and goes on to the next ``i`` from the block it
        ends in.  After the ``with``, code goes after the loop.
        """
        before = self.block
        head, body, after = (self.append_basic_block(f"{name}.{part}") for part in ("head", "body", "after"))
        self.branch(head)
        self.position_at_end(head)
        i = self.phi(count.type, name=name)
        self.cbranch(self.icmp("ult", i, count), body, after)
        self.position_at_end(body)
        yield i
        i.add_incoming(constant(count.type, 0), before)
        i.add_incoming(self.add(i, constant(count.type, 1), name=f"{name}.next"), self.block)
        self.branch(head)
        self.position_at_end(after)

    # -- instructions -----------------------------------------------------------
    def _name(self, hint: str) -> str:
        """A fresh SSA name: ``%hint.N`` (``%v.N`` without a hint)."""
        ref = f"%{hint or 'v'}.{self._count}"
        self._count += 1
        return ref

    def _new(self, type: str, text: str, name: str = "") -> Value:
        count = self._count  # (:meth:`_name` inlined: this runs for every instruction)
        self._count = count + 1
        ref = f"%{name or 'v'}.{count}"
        self.block.lines.append(f"  {ref} = {text}")
        return Value(ref, type)

    def _op(self, op: str, a: Value, b: Value, name: str = "") -> Value:
        return self._new(a.type, f"{op} {a.type} {a.ref}, {b.ref}", name)

    def add(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("add", a, b, name)

    def sub(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("sub", a, b, name)

    def mul(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("mul", a, b, name)

    def and_(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("and", a, b, name)

    def or_(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("or", a, b, name)

    def lshr(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("lshr", a, b, name)

    def shl(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("shl", a, b, name)

    def fadd(self, a: Value, b: Value, name: str = "") -> Value:
        return self._op("fadd", a, b, name)

    def icmp(self, predicate: str, a: Value, b: Value, name: str = "") -> Value:
        """``eq``, ``ne``, ``slt``, ``ult``...: ``i1`` (per lane of a vector)."""
        return self._new(_bits(a.type), f"icmp {predicate} {a.type} {a.ref}, {b.ref}", name)

    def fcmp(self, predicate: str, a: Value, b: Value, name: str = "") -> Value:
        return self._new(_bits(a.type), f"fcmp {predicate} {a.type} {a.ref}, {b.ref}", name)

    def select(self, condition: Value, a: Value, b: Value, name: str = "") -> Value:
        return self._new(a.type, f"select {condition.type} {condition.ref}, {a.type} {a.ref}, {b.type} {b.ref}", name)

    def _cast(self, op: str, a: Value, type: str, name: str) -> Value:
        return self._new(type, f"{op} {a.type} {a.ref} to {type}", name)

    def zext(self, a: Value, type: str, name: str = "") -> Value:
        return self._cast("zext", a, type, name)

    def trunc(self, a: Value, type: str, name: str = "") -> Value:
        return self._cast("trunc", a, type, name)

    def bitcast(self, a: Value, type: str, name: str = "") -> Value:
        return self._cast("bitcast", a, type, name)

    def insert_element(self, vector: Value, value: Value, lane: int, name: str = "") -> Value:
        return self._new(
            vector.type, f"insertelement {vector.type} {vector.ref}, {value.type} {value.ref}, i32 {lane}", name
        )

    def extract_element(self, vector: Value, lane: int, name: str = "") -> Value:
        element = vector.type.split(" x ")[1][:-1]
        return self._new(element, f"extractelement {vector.type} {vector.ref}, i32 {lane}", name)

    def alloca(self, type: str, align: int, count: Value | None = None, name: str = "") -> Value:
        size = f", {count.type} {count.ref}" if count is not None else ""
        return self._new("ptr", f"alloca {type}{size}, align {align}", name)

    def gep(self, type: str, base: Value, index: Value | int, name: str = "") -> Value:
        """``getelementptr inbounds type, ptr base, i64 index``: the address of element ``index``."""
        return self._new(
            "ptr",
            f"getelementptr inbounds {type}, ptr {base.ref}, i64 {index if isinstance(index, int) else index.ref}",
            name,
        )

    def load(self, type: str, pointer: Value, align: int | None = 8, name: str = "") -> Value:
        aligned = f", align {align}" if align else ""
        return self._new(type, f"load {type}, ptr {pointer.ref}{aligned}", name)

    def store(self, value: Value, pointer: Value, align: int | None = 8) -> None:
        aligned = f", align {align}" if align else ""
        self.block.lines.append(f"  store {value.type} {value.ref}, ptr {pointer.ref}{aligned}")

    def load_at(self, type: str, base: Value, index: Value | int, name: str = "") -> Value:
        """Element ``index`` of the array of ``type`` at ``base``."""
        return self.load(type, self.gep(type, base, index), name=name)

    def store_at(self, value: Value, base: Value, index: Value | int) -> None:
        self.store(value, self.gep(value.type, base, index))

    def call(self, type: str, function: str, args: Sequence[Value], name: str = "") -> Value:
        """``call type @function(args)`` (a ``void`` call returns a value nobody uses)."""
        text = f"call {type} {function}({', '.join(f'{a.type} {a.ref}' for a in args)})"
        if type == "void":
            self.block.lines.append(f"  {text}")
            return Value("", "void")
        return self._new(type, text, name)

    def phi(self, type: str, name: str = "", incoming: Iterable[tuple[Value, Block]] = ()) -> Phi:
        """A phi of the current block; incoming values known now may be given, later ones added."""
        phi = Phi(self._name(name), type)
        phi.incoming.extend(incoming)
        self.block.phis.append(phi)
        return phi

    # -- terminators ------------------------------------------------------------
    def branch(self, target: Block) -> None:
        self.block.lines.append(f"  br label {target}")

    def cbranch(self, condition: Value, then: Block, otherwise: Block) -> None:
        self.block.lines.append(f"  br i1 {condition.ref}, label {then}, label {otherwise}")

    def ret(self, value: Value) -> None:
        self.block.lines.append(f"  ret {value.type} {value.ref}")


Emitter = Callable[[Emit, Sequence[str]], str]
PairEmitter = Callable[[Emit, Sequence[str]], tuple[str, str]]
PREFIX = "symgrad_"
"""libm functions are called as ``symgrad_<name>`` (see :mod:`symgrad.backends.native.libm`)."""


def _native(name: str) -> NativeRule:
    rule = OPS[name].native
    if rule is None:
        raise ValueError(f"op {name!r} has no native rule")
    return rule


LIBM: Mapping[str, int] = {op.native.libm: op.arity for op in OPS.values() if op.native is not None and op.native.libm}
"""The libm functions generated code may call, with their arity: the op table's ``native.libm``
(of the rows there when this module is first imported; see :func:`supported`)."""
LIBM_PAIRS: Mapping[str, tuple[str, str]] = {
    op.native.pair[1]: (op.native.libm, _native(op.native.pair[0]).libm)
    for op in OPS.values()
    if op.native is not None and op.native.pair is not None
}
"""libm functions ``void f(double x, double *a, double *b)`` computing two of :data:`LIBM` at once
(the op table's ``native.pair``).

Used only where the C library has them and they give the same bits as the
two calls (checked when registered, see :mod:`symgrad.backends.native.libm`): glibc's
``sincos`` is its ``sin`` and ``cos`` sharing the argument reduction, at about
60% of their cost.
"""
PAIRS: Mapping[tuple[str, str], str] = {
    pair: op.native.pair[1]
    for op in OPS.values()
    if op.native is not None and op.native.pair is not None
    for pair in ((op.name, op.native.pair[0]), (op.native.pair[0], op.name))
}
"""(op, op) on the same argument, in either order → the :data:`LIBM_PAIRS` function computing both."""


def _sigmoid(e: Emit, args: Sequence[str]) -> str:
    # Both branches of ops._sigmoid, computed and selected: 1/(1+exp(-x)) for x >= 0, else e/(1+e) with e = exp(x).
    x = args[0]
    positive = e.fcmp("oge", x, e.const(0.0))
    one = e.const(1.0)
    ex = e.call("exp", e.select(positive, e.fneg(x), x))
    return e.binary("fdiv", e.select(positive, one, ex), e.binary("fadd", one, ex))


def _relu(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 0.0 if x <= 0.0 else x: nan stays nan, -0.0 becomes 0.0
    zero = e.const(0.0)
    return e.select(e.fcmp("ole", x, zero), zero, x)


def _min(e: Emit, args: Sequence[str]) -> str:
    best = args[0]  # Python's min(*args): a later argument replaces the best only if smaller
    for x in args[1:]:
        best = e.select(e.fcmp("olt", x, best), x, best)
    return best


def _max(e: Emit, args: Sequence[str]) -> str:
    best = args[0]  # Python's max(*args): a later argument replaces the best only if larger
    for x in args[1:]:
        best = e.select(e.fcmp("olt", best, x), x, best)
    return best


def _heaviside(e: Emit, args: Sequence[str]) -> str:
    x, at_zero = args  # 1 for x > 0, 0 for x < 0, at_zero at ±0, nan stays nan
    zero = e.const(0.0)
    inner = e.select(e.fcmp("oeq", x, zero), at_zero, x)
    inner = e.select(e.fcmp("olt", x, zero), zero, inner)
    return e.select(e.fcmp("ogt", x, zero), e.const(1.0), inner)


def _sign(e: Emit, args: Sequence[str]) -> str:
    x = args[0]  # 1, -1, or x itself (±0, nan)
    zero = e.const(0.0)
    inner = e.select(e.fcmp("olt", x, zero), e.const(-1.0), x)
    return e.select(e.fcmp("ogt", x, zero), e.const(1.0), inner)


def _xlogy(e: Emit, args: Sequence[str]) -> str:
    x, y = args  # 0.0 if x == 0.0 else x * log(y); log raises (flag) only where it is used
    log_y = e.call("log", y)
    zero = e.const(0.0)
    used = e.fcmp("une", x, zero)
    return e.select(used, e.binary("fmul", x, log_y), zero)  # checked (op table): log(y) undefined, or overflow


RECIPES: Mapping[str, Emitter] = {
    "sigmoid": _sigmoid,
    "relu": _relu,
    "min": _min,
    "max": _max,
    "heaviside": _heaviside,
    "sign": _sign,
    "xlogy": _xlogy,
}
"""The ops that are several instructions, by the recipe name their op table row gives (``native.recipe``)."""


def _binary(instruction: str) -> Emitter:
    return lambda e, a: e.binary(instruction, a[0], a[1])


_INSTRUCTIONS: Mapping[str, Emitter] = {
    **{instruction: _binary(instruction) for instruction in ("fadd", "fsub", "fmul", "fdiv")},
    "fneg": lambda e, a: e.fneg(a[0]),
    # llvm.sqrt is IEEE sqrt, correctly rounded like libm's; it lowers to one instruction.
    "sqrt": lambda e, a: e.sqrt(a[0]),
    "fabs": lambda e, a: e.fabs(a[0]),
}
"""What ``native.instruction`` may name."""


def supported(op: Op) -> bool:
    """Whether the native backend can emit ``op``: its row has a native rule this module knows
    (a libm function of a row registered later is not among :data:`LIBM`: that row runs on Python)."""
    rule = op.native
    if rule is None:
        return False
    return rule.instruction in _INSTRUCTIONS or rule.libm in LIBM or rule.recipe in RECIPES


_EMITTERS: dict[Op, Emitter] = {}


def emitter(name: str) -> Emitter:
    """How to emit op ``name``, made from its op table row (the instruction, libm call or recipe, then
    the result's check where the row says ``checked``)."""
    op = OPS[name]
    done = _EMITTERS.get(op)
    if done is not None:
        return done
    rule = _native(name)
    if rule.libm:
        symbol = rule.libm
        base: Emitter = lambda e, args: e.call(symbol, *args)  # noqa: E731
    else:
        base = _INSTRUCTIONS[rule.instruction] if rule.instruction else RECIPES[rule.recipe]
    made = _checked(base) if rule.checked else base
    _EMITTERS[op] = made
    return made


def _checked(base: Emitter) -> Emitter:
    """``base``, then a non-finite result raises the flag (overflow, x / 0, inf - inf, log(-1)...)."""

    def emit(e: Emit, args: Sequence[str]) -> str:
        result = base(e, args)
        e.check(result)
        return result

    return emit


def emit_pair(e: Emit, name: str, other: str, args: Sequence[str]) -> tuple[str, str]:
    """Ops ``name`` and ``other`` (a :data:`PAIRS` pair) on the same argument, both checked: their two
    values in that order."""
    function = PAIRS[name, other]
    if e.vector:  # the array loop with libmvec: two vector calls beat one scalar call per lane
        a, b = (e.checked(single, args[0]) for single in LIBM_PAIRS[function])
    else:
        a, b = e.call_pair(function, args[0])
        e.check(a)
        e.check(b)
    return (a, b) if _native(name).pair == (other, function) else (b, a)


def propagates(name: str) -> tuple[bool, ...]:
    """Per argument of op ``name``: whether an inf or nan there always makes the result inf or nan
    (the op table's ``propagates``).

    A record whose value feeds such an argument of a record that is itself checked,
    or feeds on in the same way to one, needs no check of its own: its inf or nan
    reaches a checked value (see :func:`symgrad.backends.native.program.unchecked`).
    Ops whose row lists nothing (``exp(-inf)`` is 0, ``tanh(inf)`` is 1...) propagate nothing.
    """
    return OPS[name].propagates


def by_reciprocal(name: str) -> str:
    """The op computing ``name(a, b)`` as ``other(a, 1/b)`` up to one rounding, or "".

    Where ``b`` is the same at every point, the array loop computes ``1/b``
    once and runs ``other`` (a vector division costs about ten multiplications;
    see :func:`symgrad.backends.native.arrays.reciprocals`).
    """
    return _native(name).by_reciprocal


def rules_of(names: Iterable[str]) -> str:
    """The op table's facts the machine code of these ops depends on (their ``native`` and
    ``propagates``), as text for a cache key: a row edited in ``ops.py``, or registered again with
    another rule, is a different kernel, though the program names the same ops."""
    return ";".join(_rule_text(name) for name in sorted(set(names)))


_RULE_TEXTS: dict[str, tuple[object, object, str]] = {}
"""Per op: its rules when last written out, and the text (writing a dataclass out took 9 µs of each
kernel-cache ask of a small tape)."""


def _rule_text(name: str) -> str:
    op = OPS[name]
    known = _RULE_TEXTS.get(name)
    if known is not None and known[0] is op.native and known[1] is op.propagates:
        return known[2]
    text = f"{name}={op.native!r}/{op.propagates!r}"
    _RULE_TEXTS[name] = (op.native, op.propagates, text)
    return text


def checks_result(name: str, arity: int) -> bool:
    """Whether the emitter of ``name`` checks its result (``native.checked`` in the op table)."""
    return _native(name).checked


_PROBES: dict[tuple[Op, int], Emit] = {}


def calls_libm(name: str, arity: int) -> bool:
    """Whether the emitter of ``name`` calls libm (a slow op, whose readers had better wait)."""
    key = (OPS[name], arity)
    e = _PROBES.get(key)
    if e is None:  # the emitter run once on placeholders, to see what it emits
        probe = Builder("define double @probe({}) {{", [("double", f"a{k}") for k in range(arity)])
        e = _PROBES[key] = Emit(probe.block.lines)
        emitter(name)(e, [a.ref for a in probe.args])
    return bool(e.libm)
