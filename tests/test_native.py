"""The native backend (LLVM via llvmlite) against the reference interpreter.

Every comparison is bit for bit: the machine code performs the interpreter's
IEEE operations in the same order with the same libm, and every point the
kernel flags is re-run by the interpreter, so values and DomainErrors agree.
"""

from __future__ import annotations

import ctypes
import math
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from floats import near, same
from hypothesis import given, settings
from strategies import Case, cases

import symgrad
from symgrad import config, ops
from symgrad.backends import dispatch, interpreter, native
from symgrad.backends.native import cache, jit, libm, pyentry
from symgrad.backends.native.build import build_ir, layout_of
from symgrad.backends.native.emit import Builder, checks_result, constant, emitter, propagates, supported
from symgrad.backends.native.kernel import NativeKernel, compile_native
from symgrad.backends.native.program import CHUNK, DELAY, Layout, Program, unchecked
from symgrad.errors import DomainError, InputError
from symgrad.lower import lower
from symgrad.ops import OPS, Op
from symgrad.parser import parse
from symgrad.tape import Instr, Tape, TapeError

INF, NAN = math.inf, math.nan
EDGES = (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.5, 1e-310, 1e-200, 1e200, 1e308, 710.0, -745.5, INF, -INF, NAN)


def outcome(fn: object, *args: float) -> tuple[str, object]:
    """("ok", [values]) or ("error", (type, message))."""
    try:
        return "ok", list(fn(*args))  # type: ignore[operator]
    except (ArithmeticError, ValueError) as e:
        return "error", (type(e), str(e))


def assert_same_outcome(got: tuple[str, object], want: tuple[str, object], where: object) -> None:
    assert got[0] == want[0], (where, got, want)
    if got[0] == "ok":
        g, w = got[1], want[1]
        assert isinstance(g, list) and isinstance(w, list) and len(g) == len(w), (where, g, w)
        assert all(same(a, b) for a, b in zip(g, w, strict=True)), (where, g, w)
    else:
        assert got[1] == want[1], where


def one_op_tape(op: Op) -> Tape:
    names = ("x", "y")[: op.arity]
    text = f"{op.name}({', '.join(names)})"
    return Tape(names, (), (Instr(op, tuple(range(op.arity))),), op.arity, source=text)


def reference(tape: Tape, outputs: list[int]) -> object:
    def run(*point: float) -> list[float]:
        values = interpreter.forward(tape, point)
        return [values[s] for s in outputs]

    return run


# ------------------------------------------------------------------ the table --


def test_the_ir_builder_names_every_value_and_fills_phis_in_later() -> None:
    # A loop written through the Builder (no SSA name spelled by hand): sum of k * x for k < n.
    b = Builder("define double @sum_k_x({}) {{", [("double", "x"), ("i64", "n")])
    x, n = b.args
    entry, loop, done = b.block, b.append_basic_block("loop"), b.append_basic_block("done")
    b.cbranch(b.icmp("slt", constant("i64", 0), n), loop, done)
    b.position_at_end(loop)
    k, total = b.phi("i64", name="k"), b.phi("double", name="total")
    xk = b.call("double", "@llvm.fmuladd.f64", [x, b.call("double", "@to_double", [k]), constant("double", "0.0")])
    more_total = b.fadd(total, xk, name="total")  # the same hint again: a new name
    k_next = b.add(k, constant("i64", 1), name="k")
    b.cbranch(b.icmp("slt", k_next, n), loop, done)
    k.add_incoming(constant("i64", 0), entry)
    k.add_incoming(k_next, loop)
    total.add_incoming(constant("double", "0.0"), entry)
    total.add_incoming(more_total, loop)
    b.position_at_end(done)
    result = b.phi("double")
    result.add_incoming(constant("double", "0.0"), entry)
    result.add_incoming(more_total, loop)
    b.ret(result)
    helper = "define internal double @to_double(i64 %k) {\n  %d = sitofp i64 %k to double\n  ret double %d\n}"
    text = "\n".join(["declare double @llvm.fmuladd.f64(double, double, double)", helper, *b.text()])
    defined = [line.split(" = ")[0].strip() for line in b.text() if " = " in line]
    assert len(defined) == len(set(defined))  # every value its own name
    loaded = jit.load_object(jit.compile_object(text, 0), ("sum_k_x",))
    fn = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double, ctypes.c_int64)(loaded.addresses["sum_k_x"])
    for x_value, count in [(0.5, 10), (3.0, 1), (2.0, 0), (-1.25, 7)]:
        want = 0.0
        for i in range(count):
            want += x_value * i
        assert fn(x_value, count) == want


def test_for_range_loops_and_blocks_named_like_arguments_compile_and_run() -> None:
    # Two loops of the same hint and a block labelled like an argument: the Builder keeps the labels apart.
    b = Builder("define double @sum_twice({}) {{", [("ptr noalias", "xs"), ("i64", "n")])
    xs, n = b.args
    total = b.alloca("double", 8, name="total")
    b.store(constant("double", "0.0"), total)
    for _ in range(2):
        with b.for_range(n, name="k") as k:
            b.store(b.fadd(b.load("double", total), b.load_at("double", xs, k)), total)
    xs_block = b.append_basic_block("xs")
    b.branch(xs_block)
    b.position_at_end(xs_block)
    b.ret(b.load("double", total))
    lines = b.text()
    labels = [line[:-1] for line in lines if line.endswith(":")]
    assert len(labels) == len(set(labels)) and "xs" not in labels and "n" not in labels
    loaded = jit.load_object(jit.compile_object("\n".join(lines), 0), ("sum_twice",))
    fn = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.POINTER(ctypes.c_double), ctypes.c_int64)(
        loaded.addresses["sum_twice"]
    )
    for values in ([], [1.5], [0.25, -3.0, 1e10, 7.0]):
        array = (ctypes.c_double * max(len(values), 1))(*values)
        want = 0.0
        for _ in range(2):
            for v in values:
                want += v
        assert fn(array, len(values)) == want


_DEFINED = re.compile(r"^\s+(%\S+) = ", re.MULTILINE)
_HELPER_NAME = re.compile(r"%(t\d+|[A-Za-z_][\w.]*\.\d+)")
"""The names the IR helpers give: ``%tN`` (Emit) or ``%hint.N`` (Builder)."""


def test_generated_ir_names_every_value_through_the_helpers() -> None:
    # No SSA name formatted by hand (like %p12, %flag, %c0 once): every defined value is named by
    # Emit or the Builder, in the chunks, the scalar entry, both array loops and the C API entries.
    big = _big_tape(1200)  # three chunks; outputs: an input, a constant and a repeat are copies
    outputs = [big.output, 0, big.n_inputs, big.output, big.first_instr_slot + 7]
    small = lower(parse(GAUSS), GAUSS)
    texts = [pyentry._ir()]
    for tape, outs in ((big, outputs), (small, [small.output, 1, small.first_instr_slot])):
        program = Program.from_tape(tape, outs)
        texts += [build_ir(program, "scalar"), build_ir(program, "scalar", batch=4)]
        texts += [build_ir(program, "array", vector=vector) for vector in (0, 4)]
    assert len(layout_of(Program.from_tape(big, outputs)).chunks) >= 3
    for function in (f for text in texts for f in text.split("\ndefine ")[1:]):
        names = _DEFINED.findall(function)
        assert names and len(names) == len(set(names))
        assert [name for name in names if not _HELPER_NAME.fullmatch(name)] == []


def test_every_op_of_the_table_has_an_emitter() -> None:
    assert all(supported(op) for op in OPS.values())
    assert {"heaviside", "sign", "xlogy"} <= set(OPS)
    for op in OPS.values():
        assert callable(emitter(op.name))


def _ramp(native: ops.NativeRule | None) -> Op:
    """A temporary row computing relu under another name, with the given native column."""
    return Op("ramp", 1, "ramp", OPS["relu"].scalar, OPS["relu"].array, "ramp({0})", ("heaviside(a, 0)",),
              OPS["relu"].sympy, "max(a, 0)", call_names=("ramp",), native=native)  # fmt: skip


def test_a_new_row_with_a_native_column_is_machine_code_with_nothing_else() -> None:
    # The emitter reads the row's column (here: relu's recipe), not a table of op names.
    ops.register(_ramp(ops.NativeRule(recipe="relu")))
    try:
        tape = lower(parse("ramp(x) * y"), "ramp(x) * y")
        assert native.emits(tape)
        kernel = compile_native(tape, [tape.output])
        want = reference(tape, [tape.output])
        for x in EDGES:
            assert_same_outcome(outcome(kernel, x, 3.0), outcome(want, x, 3.0), x)
        assert "select" in kernel.llvm_ir()
    finally:
        ops.unregister("ramp")


@pytest.mark.parametrize(
    "rule", [None, ops.NativeRule(libm="cbrt"), ops.NativeRule(recipe="cube")], ids=["none", "libm", "recipe"]
)
def test_a_row_without_a_known_native_rule_runs_on_python(rule: ops.NativeRule | None) -> None:
    # cbrt is no libm function of the table (not declared, not registered); "cube" no recipe.
    ops.register(_ramp(rule))
    try:
        tape = lower(parse("ramp(x) * y"), "ramp(x) * y")
        assert not native.emits(tape)
        f = symgrad.compile(" + ".join(f"ramp(x*{k} + y)" for k in range(1, 120)))  # > 200 records: auto
        assert f(x=0.5, y=-0.25) == sum(max(0.5 * k - 0.25, 0.0) for k in range(1, 120))
    finally:
        ops.unregister("ramp")


def test_native_rules_name_one_way() -> None:
    with pytest.raises(ValueError, match="one instruction, libm function or recipe"):
        ops.NativeRule(instruction="fadd", libm="exp")
    with pytest.raises(ValueError, match="one instruction, libm function or recipe"):
        ops.NativeRule()


def test_the_op_table_does_not_import_llvmlite() -> None:
    import subprocess
    import sys

    code = "import sys, symgrad.ops; assert 'llvmlite' not in sys.modules, 'llvmlite imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("opt", [None, 2], ids=["default", "O2"])
@pytest.mark.parametrize("op", list(OPS.values()), ids=lambda op: op.name)
def test_every_op_at_domain_points_and_edges(op: Op, opt: int | None) -> None:
    tape = one_op_tape(op)
    kernel = compile_native(tape, [tape.output], opt=opt)
    rng = np.random.default_rng(len(op.name))
    points = [tuple(float(rng.uniform(lo, hi)) for lo, hi in op.domain) for _ in range(20)]
    if op.arity == 1:
        points += [(e,) for e in EDGES]
    else:
        points += [(a, b) for a in EDGES for b in EDGES]
    want_fn = reference(tape, [tape.output])
    for p in points:
        assert_same_outcome(outcome(kernel, *p), outcome(want_fn, *p), (op.name, p))
    # The array kernel: the same numbers (a few ulp with libmvec) at every point the interpreter
    # accepts, its error at the others; without libmvec, the same bits.
    good = [p for p in points if outcome(want_fn, *p)[0] == "ok"]
    columns = [np.array(c) for c in zip(*good, strict=True)]
    (values,) = kernel.array(*columns)
    scalar_libm = compile_native(tape, [tape.output], opt=opt)
    scalar_libm.libmvec = False
    (exact,) = scalar_libm.array(*columns)
    for p, v, x in zip(good, values.tolist(), exact.tolist(), strict=True):
        want = outcome(want_fn, *p)[1][0]  # type: ignore[index]
        assert near(v, want) and same(x, want), (op.name, p, v, x, want)
    bad = [p for p in points if outcome(want_fn, *p)[0] == "error"]
    if bad:
        columns = [np.array(c) for c in zip(*(good[:3] + bad[:1]), strict=True)]
        with pytest.raises(DomainError) as info:
            kernel.array(*columns)
        assert str(info.value) == outcome(want_fn, *bad[0])[1][1]  # type: ignore[index]
        kernel.array(*columns, errors="ignore")  # IEEE results, no raising


HELPERS = {"heaviside": ops._heaviside, "sign": ops._sign, "xlogy": ops._xlogy}


@pytest.mark.parametrize("name", sorted(HELPERS))
def test_helper_emitters_equal_the_python_helpers(name: str) -> None:
    helper = HELPERS[name]
    arity = 1 if name == "sign" else 2
    program = Program(arity, (), ((name, tuple(range(arity))),), (arity,))
    kernel = NativeKernel(program, lambda p: [helper(*p)])
    for p in [(e,) for e in EDGES] if arity == 1 else [(a, b) for a in EDGES for b in EDGES]:
        assert_same_outcome(outcome(kernel, *p), outcome(lambda *q: [helper(*q)], *p), (name, p))


# ------------------------------------------------------------- random tapes --


@settings(max_examples=40)
@given(cases(max_depth=4))
def test_random_tapes_every_slot_as_an_output(case: Case) -> None:
    tape = lower(parse(case.text), case.text)
    point = [case.point[name] for name in tape.inputs]
    slots = list(range(tape.n_slots))
    kernel = compile_native(tape, slots)
    kernel.libmvec = False  # scalar libm in every lane: bit for bit (libmvec: tests/test_native_arrays.py)
    want = outcome(reference(tape, slots), *point)
    assert_same_outcome(outcome(kernel, *point), want, case.text)
    # The array kernel (four points per vector iteration, then the scalar tail) gives the same bits.
    columns = kernel.array(*(np.full(6, v) for v in point), errors="ignore")
    if want[0] == "ok" and point:
        for lane in range(6):
            assert_same_outcome(("ok", [float(c[lane]) for c in columns]), want, (case.text, lane))
    nearby = [v * 1.25 - 0.5 for v in point]  # maybe outside the domain: then both raise the same error
    assert_same_outcome(outcome(kernel, *nearby), outcome(reference(tape, slots), *nearby), case.text)


def test_multiple_outputs_in_any_order_with_repeats_inputs_and_constants() -> None:
    text = "sin(x) * y + exp(x / y) - 2.5"
    tape = lower(parse(text), text)
    const_slot = tape.n_inputs
    outputs = [tape.output, 0, const_slot, tape.n_slots - 2, tape.output, tape.first_instr_slot, 1]
    kernel = compile_native(tape, outputs)
    for point in [(0.3, 1.7), (-2.0, 0.25), (1e-300, -3.0)]:
        values = interpreter.forward(tape, point)
        assert kernel(*point) == tuple(values[s] for s in outputs)
    with pytest.raises(DomainError, match="divides by zero"):
        kernel(1.0, 0.0)


def test_bad_output_slots_and_bad_points_are_clear_errors() -> None:
    tape = lower(parse("x + y"), "x + y")
    with pytest.raises(TapeError, match="output %7"):
        compile_native(tape, [7])
    kernel = compile_native(tape, [tape.output])
    with pytest.raises(InputError, match=r"takes 2 real numbers \(x, y\)"):
        kernel(1.0)
    with pytest.raises(InputError, match="takes 2 arrays"):
        kernel.array(np.zeros(3))
    with pytest.raises(InputError, match="broadcast"):
        kernel.array(np.zeros(3), np.zeros(4))


def test_domain_flag_sees_values_no_output_shows_and_sums_that_overflow_are_false_alarms() -> None:
    # An overflow that a later op hides (1 / inf = 0) still reaches the interpreter's error.
    text = "1 / exp(x) + y"
    tape = lower(parse(text), text)
    kernel = compile_native(tape, [tape.output])
    assert_same_outcome(outcome(kernel, 800.0, 1.0), outcome(reference(tape, [tape.output]), 800.0, 1.0), text)
    assert outcome(kernel, 800.0, 1.0)[0] == "error"
    # Finite values whose sum overflows (the checked values are summed): a false alarm, the same numbers.
    text = "(x * 1.5 - x * 1.25) + (y * 1.75 - y * 1.5)"
    tape = lower(parse(text), text)
    kernel = compile_native(tape, [tape.output, tape.first_instr_slot, tape.first_instr_slot + 1])
    for point in [(1e308, 1e308), (1e308, -1e308), (-1e308, 1.0), (2.0, 3.0)]:
        want = outcome(reference(tape, [tape.output, tape.first_instr_slot, tape.first_instr_slot + 1]), *point)
        assert want[0] == "ok"
        assert_same_outcome(outcome(kernel, *point), want, point)


@pytest.mark.parametrize("name", sorted(name for name, op in OPS.items() if op.propagates))
def test_propagating_arguments_turn_inf_and_nan_into_inf_or_nan(name: str) -> None:
    # The fact that lets a record skip its own check (program.unchecked), tested on the machine code.
    flows = propagates(name)
    tape = one_op_tape(OPS[name])
    kernel = compile_native(tape, [tape.output])
    for k, flow in enumerate(flows):
        assert flow or len(flows) > 1  # only the arguments that do propagate are listed as True
        if not flow:
            continue
        others = [list(EDGES)] * len(flows)
        others[k] = [INF, -INF, NAN]
        grid = np.meshgrid(*(np.array(v) for v in others), indexing="ij")
        (values,) = kernel.array(*(g.ravel() for g in grid), errors="ignore")
        assert not np.isfinite(values).any(), name


def test_records_skip_their_check_only_where_a_checked_reader_sees_their_inf() -> None:
    # x*y feeds add (propagates, checked): skipped.  y-x feeds only exp (checked, propagates nothing)
    # and tanh: kept.  x/y feeds div as the divisor (propagates nothing): kept.  The output add: kept.
    names = {"mul": ("mul", (0, 1)), "sub": ("sub", (1, 0)), "div": ("div", (0, 1))}
    records = (
        names["mul"],  # 2
        names["sub"],  # 3
        ("exp", (3,)),  # 4
        ("tanh", (3,)),  # 5
        names["div"],  # 6
        ("div", (4, 6)),  # 7: its numerator exp(y-x) is seen through it
        ("neg", (7,)),  # 8
        ("add", (2, 8)),  # 9
    )
    program = Program(2, (), records, (9,))
    quiet = unchecked(program, propagates, checks_result)
    assert list(quiet) == [1, 0, 1, 0, 0, 1, 1, 0]
    tape = Tape(("x", "y"), (), tuple(Instr(OPS[n], a) for n, a in records), 9)
    kernel = compile_native(tape, [9])
    for point in [(1.0, 2.0), (0.0, 800.0), (1e300, 1e300), (-1e300, 1e10), (2.0, 0.0), (INF, 1.0), (NAN, 1.0)]:
        assert_same_outcome(outcome(kernel, *point), outcome(reference(tape, [9]), *point), point)


def test_sin_and_cos_of_one_argument_are_one_libm_call_with_the_same_bits() -> None:
    text = "sin(x) * cos(x) + cos(y) - sin(x * y) + tanh(cos(x * y))"
    tape = lower(parse(text), text)
    slots = list(range(tape.n_slots))
    kernel = compile_native(tape, slots)
    kernel.libmvec = False  # scalar libm in every lane of the array loop: bit-identical, sincos per lane
    fused = ("sin", "cos") in jit.fused_pairs()
    assert fused == ("sincos" in libm.pairs())
    assert ("@symgrad_sincos(" in kernel.llvm_ir()) == fused == ("@symgrad_sincos(" in kernel.llvm_ir("array"))
    rng = np.random.default_rng(3)
    points = [(float(a), float(b)) for a, b in rng.uniform(-4.0, 4.0, (30, 2))]
    points += [(float(a), float(b)) for a, b in 10.0 ** rng.uniform(-10.0, 300.0, (30, 2))]
    points += [(e, 0.5) for e in EDGES]
    want_fn = reference(tape, slots)
    for p in points:
        assert_same_outcome(outcome(kernel, *p), outcome(want_fn, *p), p)
    good = [p for p in points if outcome(want_fn, *p)[0] == "ok"]
    columns = kernel.array(*(np.array(c) for c in zip(*good, strict=True)))  # four lanes per call, then the tail
    for n, p in enumerate(good):
        assert_same_outcome(("ok", [float(c[n]) for c in columns]), outcome(want_fn, *p), p)


def test_a_partner_far_down_the_tape_moves_up_next_to_its_pair() -> None:
    n = 3 * CHUNK
    r = random.Random(2)
    instrs = [Instr(OPS["sin"], (0,))]  # slot 2; cos(x) comes last, two chunks later
    for _ in range(n):
        op = OPS[r.choice(["add", "mul", "sin", "cos"])]
        top = 2 + len(instrs)
        instrs.append(Instr(op, tuple(r.randrange(max(0, top - 5), top) for _ in range(op.arity))))
    instrs.append(Instr(OPS["cos"], (0,)))
    instrs.append(Instr(OPS["add"], (2 + len(instrs) - 1, 2 + len(instrs) - 2)))
    tape = Tape(("x", "y"), (), tuple(instrs), 2 + len(instrs) - 1)
    outputs = [tape.output, 2, tape.output - 1, tape.output - 2, 1]
    program = Program.from_tape(tape, outputs)
    layout = Layout(program, pairs={("sin", "cos"), ("cos", "sin")})
    last = len(instrs) - 2
    assert layout.fused[0] == last and layout.chunks[0][:2] == [0, last]
    assert sorted(i for c in layout.chunks for i in c) == list(range(len(instrs)))
    assert max(len(c) for c in layout.chunks) <= CHUNK + 1
    kernel = compile_native(tape, outputs)
    for point in [(0.3, -1.2), (2.5, 0.7), (-40.0, 3.0)]:
        values = interpreter.forward(tape, point)
        assert kernel(*point) == tuple(values[s] for s in outputs)


def test_readers_of_libm_results_run_later_and_every_record_still_after_its_arguments() -> None:
    tape = _big_tape(3 * CHUNK)
    program = Program.from_tape(tape, [tape.output])
    layout = layout_of(program, {("sin", "cos"), ("cos", "sin")})
    order = [i for chunk in layout.chunks for i in chunk]
    assert sorted(order) == list(range(len(program.records))) and order != sorted(order)
    at = {i: n for n, i in enumerate(order)}
    first = program.first_record
    for i, (_, args) in enumerate(program.records):
        assert all(at[a - first] < at[i] for a in args if a >= first), i
    # A reader of a libm result runs at least DELAY records after it unless it had to wait for another argument.
    slow = {"sin", "cos", "tanh", "sigmoid"}
    gaps = [
        at[i] - at[a - first]
        for i, (_, args) in enumerate(program.records)
        for a in args
        if a >= first and program.records[a - first][0] in slow and a - first not in layout.fused
    ]
    assert gaps and sorted(gaps)[len(gaps) // 2] >= DELAY // 2


def test_a_pair_function_is_used_only_where_it_gives_the_bits_of_the_two_functions() -> None:
    pointer = ctypes.POINTER(ctypes.c_double)

    def finite(fn: Callable[[float], float]) -> Callable[[float], float]:
        return lambda x: fn(x) if math.isfinite(x) else math.nan

    single = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)
    sin, cos = single(finite(math.sin)), single(finite(math.cos))

    def exact(x: float, a: Any, b: Any) -> None:
        a[0], b[0] = finite(math.sin)(x), finite(math.cos)(x)

    def off_by_one_ulp(x: float, a: Any, b: Any) -> None:
        exact(x, a, b)
        if x > 1.0:
            b[0] = math.nextafter(b[0], 0.0)

    pair = ctypes.CFUNCTYPE(None, ctypes.c_double, pointer, pointer)
    assert libm._agrees(SimpleNamespace(sincos=pair(exact), sin=sin, cos=cos), "sincos")  # type: ignore[arg-type]
    assert not libm._agrees(SimpleNamespace(sincos=pair(off_by_one_ulp), sin=sin, cos=cos), "sincos")  # type: ignore[arg-type]
    assert not libm._agrees(SimpleNamespace(sin=sin, cos=cos), "sincos")  # type: ignore[arg-type]


def _big_tape(n_records: int, n_inputs: int = 20, seed: int = 5) -> Tape:
    """A random tape built record by record (parsing 100,000 records would dominate the test)."""
    r = random.Random(seed)
    consts = (0.5, 1.25, -0.75)
    first = n_inputs + len(consts)
    names = ["add", "sub", "mul", "sin", "cos", "tanh", "max", "sigmoid"]
    instrs = []
    for i in range(n_records):
        op = OPS[r.choice(names)]
        top = first + i
        # mostly recent values (long dependency chains across chunks), sometimes any earlier slot
        args = tuple(
            r.randrange(max(0, top - 30), top) if r.random() < 0.8 else r.randrange(top) for _ in range(op.arity)
        )
        instrs.append(Instr(op, args))
    return Tape(tuple(f"x{i}" for i in range(n_inputs)), consts, tuple(instrs), first + n_records - 1)


def test_hundred_thousand_records_in_chunks() -> None:
    tape = _big_tape(100_000)
    outputs = [tape.output, tape.n_slots // 2, 3, tape.first_instr_slot + CHUNK - 1, tape.first_instr_slot + CHUNK]
    kernel = compile_native(tape, outputs)
    assert kernel.opt() == kernel.opt("array") == 0 and len(kernel.layout.chunks) == 200
    point = [0.05 * (i + 1) for i in range(20)]
    values = interpreter.forward(tape, point)
    assert kernel(*point) == tuple(values[s] for s in outputs)
    xs = [np.full(3, v) for v in point]
    xs[0] = np.array([point[0], -1.0, 2.0])
    got = kernel.array(*xs, threads=2)
    for i in range(3):
        values = interpreter.forward(tape, [float(x[i]) for x in xs])
        assert [g[i] for g in got] == [values[s] for s in outputs]


# ------------------------------------------------------------------ arrays --

GAUSS = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"


@pytest.mark.parametrize(
    "shapes",
    [((5,), (), ()), ((3, 1), (1, 4), ()), ((2, 3), (3,), (2, 1)), ((), (), ()), ((0,), (), ()), ((4, 3), (), (1,))],
    ids=str,
)
def test_array_kernel_broadcasts_like_numpy_and_equals_the_interpreter(shapes: tuple[tuple[int, ...], ...]) -> None:
    tape = lower(parse(GAUSS), GAUSS)
    outputs = [tape.output, tape.first_instr_slot, 2]
    kernel = compile_native(tape, outputs)
    rng = np.random.default_rng(7)
    xs = [rng.uniform(0.5, 2.0, shape) for shape in shapes]
    if xs[0].ndim == 2:
        xs[0] = np.asfortranarray(xs[0])  # not C-contiguous
    got = kernel.array(*xs)
    shape = np.broadcast_shapes(*shapes)
    wide = np.broadcast_arrays(*xs)
    for k, slot in enumerate(outputs):
        assert got[k].shape == shape
        for index in np.ndindex(shape):
            values = interpreter.forward(tape, [float(w[index]) for w in wide])
            assert near(float(got[k][index]), values[slot], 8)  # libmvec's exp: a few ulp


@pytest.mark.parametrize("n", range(19))
def test_every_length_of_the_partial_vector_after_the_whole_ones(n: int) -> None:
    """Whole vectors run in the loop, the rest once after it: every split of n points, with sums and flags."""
    text = "log(x) * exp(-y*x)"
    tape = lower(parse(text), text)
    outputs = [tape.output, tape.first_instr_slot, tape.output]  # the value, log(x), and the value summed
    kernel = compile_native(tape, outputs)
    x = np.linspace(0.5, 3.0, n)
    if n:
        x[n // 2] = -1.0  # log of a negative: the kernel flags it (in the loop or in the rest)
        x[-1] = -2.0
    written, count = kernel.array_count(x, 0.7, summed=(2,))
    bad = {n // 2, n - 1} if n else set()
    assert count == len(bad)
    flags = np.zeros(n, dtype=np.uint8)  # where array(errors="raise") asks the interpreter
    kernel._array_pass([x, np.asarray(0.7)], (n,), (), threads=1, flags=flags)
    assert set(np.flatnonzero(flags).tolist()) == bad
    want_sum = 0.0
    for i in range(n):
        if i in bad:
            assert math.isnan(written[0][i])
            continue
        values = interpreter.forward(tape, [float(x[i]), 0.7])
        assert near(float(written[0][i]), values[outputs[0]], 8)
        assert near(float(written[1][i]), values[outputs[1]], 8)
        want_sum += values[outputs[2]]
    good = np.array([i not in bad for i in range(n)], dtype=bool)
    sums = kernel.array(x[good], 0.7, summed=(2,))[2]
    assert abs(float(sums) - want_sum) <= 1e-12 * max(1.0, abs(want_sum))


def test_threads_split_the_points_and_give_the_same_numbers() -> None:
    tape = lower(parse(GAUSS), GAUSS)
    kernel = compile_native(tape, [tape.output, tape.first_instr_slot + 1])
    x = np.linspace(-3.0, 3.0, 100_001)
    one = kernel.array(x, 0.2, 1.5, threads=1)
    two = kernel.array(x, 0.2, 1.5, threads=2)
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a, b)
    i = 12_345
    values = interpreter.forward(tape, [float(x[i]), 0.2, 1.5])
    assert near(float(one[0][i]), values[tape.output], 8)


def test_array_domain_error_is_the_interpreters_and_false_alarms_keep_their_values() -> None:
    text = "log(x) + exp(y)"
    tape = lower(parse(text), text)
    kernel = compile_native(tape, [tape.output])
    with pytest.raises(DomainError) as info:
        kernel.array(np.array([1.0, 2.0, -1.0, -2.0]), 0.0, threads=2)
    assert info.value.excerpt.endswith("^^^^^^") and "log(-1.0)" in str(info.value)
    (ignored,) = kernel.array(np.array([1.0, -1.0]), 0.0, errors="ignore")
    assert ignored[0] == 1.0 and math.isnan(ignored[1])
    # exp(inf) = inf is flagged (a non-finite libm result) but valid: the interpreter's value is kept.
    (values,) = kernel.array(np.array([1.0, 2.0]), np.array([INF, 0.5]))
    assert values[0] == INF and values[1] == interpreter.forward(tape, [2.0, 0.5])[tape.output]


# ------------------------------------------------------------------ cache --


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    with config.override(CACHE_DIR=tmp_path, CACHE=True):
        yield tmp_path


def kernel_files(directory) -> list:  # type: ignore[no-untyped-def]
    """The cache's kernel files (not the one file of the Python entries' code)."""
    return [p for p in directory.glob("*.sgk") if p.stem != pyentry.cache_key()]


def _stats() -> dict[str, int]:
    return dict(cache.STATS)


def test_cache_files_are_verified_and_corrupted_ones_rebuilt(cache_dir) -> None:  # type: ignore[no-untyped-def]
    tape = lower(parse(GAUSS), GAUSS)
    first = compile_native(tape, [tape.output])
    (path,) = kernel_files(cache_dir)
    before = _stats()
    assert compile_native(tape, [tape.output])(0.7, 0.2, 1.5) == first(0.7, 0.2, 1.5)
    assert _stats()["hits"] == before["hits"] + 1
    good = path.read_bytes()
    for bad in (good[:-7] + b"garbage", good[:40], b"\x7fELF" + good[4:], b""):
        path.write_bytes(bad)
        before = _stats()
        kernel = compile_native(tape, [tape.output])
        assert _stats()["rejected"] == before["rejected"] + 1 and _stats()["stores"] == before["stores"] + 1
        assert kernel(0.7, 0.2, 1.5) == (interpreter.forward(tape, [0.7, 0.2, 1.5])[tape.output],)
        assert path.read_bytes() == good  # rebuilt
    # A valid file of another kernel renamed to this key (a foreign file) is rejected too.
    other = lower(parse("x*y"), "x*y")
    compile_native(other, [other.output])
    foreign = next(p for p in kernel_files(cache_dir) if p != path)
    path.write_bytes(foreign.read_bytes())
    before = _stats()
    assert compile_native(tape, [tape.output])(0.7, 0.2, 1.5) == first(0.7, 0.2, 1.5)
    assert _stats()["rejected"] == before["rejected"] + 1


def test_a_row_whose_native_column_changes_is_compiled_anew(cache_dir: Path) -> None:
    # The cache key covers each op's native rule: the same program over a row whose rule changed
    # (edited in ops.py, or registered again) must not load the old row's machine code.
    tape_text = "ramp(x) * y"
    got = []
    for recipe in ("relu", "sign"):
        ops.register(_ramp(ops.NativeRule(recipe=recipe)))
        try:
            tape = lower(parse(tape_text), tape_text)
            got.append(compile_native(tape, [tape.output])(-2.0, 3.0)[0])
        finally:
            ops.unregister("ramp")
    assert got == [0.0, -3.0]  # relu(-2) * 3, then sign(-2) * 3
    assert len(kernel_files(cache_dir)) == 2


def test_cache_can_be_disabled_bounded_and_cleared(cache_dir: Path) -> None:
    tape = lower(parse("x + 1"), "x + 1")
    with config.override(CACHE=False):
        compile_native(tape, [tape.output])
    assert list(cache_dir.iterdir()) == []
    compile_native(tape, [tape.output])
    (first,) = kernel_files(cache_dir)
    limit = 1.5 * first.stat().st_size  # room for one kernel of this kind, not two
    with config.override(CACHE_MAX_MB=limit / 1024 / 1024):
        for k in range(4):
            text = f"x * {k + 2}"
            t = lower(parse(text), text)
            compile_native(t, [t.output])
    kept = kernel_files(cache_dir)
    assert len(kept) == 1 and first not in kept  # the least recently used went first
    assert sum(p.stat().st_size for p in kept) <= limit
    assert cache.clear() >= 1 and list(cache_dir.glob("*.sgk")) == []


_CHILD = """
import sys
from symgrad.lower import lower
from symgrad.parser import parse
from symgrad.backends.native import cache, kernel
text = sys.argv[1]
tape = lower(parse(text), text)
k = kernel.compile_native(tape, [tape.output])
print(kernel.STATS["compiled"], kernel.STATS["loaded"], cache.STATS["rejected"], k(0.7, 0.2, 1.5)[0])
"""


def _children(cache_dir, count: int, text: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache_dir)}
    env.pop("SYMGRAD_CACHE", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, text], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return outs


def test_second_process_loads_instead_of_compiling_and_concurrent_writers(cache_dir) -> None:  # type: ignore[no-untyped-def]
    text = GAUSS + " + sin(x*mu)"
    want = interpreter.forward(lower(parse(text), text), [0.7, 0.2, 1.5])
    # Three processes start together on an empty cache: each compiles and writes the same file.
    writers = _children(cache_dir, 3, text)
    assert all(out[2] == "0" and float(out[3]) == want[-1] for out in writers)
    assert len(kernel_files(cache_dir)) == 1 and not list(cache_dir.glob(".tmp-*"))
    (reader,) = _children(cache_dir, 1, text)
    assert reader[:3] == ["0", "1", "0"]  # loaded, not compiled; the file was valid
    assert float(reader[3]) == want[-1]


# ------------------------------------------------------------ the Function --


def test_compile_backend_choice() -> None:
    text = GAUSS
    f_native = symgrad.compile(text, backend="native")
    f_python = symgrad.compile(text, backend="python")
    assert f_native.backend == "native" and f_python.backend == "python"
    for point in [(0.7, 0.2, 1.5), (-1.0, 3.0, 0.1)]:
        assert f_native(*point) == f_python(*point)
    with pytest.raises(DomainError) as a:
        f_native(1.0, 0.0, 0.0)
    with pytest.raises(DomainError) as b:
        f_python(1.0, 0.0, 0.0)
    assert str(a.value) == str(b.value)
    assert "define i32 @symgrad_scalar" in f_native.llvm_ir.replace('"', "")
    with pytest.raises(InputError, match="backend must be one of"):
        symgrad.compile(text, backend="gpu")
    assert symgrad.compile(f_python, backend="native").backend == "native"
    assert dispatch.native_ready("auto", f_native.tape) and dispatch.native_ready("native", f_native.tape)
    assert not dispatch.native_ready("python", f_native.tape)


def test_backend_from_configuration() -> None:
    with config.override(BACKEND="python"):
        assert symgrad.compile("x + 2*y").backend == "python"
    with config.override(BACKEND="Native"):  # any case, as in the environment
        assert symgrad.compile("x + 2*y").backend == "native"
    with pytest.raises(symgrad.ConfigError, match="SYMGRAD_BACKEND accepts auto, native or python"):
        config.override(BACKEND="nonsense")


def test_function_adapter_has_the_shapes_of_generated_code() -> None:
    from symgrad.backends.native.kernel import function

    text = "log(x) * y + sqrt(y)"
    tape = lower(parse(text), text)
    slots = [tape.output, tape.first_instr_slot, 1]

    def values(*p: float) -> list[float]:
        v = interpreter.forward(tape, p)
        return [v[s] for s in slots]

    value = function(tape, lambda *p: values(*p)[0], "value")
    several = function(tape, lambda *p: tuple(values(*p)), "tuple", slots)
    vg = function(tape, lambda *p: (values(*p)[0], values(*p)[1:]), "value_and_grad", slots)
    assert value(2.0, 3.0) == values(2.0, 3.0)[0]
    assert several(2.0, 3.0) == tuple(values(2.0, 3.0))
    assert vg(2.0, 3.0) == (values(2.0, 3.0)[0], values(2.0, 3.0)[1:])
    # A flagged point goes to ``slow``, whose errors (here the interpreter's) come through unchanged.
    for fn in (value, several, vg):
        with pytest.raises(DomainError, match=r"log\(-1.0\)"):
            fn(-1.0, 3.0)
    with pytest.raises(ValueError, match="returns must be"):
        function(tape, values, "dict")


# ------------------------------------------------- libm calls batched (opt-in) --

_MANY_CALLS = " + ".join(
    f"{fn}({x} * {k + 1}.25 {sign} {k}.5)"
    for k in range(12)
    for fn, x, sign in (
        ("sin", "x", "-"),
        ("cos", "x", "-"),
        ("tanh", "y", "-"),
        ("exp", "y", "-"),
        ("atan", "x", "-"),
        ("log", "x", "+"),
    )
)
"""Many independent libm calls (sin and cos of one argument pair up): batches of every function."""


def test_libm_calls_are_batched_only_when_asked() -> None:
    tape = lower(parse(_MANY_CALLS), _MANY_CALLS)
    for setting in (config.VECTOR_LIBM.default, "1", "0", "off", "on"):
        with config.override(VECTOR_LIBM=setting):
            assert libm.batch_width() == 0, setting
            assert "symgrad_v" not in NativeKernel(Program.from_tape(tape, [tape.output]), list).llvm_ir(), setting


@pytest.mark.skipif(libm.vector_width() == 0, reason="no libmvec on this host")
@config.override(VECTOR_LIBM="all")
def test_batched_libm_calls_are_within_a_few_ulp_and_errors_stay_the_interpreters() -> None:
    width = libm.batch_width()
    assert width in libm.widths()
    tape = lower(parse(_MANY_CALLS), _MANY_CALLS)
    program = Program.from_tape(tape, [tape.output, *range(tape.first_instr_slot, tape.n_slots)])
    run: Any = reference(tape, list(program.outputs))
    kernel = NativeKernel(program, lambda p: run(*p))
    ir = kernel.llvm_ir()
    for fn in ("sin", "cos", "tanh", "exp", "atan", "log"):
        assert f"@symgrad_v{width}_{fn}(" in ir, fn
    exact = NativeKernel.__new__(NativeKernel)  # the cache tells the two modes apart
    exact.program, exact.batch, exact._opt = program, 0, None
    assert kernel.cache_key() != exact.cache_key()
    rng = random.Random(5)
    for _ in range(200):
        point = (rng.uniform(0.01, 3.0), rng.uniform(-2.0, 2.0))
        got, want = kernel.scalar(*point), run(*point)
        for a, b in zip(got, want, strict=True):  # every record: libm's few ulp, a sum's rounding
            assert a == pytest.approx(b, rel=1e-13, abs=1e-13), point
    # A point where log leaves its domain: the kernel flags it, and the interpreter raises.
    with pytest.raises(DomainError) as ours:
        kernel.scalar(-1.0, 0.5)
    with pytest.raises(DomainError) as theirs:
        run(-1.0, 0.5)
    assert str(ours.value) == str(theirs.value) and "log(-0.75) is undefined" in str(ours.value)
    assert same(kernel.scalar(*point)[0], kernel.scalar(*point)[0])  # deterministic


@pytest.mark.skipif(libm.vector_width() == 0, reason="no libmvec on this host: SYMGRAD_VECTOR_LIBM=all changes nothing")
@config.override(VECTOR_LIBM="all", BACKGROUND=True)
def test_batched_kernels_answer_from_the_first_call_under_auto() -> None:
    """Their numbers are not the interpreter's, so no call is answered from Python while they compile."""
    text = " + ".join(f"({_MANY_CALLS}) * {k}" for k in range(1, 4))  # big enough for auto's machine code
    f = symgrad.Function(lower(parse(text), text), text, "auto")
    point = (0.7, 0.3)
    first = f.vg(*point)
    assert not f._rentals  # compiled before the first call, not in the background
    exact = interpreter.value_and_grad(f.tape, list(point))
    assert first != (exact[0], list(exact[1]))  # the kernel's numbers (libmvec), not the interpreter's
    assert first == symgrad.Function(f.tape, text, "native").vg(*point)
    for value, want in zip([first[0], *first[1]], [exact[0], *exact[1]], strict=True):
        assert value == pytest.approx(want, rel=1e-13)


def test_a_batch_never_holds_a_record_read_before_its_last_member() -> None:
    from symgrad.backends.native.build import batches

    tape = _big_tape(3 * CHUNK)
    program = Program.from_tape(tape, [tape.output])
    layout = layout_of(program, {("sin", "cos"), ("cos", "sin")})
    first = program.first_record
    grouped = 0
    for k, chunk in enumerate(layout.chunks):
        at = {i: n for n, i in enumerate(chunk)}
        readers: dict[int, int] = {}
        for n, i in enumerate(chunk):
            for a in program.records[i][1]:
                readers.setdefault(a - first, n)
        for last, members in batches(layout, k, 4).items():
            assert members[-1] == last and 2 <= len(members) <= 4
            functions = {"sincos" if m in layout.fused else program.records[m][0] for m in members}
            assert len(functions) == 1, functions  # one libm function (sin-and-cos pairs, in either order)
            for m in members:
                for r in (m, layout.fused.get(m)):
                    assert r is None or readers.get(r, len(chunk)) > at[last], (k, members)
            grouped += len(members)
    assert grouped > 100  # the big tape's sin/cos/tanh records mostly batch
