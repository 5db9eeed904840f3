"""C export (``Function.to_c``, ``symgrad export-c``): the generated C is compiled with the system
compiler, loaded through ctypes and compared with the reference interpreter bit for bit.

Compiled without contraction or fast-math (:data:`CFLAGS`), each record is the same IEEE operation
or C library function as the interpreter's, in the same order, so the bits must agree.  Compiling
is the slow part: each test builds one shared library from several exports at once.
"""

from __future__ import annotations

import ctypes
import math
import random
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad
from symgrad import cli, export_c, ops
from symgrad.backends import interpreter
from symgrad.errors import DomainError, InputError
from symgrad.function import Function
from symgrad.ops import OPS, Op
from symgrad.tape import Tape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import workloads
from strategies import cases

# Off the path again: left there, bench/sparse.py shadows the 'sparse' package that dask imports.
sys.path.remove(str(Path(__file__).resolve().parent.parent / "bench"))

CFLAGS = ["-std=c99", "-O2", "-fno-fast-math", "-ffp-contract=off", "-Wall", "-Wextra", "-pedantic", "-Werror"]
"""As docs/export.md says to compile (plus warnings as errors: the generated code is warning-free)."""

needs_cc = pytest.mark.needs_cc


def build(codes: Sequence[export_c.CCode], folder: Path) -> ctypes.CDLL:
    """One shared library from the exported files (one compiler run for all)."""
    sources = [str(code.write(folder)[0]) for code in codes]
    library = folder / f"lib{codes[0].name}.so"
    cc = shutil.which("cc")
    assert cc is not None
    done = subprocess.run(
        [cc, *CFLAGS, "-shared", "-fPIC", "-o", str(library), *sources, "-lm"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[:3000]
    return ctypes.CDLL(str(library))


def call(lib: ctypes.CDLL, fn: export_c.CFunction, point: Sequence[float]) -> tuple[int, list[float]]:
    """``(status, outputs in tape order)`` of one exported function at ``point``."""
    x = (ctypes.c_double * max(1, len(point)))(*point)
    outs = [(ctypes.c_double * max(1, g.size))() for g in fn.groups]
    work = (ctypes.c_double * fn.work)()
    c_fn = getattr(lib, fn.name)
    c_fn.restype = ctypes.c_int
    status = c_fn(x, *outs, work)
    return status, [v for g, out in zip(fn.groups, outs, strict=True) for v in out[: g.size]]


def failing_slot(tape: Tape, point: Sequence[float]) -> int | None:
    """The slot of the first record the interpreter's forward stops at (its DomainError), or None."""
    try:
        interpreter.forward(tape, point)
    except DomainError:
        values = [*point, *tape.consts]
        for instr in tape.instrs:  # the same ops in the same order: the first to raise or leave the finite
            try:
                v = instr.op.scalar(*(values[a] for a in instr.args))
            except (ArithmeticError, ValueError):
                return len(values)
            if not math.isfinite(v):
                return len(values)
            values.append(v)
        raise AssertionError("the interpreter raised, but no record fails") from None
    return None


def assert_same(lib: ctypes.CDLL, fn: export_c.CFunction, point: Sequence[float]) -> None:
    """The exported function returns the interpreter's bits, or the status of the record it fails at."""
    status, got = call(lib, fn, point)
    bad = failing_slot(fn.tape, point)
    if bad is None:
        want = interpreter.evaluate(fn.tape, point)
        assert status == 0, (fn.name, point)
        assert [v.hex() for v in got] == [v.hex() for v in want], (fn.name, point)
    else:
        assert status == bad + 1, (fn.name, point, status, bad)


# ----------------------------------------------------- no compiler needed ---


def test_every_op_of_the_table_has_a_c_spelling() -> None:
    for op in OPS.values():
        assert op.c, op.name
        args = ["a", "b"] if op.variadic else ["a", "b"][: op.arity]
        assert op.c.format(*args).count("(") == op.c.format(*args).count(")"), op.name


def test_an_op_without_a_c_spelling_is_named_in_a_clear_error() -> None:
    relu = OPS["relu"]
    ops.register(Op("ramp", 1, "ramp", relu.scalar, relu.array, "ramp({0})", relu.partials, relu.sympy, "ramp",
                    call_names=("ramp",)))  # fmt: skip
    try:
        f = symgrad.compile("ramp(x) + sin(x)")
        with pytest.raises(InputError, match=r"no C spelling \(column 'c'\) for ramp"):
            f.to_c("model")
    finally:
        ops.unregister("ramp")


@pytest.mark.parametrize(
    "name", ["1model", "my-model", "model.c", "", "int", "restrict", "__m", "_Model", "é", "a" * 32]
)
def test_a_name_that_is_not_a_usable_c_identifier_is_an_input_error(name: str) -> None:
    with pytest.raises(InputError, match="C name"):
        symgrad.compile("x*y").to_c(name)


def test_unknown_output_sets_and_impossible_ones_are_input_errors() -> None:
    f = symgrad.compile("x*y")
    with pytest.raises(InputError, match=r"'hesian' is not an output set.*did you mean 'hessian'"):
        f.to_c("m", ["value", "hesian"])
    with pytest.raises(InputError, match="has no variables, so it has no hessian"):
        symgrad.compile("2 + 3").to_c("m", "hessian")
    with pytest.raises(InputError, match="needs a function with one output"):
        symgrad.compile("x*y").jacobian_function().to_c("m", "grad")
    with pytest.raises(InputError, match="no output set"):
        f.to_c("m", [])


def test_comments_quote_the_source_safely() -> None:
    text = "a */ b /* c ??/ d \\ e \u03be\n f"
    safe = export_c._comment(text)
    assert "*/" not in safe and "/*" not in safe and "??" not in safe and "\\" not in safe and "\n" not in safe
    assert safe.isascii() and "<U+03BE>" in safe
    code = symgrad.compile("sin(x*y) + \u03be").to_c("m", "grad")
    assert "/* %5: 'sin(x*y)' (characters 0-8) */" in code.source
    assert "in the derivative of 'sin(x*y)'" in code.source
    assert " *   x[2] = <U+03BE>" in code.header


# --------------------------------------------------------- compiled code ---

POINTS = 6


def _point_in(box: Sequence[tuple[float, float]], r: random.Random) -> list[float]:
    return [r.uniform(lo, hi) for lo, hi in box]


@needs_cc
def test_every_op_matches_the_interpreter_bit_for_bit(tmp_path: Path) -> None:
    """One formula per op of the table, value, gradient and Hessian, at points of its domain box,
    at its kinks and ties, and outside its domain (where the status names the op's record)."""
    r = random.Random(25)
    functions: list[tuple[Function, Op]] = []
    codes = []
    for op in OPS.values():
        n = 3 if op.variadic else op.arity
        names = ["x1", "y", "z"][:n]
        call_name = op.call_names[0] if op.call_names else None
        if call_name is None:  # an infix op
            text = f"({names[0]}) {op.symbol} ({names[1]})" if n == 2 else f"{op.symbol}({names[0]})"
        else:
            text = f"{call_name}({', '.join(names)})"
        for k, formula in enumerate((text, f"{text} * x1 + 1")):  # the op alone keeps signed zeros
            f = symgrad.compile(formula)
            functions.append((f, op))
            codes.append(f.to_c(f"op{k}_{op.name}", ["value", "grad", "hessian"]))
    lib = build(codes, tmp_path)
    for (f, op), code in zip(functions, codes, strict=True):
        box = list(op.domain) + [op.domain[0]] * (len(f.variables) - len(op.domain))
        points = [_point_in(box, r) for _ in range(POINTS)]
        points += [[0.0] * len(f.variables), [1.0] * len(f.variables), [-1.0] * len(f.variables)]
        points += [[-2.0, *([0.0] * (len(f.variables) - 1))], [1e300] * len(f.variables)]
        rest = len(f.variables) - 1
        points += [[0.0, *([-0.0] * rest)], [-0.0, *([0.0] * rest)]]  # ties of signed zeros
        for point in points:
            for fn in code.functions:
                assert_same(lib, fn, point)


@needs_cc
def test_domain_errors_return_the_status_of_the_record_the_interpreter_names(tmp_path: Path) -> None:
    f = symgrad.compile("log(x - y) * sin(x*y) + exp(x)")
    code = f.to_c("dom", ["value", "grad", "hessian"])
    lib = build([code], tmp_path)
    log_slot = next(i for i, line in enumerate(f.tape.records()) if " = log " in line)
    status, out = call(lib, code.function("value"), [1.0, 3.0])
    assert status == log_slot + 1 and math.isnan(out[0])  # the outputs are written, and flagged
    assert code.describe("value", status) == f"%{log_slot} = log, 'log(x - y)' (characters 0-10), is inf or nan"
    with pytest.raises(DomainError) as raised:
        f(1.0, 3.0)
    assert raised.value.op == "log"
    for kind in ("grad", "hessian"):  # a derivative tape fails at its own copy of the same log record
        status, _ = call(lib, code.function(kind), [1.0, 3.0])
        assert code.describe(kind, status).startswith(f"%{status - 1} = log, 'log(x - y)'")
    status, out = call(lib, code.function("value"), [800.0, 1.0])  # exp overflows
    assert out[0] == math.inf and code.describe("value", status).startswith(f"%{status - 1} = exp, 'exp(x)'")
    assert call(lib, code.function("grad"), [math.nan, 1.0])[0] == 1  # an input that is not finite: its slot + 1
    assert code.describe("grad", 2) == "input x[1] (y) is inf or nan"
    assert call(lib, code.function("grad"), [3.0, 1.0])[0] == 0
    assert code.describe("grad", 0) == "0: every value is finite"


@needs_cc
def test_several_outputs_give_value_and_jacobian_with_the_header_layout(tmp_path: Path) -> None:
    f = symgrad.compile(["x*y", "sin(x) - y**3", "max(x, y, 0.5)"])
    code = f.to_c("multi")
    assert [fn.kind for fn in code.functions] == ["value", "jacobian"]
    assert "#define MULTI_JACOBIAN_N_JACOBIAN 6" in code.header and "#define MULTI_N_IN 2" in code.header
    lib = build([code], tmp_path)
    for point in ([0.3, -1.2], [2.0, 2.0], [0.5, 0.5], [-1.0, 0.25]):
        for fn in code.functions:
            assert_same(lib, fn, point)
    _, jac = call(lib, code.function("jacobian"), [0.3, -1.2])
    want = f.jacobian(x=0.3, y=-1.2)
    assert jac == [want[out][v] for out in f.output_names for v in ("x", "y")]


@needs_cc
def test_a_medium_tape_in_many_parts_matches_and_runs_in_threads(tmp_path: Path, monkeypatch: Any) -> None:
    """W3 at N = 300 in parts of 40 records: values cross parts through work, sin/cos pairs move
    together; eight threads call at once, each with its own work, and agree with one call."""
    monkeypatch.setattr(export_c, "PART_RECORDS", 40)
    f = symgrad.compile(workloads.generated(300))
    code = f.to_c("medium", ["value", "grad"])
    assert code.source.count("static double medium_grad_part") > 10
    lib = build([code], tmp_path)
    r = random.Random(3)
    points = [[r.uniform(-1.0, 1.0) for _ in f.variables] for _ in range(4)]
    for point in points:
        for fn in code.functions:
            assert_same(lib, fn, point)
    grad = code.function("grad")
    want = [call(lib, grad, p) for p in points]
    results: list[list[tuple[int, list[float]]]] = []

    def worker() -> None:
        results.append([call(lib, grad, p) for p in points * 25])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(result == want * 25 for result in results)


def test_parts_never_split_a_sin_cos_pair_and_reuse_places_in_work(monkeypatch: Any) -> None:
    """A part boundary that would fall between ``sin(a)`` and ``cos(a)`` moves one record later (the
    compiler fuses a pair into one ``sincos`` only inside one function), and the values crossing parts
    take places in ``work`` that free up once their last reader has run, not one per record."""
    f = symgrad.compile(workloads.generated(300))
    grad = f.to_c("pairs", "grad").function("grad").tape
    base = grad.first_instr_slot
    order = export_c._order(grad)
    split = [
        i
        for i in range(1, len(order))
        if {grad.instrs[order[i - 1]].op.name, grad.instrs[order[i]].op.name} == {"sin", "cos"}
        and grad.instrs[order[i - 1]].args == grad.instrs[order[i]].args
    ]
    assert len(split) > 20
    for size in (split[0], split[5], split[13]):  # a fixed-size cut would land inside a pair
        monkeypatch.setattr(export_c, "PART_RECORDS", size)
        code = f.to_c("pairs", "grad")
        parts = code.source.split("static double pairs_grad_part")[1:]
        assert len(parts) >= 2
        for part in parts:  # each sin(A) of a part has its cos(A) in the same part, and the reverse
            calls = re.findall(r"= (sin|cos)\(([^()]*)\);", part.split("static int")[0])
            assert {(op, a) for op, a in calls} == {({"sin": "cos", "cos": "sin"}[op], a) for op, a in calls}
    monkeypatch.setattr(export_c, "PART_RECORDS", 40)
    code = f.to_c("pairs", "grad")
    used = [int(i) for i in re.findall(r"\bw\[(\d+)\] = v", code.source)]
    crossing = len(used)
    assert crossing > 100 and max(used) < crossing  # near the start of work (before: w[record])
    assert len(set(used)) < 0.75 * crossing  # places used again
    assert max(used) < code.function("grad").work
    assert base == f.tape.n_inputs + len(grad.consts)


def test_an_input_only_a_non_propagating_op_reads_is_still_checked(tmp_path: Path) -> None:
    """An input read only by ``tanh`` (``tanh(inf) = 1``) keeps its own check; one read by ``+`` is
    checked where the sum ends (no second addition for it), and both give the input's status."""
    f = symgrad.compile("tanh(x) + y*y")
    code = f.to_c("seen", ["value", "grad"])
    body = code.source.split("int seen_value(")[1]
    assert "x[0]" in body.split("double t =")[1].split(";")[0]  # x: only tanh reads it
    assert "x[1]" not in body.split("double t =")[1].split(";")[0]  # y: y*y passes it on
    lib = build([code], tmp_path)
    for kind in ("value", "grad"):
        assert call(lib, code.function(kind), [math.inf, 1.0])[0] == 1
        assert call(lib, code.function(kind), [0.5, math.inf])[0] == 2
        assert call(lib, code.function(kind), [math.nan, 1.0])[0] == 1
        assert_same(lib, code.function(kind), [0.5, -2.0])


@needs_cc
@settings(max_examples=2)
@given(st.lists(cases(max_depth=3), min_size=16, max_size=16))
def test_random_formulas_match_the_interpreter(tmp_path_factory: pytest.TempPathFactory, found: list[Any]) -> None:
    """Random formulas over the whole grammar (tests/strategies.py), compiled together, at their
    point and at points where they may be undefined: the interpreter's bits or its failing record."""
    functions = [symgrad.compile(case.text) for case in found]
    codes = [f.to_c(f"h{k}", ["value", "grad"]) for k, f in enumerate(functions)]
    lib = build(codes, tmp_path_factory.mktemp("random"))
    for case, f, code in zip(found, functions, codes, strict=True):
        near = [case.point[name] for name in f.variables]
        for point in (near, [-v for v in near], [v * 7.5 for v in near]):
            for fn in code.functions:
                assert_same(lib, fn, point)


# ------------------------------------------------------------------ CLI ---


@needs_cc
def test_the_command_writes_files_that_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["export-c", "x*sin(y) + x1", "--grad", "--hessian", "--name", "model", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("wrote ") and "model_value, model_grad, model_hessian" in out
    code = symgrad.compile("x*sin(y) + x1").to_c("model", ["value", "grad", "hessian"])
    assert (tmp_path / "model.c").read_text() == code.source and (tmp_path / "model.h").read_text() == code.header
    cc = shutil.which("cc")
    assert cc is not None
    done = subprocess.run([cc, *CFLAGS, "-c", "-o", str(tmp_path / "model.o"), str(tmp_path / "model.c")])
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--name", "my-model"], "the C name 'my-model' is not a C identifier"),
        (["x*(", "--name", "m"], "line 1, column 4"),
        (["x", "-o", "/dev/null/sub"], "cannot write the C files into '/dev/null/sub'"),
    ],
)
def test_the_command_reports_errors(argv: list[str], message: str, tmp_path: Path, capsys: Any) -> None:
    if "-o" not in argv:
        argv = [*argv, "-o", str(tmp_path)]
    assert cli.main(["export-c", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("symgrad: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------ sparse output sets ---


def _chained_rosenbrock(n: int) -> str:
    return " + ".join(f"100*(x{i + 1} - x{i}^2)^2 + (1 - x{i})^2" for i in range(1, n))


def _build_with_patterns(code: export_c.CCode, folder: Path) -> ctypes.CDLL:
    """The exported code plus a file that includes its header and exports each sparse set's
    pattern (the header's static arrays and macros, as the C compiler reads them) under plain names."""
    shim = [f'#include "{code.name}.h"']
    for fn in code.functions:
        if fn.pattern is not None:
            upper = fn.name.upper()
            shim += [
                f"const int *{fn.name}_indptr_p = {fn.name}_indptr;",
                f"const int *{fn.name}_indices_p = {fn.name}_indices;",
                f"const int {fn.name}_sizes[3] = {{{upper}_NNZ, {upper}_ROWS, {upper}_COLS}};",
            ]
    c_file = code.write(folder)[0]
    (folder / "patterns.c").write_text("\n".join(shim) + "\n")
    library = folder / f"lib{code.name}.so"
    cc = shutil.which("cc")
    assert cc is not None
    done = subprocess.run(
        [cc, *CFLAGS, "-shared", "-fPIC", "-o", str(library), str(c_file), str(folder / "patterns.c"), "-lm"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[:3000]
    return ctypes.CDLL(str(library))


def _csr_from_c(lib: ctypes.CDLL, fn: export_c.CFunction, values: Sequence[float]) -> Any:
    """The scipy CSR array rebuilt from the header's pattern (read through the library) and ``values``."""
    import numpy as np
    import scipy.sparse

    nnz, rows, cols = (ctypes.c_int * 3).in_dll(lib, f"{fn.name}_sizes")
    indptr = ctypes.POINTER(ctypes.c_int).in_dll(lib, f"{fn.name}_indptr_p")[: rows + 1]
    indices = ctypes.POINTER(ctypes.c_int).in_dll(lib, f"{fn.name}_indices_p")[:nnz]
    assert len(values) == nnz
    return scipy.sparse.csr_array((np.asarray(values, dtype=np.float64), indices, indptr), shape=(rows, cols))


def _same_csr(got: Any, want: Any) -> None:
    assert got.shape == want.shape
    assert got.indptr.tolist() == want.indptr.tolist() and got.indices.tolist() == want.indices.tolist()
    assert [v.hex() for v in got.data.tolist()] == [v.hex() for v in want.data.tolist()]


@needs_cc
def test_sparse_hessian_and_jacobian_of_a_chained_problem_match_with_the_header_pattern(tmp_path: Path) -> None:
    """Chained Rosenbrock in 30 variables (tridiagonal Hessian) and its residuals (a bidiagonal
    Jacobian): the C values at random points, placed by the header's CSR arrays, are
    ``f.sparse_hessian(lower=True)`` / ``F.sparse_jacobian`` bit for bit, with their pattern."""
    n = 30
    f = symgrad.compile(_chained_rosenbrock(n))
    residuals = symgrad.compile([f"10*(x{i + 1} - x{i}^2)" for i in range(1, n)] + [f"1 - x{i}" for i in range(1, n)])
    hess = f.to_c("rosen", ["value", "sparse_hessian"])
    jac = residuals.to_c("resid", "sparse_jacobian")
    assert "#define ROSEN_SPARSE_HESSIAN_NNZ 59" in hess.header  # n diagonal + n - 1 below it
    lib_h = _build_with_patterns(hess, tmp_path / "h")
    lib_j = _build_with_patterns(jac, tmp_path / "j")
    r = random.Random(25)
    for _ in range(POINTS):
        point = [r.uniform(-2.0, 2.0) for _ in f.variables]
        fn = hess.function("sparse_hessian")
        status, values = call(lib_h, fn, point)
        assert status == 0
        got = _csr_from_c(lib_h, fn, values)
        _same_csr(got, f.sparse_hessian(*point, lower=True))
        pattern = f.hessian_sparsity(lower=True)
        assert (got.indptr.tolist(), got.indices.tolist()) == (pattern.indptr.tolist(), pattern.indices.tolist())
        assert_same(lib_h, fn, point)
        jpoint = [point[f.variables.index(v)] for v in residuals.variables]
        fn = jac.function("sparse_jacobian")
        status, values = call(lib_j, fn, jpoint)
        assert status == 0
        got = _csr_from_c(lib_j, fn, values)
        _same_csr(got, residuals.sparse_jacobian(*jpoint))
        pattern = residuals.jacobian_sparsity()
        assert (got.indptr.tolist(), got.indices.tolist()) == (pattern.indptr.tolist(), pattern.indices.tolist())
        assert_same(lib_j, fn, jpoint)
    fn = hess.function("sparse_hessian")
    h = _csr_from_c(lib_h, fn, call(lib_h, fn, point)[1]).toarray()
    dense = f.hessian(*point)  # and the lower triangle is the dense Hessian's, zeros elsewhere
    for i, a in enumerate(f.variables):
        for j, b in enumerate(f.variables):
            assert h[i, j] == (pytest.approx(dense[a][b], rel=1e-12, abs=1e-9) if j <= i else 0.0)


@needs_cc
def test_the_command_writes_sparse_sets_and_an_empty_pattern_compiles(tmp_path: Path, capsys: Any) -> None:
    """``--sparse-hessian --sparse-jacobian``; a linear formula's Hessian has no entries: NNZ is 0,
    the arrays still compile (C has no empty arrays) and the function writes nothing."""
    argv = ["export-c", "3*x - y", "--sparse-hessian", "--sparse-jacobian", "--name", "lin", "-o", str(tmp_path)]
    assert cli.main(argv) == 0
    assert "lin_value, lin_sparse_hessian, lin_sparse_jacobian" in capsys.readouterr().out
    code = symgrad.compile("3*x - y").to_c("lin", ["value", "sparse_hessian", "sparse_jacobian"])
    assert (tmp_path / "lin.h").read_text() == code.header
    assert "#define LIN_SPARSE_HESSIAN_NNZ 0" in code.header and "#define LIN_SPARSE_JACOBIAN_NNZ 2" in code.header
    lib = _build_with_patterns(code, tmp_path)
    fn = code.function("sparse_hessian")
    x = (ctypes.c_double * 2)(1.5, -2.0)
    out = (ctypes.c_double * 1)(7.0)
    work = (ctypes.c_double * fn.work)()
    assert lib.lin_sparse_hessian(x, out, work) == 0 and out[0] == 7.0  # nothing written
    assert _csr_from_c(lib, fn, []).nnz == 0
    status, values = call(lib, code.function("sparse_jacobian"), [1.5, -2.0])
    assert status == 0
    _same_csr(
        _csr_from_c(lib, code.function("sparse_jacobian"), values),
        symgrad.compile("3*x - y").sparse_jacobian(1.5, -2.0),
    )


def test_sparse_sets_that_cannot_exist_are_input_errors() -> None:
    with pytest.raises(InputError, match="needs a function with one output"):
        symgrad.compile(["x*y", "x"]).to_c("m", "sparse_hessian")
    with pytest.raises(InputError, match="has no variables, so it has no sparse jacobian"):
        symgrad.compile("2 + 3").to_c("m", "sparse_jacobian")
