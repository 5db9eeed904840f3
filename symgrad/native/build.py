"""Program → LLVM IR text: chunk functions, the scalar entry, the fused array loop.

Three kinds of function (see :class:`~symgrad.native.program.Layout`)::

    i32 chunk_k(ptr w)         records of chunk k; loads what earlier chunks stored in w,
                               stores what later chunks or the caller read; returns its domain flag
    i32 symgrad_scalar(ptr w)  every chunk in order, then the output copies; returns the flag
    i64 symgrad_array(ptr ins, ptr strides, ptr outs, ptr work, ptr flags, i64 start, i64 end)
                               for each point i in [start, end): w[j] = ins[j][i * strides[j]],
                               run the scalar body, outs[k][i] = w[n_inputs + k]; flags[i] = flag
                               when ``flags`` is not null; returns how many points were flagged

The array loop keeps ``w`` on its stack when it is small (then LLVM keeps the
values in registers), else uses ``work``; either way each thread of a split
array call has its own.  No temporaries: one pass over the points, every
output written once.
"""

from __future__ import annotations

from .emit import EMITTERS, LIBM, PREFIX, Emit, double
from .program import Layout, Program

__all__ = ["ARRAY", "SCALAR", "STACK_LIMIT", "build_ir"]

SCALAR = "symgrad_scalar"
ARRAY = "symgrad_array"
STACK_LIMIT = 2048
"""Work vectors up to this many doubles live on the array loop's stack."""


def _load(lines: list[str], name: str, w: str, index: int) -> str:
    lines.append(f"  {name}.p = getelementptr inbounds double, ptr {w}, i64 {index}")
    lines.append(f"  {name} = load double, ptr {name}.p, align 8")
    return name


def _store(lines: list[str], value: str, w: str, index: int, tag: str) -> None:
    lines.append(f"  %s{tag} = getelementptr inbounds double, ptr {w}, i64 {index}")
    lines.append(f"  store double {value}, ptr %s{tag}, align 8")


def _chunk(layout: Layout, k: int, inline: bool, libm: set[str]) -> list[str]:
    program = layout.program
    lines = [f"define internal i32 @chunk_{k}(ptr noalias %w) nounwind {'alwaysinline' if inline else 'noinline'} {{"]
    lines.append("entry:")
    e = Emit(lines)
    first, n_inputs = program.first_record, program.n_inputs
    here: dict[int, str] = {}

    def value(slot: int) -> str:
        v = here.get(slot)
        if v is None:
            if n_inputs <= slot < first:
                v = double(program.consts[slot - n_inputs])
            else:  # an input, or a record of an earlier chunk
                v = _load(lines, f"%v{slot}", "%w", layout.location[slot])
            here[slot] = v
        return v

    for i in layout.chunks[k]:
        name, args = program.records[i]
        result = EMITTERS[name](e, [value(a) for a in args])
        slot = first + i
        here[slot] = result
        index = layout.location.get(slot)
        if index is not None:
            _store(lines, result, "%w", index, str(slot))
    lines.append(f"  %flag = zext i1 {e.flag} to i32")
    lines += ["  ret i32 %flag", "}"]
    libm |= e.libm
    return lines


def _scalar(layout: Layout, inline: bool) -> list[str]:
    program = layout.program
    lines = [f"define i32 @{SCALAR}(ptr noalias %w) nounwind {'alwaysinline' if inline else ''} {{", "entry:"]
    flag = "0"
    for k in range(len(layout.chunks)):
        lines.append(f"  %c{k} = call i32 @chunk_{k}(ptr %w)")
        lines.append(f"  %f{k} = or i32 {flag}, %c{k}")
        flag = f"%f{k}"
    for n, (index, slot) in enumerate(layout.copies):
        if program.n_inputs <= slot < program.first_record:
            v = double(program.consts[slot - program.n_inputs])
        else:
            v = _load(lines, f"%o{n}", "%w", layout.location[slot])
        _store(lines, v, "%w", index, f"o{n}")
    lines += [f"  ret i32 {flag}", "}"]
    return lines


def _array(layout: Layout) -> list[str]:
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
    for j in range(n_in):
        lines += [
            f"  %inp{j} = getelementptr inbounds ptr, ptr %ins, i64 {j}",
            f"  %in{j} = load ptr, ptr %inp{j}, align 8",
            f"  %stp{j} = getelementptr inbounds i64, ptr %strides, i64 {j}",
            f"  %st{j} = load i64, ptr %stp{j}, align 8",
        ]
    for k in range(n_out):
        lines += [
            f"  %outp{k} = getelementptr inbounds ptr, ptr %outs, i64 {k}",
            f"  %out{k} = load ptr, ptr %outp{k}, align 8",
        ]
    lines += [
        "  %has_flags = icmp ne ptr %flags, null",
        "  %any = icmp slt i64 %start, %end",
        "  br i1 %any, label %loop, label %done",
        "loop:",
        "  %i = phi i64 [ %start, %entry ], [ %i.next, %next ]",
        "  %count = phi i64 [ 0, %entry ], [ %count.next, %next ]",
    ]
    for j in range(n_in):
        lines += [
            f"  %at{j} = mul i64 %i, %st{j}",
            f"  %xp{j} = getelementptr inbounds double, ptr %in{j}, i64 %at{j}",
            f"  %x{j} = load double, ptr %xp{j}, align 8",
        ]
        _store(lines, f"%x{j}", "%w", j, f"x{j}")
    lines.append(f"  %flag = call i32 @{SCALAR}(ptr %w)")
    for k in range(n_out):
        _load(lines, f"%y{k}", "%w", n_in + k)
        lines += [
            f"  %yp{k} = getelementptr inbounds double, ptr %out{k}, i64 %i",
            f"  store double %y{k}, ptr %yp{k}, align 8",
        ]
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
        "  %total = phi i64 [ 0, %entry ], [ %count.next, %next ]",
        "  ret i64 %total",
        "}",
    ]
    return lines


def build_ir(program: Program, inline: bool) -> str:
    """The IR of ``program``; ``inline`` merges the chunks into their callers (for small programs at O2)."""
    layout = Layout(program)
    libm: set[str] = set()
    body: list[str] = []
    for k in range(len(layout.chunks)):
        body += _chunk(layout, k, inline, libm)
        body.append("")
    body += _scalar(layout, inline)
    body.append("")
    body += _array(layout)
    head = [
        f"; symgrad native kernel: {program.n_inputs} inputs, {len(program.records)} records, "
        f"{len(program.outputs)} outputs"
    ]
    head += [
        f"declare double @{PREFIX}{name}({', '.join(['double'] * LIBM[name])}) nounwind memory(none)"
        for name in sorted(libm)
    ]
    head.append("declare double @llvm.sqrt.f64(double)")
    return "\n".join([*head, "", *body, ""])
