"""What symgrad echoes back: bounded reads of ``@FILE``, capped quotes of user text, clear messages."""

from __future__ import annotations

import os
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
