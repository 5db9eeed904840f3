"""The ``symgrad grad`` command: output, JSON, exit status, errors on stderr."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symgrad.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_grad_prints_value_and_partials(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "grad", "3*x**2-4*x+5", "x=3")
    assert status == 0 and err == ""
    assert out.splitlines() == ["value  20", "d/dx   14"]


def test_grad_several_variables(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "grad", "a*b + c", "a=2", "b=-3", "c=10")
    assert status == 0
    assert out.split() == ["value", "4", "d/da", "-3", "d/db", "2", "d/dc", "1"]


def test_grad_json(capsys: pytest.CaptureFixture[str]) -> None:
    expr = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
    status, out, _ = run(capsys, "grad", expr, "x=0.3", "mu=0", "s=1.5", "--json")
    assert status == 0
    payload = json.loads(out)
    assert payload["expression"] == expr
    assert payload["point"] == {"x": 0.3, "mu": 0.0, "s": 1.5}
    assert set(payload["grad"]) == {"x", "mu", "s"}
    assert payload["grad"]["x"] == pytest.approx(-payload["grad"]["mu"])


def test_values_are_constant_expressions(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "grad", "sin(x)", "x=pi/2", "--json")
    assert status == 0
    assert json.loads(out)["value"] == 1.0


def test_expression_starting_with_minus(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "grad", "-x**2", "x=3", "--json")
    assert status == 0
    assert json.loads(out)["grad"] == {"x": -6.0}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["grad", "2x", "x=1"], "write 2*x"),
        (["grad", "log(x)", "x=-1"], "log(-1.0) is undefined"),
        (["grad", "x*y", "x=1"], "no value given for 'y'"),
        (["grad", "x", "x=1", "y=2"], "'y' is not a variable"),
        (["grad", "x", "x"], "expected name=value"),
        (["grad", "x", "x=y"], "must be a number"),
        (["grad", "x", "x=1", "x=2"], "given twice"),
    ],
)
def test_user_errors_exit_2_with_message_on_stderr(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("symgrad: error:")
    assert fragment in err
    assert "Traceback" not in err


def console_script() -> str | None:
    """The ``symgrad`` script installed beside this interpreter (a venv's ``bin`` need not be on PATH),
    else the one on PATH."""
    beside = Path(sys.executable).parent / ("symgrad.exe" if os.name == "nt" else "symgrad")
    return str(beside) if beside.is_file() else shutil.which("symgrad")


def test_console_script_is_installed() -> None:
    exe = console_script()
    assert exe is not None, f"no symgrad console script beside {sys.executable} or on PATH (pip install -e '.[dev]')"
    done = subprocess.run([exe, "grad", "a*b + c", "a=2", "b=-3", "c=10"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.split() == ["value", "4", "d/da", "-3", "d/db", "2", "d/dc", "1"]
    done = subprocess.run([exe, "grad", "sin(x, y)", "x=1", "y=1"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "takes 1 argument" in done.stderr and "Traceback" not in done.stderr


def test_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "symgrad", "grad", "x*x", "x=3"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.split() == ["value", "9", "d/dx", "6"]


def test_flags_may_sit_between_expression_and_point(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "grad", "x*y", "--json", "x=1", "y=2")
    assert status == 0 and json.loads(out)["grad"] == {"x": 2.0, "y": 1.0}


def test_console_script_is_found_without_the_venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    exe = console_script()
    assert exe is not None and Path(exe).parent == Path(sys.executable).parent


# -- models: vector values and sizes --------------------------------------------


def grad_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[dict[str, object], str]:
    status, out, err = run(capsys, "grad", *argv, "--json")
    assert status == 0, err
    payload: dict[str, object] = json.loads(out)
    return payload, err


def test_a_whole_vector_infers_the_size_and_prints_each_partial(capsys: pytest.CaptureFixture[str]) -> None:
    # d/dx_i sum x_i^2 = 2 x_i, by hand
    status, out, err = run(capsys, "grad", "sum(x[i]**2 for i in 1..n)", "x=1,2,3")
    assert status == 0
    assert out.split() == ["value", "14", "d/dx[1]", "2", "d/dx[2]", "4", "d/dx[3]", "6"]
    assert err == "symgrad: note: --sizes n=3 inferred from the length of x\n"


def test_one_element_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "grad", "sum(x[i]**2 for i in 1..3)", "x[1]=1", "x[2]=2", "x[3]=pi")
    assert status == 0 and err == ""
    assert out.split()[:6] == ["value", repr(5 + math.pi**2), "d/dx[1]", "2", "d/dx[2]", "4"]
    assert out.split()[6:] == ["d/dx[3]", repr(2 * math.pi)]


def test_every_way_of_giving_a_vector_and_sizes_agrees_with_sympy(capsys: pytest.CaptureFixture[str]) -> None:
    import sympy

    formula = "t*sum(x[i]**2 for i in 1..n) + sum(y[j]**3*x[1] for j in 1..m)"
    xs, ys, t = [0.5, -1.25, 2.0], [3.0, -0.75], 1.5
    spellings = [
        ["--sizes", "n=3,m=2", "x=0.5,-1.25,2", "y=3,-0.75"],
        ["--sizes", "n=3", "--sizes", "m=2", "x=[0.5,-1.25,2]", "y=[3,-3/4]"],
        ["x[1]=0.5", "x[2]=-1.25", "x[3]=2", "y[2]=-0.75", "y[1]=3", "--sizes", "m=2,n=3"],
        ["x=1/2,-1.25,2", "y=3,-0.75"],  # both sizes inferred
    ]
    x = sympy.symbols("x1:4")
    y = sympy.symbols("y1:3")
    ts = sympy.Symbol("t")
    exact = ts * sum(v**2 for v in x) + sum(v**3 * x[0] for v in y)
    at = {ts: t, **dict(zip(x, xs, strict=True)), **dict(zip(y, ys, strict=True))}
    names = {ts: "t", **{v: f"x[{k}]" for k, v in enumerate(x, 1)}, **{v: f"y[{k}]" for k, v in enumerate(y, 1)}}
    want = {names[v]: float(sympy.diff(exact, v).subs(at)) for v in names}
    for argv in spellings:
        payload, _ = grad_json(capsys, formula, "t=1.5", *argv)
        assert payload["sizes"] == {"n": 3, "m": 2}
        assert payload["value"] == pytest.approx(float(exact.subs(at)), rel=1e-15)
        grads = payload["grad"]
        assert isinstance(grads, dict) and set(grads) == set(want)
        for name, value in want.items():
            assert grads[name] == pytest.approx(value, rel=1e-15), (argv, name)


def test_wrt_a_vector_means_all_its_elements(capsys: pytest.CaptureFixture[str]) -> None:
    payload, _ = grad_json(capsys, "t*sum(x[i]**2 for i in 1..n)", "t=2", "x=1,2", "--wrt", "x")
    assert payload["grad"] == {"x[1]": 4.0, "x[2]": 8.0}  # 2 t x_i
    payload, _ = grad_json(capsys, "t*sum(x[i]**2 for i in 1..n)", "t=2", "x=1,2", "--wrt", "x[2],t")
    assert payload["grad"] == {"x[2]": 8.0, "t": 5.0}


def test_hessian_of_a_model_matches_sympy(capsys: pytest.CaptureFixture[str]) -> None:
    import sympy

    status, out, _ = run(
        capsys, "hessian", "sum(x[i]**2*y + x[i]*x[i+1] for i in 1..n-1)", "x=1,2,-3", "y=0.5", "--json"
    )
    assert status == 0
    table = json.loads(out)["hessian"]
    x, y = sympy.symbols("x1:4"), sympy.Symbol("y")
    exact = sum(x[i] ** 2 * y + x[i] * x[i + 1] for i in range(2))
    symbols = {**{f"x[{k}]": v for k, v in enumerate(x, 1)}, "y": y}
    at = {y: 0.5, x[0]: 1.0, x[1]: 2.0, x[2]: -3.0}
    assert set(table) == set(symbols)
    for a, u in symbols.items():
        for b, v in symbols.items():
            assert table[a][b] == pytest.approx(float(sympy.diff(exact, u, v).subs(at)), abs=1e-15), (a, b)


def test_check_explain_draw_and_diff_take_models(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", "sum(sin(x[i])*x[i] for i in 1..n)", "x=0.3,1.1", "--json")
    assert status == 0
    report = json.loads(out)
    assert report["ok"] is True and report["sizes"] == {"n": 2} and set(report["grad"]) == {"x[1]", "x[2]"}
    status, out, _ = run(capsys, "explain", "sum(x[i]*y for i in 1..n)", "x=1,2", "y=3", "--json")
    assert status == 0 and json.loads(out)["point"] == {"x[1]": 1.0, "x[2]": 2.0, "y": 3.0}
    status, out, _ = run(capsys, "draw", "sum(x[i]*y for i in 1..n)", "x=1,2", "y=3")
    assert status == 0 and "{ x[2] | data 2.0000 | grad 3.0000 }" in out  # d/dx[2] = y
    status, out, _ = run(capsys, "diff", "sum(x[i]**3 for i in 1..n)", "x[2]", "--sizes", "n=3")
    assert status == 0
    import symgrad

    d = symgrad.compile(out.strip())
    assert d.variables == ("x[1]", "x[2]") or d.variables == ("x[2]",)
    assert d({"x[2]": 1.5, "x[1]": 0.0} if len(d.variables) == 2 else {"x[2]": 1.5}) == 3 * 1.5**2


def test_export_c_takes_sizes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = run(capsys, "export-c", "sum(x[i]**2 for i in 1..n)", "--sizes", "n=4", "-o", str(tmp_path))
    assert status == 0 and out.startswith("wrote")
    header = (tmp_path / "f.h").read_text()
    assert "x[3] = x[4]" in header and "x[4] = " not in header  # four inputs, numbered from 0 in C


def test_values_split_at_commas_outside_parentheses(capsys: pytest.CaptureFixture[str]) -> None:
    payload, _ = grad_json(capsys, "x*y", "x=max(1,2)", "y=3")
    assert payload["point"] == {"x": 2.0, "y": 3.0}
    payload, _ = grad_json(capsys, "sum(x[i] for i in 1..2)", "x=max(1,2),min(4,-5)")
    assert payload["point"] == {"x[1]": 2.0, "x[2]": -5.0}


@pytest.mark.parametrize(
    "text", ["1", "-0", "+2.5", ".5", "1.", "00012", "-.5e-3", "6.02e23", "1e-320", "1e-999", " 7 ", "1e308"]
)
def test_plain_numbers_parse_as_the_grammar_does(text: str) -> None:
    from symgrad.cli import _number, _value_of

    fast, slow = _number("x", text), _value_of("x", text)
    assert fast == slow and math.copysign(1.0, fast) == math.copysign(1.0, slow)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["sum(x[i]**2 for i in 1..n)", "x=1,2", "--sizes", "n=3"], "'x' is a vector of 3 elements in"),
        (["sum(x[i]**2 for i in 1..n)", "x=1", "--sizes", "n=3"], "but 'x=1' gives one number"),
        (["t*x", "t=1,2", "x=1"], "'t' is a scalar in 't*x', but 't=1,2' gives 2 values"),
        (["t*x", "t=[5]", "x=1"], "'t' is a scalar in 't*x', but 't=[5]' gives 1 values"),
        (["t*x", "t[1]=1", "x=1"], "'t' is a scalar in 't*x', not a vector"),
        (["t*x", "y=1,2", "x=1", "t=1"], "'y' is not a variable of 't*x'"),
        (["sum(x[i] for i in 1..n)", "x=1,two,3"], "the value of 'x[2]' ('two') must be a number"),
        (["sum(x[i] for i in 1..n)", "x=1,(2,3"], "the value of 'x[2]' ('(2,3') is not a number"),
        (["sum(x[i] for i in 1..n)", "x=1,,3"], "has no number for element 2"),
        (["sum(x[i] for i in 1..n)", "x=1,2,"], "has no number for element 3"),
        (["sum(x[i] for i in 1..n)", "x=[]"], "holds no numbers"),
        (["sum(x[i] for i in 1..n)", "x=1,nan"], "the value of 'x[2]' ('nan') must be a finite number"),
        (["sum(x[i] for i in 1..n)", "x[2]=1,2", "--sizes", "n=3"], "'x[2]' is one element"),
        (["sum(x[i] for i in 1..n)", "x[4]=1", "--sizes", "n=3"], "'x[4]' is out of range"),
        (["sum(x[i] for i in 1..n)", "x[0]=1", "--sizes", "n=3"], "must be a whole number >= 1"),
        (["sum(x[i] for i in 1..n)", "x[i]=1", "--sizes", "n=3"], "must be a whole number >= 1"),
        (["sum(x[i] for i in 1..n)", "x[1=1", "--sizes", "n=3"], "must be a whole number >= 1"),
        (["sum(x[i] for i in 1..n)", "x[1]=1", "--sizes", "n=3"], "no value given for 'x[2]', 'x[3]'"),
        (["sum(x[i] for i in 1..n)", "x=1,2,3", "x[2]=5"], "'x[2]' was given twice: by 'x=1,2,3' and by 'x[2]=5'"),
        (["sum(x[i] for i in 1..n)", "x[2]=1", "x[2]=5"], "variable 'x[2]' was given twice"),
        (["sum(x[i] for i in 1..n)", "x[1]=1"], "give it with --sizes n=N"),
        (["sum(x[i] for i in 1..3) + sum(i for i in 1..n)", "x=1,2,3"], "'n' does not set the length"),
        (["sum(x[i]*x[i+1] for i in 1..n)", "x=1,2,3,4", "--sizes", "n=4"], "vector of 5 elements"),
        (["sum(x[i] for i in 1..n+1)", "x=1,2,3", "y=1,2"], "no sizes fit the vectors given"),
        (["sum(x[i] for i in 1..n)", "x=1", "--sizes", "n=3,n=4"], "size 'n' was given twice"),
        (["sum(x[i] for i in 1..n)", "x=1", "--sizes", "n=3.5"], "size 'n' must be a whole number"),
        (["sum(x[i] for i in 1..n)", "x=1", "--sizes", "n"], "--sizes takes name=integer"),
        (["sum(x[i] for i in 1..n)", "x=1", "--sizes", "2n=3"], "'2n' is not a valid size name"),
    ],
)
def test_model_point_errors_say_what_and_where(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    status, out, err = run(capsys, "grad", *argv)
    assert status == 2 and out == ""
    assert "symgrad: error:" in err and fragment in err, err
    assert "Traceback" not in err


def test_the_same_mistakes_are_reported_by_every_subcommand_that_takes_a_point(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for command in (
        ["grad"],
        ["hessian"],
        ["check"],
        ["explain"],
        ["draw"],
        ["plot", "--range", "0", "1", "--var", "y"],
    ):
        status, _, err = run(capsys, *command, "y*sum(x[i] for i in 1..n)", "x=1,2", "y=1", "--sizes", "n=3")
        assert status == 2 and "'x' is a vector of 3 elements" in err, (command, err)
