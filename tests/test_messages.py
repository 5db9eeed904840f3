"""What symgrad echoes back: bounded reads of ``@FILE``, capped quotes of user text, clear messages."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

import symgrad
from symgrad import cli
from symgrad.cli import main
from symgrad.errors import InputError


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# -- @FILE and stdin -------------------------------------------------------------------------------


def test_a_parse_error_in_a_file_quotes_only_a_short_excerpt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = "root:$6$" + "abcdefghijklmnopqrstuvwxyz0123456789" * 3 + ":19000:0:99999:7:::"
    path = tmp_path / "shadow"
    path.write_text(secret + "\nsecond line\n")
    status, out, err = run(capsys, "grad", f"@{path}", "x=1")
    assert status == 2 and out == ""
    assert "second line" not in err
    quoted = err.splitlines()[1].strip().rstrip("…")
    assert secret.startswith(quoted) and len(quoted) <= cli.READ_EXCERPT_WIDTH
    assert len(err) < 200


def test_a_binary_file_is_refused_without_quoting_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x + 1\x00SECRET\x01")
    status, _, err = run(capsys, "grad", f"@{path}", "x=1")
    assert status == 2 and "SECRET" not in err and "not text" in err
    path.write_bytes(b"\xff\xfeSECRET")
    status, _, err = run(capsys, "grad", f"@{path}", "x=1")
    assert status == 2 and "SECRET" not in err and "not UTF-8" in err


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_refused_before_reading(capsys: pytest.CaptureFixture[str], device: str) -> None:
    if not os.path.exists(device):
        pytest.fail(f"{device} is missing on this machine")
    status, _, err = run(capsys, "grad", f"@{device}", "x=1")
    assert status == 2 and "not a regular file" in err


def test_a_fifo_is_refused_without_waiting_for_a_writer(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    status, _, err = run(capsys, "grad", f"@{fifo}", "x=1")
    assert status == 2 and "not a regular file" in err


def test_a_symlink_to_a_formula_file_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x*x\n")
    (tmp_path / "link").symlink_to(tmp_path / "f.txt")
    status, out, _ = run(capsys, "grad", f"@{tmp_path / 'link'}", "x=3")
    assert status == 0 and out.split() == ["value", "9", "d/dx", "6"]


def test_a_file_beyond_the_bound_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "MAX_EXPRESSION_BYTES", 100)
    path = tmp_path / "big.txt"
    path.write_text("+".join(["x"] * 60))
    status, _, err = run(capsys, "grad", f"@{path}", "x=1")
    assert status == 2 and "more than the 100 allowed" in err
    path.write_text("+".join(["x"] * 50))  # 99 bytes: read
    assert run(capsys, "grad", f"@{path}", "x=1")[0] == 0


def test_stdin_is_read_up_to_the_bound_only() -> None:
    """``- < /dev/zero`` used to read forever (and ``@/dev/zero`` ended in a MemoryError)."""
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-m", "symgrad", "grad", "-", "x=1"], stdin=zero, capture_output=True, timeout=120
        )
    assert done.returncode == 2
    assert b"more than 4,194,304 bytes" in done.stderr and b"Traceback" not in done.stderr


# -- standard output that cannot be written -------------------------------------------------------


def test_a_full_device_is_an_error_not_a_traceback() -> None:
    if not os.path.exists("/dev/full"):
        pytest.fail("/dev/full is missing on this machine")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "symgrad", "grad", "x", "x=1"], stdout=full, stderr=subprocess.PIPE, timeout=120
        )
    assert done.returncode == 2
    assert done.stderr.decode() == "symgrad: error: cannot write the output: No space left on device\n"


def test_a_closed_pipe_ends_quietly() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "symgrad", "grad", "x", "x=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader goes away before anything is written, as with `| head -0`
    err = child.stderr.read()
    assert child.wait(timeout=120) == 0
    assert err == b""


# -- plot points -------------------------------------------------------------------------------------


def test_plot_points_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """``--points 100000000`` reached 15 GB; ``points=10**12`` was killed at 24 GB."""
    with pytest.raises(InputError, match="points must be at most 100,000"):
        symgrad.plotting.sample("x", 0, 1, points=100_001)  # (first: cheap even without the bound)
    with pytest.raises(InputError, match="points must be at most 100,000"):
        symgrad.plot("x", 0, 1, points=10**12)
    status, _, err = run(capsys, "plot", "x", "--range", "0", "1", "--points", "100000000")
    assert status == 2 and "points must be at most 100,000" in err
    xs, _, _ = symgrad.plotting.sample("x", 0, 1, points=symgrad.plotting.MAX_POINTS)
    assert len(xs) == 100_000


@pytest.mark.parametrize(("lo", "hi"), [("a", 1), (0, "b"), (None, 1), (True, 2)])
def test_plot_range_of_non_numbers_is_an_input_error(lo: object, hi: object) -> None:
    with pytest.raises(InputError, match="the range must be two numbers"):
        symgrad.plot("x", lo, hi)  # type: ignore[arg-type]


# -- values on the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x=nan", "the value of 'x' ('nan') must be a finite number"),
        ("x=-inf", "the value of 'x' ('-inf') must be a finite number"),
        ("x=1/0", "the value of 'x' ('1/0') is undefined: div(1.0, 0.0) divides by zero"),
        ("x=2x", "the value of 'x' ('2x') is not a number"),
        ("x=y", "the value of 'x' ('y') must be a number such as 3 or pi/4, not an expression in y"),
    ],
)
def test_a_bad_value_names_the_variable(capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    status, _, err = run(capsys, "grad", "x+1", value)
    assert status == 2
    assert err.startswith(f"symgrad: error: {message}")
    assert "line 1, column" not in err


# -- user text in messages and displays is capped ---------------------------------------------------

BIG = "+".join(f"x*{i}" for i in range(20_000))  # 150 KB


@pytest.fixture(scope="module")
def big() -> symgrad.Function:
    return symgrad.compile(BIG)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f(x=1, y=2),  # UnknownVariableError
        lambda f: f(),  # MissingVariableError
        lambda f: f.grad(x=1, wrt="y"),
        lambda f: f(x=1, z=[1.0] * 100_000),
        lambda f: symgrad.plot(f.source + "+y", 0, 1),
    ],
)
def test_errors_quote_a_big_formula_in_an_excerpt(big: symgrad.Function, call: object) -> None:
    with pytest.raises(symgrad.SymgradError) as caught:
        call(big)  # type: ignore[operator]
    message = str(caught.value)
    assert len(message) < 400
    assert "'x*0+x*1+x*2" in message and re.search(r"\(148,8\d\d characters\)", message)


def test_displays_of_a_big_formula_are_capped(big: symgrad.Function) -> None:
    assert len(repr(big)) < 200 and f"({len(BIG):,} characters)" in repr(big)
    assert len(big._repr_html_()) < 2_000
    medium = symgrad.compile(BIG[:7_000])  # 1,000 terms: explain and check take seconds at most
    assert len(medium.explain(x=1).title) < 200
    rows = medium.explain(x=1, max_rows=None).rows
    assert max(len(row.source) for row in rows) < 200
    report = symgrad.check(medium, x=1.0)
    assert len(report.expression) < 300 and len(str(report).splitlines()[0]) < 400


def test_a_cli_error_for_a_big_formula_is_short(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """stderr held all 789 KB of a 100,000-term formula; here 150 KB of 20,000 terms."""
    path = tmp_path / "big.txt"
    path.write_text(BIG)
    status, _, err = run(capsys, "grad", f"@{path}", "x=1", "y=2")
    assert status == 2 and len(err) < 300
    status, _, err = run(capsys, "grad", f"@{path}")
    assert status == 2 and len(err) < 300


def test_a_long_list_value_is_quoted_without_walking_it() -> None:
    with pytest.raises(InputError) as caught:
        symgrad.compile("x")(x=[0.5] * 1_000_000)
    assert len(str(caught.value)) < 150 and "[0.5, 0.5" in str(caught.value)


def test_many_variables_are_listed_by_count() -> None:
    f = symgrad.compile("+".join(f"v{i}" for i in range(500)))
    with pytest.raises(symgrad.UnknownVariableError) as caught:
        f.grad({**{f"v{i}": 1.0 for i in range(500)}, "w": 1.0})
    message = str(caught.value)
    assert "v0, v1" in message and "(500 variables)" in message and "v499" not in message


# -- hints for names and spaces that only look right ---------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "name", "hint"),
    [
        ("x*y", "\u0445", "'\u0445' (U+0445 CYRILLIC SMALL LETTER HA) is not 'x' (U+0078 LATIN SMALL LETTER X)"),
        ("\u0445*y", "x", "'x' (U+0078 LATIN SMALL LETTER X) is not '\u0445' (U+0445 CYRILLIC SMALL LETTER HA)"),
        ("alpha*beta", "\u0430lpha", "did you mean 'alpha'?"),  # Cyrillic a
        ("rate*time", "rtae", "did you mean 'rate'?"),
    ],
)
def test_an_unknown_name_gets_a_hint(formula: str, name: str, hint: str) -> None:
    f = symgrad.compile(formula)
    point = dict.fromkeys(f.variables, 1.0)
    with pytest.raises(symgrad.UnknownVariableError, match=re.escape(hint)):
        f.grad(point, wrt=name)
    with pytest.raises(symgrad.UnknownVariableError, match=re.escape(hint)):
        f({**point, name: 2.0})


@pytest.mark.parametrize(
    ("char", "hint"),
    [
        ("\u00a0", "(U+00A0 NO-BREAK SPACE) is not a plain space"),
        ("\u2003", "(U+2003 EM SPACE) is not a plain space"),
        ("\u202f", "(U+202F NARROW NO-BREAK SPACE) is not a plain space"),
        ("\u200b", "(U+200B ZERO WIDTH SPACE) is an invisible character: delete it"),
    ],
)
def test_a_unicode_space_gets_a_hint(char: str, hint: str) -> None:
    with pytest.raises(symgrad.ParseError) as caught:
        symgrad.compile(f"x{char}+ 1")
    assert hint in caught.value.hint


# -- LaTeX and HTML displays escape user text ------------------------------------------------------

NASTY = r"\href{javascript:alert(1)}{x} $ <script>alert(1)</script> & % # ^ ~ _"


def test_value_labels_cannot_run_latex_commands() -> None:
    a = symgrad.Value(2.0, label=NASTY)
    latex = symgrad.Function((a * a).tape)._repr_latex_()
    assert latex is not None
    body = latex.removeprefix("$\\displaystyle ").removesuffix("$")
    assert "$" not in body.replace("\\$", "")
    # every backslash starts one of the symbols the label's specials are spelled with, or \text
    commands = set(re.findall(r"\\[A-Za-z]+", body))
    assert commands <= {"\\text", "\\backslash", "\\wedge", "\\sim"}, commands
    unescaped_braces = re.sub(r"\\[{}]|\\text\{[^{}]*\}|\^\{2\}", "", body)
    assert "{" not in unescaped_braces and "}" not in unescaped_braces


def test_identifier_names_keep_sympys_latex() -> None:
    latex = symgrad.compile("x_1*alpha + y2")._repr_latex_()
    assert latex == "$\\displaystyle \\alpha x_{1} + y_{2}$"


def test_every_html_display_escapes_user_text() -> None:
    import xml.etree.ElementTree as ET

    a = symgrad.Value(2.0, label=NASTY)
    b = symgrad.Value(3.0, label="<b>bold</b>")
    out = (a * b).tanh()
    out.backward()
    f = symgrad.Function(out.tape)
    shown = [
        a._repr_html_(),
        f._repr_html_(),
        f.tape._repr_html_(),
        out.explain()._repr_html_(),
        f.explain(dict.fromkeys(f.variables, 0.5))._repr_html_(),
        symgrad.check(f, dict.fromkeys(f.variables, 0.5))._repr_html_(),
    ]
    for html in shown:
        root = ET.fromstring(html)  # well-formed: a raw '<' or '&' from the label would break it
        tags = {element.tag for element in root.iter()}
        assert not tags & {"script", "b", "a"}, tags


# -- unpickling validates the tape ------------------------------------------------------------------


def _tampered(tape: symgrad.Tape, instrs: tuple[symgrad.Instr, ...]) -> symgrad.Tape:
    """A tape whose records were changed behind its back (as a edited pickle would carry)."""
    bad = object.__new__(symgrad.Tape)
    for name in ("inputs", "consts", "outputs", "source", "output_names"):
        object.__setattr__(bad, name, getattr(tape, name))
    object.__setattr__(bad, "instrs", instrs)
    return bad


@pytest.mark.parametrize("args", [(0, 99), (0, -1), (0, 1.5), (5, 5)])
def test_unpickling_a_tampered_function_is_a_clear_error(args: tuple[object, ...]) -> None:
    f = symgrad.compile("x*sin(y) + 2")
    last = f.tape.instrs[-1]
    bad = _tampered(f.tape, (*f.tape.instrs[:-1], dataclasses.replace(last, args=args)))  # type: ignore[arg-type]
    blob = pickle.dumps(symgrad.Function(bad))
    with pytest.raises(symgrad.SymgradError, match=r"cannot unpickle a tape: .*the pickle is corrupt or was changed"):
        pickle.loads(blob)


def test_an_honest_pickle_still_round_trips() -> None:
    f = symgrad.compile("x*sin(y) + 2")
    g = pickle.loads(pickle.dumps(f))
    assert g(x=1.5, y=0.5) == f(x=1.5, y=0.5)
    assert g.grad(x=1.5, y=0.5) == f.grad(x=1.5, y=0.5)


# -- derivatives: labels and errors ------------------------------------------------------------------


def test_hessian_labels_are_unambiguous_for_names_ending_in_digits() -> None:
    """``d2/dx12`` read as ∂²/∂x1² and as ∂²/∂x12; ``d2/dx1dx12`` was no better."""
    names = symgrad.compile("x1*x12 + x1**2").hessian_function().output_names
    assert names == ("d2/dx1^2", "d2/(dx1 dx12)", "d2/(dx12 dx1)", "d2/dx12^2")
    assert symgrad.compile("x*y").derivative("x", "x", "y").derivation.startswith("d3/(dx^2 dy) of")
    assert symgrad.compile("x*y").gradient_function().output_names[1:] == ("d/dx", "d/dy")


def test_formula_of_several_outputs_suggests_formulas() -> None:
    g = symgrad.compile("x*y").gradient_function()
    with pytest.raises(InputError, match=r"use \.formulas for one formula per output"):
        _ = g.formula
    assert g.formulas == ("x*y", "y", "x")


def test_a_power_at_a_negative_base_says_which_partial_failed() -> None:
    f = symgrad.compile("x**y")
    with pytest.raises(symgrad.DomainError) as caught:
        f.grad(x=-2, y=2)
    message = str(caught.value)
    assert "the partial by its second argument ('y') is not finite there" in message
    assert "pass wrt='x'" in message
    assert f.grad(x=-2, y=2, wrt="x") == pytest.approx(2 * -2.0)  # d/dx x**2 = 2x, as suggested


# -- check near a kink -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "point"),
    [
        ("abs(x)", {"x": 1e-7}),
        ("relu(x)", {"x": 1e-7}),
        ("relu(x)", {"x": -1e-7}),
        ("max(x, y)", {"x": 1.0, "y": 1.000001}),
        ("abs(x - 3) * y", {"x": 3.0000001, "y": 2.0}),
    ],
)
def test_check_near_a_kink_agrees_where_tape_and_sympy_agree(formula: str, point: dict[str, float]) -> None:
    """The standard step (6e-6) reached across the kink and outvoted two exact methods that agree."""
    report = symgrad.check(formula, point)
    assert report.ok, str(report)
    f = symgrad.compile(formula)
    for row in report.rows:
        assert row.tape == row.sympy
        name, h = row.variable, 1e-9  # this test's own central difference, far inside the smooth side
        assert name is not None
        slope = (f({**point, name: point[name] + h}) - f({**point, name: point[name] - h})) / (2 * h)
        assert row.tape == pytest.approx(slope, abs=1e-6)
    assert any("reaches across a kink nearby" in note for note in report.notes)


def test_at_the_kink_itself_the_convention_is_still_reported() -> None:
    report = symgrad.check("relu(x)", x=0.0)
    assert not report.ok and not report.rows[0].fd_unreliable


# -- the hot path: vg with something other than numbers -------------------------------------------


@pytest.mark.parametrize("backend", ["python", "native", "auto"])
@pytest.mark.parametrize("args", [("a", 1.0), (1.0, None), (1.0, [2.0])])
def test_vg_with_a_non_number_is_an_input_error_on_every_backend(backend: str, args: tuple[object, ...]) -> None:
    """Generated Python raised a bare TypeError ("can't multiply sequence by non-int of type 'float'")."""
    f = symgrad.compile("x*y + sin(x)", backend=backend)
    with pytest.raises(InputError):
        f.vg(*args)
    value, grads = f.value_and_grad(x=1.0, y=2.0)
    assert f.vg(1.0, 2.0) == (value, [grads["x"], grads["y"]])


def test_vg_on_generated_python_names_the_variable() -> None:
    f = symgrad.compile("x*y + sin(x)", backend="python")
    with pytest.raises(InputError, match=r"one real number per variable \(x, y\), got str 'a' for 'x'"):
        f.vg("a", 1.0)


def test_the_type_check_costs_the_happy_path_nothing() -> None:
    """The check is an exception handler in the generated code: the instructions a call with
    floats runs are the same with and without it (CPython 3.11+ handlers cost nothing until used)."""
    import dis

    from symgrad.backends import python as generated

    tape = symgrad.compile("x*y + sin(x)").gradient_function().tape
    text = generated.source(tape, "value_and_grad")
    without = text.replace("    except TypeError:\n        raise _wrong_arguments((v0, v1))\n", "")
    assert without != text

    def happy_path(source: str) -> list[tuple[str, str]]:
        namespace: dict[str, object] = {}
        exec(compile(source, "<generated>", "exec"), namespace)  # codegen: the tape's own generated source
        instructions = [(i.opname, i.argrepr) for i in dis.get_instructions(namespace["generated"])]  # type: ignore[arg-type]
        end = [name for name, _ in instructions].index("PUSH_EXC_INFO")
        return [(name, "" if name.startswith("JUMP") else arg) for name, arg in instructions[:end]]

    assert happy_path(text) == happy_path(without)
