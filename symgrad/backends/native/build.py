"""Program → LLVM IR text: chunk functions, the scalar entry, the fused array loop.

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

from collections.abc import Collection, Sequence

from .emit import LIBM, LIBM_PAIRS, PAIRS, PREFIX, Emit, calls_libm, checks_result, emit_pair, emitter, propagates
from .program import DELAY, Layout, Program, unchecked

__all__ = ["ARRAY", "MAX_WIDTH", "SCALAR", "STACK_LIMIT", "SUM_BLOCK", "WIDTH", "build_ir", "layout_of"]

SCALAR = "symgrad_scalar"
ARRAY = "symgrad_array"
STACK_LIMIT = 2048
"""Work vectors up to this many doubles live on the array loop's stack."""
WIDTH = 4
"""Points per iteration of the vector loop (one-chunk programs); more with a wider libmvec (AVX-512: 8)."""
MAX_WIDTH = 8
"""The widest vector loop: stride-0 inputs and sinks hold this many doubles."""
SUM_BLOCK = 1024
"""The array loop's running sums take in a block's partial sums every this many points (a power of 2)."""


def _gep(lines: list[str], name: str, ty: str, base: str, index: int | str) -> str:
    lines.append(f"  {name} = getelementptr inbounds {ty}, ptr {base}, i64 {index}")
    return name


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
    lines = [f"define internal i32 @chunk_{k}{suffix}(ptr noalias %w) nounwind {attrs} {{", "entry:"]
    e = Emit(lines, width, vector)
    groups = batches(layout, k, vector) if width == 1 and vector > 1 else {}
    waiting = {i for members in groups.values() for i in members[:-1]}  # emitted with their group's last
    waiting |= {layout.fused[i] for i in waiting if i in layout.fused}
    d = e.d
    first, n_inputs = program.first_record, program.n_inputs
    here: dict[int, str] = {}

    def value(slot: int) -> str:
        v = here.get(slot)
        if v is None:
            if n_inputs <= slot < first:
                v = here[slot] = e.const(program.consts[slot - n_inputs])
            else:  # an input or a record of an earlier chunk: loaded at each use (measured: cheaper than
                # one load whose value the fast register allocator spills to the stack across libm calls)
                p = _gep(lines, f"%p{len(lines)}", d, "%w", layout.location[slot])
                v = f"%v{len(lines)}"
                lines.append(f"  {v} = load {d}, ptr {p}, align 8")
        return v

    def define(i: int, result: str) -> None:
        slot = first + i
        here[slot] = result
        index = layout.location.get(slot)
        if index is not None:
            p = _gep(lines, f"%s{slot}", d, "%w", index)
            lines.append(f"  store {d} {result}, ptr {p}, align 8")

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
    flag = e.finish()
    if width == 1:
        lines.append(f"  %flag = zext i1 {flag} to i32")
    else:  # one bit per lane
        lines.append(f"  %bits = bitcast {e.i1} {flag} to i{width}")
        lines.append(f"  %flag = zext i{width} %bits to i32")
    lines += ["  ret i32 %flag", "}"]
    libm |= e.libm
    if vector_libm is not None:
        vector_libm |= e.vector_libm
    return lines


def _scalar(layout: Layout, inline: bool, width: int) -> list[str]:
    program = layout.program
    e = Emit([], width)
    d = e.d
    if width == 1:
        head = f"define i32 @{SCALAR}(ptr noalias %w) nounwind {'alwaysinline' if inline else ''} {{"
    else:
        head = f"define internal i32 @{SCALAR}_v{width}(ptr noalias %w) nounwind alwaysinline {{"
    lines = [head, "entry:"]
    suffix = "" if width == 1 else f"_v{width}"
    flag = "0"
    for k in range(len(layout.chunks)):
        lines.append(f"  %c{k} = call i32 @chunk_{k}{suffix}(ptr %w)")
        lines.append(f"  %f{k} = or i32 {flag}, %c{k}")
        flag = f"%f{k}"
    for n, (index, slot) in enumerate(layout.copies):
        if program.n_inputs <= slot < program.first_record:
            v = e.const(program.consts[slot - program.n_inputs])
        else:
            p = _gep(lines, f"%op{n}", d, "%w", layout.location[slot])
            v = f"%o{n}"
            lines.append(f"  {v} = load {d}, ptr {p}, align 8")
        p = _gep(lines, f"%os{n}", d, "%w", index)
        lines.append(f"  store {d} {v}, ptr {p}, align 8")
    lines += [f"  ret i32 {flag}", "}"]
    return lines


def _lanes(lines: list[str], tag: str, width: int, base: str) -> list[str]:
    """Lane indices ``base + l``, clamped to the last point (a lane past ``end`` repeats it)."""
    names = []
    for lane in range(width):
        lines += [
            f"  %{tag}i{lane} = add i64 {base}, {lane}",
            f"  %{tag}ok{lane} = icmp slt i64 %{tag}i{lane}, %end",
            f"  %{tag}x{lane} = select i1 %{tag}ok{lane}, i64 %{tag}i{lane}, i64 %last",
        ]
        names.append(f"%{tag}x{lane}")
    return names


def _vector_loop(layout: Layout, width: int, uniform: int, summed: Sequence[int]) -> list[str]:
    """The loop over ``[start, end)``: whole vectors of ``width`` points, then one partial vector.

    The main loop loads and stores whole vectors (a stride-0 input is a buffer
    of ``width`` copies) and has no per-lane work.  The points left over (fewer
    than ``width``) run once after it, in a copy of the body that gathers them
    lane by lane, lanes past ``end`` repeating the last point (so they compute,
    and store, the same numbers); those lanes are masked out of the sums and
    of the flag count.  Each output in ``summed`` is also added up in a vector
    accumulator (a register), added into a running total in memory (``%tot``)
    every :data:`SUM_BLOCK` points: rounding grows with the block length plus
    the number of blocks, not with the points.
    """
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    vec, mask = f"<{width} x double>", f"<{width} x i1>"
    varying = range(n_in - uniform)
    lines: list[str] = []

    def body(tag: str, inputs: dict[int, str]) -> None:
        """Inputs into ``%wv``, the inlined body, its outputs as ``%{tag}y{k}``; the flag bits ``%{tag}flag``."""
        for j in range(n_in):
            _gep(lines, f"%{tag}w{j}", vec, "%wv", j)
            lines.append(f"  store {vec} {inputs[j] if j in varying else f'%u{j}'}, ptr %{tag}w{j}, align 8")
        lines.append(f"  %{tag}flag = call i32 @{SCALAR}_v{width}(ptr %wv)")
        for k in range(n_out):
            _gep(lines, f"%{tag}yp{k}", vec, "%wv", n_in + k)
            lines.append(f"  %{tag}y{k} = load {vec}, ptr %{tag}yp{k}, align 8")

    def flag_bytes(tag: str, indices: Sequence[str]) -> None:
        """Each lane's bit of ``%{tag}flag`` as one byte of ``flags``, at that lane's point index."""
        for lane, index in enumerate(indices):
            lines.extend(
                [
                    f"  %{tag}fb{lane} = lshr i32 %{tag}flag, {lane}",
                    f"  %{tag}c{lane} = and i32 %{tag}fb{lane}, 1",
                    f"  %{tag}c8_{lane} = trunc i32 %{tag}c{lane} to i8",
                    f"  %{tag}fp{lane} = getelementptr inbounds i8, ptr %flags, i64 {index}",
                    f"  store i8 %{tag}c8_{lane}, ptr %{tag}fp{lane}, align 1",
                ]
            )

    def flush(tag: str, done: str, sums: dict[int, str], after: str) -> None:
        """Every :data:`SUM_BLOCK` points (``done`` so far), the vector sums go into ``%tot``."""
        lines.extend(
            [
                f"  %{tag}done_n = sub i64 {done}, %start",
                f"  %{tag}block = and i64 %{tag}done_n, {SUM_BLOCK - 1}",
                f"  %{tag}flush = icmp eq i64 %{tag}block, 0",
                f"  br i1 %{tag}flush, label %{tag}flushing, label %{after}",
                f"{tag}flushing:",
            ]
        )
        for k in summed:
            _gep(lines, f"%{tag}tp{k}", vec, "%tot", k)
            lines.extend(
                [
                    f"  %{tag}tv{k} = load {vec}, ptr %{tag}tp{k}, align 8",
                    f"  %{tag}tn{k} = fadd {vec} %{tag}tv{k}, {sums[k]}",
                    f"  store {vec} %{tag}tn{k}, ptr %{tag}tp{k}, align 8",
                ]
            )
        lines.append(f"  br label %{after}")

    lines += [
        "  %span = sub i64 %end, %start",
        f"  %nfull = and i64 %span, {-width}",
        "  %mend = add i64 %start, %nfull",
        "  %anyfull = icmp slt i64 %start, %mend",
        "  br i1 %anyfull, label %vloop, label %vafter",
        # -- whole vectors
        "vloop:",
        "  %vi = phi i64 [ %start, %entry ], [ %vi.next, %vcont ]",
        "  %vcount = phi i64 [ 0, %entry ], [ %vcount.next, %vcont ]",
    ]
    lines += [f"  %acc{k} = phi {vec} [ zeroinitializer, %entry ], [ %acc{k}.next, %vcont ]" for k in summed]
    lines.append(f"  %vi.next = add i64 %vi, {width}")
    loaded = {}
    for j in varying:
        lines += [
            f"  %va{j} = mul i64 %vi, %st{j}",
            f"  %vp{j} = getelementptr inbounds double, ptr %in{j}, i64 %va{j}",
            f"  %vx{j} = load {vec}, ptr %vp{j}, align 8",
        ]
        loaded[j] = f"%vx{j}"
    body("v", loaded)
    lines += [f"  %accn{k} = fadd {vec} %acc{k}, %vy{k}" for k in summed]
    lines += [
        "  %vpop = call i32 @llvm.ctpop.i32(i32 %vflag)",
        "  %vpop64 = zext i32 %vpop to i64",
        "  %vcount.next = add i64 %vcount, %vpop64",
    ]
    for k in range(n_out):
        lines += [
            f"  %vb{k} = mul i64 %vi, %ost{k}",
            f"  %vo{k} = getelementptr inbounds double, ptr %out{k}, i64 %vb{k}",
            f"  store {vec} %vy{k}, ptr %vo{k}, align 8",
        ]
    lines += [
        "  %vbad = icmp ne i32 %vflag, 0",
        "  %vstoreflags = and i1 %vbad, %has_flags",
        "  br i1 %vstoreflags, label %vflags, label %vnext",
        "vflags:",
    ]
    lines += [f"  %vfi{lane} = add i64 %vi, {lane}" for lane in range(width)]
    flag_bytes("v", [f"%vfi{lane}" for lane in range(width)])
    lines += ["  br label %vnext", "vnext:"]
    flush("v", "%vi.next", {k: f"%accn{k}" for k in summed}, "vcont")
    lines.append("vcont:")
    lines += [f"  %acc{k}.next = phi {vec} [ zeroinitializer, %vflushing ], [ %accn{k}, %vnext ]" for k in summed]
    lines += [
        "  %vmore = icmp slt i64 %vi.next, %mend",
        "  br i1 %vmore, label %vloop, label %vafter",
        # -- the partial vector left over, if any
        "vafter:",
        "  %ti = phi i64 [ %start, %entry ], [ %vi.next, %vcont ]",
        "  %tcount = phi i64 [ 0, %entry ], [ %vcount.next, %vcont ]",
    ]
    lines += [f"  %tacc{k} = phi {vec} [ zeroinitializer, %entry ], [ %acc{k}.next, %vcont ]" for k in summed]
    lines += [
        "  %anytail = icmp slt i64 %ti, %end",
        "  br i1 %anytail, label %tail, label %lsum",
        "tail:",
    ]
    lanes = _lanes(lines, "g", width, "%ti")
    valid = "poison"
    for lane in range(width):
        lines.append(f"  %gvalid{lane} = insertelement {mask} {valid}, i1 %gok{lane}, i32 {lane}")
        valid = f"%gvalid{lane}"
    gathered = {}
    for j in varying:
        x = "poison"
        for lane, index in enumerate(lanes):
            lines += [
                f"  %ga{j}_{lane} = mul i64 {index}, %st{j}",
                f"  %gp{j}_{lane} = getelementptr inbounds double, ptr %in{j}, i64 %ga{j}_{lane}",
                f"  %gd{j}_{lane} = load double, ptr %gp{j}_{lane}, align 8",
                f"  %gv{j}_{lane} = insertelement {vec} {x}, double %gd{j}_{lane}, i32 {lane}",
            ]
            x = f"%gv{j}_{lane}"
        gathered[j] = x
    body("t", gathered)
    for k in summed:
        lines += [
            f"  %tm{k} = select {mask} {valid}, {vec} %ty{k}, {vec} zeroinitializer",
            f"  %taccn{k} = fadd {vec} %tacc{k}, %tm{k}",
        ]
    lines += [
        f"  %tbits = bitcast {mask} {valid} to i{width}",
        f"  %tmask = zext i{width} %tbits to i32",
        "  %tf = and i32 %tflag, %tmask",
        "  %tpop = call i32 @llvm.ctpop.i32(i32 %tf)",
        "  %tpop64 = zext i32 %tpop to i64",
        "  %tcount.next = add i64 %tcount, %tpop64",
    ]
    for k in range(n_out):
        for lane, index in enumerate(lanes):
            lines += [
                f"  %se{k}_{lane} = extractelement {vec} %ty{k}, i32 {lane}",
                f"  %sb{k}_{lane} = mul i64 {index}, %ost{k}",
                f"  %so{k}_{lane} = getelementptr inbounds double, ptr %out{k}, i64 %sb{k}_{lane}",
                f"  store double %se{k}_{lane}, ptr %so{k}_{lane}, align 8",
            ]
    lines += [
        "  %tbad = icmp ne i32 %tf, 0",
        "  %tstoreflags = and i1 %tbad, %has_flags",
        "  br i1 %tstoreflags, label %tflags, label %tnext",
        "tflags:",
    ]
    flag_bytes("t", lanes)  # a repeated lane stores the last point's own flag again
    lines += ["  br label %tnext", "tnext:", f"  %ti.next = add i64 %ti, {width}"]
    flush("t", "%ti.next", {k: f"%taccn{k}" for k in summed}, "tdone")
    lines.append("tdone:")
    lines += [f"  %tacc{k}.next = phi {vec} [ zeroinitializer, %tflushing ], [ %taccn{k}, %tnext ]" for k in summed]
    lines += [
        "  br label %lsum",
        "lsum:",
        "  %total = phi i64 [ %tcount, %vafter ], [ %tcount.next, %tdone ]",
    ]
    lines += [f"  %fsum{k} = phi {vec} [ %tacc{k}, %vafter ], [ %tacc{k}.next, %tdone ]" for k in summed]
    for k in summed:
        _gep(lines, f"%ftp{k}", vec, "%tot", k)
        lines += [
            f"  %ftv{k} = load {vec}, ptr %ftp{k}, align 8",
            f"  %fall{k} = fadd {vec} %ftv{k}, %fsum{k}",
        ]
        parts = []
        for lane in range(width):
            lines.append(f"  %fe{k}_{lane} = extractelement {vec} %fall{k}, i32 {lane}")
            parts.append(f"%fe{k}_{lane}")
        n = 0
        while len(parts) > 1:  # pairwise: (l0 + l1) + (l2 + l3)
            pairs = []
            for a, b in zip(parts[::2], parts[1::2], strict=True):
                lines.append(f"  %fh{k}_{n} = fadd double {a}, {b}")
                pairs.append(f"%fh{k}_{n}")
                n += 1
            parts = pairs
        _gep(lines, f"%sp{k}", "double", "%sums", k)
        lines.append(f"  store double {parts[0]}, ptr %sp{k}, align 8")
    return [*lines, "  ret i64 %total", "}"]


def _scalar_loop(layout: Layout, summed: Sequence[int]) -> list[str]:
    """Blocks ``loop``/``store_flag``/``next``/``done``: one point per iteration (programs of several chunks)."""
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    lines = [
        "  %any = icmp slt i64 %start, %end",
        "  br i1 %any, label %loop, label %done",
        "loop:",
        "  %i = phi i64 [ %start, %entry ], [ %i.next, %next ]",
        "  %count = phi i64 [ 0, %entry ], [ %count.next, %next ]",
    ]
    for k in summed:
        lines += [
            f"  %acc{k} = phi double [ 0.0, %entry ], [ %acc{k}.next, %next ]",
            f"  %tot{k} = phi double [ 0.0, %entry ], [ %tot{k}.next, %next ]",
        ]
    for j in range(n_in):
        lines += [
            f"  %at{j} = mul i64 %i, %st{j}",
            f"  %xp{j} = getelementptr inbounds double, ptr %in{j}, i64 %at{j}",
            f"  %x{j} = load double, ptr %xp{j}, align 8",
        ]
        _gep(lines, f"%sx{j}", "double", "%w", j)
        lines.append(f"  store double %x{j}, ptr %sx{j}, align 8")
    lines.append(f"  %flag = call i32 @{SCALAR}(ptr %w)")
    for k in range(n_out):
        _gep(lines, f"%yp{k}", "double", "%w", n_in + k)
        lines += [
            f"  %y{k} = load double, ptr %yp{k}, align 8",
            f"  %ob{k} = mul i64 %i, %ost{k}",
            f"  %op{k} = getelementptr inbounds double, ptr %out{k}, i64 %ob{k}",
            f"  store double %y{k}, ptr %op{k}, align 8",
        ]
    lines += [f"  %accn{k} = fadd double %acc{k}, %y{k}" for k in summed]
    lines += [
        "  %bad = icmp ne i32 %flag, 0",
        "  %bad64 = zext i1 %bad to i64",
        "  %count.next = add i64 %count, %bad64",
        "  br i1 %has_flags, label %store_flag, label %next",
        "store_flag:",
        "  %flag8 = trunc i32 %flag to i8",
        "  %fp = getelementptr inbounds i8, ptr %flags, i64 %i",
        "  store i8 %flag8, ptr %fp, align 1",
        "  br label %next",
        "next:",
        "  %i.next = add i64 %i, 1",
        "  %done_n = sub i64 %i.next, %start",
        f"  %block = and i64 %done_n, {SUM_BLOCK - 1}",
        "  %flush = icmp eq i64 %block, 0",
    ]
    for k in summed:
        lines += [
            f"  %tsum{k} = fadd double %tot{k}, %accn{k}",
            f"  %tot{k}.next = select i1 %flush, double %tsum{k}, double %tot{k}",
            f"  %acc{k}.next = select i1 %flush, double 0.0, double %accn{k}",
        ]
    lines += [
        "  %more = icmp slt i64 %i.next, %end",
        "  br i1 %more, label %loop, label %done",
        "done:",
        "  %total = phi i64 [ 0, %entry ], [ %count.next, %next ]",
    ]
    for k in summed:
        lines += [
            f"  %accd{k} = phi double [ 0.0, %entry ], [ %acc{k}.next, %next ]",
            f"  %totd{k} = phi double [ 0.0, %entry ], [ %tot{k}.next, %next ]",
        ]
    for k in summed:
        lines.append(f"  %fsum{k} = fadd double %totd{k}, %accd{k}")
        _gep(lines, f"%sp{k}", "double", "%sums", k)
        lines.append(f"  store double %fsum{k}, ptr %sp{k}, align 8")
    lines += ["  ret i64 %total", "}"]
    return lines


def _array(layout: Layout, width: int, uniform: int = 0, summed: Sequence[int] | None = None) -> list[str]:
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    lines = [
        f"define i64 @{ARRAY}(ptr %ins, ptr %strides, ptr %outs, ptr %ostrides, ptr %sums, ptr %work, "
        "ptr %flags, i64 %start, i64 %end) nounwind alignstack(64) {",
        "entry:",
    ]
    if width > 1:
        lines.append(f"  %wv = alloca [{max(layout.size, 1)} x <{width} x double>], align 64")
    elif layout.size <= STACK_LIMIT:
        lines.append(f"  %w = alloca [{max(layout.size, 1)} x double], align 8")
    else:
        lines.append("  %w = getelementptr inbounds double, ptr %work, i64 0")
    for j in range(n_in):
        _gep(lines, f"%inp{j}", "ptr", "%ins", j)
        lines.append(f"  %in{j} = load ptr, ptr %inp{j}, align 8")
        _gep(lines, f"%stp{j}", "i64", "%strides", j)
        lines.append(f"  %st{j} = load i64, ptr %stp{j}, align 8")
    for k in range(n_out):
        _gep(lines, f"%outp{k}", "ptr", "%outs", k)
        lines.append(f"  %out{k} = load ptr, ptr %outp{k}, align 8")
        _gep(lines, f"%ostp{k}", "i64", "%ostrides", k)
        lines.append(f"  %ost{k} = load i64, ptr %ostp{k}, align 8")
    lines += [
        "  %has_flags = icmp ne ptr %flags, null",
        f"  %tot = getelementptr inbounds double, ptr %sums, i64 {n_out}",
    ]
    sums = list(range(n_out)) if summed is None else sorted(summed)
    if width == 1:
        return lines + _scalar_loop(layout, sums)
    lines += [f"  %u{j} = load <{width} x double>, ptr %in{j}, align 8" for j in range(n_in - uniform, n_in)]
    return [
        *lines,
        "  %last = sub i64 %end, 1",
        *_vector_loop(layout, width, uniform, sums),
    ]


def layout_of(program: Program, pairs: Collection[tuple[str, str]] = ()) -> Layout:
    """The layout :func:`build_ir` compiles ``program`` with (the caller sizes ``w`` by it)."""
    slow = {name for name, args in program.records if calls_libm(name, len(args))}
    return Layout(program, pairs=pairs, slow=slow, delay=DELAY)


def build_ir(
    program: Program,
    part: str,
    vector: int = 0,
    uniform: int = 0,
    summed: Sequence[int] | None = None,
    pairs: Collection[tuple[str, str]] = (),
    batch: int = 0,
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
    the interpreter.
    """
    if part == "scalar":
        vector = batch
    layout = layout_of(program, pairs)
    quiet = unchecked(program, propagates, checks_result)
    inline = part == "array" and len(layout.chunks) <= 1
    width = max(WIDTH, vector) if inline else 1  # measured on AVX-512: 8 lanes (zmm) beat 4 by 20%
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
    elif part != "scalar":
        raise ValueError(f"part must be 'scalar' or 'array', not {part!r}")
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
