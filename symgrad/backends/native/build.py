"""Program → LLVM IR text: chunk functions, the scalar entry, the fused array loop.

Every function is framed by a :class:`~symgrad.backends.native.emit.Builder` (arguments,
blocks, loops, phis) and a chunk's records are written by an
:class:`~symgrad.backends.native.emit.Emit` into its one block: both name their values,
so no SSA name here is spelled by hand.

Functions (see :class:`~symgrad.backends.native.program.Layout` for ``w``)::

    i32 chunk_k(ptr w)         records of chunk k; loads what earlier chunks stored in w,
                               stores what later chunks or the caller read; returns its domain flag
    i32 symgrad_scalar(ptr w)  every chunk in order, then the output copies; returns the flag
    i64 symgrad_array(ptr ins, ptr strides, ptr outs, ptr ostrides, ptr sums, ptr work, ptr flags,
                      i64 start, i64 end)
                               for each point i in [start, end): w[j] = ins[j][i * strides[j]],
                               run the body, outs[k][i * ostrides[k]] = w[n_inputs + k];
                               sums[k] = the sum of output k over the points (for the summed
                               outputs; the caller zeroes sums[n_outputs:], scratch for the running
                               totals, width doubles per output); flags[i] = flag
                               when ``flags`` is not null; returns how many points were flagged

Strides are 0 or 1: a stride-0 input is one value repeated (the caller passes
``MAX_WIDTH`` copies, read as one vector), a stride-0 output is a sink of
``MAX_WIDTH`` doubles for an output that is only summed (a partial of a broadcast
input: the sum is taken in registers, no array is written).

The array part of a program of one chunk holds ``chunk_0_v4``/``symgrad_scalar_v4``
instead: the same records on ``<4 x double>`` (four points at once, eight with
AVX-512's libmvec, each lane
bit-identical to the scalar code, or calling libmvec, see
:class:`~symgrad.backends.native.emit.Emit`), returning one flag bit per lane.  The
array loop then runs a whole vector of points per iteration, with nothing
per lane, and the points left over (fewer than a vector) once after it, in a
second inlined copy of the body whose extra lanes repeat the last point
(measured on W5, one thread: 2.45 ms per call with one loop that checked for
a partial vector at every iteration, 2.07 ms with the partial one apart).
Bigger programs run the scalar entry's chunks once per point.

The array loop keeps ``w`` on its stack when it is small (then LLVM keeps the
values in registers), else uses ``work``; either way each thread of a split
array call has its own.  It realigns its stack to 64 bytes (``alignstack``):
the vectors it spills around libmvec calls then never straddle two cache
lines.  Without it, a call ran at either speed depending on where the
caller's stack happened to end: W5 took 2.4 ms per call on one thread in
most processes and 3.7 or 5.1-5.4 ms in about one in four (measured).  No
temporaries: one pass over the points, every output written once.

The scalar entry calls libm once per record, bit-identical to the
interpreter, unless asked (``SYMGRAD_VECTOR_LIBM=all``) to compute
independent calls of one function together with libmvec (:func:`batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from .emit import (
    LIBM,
    LIBM_PAIRS,
    PAIRS,
    PREFIX,
    Builder,
    Emit,
    Phi,
    Value,
    calls_libm,
    checks_result,
    constant,
    emit_pair,
    emitter,
    propagates,
)
from .program import DELAY, Layout, Program, unchecked

__all__ = ["ARRAY", "BATCH", "MAX_WIDTH", "SCALAR", "STACK_LIMIT", "SUM_BLOCK", "WIDTH", "build_ir", "layout_of"]

SCALAR = "symgrad_scalar"
ARRAY = "symgrad_array"
BATCH = "symgrad_batch"
STACK_LIMIT = 2048
"""Work vectors up to this many doubles live on the array loop's stack."""
WIDTH = 4
"""Points per iteration of the vector loop (one-chunk programs); more with a wider libmvec (AVX-512: 8)."""
MAX_WIDTH = 8
"""The widest vector loop: stride-0 inputs and sinks hold this many doubles."""
SUM_BLOCK = 1024
"""The array loop's running sums take in a block's partial sums every this many points (a power of 2)."""


def batches(layout: Layout, k: int, width: int) -> dict[int, list[int]]:
    """Groups of 2 to ``width`` records of chunk ``k`` that one libmvec call per function can compute.

    A group holds records of one unary libm op (``tanh``...) or one fused pair
    (``sin`` and ``cos`` of one argument: then one call of each function), in
    execution order; it is emitted at its last member, so a record joins only
    if no earlier member is read before it (readers of libm results already
    wait :data:`~symgrad.backends.native.program.DELAY` records, which leaves room).
    Keyed by the last member's record index.
    """
    program = layout.program
    first = program.first_record
    order = layout.chunks[k]
    first_read: dict[int, int] = {}  # record index -> position of its first reader in the chunk
    for at, i in enumerate(order):
        for a in program.records[i][1]:
            first_read.setdefault(a - first, at)
    partners = set(layout.fused.values())
    never = len(order)
    open_groups: dict[str, tuple[list[int], int]] = {}  # function -> (members, first read of any member)
    groups: dict[int, list[int]] = {}
    for at, i in enumerate(order):
        name, args = program.records[i]
        j = layout.fused.get(i)
        if j is not None:
            function = PAIRS[name, program.records[j][0]]
        elif LIBM.get(name) == 1 and len(args) == 1 and i not in partners:
            function = name
        else:
            continue
        read = min(first_read.get(i, never), first_read.get(j, never) if j is not None else never)
        members, earliest = open_groups.get(function, ([], never))
        if len(members) >= width or earliest <= at:  # full, or a member is read by now: emit it as it is
            if len(members) > 1:
                groups[members[-1]] = members
            members, earliest = [], never
        members.append(i)
        open_groups[function] = (members, min(earliest, read))
    for members, _ in open_groups.values():
        if len(members) > 1:
            groups[members[-1]] = members
    return groups


def _chunk(
    layout: Layout,
    k: int,
    inline: bool,
    libm: set[str],
    width: int,
    vector: int = 0,
    vector_libm: set[str] | None = None,
    quiet: bytearray | None = None,
) -> list[str]:
    program = layout.program
    suffix = "" if width == 1 else f"_v{width}"
    attrs = "alwaysinline" if inline else "noinline"
    params = [("ptr noalias", "w")]
    if layout.accumulated:  # the batch loop's: its running sums, and which lanes count
        params += [("ptr noalias", "sums"), (f"<{width} x i1>", "valid")]
    b = Builder(f"define internal i32 @chunk_{k}{suffix}({{}}) nounwind {attrs} {{{{", params)
    w = b.args[0].ref
    e = Emit(b.block.lines, width, vector)  # the records' code, straight into the one block
    groups = batches(layout, k, vector) if width == 1 and vector > 1 else {}
    waiting = {i for members in groups.values() for i in members[:-1]}  # emitted with their group's last
    waiting |= {layout.fused[i] for i in waiting if i in layout.fused}
    first, n_inputs = program.first_record, program.n_inputs
    here: dict[int, str] = {}

    def value(slot: int) -> str:
        v = here.get(slot)
        if v is None:
            if n_inputs <= slot < first:
                v = here[slot] = e.const(program.consts[slot - n_inputs])
            else:  # an input or a record of an earlier chunk: loaded at each use (measured: cheaper than
                # one load whose value the fast register allocator spills to the stack across libm calls)
                v = e.load(w, layout.location[slot])
        return v

    def define(i: int, result: str) -> None:
        slot = first + i
        here[slot] = result
        index = layout.location.get(slot)
        if index is not None:
            e.store(result, w, index)
        for k in layout.accumulated.get(slot, ()):
            sums, valid = b.args[1].ref, b.args[2].ref
            e.store(e.binary("fadd", e.load(sums, k), e.select(valid, result, e.const(0.0))), sums, k)

    def emit(i: int) -> None:
        name, args = program.records[i]
        j = layout.fused.get(i)
        if j is None:
            e.checking = quiet is None or not quiet[i]
            define(i, emitter(name)(e, [value(a) for a in args]))
        else:
            e.checking = quiet is None or not (quiet[i] and quiet[j])
            ours, theirs = emit_pair(e, name, program.records[j][0], [value(a) for a in args])
            define(i, ours)
            define(j, theirs)

    for i in layout.chunks[k]:
        if first + i in here or i in waiting:  # computed with the record before it (layout.fused), or later
            continue
        members = groups.get(i)
        if members is None:
            emit(i)
            continue
        name = program.records[i][0]
        j = layout.fused.get(i)
        function = PAIRS[name, program.records[j][0]] if j is not None else name
        xs = [value(program.records[m][1][0]) for m in members]
        if function in LIBM_PAIRS:
            firsts, seconds = (e.lanes_call(single, xs, vector) for single in LIBM_PAIRS[function])
            e.batched_pairs = {(function, x): (a, b) for x, a, b in zip(xs, firsts, seconds, strict=True)}
        else:
            e.batched = {(function, (x,)): r for x, r in zip(xs, e.lanes_call(function, xs, vector), strict=True)}
        for m in members:  # each member's own emitter, its libm call answered from the batch
            emit(m)
        e.batched, e.batched_pairs = {}, {}
    flag = Value(e.finish(), e.i1)
    if width > 1:  # one bit per lane
        flag = b.bitcast(flag, f"i{width}", name="bits")
    b.ret(b.zext(flag, "i32", name="flag"))
    libm |= e.libm
    if vector_libm is not None:
        vector_libm |= e.vector_libm
    return b.text()


def _scalar(layout: Layout, inline: bool, width: int) -> list[str]:
    program = layout.program
    e = Emit([], width)  # for its constants
    d = e.d
    if width == 1:
        head = f"define i32 @{SCALAR}({{}}) nounwind {'alwaysinline' if inline else ''} {{{{"
    else:
        head = f"define internal i32 @{SCALAR}_v{width}({{}}) nounwind alwaysinline {{{{"
    params = [("ptr noalias", "w")]
    if layout.accumulated:  # see _chunk
        params += [("ptr noalias", "sums"), (f"<{width} x i1>", "valid")]
    b = Builder(head, params)
    w = b.args[0]
    suffix = "" if width == 1 else f"_v{width}"
    flag = _i32(0)
    for k in range(len(layout.chunks)):
        flag = b.or_(flag, b.call("i32", f"@chunk_{k}{suffix}", b.args, name="c"), name="f")
    for index, slot in layout.copies:
        if program.n_inputs <= slot < program.first_record:
            v = constant(d, e.const(program.consts[slot - program.n_inputs]))
        else:
            v = b.load_at(d, w, layout.location[slot], name="o")
        b.store_at(v, w, index)
    b.ret(flag)
    return b.text()


def _i64(value: int) -> Value:
    return constant("i64", value)


def _i32(value: int) -> Value:
    return constant("i32", value)


class _Frame:
    """The array function's arguments and what its entry block reads from them."""

    def __init__(self, b: Builder, n_in: int, n_out: int) -> None:
        ins, strides, outs, ostrides, self.sums, self.work, self.flags, self.start, self.end = b.args
        self.ins: list[Value] = []
        self.strides: list[Value] = []
        self.outs: list[Value] = []
        self.ostrides: list[Value] = []
        for j in range(n_in):
            self.ins.append(b.load_at("ptr", ins, j, name=f"in{j}"))
            self.strides.append(b.load_at("i64", strides, j, name=f"st{j}"))
        for k in range(n_out):
            self.outs.append(b.load_at("ptr", outs, k, name=f"out{k}"))
            self.ostrides.append(b.load_at("i64", ostrides, k, name=f"ost{k}"))
        self.has_flags = b.icmp("ne", self.flags, constant("ptr", "null"), name="has_flags")
        self.tot = b.gep("double", self.sums, n_out, name="tot")
        """The running totals of the summed outputs, after the sums themselves."""


def _vector_loop(
    b: Builder, f: _Frame, layout: Layout, width: int, uniform: int, summed: Sequence[int], wv: Value
) -> None:
    """The loop over ``[start, end)``: whole vectors of ``width`` points, then one partial vector.

    The main loop loads and stores whole vectors (a stride-0 input is a buffer
    of ``width`` copies) and has no per-lane work.  The points left over (fewer
    than ``width``) run once after it, in a copy of the body that gathers them
    lane by lane, lanes past ``end`` repeating the last point (so they compute,
    and store, the same numbers); those lanes are masked out of the sums and
    of the flag count.  Each output in ``summed`` is also added up in a vector
    accumulator (a register), added into a running total in memory (``tot``)
    every :data:`SUM_BLOCK` points: rounding grows with the block length plus
    the number of blocks, not with the points.
    """
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    vec, mask = f"<{width} x double>", f"<{width} x i1>"
    zeros = constant(vec, "zeroinitializer")
    varying = range(n_in - uniform)
    fixed = {j: b.load(vec, f.ins[j], name=f"u{j}") for j in range(n_in - uniform, n_in)}
    last = b.sub(f.end, _i64(1), name="last")
    entry = b.block
    vloop, vafter, tail, lsum = map(b.append_basic_block, ("vloop", "vafter", "tail", "lsum"))

    def body(inputs: dict[int, Value]) -> tuple[Value, list[Value]]:
        """Inputs into ``wv``, the inlined body: its flag bits and outputs."""
        for j in range(n_in):
            b.store_at(inputs[j] if j in varying else fixed[j], wv, j)
        flag = b.call("i32", f"@{SCALAR}_v{width}", [wv], name="flag")
        return flag, [b.load_at(vec, wv, n_in + k, name=f"y{k}") for k in range(n_out)]

    def step(
        flag: Value,
        counted: Value,
        indices: Callable[[], Sequence[Value]],
        count: Value,
        done: Value,
        sums: dict[int, Value],
    ) -> tuple[Value, dict[int, Value]]:
        """After a vector of points: ``count`` plus the lanes set in ``counted``; where any is set and
        there is a ``flags`` array, each lane's bit of ``flag`` as one byte at that lane's point index
        (``indices()``, computed there only);
        every :data:`SUM_BLOCK` points (``done`` so far) the vector ``sums`` go into ``tot``.
        Returns the new count and the sums going on (zero after a flush)."""
        count_next = b.add(count, b.zext(b.call("i32", "@llvm.ctpop.i32", [counted]), "i64"), name="count")
        flags, after = b.append_basic_block("flags"), b.append_basic_block("next")
        b.cbranch(b.and_(b.icmp("ne", counted, _i32(0)), f.has_flags), flags, after)
        b.position_at_end(flags)
        for lane, index in enumerate(indices()):
            bit = b.and_(b.lshr(flag, _i32(lane)), _i32(1))
            b.store(b.trunc(bit, "i8"), b.gep("i8", f.flags, index), align=1)
        b.branch(after)
        b.position_at_end(after)
        flushing, kept = b.append_basic_block("flushing"), b.append_basic_block("kept")
        block = b.and_(b.sub(done, f.start), _i64(SUM_BLOCK - 1))
        b.cbranch(b.icmp("eq", block, _i64(0)), flushing, kept)
        b.position_at_end(flushing)
        for k in summed:
            p = b.gep(vec, f.tot, k)
            b.store(b.fadd(b.load(vec, p), sums[k]), p)
        b.branch(kept)
        b.position_at_end(kept)
        return count_next, {k: b.phi(vec, f"acc{k}", [(zeros, flushing), (sums[k], after)]) for k in summed}

    span = b.sub(f.end, f.start, name="span")
    mend = b.add(f.start, b.and_(span, _i64(-width)), name="mend")
    b.cbranch(b.icmp("slt", f.start, mend), vloop, vafter)
    # -- whole vectors
    b.position_at_end(vloop)
    vi, vcount = b.phi("i64", name="vi"), b.phi("i64", name="vcount")
    acc = {k: b.phi(vec, name=f"acc{k}") for k in summed}
    vi_next = b.add(vi, _i64(width), name="vi.next")
    loaded = {j: b.load(vec, b.gep("double", f.ins[j], b.mul(vi, f.strides[j]))) for j in varying}
    vflag, vy = body(loaded)
    accn = {k: b.fadd(acc[k], vy[k]) for k in summed}
    for k in range(n_out):
        b.store(vy[k], b.gep("double", f.outs[k], b.mul(vi, f.ostrides[k])))
    points = lambda: [b.add(vi, _i64(lane)) for lane in range(width)]  # noqa: E731
    vcount_next, acc_next = step(vflag, vflag, points, vcount, vi_next, accn)
    vcont = b.block
    b.cbranch(b.icmp("slt", vi_next, mend), vloop, vafter)
    for phi, first, later in ((vi, f.start, vi_next), (vcount, _i64(0), vcount_next)):
        phi.add_incoming(first, entry)
        phi.add_incoming(later, vcont)
    for k in summed:
        acc[k].add_incoming(zeros, entry)
        acc[k].add_incoming(acc_next[k], vcont)
    # -- the partial vector left over, if any
    b.position_at_end(vafter)
    ti = b.phi("i64", "ti", [(f.start, entry), (vi_next, vcont)])
    tcount = b.phi("i64", "tcount", [(_i64(0), entry), (vcount_next, vcont)])
    tacc = {k: b.phi(vec, f"tacc{k}", [(zeros, entry), (acc_next[k], vcont)]) for k in summed}
    b.cbranch(b.icmp("slt", ti, f.end), tail, lsum)
    b.position_at_end(tail)
    lanes, oks = [], []
    for lane in range(width):  # lane indices ti + lane, clamped to the last point
        index = b.add(ti, _i64(lane))
        ok = b.icmp("slt", index, f.end)
        lanes.append(b.select(ok, index, last))
        oks.append(ok)
    valid = constant(mask, "poison")
    for lane, ok in enumerate(oks):
        valid = b.insert_element(valid, ok, lane)
    gathered = {}
    for j in varying:
        x = constant(vec, "poison")
        for lane, index in enumerate(lanes):
            x = b.insert_element(x, b.load("double", b.gep("double", f.ins[j], b.mul(index, f.strides[j]))), lane)
        gathered[j] = x
    tflag, ty = body(gathered)
    taccn = {k: b.fadd(tacc[k], b.select(valid, ty[k], zeros)) for k in summed}
    tf = b.and_(tflag, b.zext(b.bitcast(valid, f"i{width}"), "i32"))
    for k in range(n_out):
        for lane, index in enumerate(lanes):
            one = b.extract_element(ty[k], lane)
            b.store(one, b.gep("double", f.outs[k], b.mul(index, f.ostrides[k])))
    ti_next = b.add(ti, _i64(width), name="ti.next")
    # a repeated lane stores the last point's own flag again, but counts only once (tf)
    tcount_next, tacc_next = step(tflag, tf, lambda: lanes, tcount, ti_next, taccn)
    tdone = b.block
    b.branch(lsum)
    b.position_at_end(lsum)
    total = b.phi("i64", "total", [(tcount, vafter), (tcount_next, tdone)])
    fsum = {k: b.phi(vec, f"fsum{k}", [(tacc[k], vafter), (tacc_next[k], tdone)]) for k in summed}
    for k in summed:
        everything = b.fadd(b.load_at(vec, f.tot, k), fsum[k])
        parts = [b.extract_element(everything, lane) for lane in range(width)]
        while len(parts) > 1:  # pairwise: (l0 + l1) + (l2 + l3)
            parts = [b.fadd(x, y) for x, y in zip(parts[::2], parts[1::2], strict=True)]
        b.store_at(parts[0], f.sums, k)
    b.ret(total)


def _scalar_loop(b: Builder, f: _Frame, layout: Layout, summed: Sequence[int], w: Value) -> None:
    """Blocks ``loop``/``store_flag``/``next``/``done``: one point per iteration (programs of several chunks)."""
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    entry = b.block
    loop, store_flag, next_, done = map(b.append_basic_block, ("loop", "store_flag", "next", "done"))
    zero = constant("double", "0.0")
    b.cbranch(b.icmp("slt", f.start, f.end), loop, done)
    b.position_at_end(loop)
    i, count = b.phi("i64", name="i"), b.phi("i64", name="count")
    acc, tot = {}, {}
    for k in summed:
        acc[k], tot[k] = b.phi("double", name=f"acc{k}"), b.phi("double", name=f"tot{k}")
    for j in range(n_in):
        b.store_at(b.load("double", b.gep("double", f.ins[j], b.mul(i, f.strides[j]))), w, j)
    flag = b.call("i32", f"@{SCALAR}", [w], name="flag")
    ys = []
    for k in range(n_out):
        ys.append(b.load_at("double", w, n_in + k, name=f"y{k}"))
        b.store(ys[k], b.gep("double", f.outs[k], b.mul(i, f.ostrides[k])))
    accn = {k: b.fadd(acc[k], ys[k]) for k in summed}
    count_next = b.add(count, b.zext(b.icmp("ne", flag, _i32(0)), "i64"), name="count.next")
    b.cbranch(f.has_flags, store_flag, next_)
    b.position_at_end(store_flag)
    b.store(b.trunc(flag, "i8"), b.gep("i8", f.flags, i), align=1)
    b.branch(next_)
    b.position_at_end(next_)
    i_next = b.add(i, _i64(1), name="i.next")
    flush = b.icmp("eq", b.and_(b.sub(i_next, f.start), _i64(SUM_BLOCK - 1)), _i64(0), name="flush")
    acc_next, tot_next = {}, {}
    for k in summed:
        tot_next[k] = b.select(flush, b.fadd(tot[k], accn[k]), tot[k], name=f"tot{k}.next")
        acc_next[k] = b.select(flush, zero, accn[k], name=f"acc{k}.next")
    b.cbranch(b.icmp("slt", i_next, f.end), loop, done)
    for phi, start, later in ((i, f.start, i_next), (count, _i64(0), count_next)):
        phi.add_incoming(start, entry)
        phi.add_incoming(later, next_)
    for k in summed:
        for phi, later in ((acc[k], acc_next[k]), (tot[k], tot_next[k])):
            phi.add_incoming(zero, entry)
            phi.add_incoming(later, next_)
    b.position_at_end(done)
    total = b.phi("i64", name="total")
    total.add_incoming(_i64(0), entry)
    total.add_incoming(count_next, next_)
    ends: dict[int, list[Phi]] = {k: [b.phi("double"), b.phi("double")] for k in summed}
    for k in summed:
        for phi, later in zip(ends[k], (acc_next[k], tot_next[k]), strict=True):
            phi.add_incoming(zero, entry)
            phi.add_incoming(later, next_)
    for k in summed:
        accd, totd = ends[k]
        b.store_at(b.fadd(totd, accd), f.sums, k)
    b.ret(total)


def _array(layout: Layout, width: int, uniform: int = 0, summed: Sequence[int] | None = None) -> list[str]:
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    names = ("ins", "strides", "outs", "ostrides", "sums", "work", "flags", "start", "end")
    args = [("ptr", name) for name in names[:7]] + [("i64", "start"), ("i64", "end")]
    b = Builder(f"define i64 @{ARRAY}({{}}) nounwind alignstack(64) {{{{", args)
    if width > 1:
        w = b.alloca(f"[{max(layout.size, 1)} x <{width} x double>]", 64, name="wv")
    elif layout.size <= STACK_LIMIT:
        w = b.alloca(f"[{max(layout.size, 1)} x double]", 8, name="w")
    else:
        w = b.gep("double", b.args[5], 0, name="w")
    f = _Frame(b, n_in, n_out)
    sums = list(range(n_out)) if summed is None else sorted(summed)
    if width == 1:
        _scalar_loop(b, f, layout, sums, w)
    else:
        _vector_loop(b, f, layout, width, uniform, sums, w)
    return b.text()


def layout_of(program: Program, pairs: Collection[tuple[str, str]] = (), batch_loop: bool = False) -> Layout:
    """The layout :func:`build_ir` compiles ``program`` with (the caller sizes ``w`` by it).

    ``batch_loop`` (part ``"batch"``): records read once run right before their reader, and the
    summed outputs are added into their running sums where they are computed, so ``w`` holds
    only what crosses chunks.  Measured on the W4c per-example gradient tape (25,734 records,
    4,417 summed partials), one thread, 1,000 examples: ``w`` went from 13,320 to 9,201 vectors
    by sinking, and a batch call from 3.5 to 2.8 ms.  Sinking cost the scalar entry of W3
    N = 10,000 and 30,000 2-6% (the original order keeps more independent work side by side),
    so the other parts keep the tape's order."""
    slow = {name for name, args in program.records if calls_libm(name, len(args))}
    return Layout(program, pairs=pairs, slow=slow, delay=DELAY, sink=batch_loop, accumulate=batch_loop)


def build_ir(
    program: Program,
    part: str,
    vector: int = 0,
    uniform: int = 0,
    summed: Sequence[int] | None = None,
    pairs: Collection[tuple[str, str]] = (),
    batch: int = 0,
    shared: int = 0,
    layout: Layout | None = None,
) -> str:
    """The IR of ``program``: ``part`` is ``"scalar"`` (the scalar entry) or ``"array"`` (the array loop).

    The two are separate modules, compiled when first used: a caller of the
    scalar entry never pays for the array loop and its vector variant.
    ``vector`` (2, 4 or 8; see :func:`symgrad.backends.native.libm.vector_width`) lets the
    vector loop call libmvec; 0 keeps scalar libm in every lane.  The last
    ``uniform`` inputs are one value for every point (stride 0): the vector
    loop loads them once, before the loop.  ``summed``: the outputs whose sums
    the array loop computes (default: all).  ``pairs``: the ops computed together
    where they share arguments (see :class:`~symgrad.backends.native.program.Layout`;
    :func:`symgrad.backends.native.jit.fused_pairs`).  ``batch`` (2, 4 or 8; scalar part
    only) computes up to that many independent libm calls with one libmvec
    call (see :func:`batches`); 0 calls libm once per record, bit-identical to
    the interpreter.  ``part="batch"`` is the batch loop (:func:`_batch`) of a
    program whose first ``shared`` inputs are the same at every example and
    whose outputs after the first are summed.  ``layout``: :func:`layout_of` of these, if the
    caller has it already.
    """
    if part == "scalar":
        vector = batch
    if layout is None:  # (a caller's own is the same: layout_of of this program, pairs and part)
        layout = layout_of(program, pairs, batch_loop=part == "batch")
    quiet = unchecked(program, propagates, checks_result)
    inline = part in ("array", "batch") and len(layout.chunks) <= 1
    width = max(WIDTH, vector) if inline or part == "batch" else 1  # measured on AVX-512: 8 lanes (zmm) beat 4 by 20%
    libm: set[str] = set()
    vector_libm: set[str] = set()
    body: list[str] = []
    lanes = vector if width > 1 or part == "scalar" else 0  # a multi-chunk array loop: libm per point
    for k in range(len(layout.chunks)):
        body += _chunk(layout, k, inline, libm, width, lanes, vector_libm, quiet)
        body.append("")
    body += _scalar(layout, inline, width)
    body.append("")
    if part == "array":
        body += _array(layout, width, uniform, summed)
    elif part == "batch":
        body += _batch(layout, width, shared)
    elif part != "scalar":
        raise ValueError(f"part must be 'scalar', 'array' or 'batch', not {part!r}")
    head = [
        f"; symgrad native kernel: {program.n_inputs} inputs, {len(program.records)} records, "
        f"{len(program.outputs)} outputs"
    ]
    head += [
        f"declare void @{PREFIX}{name}(double, ptr, ptr) nounwind memory(argmem: write)"
        if name in LIBM_PAIRS
        else f"declare double @{PREFIX}{name}({', '.join(['double'] * LIBM[name])}) nounwind memory(none)"
        for name in sorted(libm)
    ]
    vd = f"<{vector} x double>"
    head += [
        f"declare {vd} @{PREFIX}v{vector}_{name}({', '.join([vd] * LIBM[name])}) nounwind memory(none)"
        for name in sorted(vector_libm)
    ]
    head += [
        "declare double @llvm.sqrt.f64(double)",
        "declare i32 @llvm.ctpop.i32(i32)",
    ]
    if width > 1:
        head.append(f"declare <{width} x double> @llvm.sqrt.v{width}f64(<{width} x double>)")
    return "\n".join([*head, "", *body, ""])


BATCH_STACK = 256
"""A one-chunk program whose work vector has at most this many values keeps it on the batch loop's stack
(then SROA keeps its values in registers); bigger ones use the caller's ``work``."""


def _batch(layout: Layout, width: int, shared: int) -> list[str]:
    """``i64 symgrad_batch(ptr frame, i64 offset, ptr work, ptr flags, i64 start, i64 end)``: examples
    ``[start, end)`` of a per-example tape whose first ``shared`` inputs are the same at every example.

    ``frame`` holds ``shared, sums, out, data_0 ... data_{K-1}``: where the
    shared inputs are read, where the summed outputs (all but the first) go,
    where the first output goes at each example, and the data columns.  Each is
    the data pointer itself when ``offset`` < 0, else the address of an object
    that holds the data pointer at byte ``offset`` (a numpy array: the caller
    then needs no Python step per array to find its data).  ``work`` holds the
    running sums, ``width`` doubles per summed output, then (for programs too
    big for the stack) the work vector, one vector per value; ``flags`` (null,
    or one byte per example) is as for :func:`_array`.  Returns how many
    examples were flagged.

    The shared inputs are spread over vectors once per call and stay in the
    work vector; each iteration loads ``width`` examples of every data column,
    runs the body and stores the first output.  The body adds each other output
    into its running sum where it computes it (memory, not registers: there are
    hundreds; the body's chunks take the sums and the mask of lanes that count),
    and the layout runs each record read once right before its reader (see
    :func:`layout_of`), so that the work vector holds only what crosses chunks.  The examples left over
    (fewer than a vector) run once more, lanes past ``end`` repeating the last
    example and masked out of the sums and the flag count.  Each lane sums the
    examples ``start + lane + width * m`` in order, the leftover ones last; the
    lanes are then added pairwise: ``((l0 + l1) + (l2 + l3)) + ...``.
    """
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    n_data, n_sum = n_in - shared, n_out - 1
    vec = f"<{width} x double>"
    zeros = constant(vec, "zeroinitializer")
    args = [("ptr", "frame"), ("i64", "offset"), ("ptr", "work"), ("ptr", "flags"), ("i64", "start"), ("i64", "end")]
    b = Builder(f"define i64 @{BATCH}({{}}) nounwind alignstack(64) {{{{", args)
    frame, offset, work, flags, start, end = b.args
    stack = len(layout.chunks) <= 1 and layout.size <= BATCH_STACK
    on_stack = f"[{max(layout.size, 1)} x {vec}]"
    wv = b.alloca(on_stack, 64, name="wv") if stack else b.gep(vec, work, n_sum, name="wv")
    # -- the frame's pointers, read directly or through the objects
    n_ptrs = 3 + n_data
    direct, indirect, ready = map(b.append_basic_block, ("direct", "indirect", "ready"))
    b.cbranch(b.icmp("slt", offset, _i64(0)), direct, indirect)
    b.position_at_end(direct)
    plain = [b.load_at("ptr", frame, m, name=f"p{m}") for m in range(n_ptrs)]
    b.branch(ready)
    b.position_at_end(indirect)
    held = [b.load("ptr", b.gep("i8", b.load_at("ptr", frame, m), offset), name=f"q{m}") for m in range(n_ptrs)]
    b.branch(ready)
    b.position_at_end(ready)
    ptrs: list[Value] = []
    for m in range(n_ptrs):
        phi = b.phi("ptr", name=f"r{m}")
        phi.add_incoming(plain[m], direct)
        phi.add_incoming(held[m], indirect)
        ptrs.append(phi)
    shared_p, sums_p, out_p, cols = ptrs[0], ptrs[1], ptrs[2], ptrs[3:]
    has_flags = b.icmp("ne", flags, constant("ptr", "null"), name="has_flags")

    def splat(x: Value) -> Value:
        v = constant(vec, "poison")
        for lane in range(width):
            v = b.insert_element(v, x, lane)
        return v

    # -- once per call: the shared inputs spread over lanes, the running sums zeroed
    if stack:  # constant indices only, so that SROA can keep the work vector in registers
        for j in range(shared):
            b.store_at(splat(b.load_at("double", shared_p, j)), wv, j)
    elif shared:
        with b.for_range(_i64(shared), name="splat") as at:
            b.store_at(splat(b.load_at("double", shared_p, at)), wv, at)
    if n_sum:
        with b.for_range(_i64(n_sum), name="zero") as i:
            b.store_at(zeros, work, i)

    every = constant(f"<{width} x i1>", "<" + ", ".join(["i1 true"] * width) + ">")

    def body(columns: list[Value], valid: Value) -> Value:
        """The data into ``wv``, the body run (it adds the partials it computes into the running sums,
        ``valid`` lanes only): its flag bits."""
        for j, x in enumerate(columns):
            b.store_at(x, wv, shared + j)
        args = [wv, work, valid] if layout.accumulated else [wv]
        return b.call("i32", f"@{SCALAR}_v{width}", args, name="flag")

    copied = [j for j in range(1, n_out) if program.outputs[j] < program.first_record]

    def add_sums(valid: Value | None) -> None:
        """The summed outputs that are inputs or constants (the body adds the others where it computes
        them), ``valid`` lanes only, into the running sums."""
        for j in copied:
            y = b.load_at(vec, wv, n_in + j)
            if valid is not None:
                y = b.select(valid, y, zeros)
            p = b.gep(vec, work, j - 1)
            b.store(b.fadd(b.load(vec, p), y), p)

    def flag_bytes(flag: Value, indices: Sequence[Value], merge: bool = False) -> None:
        """One byte per lane at its example.  ``merge``: or-ed into the byte already there (the leftover
        vector's masked lanes repeat the last example's index, and their 0 must not erase its 1)."""
        for lane, index in enumerate(indices):
            bit = b.trunc(b.and_(b.lshr(flag, _i32(lane)), _i32(1)), "i8")
            at = b.gep("i8", flags, index)
            if merge:
                bit = b.or_(b.load("i8", at, align=1), bit)
            b.store(bit, at, align=1)

    names = ("vloop", "vflags", "vnext", "vafter", "tail", "tflags", "tnext", "done")
    vloop, vflags, vnext, vafter, tail, tflags, tnext, done = map(b.append_basic_block, names)
    entry = b.block
    last = b.sub(end, _i64(1), name="last")
    span = b.sub(end, start, name="span")
    mend = b.add(start, b.and_(span, _i64(-width)), name="mend")
    b.cbranch(b.icmp("slt", start, mend), vloop, vafter)
    # -- whole vectors
    b.position_at_end(vloop)
    vi, vcount = b.phi("i64", name="vi"), b.phi("i64", name="vcount")
    vflag = body([b.load(vec, b.gep("double", c, vi)) for c in cols], every)
    b.store(b.load_at(vec, wv, n_in), b.gep("double", out_p, vi))
    add_sums(None)
    vcount_next = b.add(vcount, b.zext(b.call("i32", "@llvm.ctpop.i32", [vflag]), "i64"), name="vcount.next")
    b.cbranch(b.and_(b.icmp("ne", vflag, _i32(0)), has_flags), vflags, vnext)
    b.position_at_end(vflags)
    flag_bytes(vflag, [b.add(vi, _i64(lane)) for lane in range(width)])
    b.branch(vnext)
    b.position_at_end(vnext)
    vi_next = b.add(vi, _i64(width), name="vi.next")
    b.cbranch(b.icmp("slt", vi_next, mend), vloop, vafter)
    for phi, first, later in ((vi, start, vi_next), (vcount, _i64(0), vcount_next)):
        phi.add_incoming(first, entry)
        phi.add_incoming(later, vnext)
    # -- the partial vector left over, if any
    b.position_at_end(vafter)
    ti, tcount = b.phi("i64", name="ti"), b.phi("i64", name="tcount")
    for phi, first, later in ((ti, start, vi_next), (tcount, _i64(0), vcount_next)):
        phi.add_incoming(first, entry)
        phi.add_incoming(later, vnext)
    b.cbranch(b.icmp("slt", ti, end), tail, done)
    b.position_at_end(tail)
    lanes, valid = [], constant(f"<{width} x i1>", "poison")
    for lane in range(width):  # lane indices ti + lane, clamped to the last example
        index = b.add(ti, _i64(lane))
        ok = b.icmp("slt", index, end)
        lanes.append(b.select(ok, index, last))
        valid = b.insert_element(valid, ok, lane)
    gathered = []
    for c in cols:
        x = constant(vec, "poison")
        for lane, index in enumerate(lanes):
            x = b.insert_element(x, b.load("double", b.gep("double", c, index)), lane)
        gathered.append(x)
    tflag = body(gathered, valid)
    y0 = b.load_at(vec, wv, n_in)
    for lane, index in enumerate(lanes):  # a repeated lane stores the last example's own value again
        b.store(b.extract_element(y0, lane), b.gep("double", out_p, index))
    add_sums(valid)
    tf = b.and_(tflag, b.zext(b.bitcast(valid, f"i{width}"), "i32"))
    tcount_next = b.add(tcount, b.zext(b.call("i32", "@llvm.ctpop.i32", [tf]), "i64"), name="tcount.next")
    b.cbranch(b.and_(b.icmp("ne", tf, _i32(0)), has_flags), tflags, tnext)
    b.position_at_end(tflags)
    flag_bytes(tf, lanes, merge=True)
    b.branch(tnext)
    b.position_at_end(tnext)
    b.branch(done)
    # -- each running sum's lanes added pairwise into sums
    b.position_at_end(done)
    total = b.phi("i64", name="total")
    total.add_incoming(tcount, vafter)
    total.add_incoming(tcount_next, tnext)
    if n_sum:
        with b.for_range(_i64(n_sum), name="combine") as k:
            v = b.load_at(vec, work, k)
            parts = [b.extract_element(v, lane) for lane in range(width)]
            while len(parts) > 1:
                parts = [b.fadd(x, y) for x, y in zip(parts[::2], parts[1::2], strict=True)]
            b.store_at(parts[0], sums_p, k)
    b.ret(total)
    return b.text()
