"""Program → LLVM IR module: chunk functions, the scalar entry, the fused array loop.

Three kinds of function (see :class:`~symgrad.native.program.Layout`)::

    i32 chunk_k(double* w)     records of chunk k; loads what earlier chunks stored in w,
                               stores what later chunks or the caller read; returns its domain flag
    i32 symgrad_scalar(double* w)
                               every chunk in order, then the output copies; returns the flag
    i64 symgrad_array(double** ins, i64* strides, double** outs, double* work, i8* flags,
                      i64 start, i64 end)
                               for each point i in [start, end): w[j] = ins[j][i * strides[j]],
                               run the scalar body, outs[k][i] = w[n_inputs + k]; flags[i] = flag
                               when ``flags`` is not null; returns how many points were flagged

The array loop keeps ``w`` on its stack when it is small (then LLVM keeps the
values in registers), else uses ``work``; either way each thread of a split
array call has its own.  No temporaries: one pass over the points, every
output written once.
"""

from __future__ import annotations

from llvmlite import ir

from .emit import DOUBLE, EMITTERS, Emit
from .libm import PREFIX
from .program import Layout, Program

__all__ = ["ARRAY", "SCALAR", "STACK_LIMIT", "build_module"]

SCALAR = "symgrad_scalar"
ARRAY = "symgrad_array"
STACK_LIMIT = 2048
"""Work vectors up to this many doubles live on the array loop's stack."""

I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
P_DOUBLE = DOUBLE.as_pointer()


class _Module:
    def __init__(self, name: str) -> None:
        self.module = ir.Module(name)
        self._libm: dict[str, ir.Function] = {}

    def libm(self, name: str, arity: int) -> ir.Function:
        fn = self._libm.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(DOUBLE, [DOUBLE] * arity), PREFIX + name)
            fn.attributes.add("nounwind")
            fn.attributes.add("readnone")
            self._libm[name] = fn
        return fn


def _slot_pointer(b: ir.IRBuilder, w: ir.Value, index: int) -> ir.Value:
    return b.gep(w, [ir.Constant(I64, index)], inbounds=True)


def _chunk(mod: _Module, layout: Layout, k: int, inline: bool) -> ir.Function:
    program = layout.program
    fn = ir.Function(mod.module, ir.FunctionType(I32, [P_DOUBLE]), f"chunk_{k}")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("alwaysinline" if inline else "noinline")
    (w,) = fn.args
    w.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    e = Emit(b, mod.libm)
    first, n_inputs = program.first_record, program.n_inputs
    records = layout.chunks[k]
    here: dict[int, ir.Value] = {}

    def value(slot: int) -> ir.Value:
        v = here.get(slot)
        if v is None:
            if n_inputs <= slot < first:
                v = ir.Constant(DOUBLE, program.consts[slot - n_inputs])
            else:  # an input, or a record of an earlier chunk
                v = b.load(_slot_pointer(b, w, layout.location[slot]))
            here[slot] = v
        return v

    for i in records:
        name, args = program.records[i]
        result = EMITTERS[name](e, [value(a) for a in args])
        slot = first + i
        here[slot] = result
        index = layout.location.get(slot)
        if index is not None:
            b.store(result, _slot_pointer(b, w, index))
    b.ret(b.zext(e.flag, I32))
    return fn


def _scalar(mod: _Module, layout: Layout, chunks: list[ir.Function], inline: bool) -> ir.Function:
    program = layout.program
    fn = ir.Function(mod.module, ir.FunctionType(I32, [P_DOUBLE]), SCALAR)
    fn.attributes.add("nounwind")
    if inline:
        fn.attributes.add("alwaysinline")
    (w,) = fn.args
    w.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    flag: ir.Value = ir.Constant(I32, 0)
    for chunk in chunks:
        flag = b.or_(flag, b.call(chunk, [w]))
    for index, slot in layout.copies:
        if program.n_inputs <= slot < program.first_record:
            v: ir.Value = ir.Constant(DOUBLE, program.consts[slot - program.n_inputs])
        else:
            v = b.load(_slot_pointer(b, w, layout.location[slot]))
        b.store(v, _slot_pointer(b, w, index))
    b.ret(flag)
    return fn


def _array(mod: _Module, layout: Layout, scalar: ir.Function) -> ir.Function:
    program = layout.program
    n_in, n_out = program.n_inputs, len(program.outputs)
    p_p_double = P_DOUBLE.as_pointer()
    ty = ir.FunctionType(I64, [p_p_double, I64.as_pointer(), p_p_double, P_DOUBLE, I8.as_pointer(), I64, I64])
    fn = ir.Function(mod.module, ty, ARRAY)
    fn.attributes.add("nounwind")
    ins, strides, outs, work, flags, start, end = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    store_flag = fn.append_basic_block("store_flag")
    next_point = fn.append_basic_block("next")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    on_stack = layout.size <= STACK_LIMIT
    w = b.bitcast(b.alloca(ir.ArrayType(DOUBLE, max(layout.size, 1))), P_DOUBLE) if on_stack else work
    in_ptrs = [b.load(b.gep(ins, [ir.Constant(I64, j)], inbounds=True)) for j in range(n_in)]
    in_strides = [b.load(b.gep(strides, [ir.Constant(I64, j)], inbounds=True)) for j in range(n_in)]
    out_ptrs = [b.load(b.gep(outs, [ir.Constant(I64, k)], inbounds=True)) for k in range(n_out)]
    has_flags = b.icmp_unsigned("!=", flags, ir.Constant(I8.as_pointer(), None))
    b.cbranch(b.icmp_signed("<", start, end), loop, done)

    b.position_at_end(loop)
    i = b.phi(I64, "i")
    count = b.phi(I64, "count")
    for j in range(n_in):
        x = b.load(b.gep(in_ptrs[j], [b.mul(i, in_strides[j])], inbounds=True))
        b.store(x, _slot_pointer(b, w, j))
    flag = b.call(scalar, [w])
    for k in range(n_out):
        b.store(b.load(_slot_pointer(b, w, n_in + k)), b.gep(out_ptrs[k], [i], inbounds=True))
    count_next = b.add(count, b.zext(b.icmp_unsigned("!=", flag, ir.Constant(I32, 0)), I64))
    b.cbranch(has_flags, store_flag, next_point)

    b.position_at_end(store_flag)
    b.store(b.trunc(flag, I8), b.gep(flags, [i], inbounds=True))
    b.branch(next_point)

    b.position_at_end(next_point)
    i_next = b.add(i, ir.Constant(I64, 1))
    b.cbranch(b.icmp_signed("<", i_next, end), loop, done)
    i.add_incoming(start, entry)
    i.add_incoming(i_next, next_point)
    count.add_incoming(ir.Constant(I64, 0), entry)
    count.add_incoming(count_next, next_point)

    b.position_at_end(done)
    total = b.phi(I64, "total")
    total.add_incoming(ir.Constant(I64, 0), entry)
    total.add_incoming(count_next, next_point)
    b.ret(total)
    return fn


def build_module(program: Program, inline: bool, name: str = "symgrad") -> ir.Module:
    """The IR of ``program``; ``inline`` merges the chunks into their callers (for small programs at O2)."""
    layout = Layout(program)
    mod = _Module(name)
    chunks = [_chunk(mod, layout, k, inline) for k in range(len(layout.chunks))]
    scalar = _scalar(mod, layout, chunks, inline)
    _array(mod, layout, scalar)
    return mod.module
