"""The ``symgrad grad`` command: output, JSON, exit status, errors on stderr."""

from __future__ import annotations

import json
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
