"""Program → LLVM IR text: chunk functions, the scalar entry, the fused array loop.

Functions (see :class:`~symgrad.native.program.Layout` for ``w``)::

    i32 chunk_k(ptr w)         records of chunk k; loads what earlier chunks stored in w,
                               stores what later chunks or the caller read; returns its domain flag
    i32 symgrad_scalar(ptr w)  every chunk in order, then the output copies; returns the flag
    i64 symgrad_array(ptr ins, ptr strides, ptr outs, ptr work, ptr flags, i64 start, i64 end)
                               for each point i in [start, end): w[j] = ins[j][i * strides[j]],
                               run the scalar body, outs[k][i] = w[n_inputs + k]; flags[i] = flag
                               when ``flags`` is not null; returns how many points were flagged

Programs of one chunk also get ``chunk_0_v4``/``symgrad_scalar_v4``: the same
records on ``<4 x double>`` (four points at once, each lane bit-identical to
the scalar code; see :class:`~symgrad.native.emit.Emit`), returning one flag
bit per lane.  The array loop then runs four points per iteration and the
scalar body for the remaining points.

The array loop keeps ``w`` on its stack when it is small (then LLVM keeps the
values in registers), else uses ``work``; either way each thread of a split
array call has its own.  No temporaries: one pass over the points, every
output written once.
"""

from __future__ import annotations

from collections.abc import Collection

from .emit import EMITTERS, FUSED, LIBM, LIBM_PAIRS, PREFIX, PROPAGATES, Emit, calls_libm, checks_result
from .program import DELAY, Layout, Program, unchecked

__all__ = ["ARRAY", "SCALAR", "STACK_LIMIT", "WIDTH", "build_ir", "layout_of"]

SCALAR = "symgrad_scalar"
ARRAY = "symgrad_array"
STACK_LIMIT = 2048
"""Work vectors up to this many doubles live on the array loop's stack."""
WIDTH = 4
"""Points per iteration of the vector loop (one-chunk programs)."""


def _gep(lines: list[str], name: str, ty: str, base: str, index: int | str) -> str:
    lines.append(f"  {name} = getelementptr inbounds {ty}, ptr {base}, i64 {index}")
    return name


def _chunk(layout: Layout, k: int, inline: bool, libm: set[str], width: int, quiet: bytearray) -> list[str]:
    program = layout.program
    suffix = "" if width == 1 else f"_v{width}"
    attrs = "alwaysinline" if inline else "noinline"
    lines = [f"define internal i32 @chunk_{k}{suffix}(ptr noalias %w) nounwind {attrs} {{", "entry:"]
    e = Emit(lines, width)
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

    for i in layout.chunks[k]:
        name, args = program.records[i]
        if first + i in here:  # computed with the record before it (layout.fused)
            continue
        j = layout.fused.get(i)
        if j is None:
            e.checking = not quiet[i]
            define(i, EMITTERS[name](e, [value(a) for a in args]))
        else:
            e.checking = not (quiet[i] and quiet[j])
            ours, theirs = FUSED[name, program.records[j][0]][1](e, [value(a) for a in args])
            define(i, ours)
            define(j, theirs)
    flag = e.domain_flag()
    if width == 1:
        lines.append(f"  %flag = zext i1 {flag} to i32")
    else:  # one bit per lane
        lines.append(f"  %bits = bitcast {e.i1} {flag} to i{width}")
        lines.append(f"  %flag = zext i{width} %bits to i32")
    lines += ["  ret i32 %flag", "}"]
    libm |= e.libm
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


def _vector_loop(layout: Layout, width: int) -> list[str]:
    """Blocks ``vloop``/``vflags``/``vnext``: four points per iteration from ``start`` to ``%vend``."""
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    vec = f"<{width} x double>"
    lines = [
        "vloop:",
        "  %vi = phi i64 [ %start, %entry ], [ %vi.next, %vnext ]",
        "  %vcount = phi i64 [ 0, %entry ], [ %vcount.next, %vnext ]",
    ]
    for j in range(n_in):
        x = "poison"
        for lane in range(width):
            lines += [
                f"  %vk{j}_{lane} = add i64 %vi, {lane}",
                f"  %va{j}_{lane} = mul i64 %vk{j}_{lane}, %st{j}",
                f"  %vp{j}_{lane} = getelementptr inbounds double, ptr %in{j}, i64 %va{j}_{lane}",
                f"  %vx{j}_{lane} = load double, ptr %vp{j}_{lane}, align 8",
                f"  %vv{j}_{lane} = insertelement {vec} {x}, double %vx{j}_{lane}, i32 {lane}",
            ]
            x = f"%vv{j}_{lane}"
        _gep(lines, f"%vw{j}", vec, "%wv", j)
        lines.append(f"  store {vec} {x}, ptr %vw{j}, align 8")
    lines.append(f"  %vflag = call i32 @{SCALAR}_v{width}(ptr %wv)")
    for k in range(n_out):
        _gep(lines, f"%vyp{k}", vec, "%wv", n_in + k)
        lines.append(f"  %vy{k} = load {vec}, ptr %vyp{k}, align 8")
        _gep(lines, f"%vo{k}", "double", f"%out{k}", "%vi")
        lines.append(f"  store {vec} %vy{k}, ptr %vo{k}, align 8")
    lines += [
        "  %vpop = call i32 @llvm.ctpop.i32(i32 %vflag)",
        "  %vpop64 = zext i32 %vpop to i64",
        "  %vcount.next = add i64 %vcount, %vpop64",
        "  %vbad = icmp ne i32 %vflag, 0",
        "  %vstore = and i1 %vbad, %has_flags",
        "  br i1 %vstore, label %vflags, label %vnext",
        "vflags:",
    ]
    for lane in range(width):
        lines += [
            f"  %vb{lane} = lshr i32 %vflag, {lane}",
            f"  %vc{lane} = and i32 %vb{lane}, 1",
            f"  %vc8_{lane} = trunc i32 %vc{lane} to i8",
            f"  %vfi{lane} = add i64 %vi, {lane}",
            f"  %vfp{lane} = getelementptr inbounds i8, ptr %flags, i64 %vfi{lane}",
            f"  store i8 %vc8_{lane}, ptr %vfp{lane}, align 1",
        ]
    lines += [
        "  br label %vnext",
        "vnext:",
        f"  %vi.next = add i64 %vi, {width}",
        "  %vmore = icmp slt i64 %vi.next, %vend",
        "  br i1 %vmore, label %vloop, label %vdone",
    ]
    return lines


def _array(layout: Layout, width: int) -> list[str]:
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    lines = [
        f"define i64 @{ARRAY}(ptr %ins, ptr %strides, ptr %outs, ptr %work, ptr %flags, i64 %start, i64 %end) nounwind {{",
        "entry:",
    ]
    if layout.size <= STACK_LIMIT:
        lines.append(f"  %w = alloca [{max(layout.size, 1)} x double], align 8")
    else:
        lines.append("  %w = getelementptr inbounds double, ptr %work, i64 0")
    if width > 1:
        lines.append(f"  %wv = alloca [{max(layout.size, 1)} x <{width} x double>], align 8")
    for j in range(n_in):
        _gep(lines, f"%inp{j}", "ptr", "%ins", j)
        lines.append(f"  %in{j} = load ptr, ptr %inp{j}, align 8")
        _gep(lines, f"%stp{j}", "i64", "%strides", j)
        lines.append(f"  %st{j} = load i64, ptr %stp{j}, align 8")
    for k in range(n_out):
        _gep(lines, f"%outp{k}", "ptr", "%outs", k)
        lines.append(f"  %out{k} = load ptr, ptr %outp{k}, align 8")
    lines.append("  %has_flags = icmp ne ptr %flags, null")
    if width > 1:
        lines += [
            "  %n = sub i64 %end, %start",
            f"  %nv = and i64 %n, {-width}",
            "  %vend = add i64 %start, %nv",
            "  %anyv = icmp slt i64 %start, %vend",
            "  br i1 %anyv, label %vloop, label %vdone",
            *_vector_loop(layout, width),
            "vdone:",
            "  %tail = phi i64 [ %start, %entry ], [ %vend, %vnext ]",
            "  %tcount = phi i64 [ 0, %entry ], [ %vcount.next, %vnext ]",
        ]
        pred = "%vdone"
    else:
        lines += ["  %tail = add i64 %start, 0", "  %tcount = add i64 0, 0"]
        pred = "%entry"
    lines += [
        "  %any = icmp slt i64 %tail, %end",
        "  br i1 %any, label %loop, label %done",
        "loop:",
        f"  %i = phi i64 [ %tail, {pred} ], [ %i.next, %next ]",
        f"  %count = phi i64 [ %tcount, {pred} ], [ %count.next, %next ]",
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
        lines.append(f"  %y{k} = load double, ptr %yp{k}, align 8")
        _gep(lines, f"%op{k}", "double", f"%out{k}", "%i")
        lines.append(f"  store double %y{k}, ptr %op{k}, align 8")
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
        "  %more = icmp slt i64 %i.next, %end",
        "  br i1 %more, label %loop, label %done",
        "done:",
        f"  %total = phi i64 [ %tcount, {pred} ], [ %count.next, %next ]",
        "  ret i64 %total",
        "}",
    ]
    return lines


def layout_of(program: Program, pairs: Collection[tuple[str, str]] = ()) -> Layout:
    """The layout :func:`build_ir` compiles ``program`` with (the caller sizes ``w`` by it)."""
    slow = {name for name, args in program.records if calls_libm(name, len(args))}
    return Layout(program, pairs=pairs, slow=slow, delay=DELAY)


def build_ir(program: Program, part: str, pairs: Collection[tuple[str, str]] = ()) -> str:
    """The IR of ``program``: ``part`` is ``"scalar"`` (the scalar entry) or ``"array"`` (the array loop).

    The two are separate modules, compiled when first used: a caller of the
    scalar entry never pays for the array loop and its vector variant.
    ``pairs``: the ops computed together where they share arguments (see
    :class:`~symgrad.native.program.Layout`; :func:`symgrad.native.jit.fused_pairs`).
    """
    layout = layout_of(program, pairs)
    quiet = unchecked(program, PROPAGATES, checks_result)
    inline = part == "array" and len(layout.chunks) <= 1
    width = WIDTH if inline else 1
    libm: set[str] = set()
    body: list[str] = []
    for w in sorted({1, width}):
        for k in range(len(layout.chunks)):
            body += _chunk(layout, k, inline, libm, w, quiet)
            body.append("")
        body += _scalar(layout, inline, w)
        body.append("")
    if part == "array":
        body += _array(layout, width)
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
    head += [
        "declare double @llvm.sqrt.f64(double)",
        f"declare <{WIDTH} x double> @llvm.sqrt.v{WIDTH}f64(<{WIDTH} x double>)",
        "declare i32 @llvm.ctpop.i32(i32)",
    ]
    return "\n".join([*head, "", *body, ""])
