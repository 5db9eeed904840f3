"""Background compilation: the first calls are served at once, with the numbers of the code that replaces them.

Under the ``auto`` backend a big tape compiles to machine code on a worker
thread while :func:`symgrad.backends.interpreter.entry` (a loop over the records) answers;
the swap must be invisible in the results, survive a failing compile, let the
process exit cleanly (a compile in progress finishes, its cache file is
written) and survive a fork.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from floats import outcome
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import Case, cases

import symgrad
from symgrad import config, transforms
from symgrad.backends import background, interpreter, native
from symgrad.errors import DomainError

needs_llvm = pytest.mark.skipif(not native.available(), reason=f"native backend: {native.unavailable_reason()}")

BIG = " + ".join(
    f"log(x + {k}) * sin(y * {k + 1}) / (z - {k / 7})" for k in range(40)
)  # a tape whose kernel takes a while


# ------------------------------------------------------------ the mechanism ---
def test_interim_serves_until_the_build_is_ready() -> None:
    release = threading.Event()
    published: list[Callable[..., Any]] = []

    def build() -> Callable[..., Any]:
        release.wait(10)
        return lambda x: ("built", x)

    job = background.upgrade_later(lambda x: ("interim", x), build, published.append)
    assert job.call(1) == ("interim", 1)
    assert published == [job.call] and not job.ready
    release.set()
    assert job.wait(10)
    assert job.call(2) == ("built", 2)
    assert published[1](3) == ("built", 3) and len(published) == 2
    assert job.ready and job.upgraded and job.error is None


def _run_one_build(during: Callable[[], None]) -> float:
    """Run one background build that calls ``during()``; return the switch interval it saw."""
    seen: list[float] = []
    release = threading.Event()

    def build() -> Callable[..., Any]:
        seen.append(sys.getswitchinterval())
        during()
        release.wait(10)
        return lambda: "built"

    job = background.upgrade_later(lambda: "interim", build)
    worker = background._state.worker
    release.set()
    assert job.wait(10) and job.call() == "built"
    if worker is not None:
        worker.join(10)
    return seen[0]


def _wait_until_no_build_runs(timeout: float = 120.0) -> None:
    """Let builds queued by earlier tests end: while one runs, the interval is the lowered one."""
    deadline = time.monotonic() + timeout
    while background._switches_users or background._state.worker is not None:
        assert time.monotonic() < deadline, "a background build did not end"
        worker = background._state.worker
        if worker is not None:
            worker.join(0.1)
        else:
            time.sleep(0.001)  # the worker has left the queue and is restoring the interval


def test_a_build_runs_with_a_short_switch_interval_and_the_old_one_comes_back() -> None:
    """A build waits for the GIL after every LLVM call and file write: behind a caller busy in a loop,
    at the default 5 ms per wait, builds took several times their own time."""
    _wait_until_no_build_runs()
    before = sys.getswitchinterval()
    assert before > background.BUILD_SWITCH_INTERVAL  # (the test needs the default's kind of interval)
    during = _run_one_build(lambda: None)
    assert during == pytest.approx(background.BUILD_SWITCH_INTERVAL, rel=0.01)
    assert sys.getswitchinterval() == before


def test_a_switch_interval_set_during_a_build_is_kept() -> None:
    _wait_until_no_build_runs()
    before = sys.getswitchinterval()
    try:
        _run_one_build(lambda: sys.setswitchinterval(0.003))
        assert sys.getswitchinterval() == pytest.approx(0.003)  # the user's, not the one saved before
    finally:
        sys.setswitchinterval(before)


def test_a_failing_build_keeps_the_interim_silently() -> None:
    def build() -> Callable[..., Any]:
        raise RuntimeError("no compiler today")

    published: list[Callable[..., Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = background.upgrade_later(lambda: "interim", build, published.append)
        assert not job.wait(10)
    assert job.call() == "interim" and isinstance(job.error, RuntimeError) and published == [job.call]
    fallback = background.upgrade_later(lambda: "interim", build, fallback=lambda: lambda: "fallback")
    assert not fallback.wait(10)
    assert fallback.call() == "fallback"


def test_a_failing_publish_neither_hangs_nor_kills_the_worker() -> None:
    calls: list[Callable[..., Any]] = []

    def publish(fn: Callable[..., Any]) -> None:
        calls.append(fn)
        if len(calls) > 1:
            raise KeyError("the caller's slot is gone")

    job = background.upgrade_later(lambda: "interim", lambda: lambda: "built", publish)
    assert job.wait(10) and job.call() == "built" and isinstance(job.error, KeyError)
    assert background.upgrade_later(lambda: 1, lambda: lambda: 2).wait(10)  # the worker still runs builds


@config.override(BACKGROUND=False)
def test_background_off_builds_before_returning() -> None:
    caller = threading.get_ident()
    built_on: list[int] = []

    def build() -> Callable[..., Any]:
        built_on.append(threading.get_ident())
        return lambda: "built"

    job = background.upgrade_later(lambda: "interim", build)
    assert job.ready and job.call() == "built" and built_on == [caller]


# ------------------------------------------------------ the interim executor ---
@needs_llvm
@settings(max_examples=40, deadline=None)
@given(cases(max_depth=3), st.sampled_from([None, 0.0, -1.0, 1e300, math.inf]))
def test_interim_returns_the_kernels_numbers(case: Case, poke: float | None) -> None:
    """Same values, bit for bit, and the same errors as the native kernel, also where it hands over."""
    from symgrad.backends.native.kernel import function as native_function

    f = symgrad.compile(case.text)
    point = [case.point[name] for name in f.variables]
    if poke is not None and point:
        point[0] = poke  # a point off the domain: both must hand over to the reference sweeps
    tape = transforms.grad_tape(f.tape)

    def slow(*p: float) -> tuple[float, list[float]]:
        return interpreter.value_and_grad(f.tape, p)

    interim = interpreter.entry(tape, slow, "value_and_grad")
    assert outcome(interim, *point) == outcome(native_function(tape, slow, "value_and_grad"), *point)


def test_interim_agrees_with_the_interpreter_on_every_output() -> None:
    f = symgrad.compile("max(x, y) * exp(-x) + atan2(x, y)")
    tape = f.hessian_function().tape
    run = interpreter.entry(tape, lambda *p: pytest.fail("no hand-over expected"), "tuple")
    assert run(0.3, 1.7) == tuple(interpreter.evaluate(tape, [0.3, 1.7]))


# ------------------------------------------------------------- in Function ---
@needs_llvm
@config.override(BACKGROUND=True)
def test_function_compiles_big_tapes_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    from symgrad.backends import dispatch

    monkeypatch.setattr(dispatch, "ISOLATED_FROM_SECONDS", 0.0)  # as a long compile: a child process
    f = symgrad.compile(BIG + " + 0.25 * y")  # not the cached Function of another test
    point = (0.5, 0.25, -1.0)
    first = f.vg(*point)
    bound = f.vg  # kept by a hot loop: it must upgrade too
    forward = f(*point)
    assert f.wait_native(60)
    assert f.vg is not bound  # the slot now holds the kernel itself
    assert f.vg(*point) == first == bound(*point)
    assert f(*point) == forward == interpreter.evaluate(f.tape, list(point))[0]
    with pytest.raises(DomainError, match="log") as before:
        bound(-5.0, 0.25, -1.0)
    with pytest.raises(DomainError, match="log") as after:
        f.vg(-5.0, 0.25, -1.0)
    assert str(before.value) == str(after.value)


@needs_llvm
@config.override(BACKGROUND=True, CACHE=False)  # (a kernel in the persistent cache would load at once)
def test_a_short_compile_happens_in_the_caller_at_the_call_that_paid_for_it() -> None:
    """Below ``ISOLATED_FROM_SECONDS`` a compile on a thread would share the GIL with the calls and take
    2-2.5x as long: the call whose rent reaches the kernel's estimate compiles it."""
    from symgrad.backends import dispatch

    f = symgrad.compile("sin(x) * y + exp(x / y) + 0.125")
    point = (0.5, 0.25)
    first = f.vg(*point)
    (rental,) = f._rentals
    assert rental.costs[-1][0] == "native" and rental.costs[-1][1] <= dispatch.ISOLATED_FROM_SECONDS
    for _ in range(100_000):
        if type(f.vg).__name__ == "builtin_function_or_method":
            break
        assert f.vg(*point) == first
    assert type(f.vg).__name__ == "builtin_function_or_method"  # the kernel itself now
    assert rental.job is None and not rental.failed  # no background build was started
    assert rental.paid >= rental.costs[-1][1]  # the calls (and setups) paid for it first
    assert f.vg(*point) == first


def test_wait_native_is_true_at_once_without_compiles() -> None:
    f = symgrad.compile("x * y", backend="python")
    f.vg(1.0, 2.0)
    assert f.wait_native(0)


@needs_llvm
def test_a_failing_compile_falls_back_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from symgrad.backends.native import kernel

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("LLVM is having a bad day")

    monkeypatch.setattr(kernel, "compile_native", broken)
    f = symgrad.compile(BIG + " + 0.5 * x")  # not the cached Function of another test
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grads = f.vg(0.5, 0.25, -1.0)
        assert not f.wait_native(60)
    assert f.vg(0.5, 0.25, -1.0) == (value, grads)
    assert "generated" in f.vg.__name__  # generated Python, built when the compile failed


# -------------------------------------------------------- exit and fork ---
EXIT_EARLY = f"""
import symgrad
f = symgrad.compile({BIG!r})
print(f.vg(0.5, 0.25, -1.0)[0])
"""

FORK = f"""
import os, symgrad
f = symgrad.compile({BIG!r})
expected = f.vg(0.5, 0.25, -1.0)
pid = os.fork()
if pid == 0:
    ok = f.vg(0.5, 0.25, -1.0) == expected and f.wait_native(60) and f.vg(0.5, 0.25, -1.0) == expected
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert f.wait_native(60) and f.vg(0.5, 0.25, -1.0) == expected
print("fork ok")
"""


def _python(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(cache)}
    for name in ("SYMGRAD_BACKGROUND", "SYMGRAD_BACKEND"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@needs_llvm
def test_exit_right_after_the_first_call_is_clean(tmp_path: Path) -> None:
    result = _python(EXIT_EARLY, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert float(result.stdout) == symgrad.compile(BIG)(0.5, 0.25, -1.0)


def test_exit_lets_a_running_build_finish(tmp_path: Path) -> None:
    done = tmp_path / "done"
    code = f"""
import threading, time
from symgrad.backends import background
started = threading.Event()
def build():
    started.set()
    time.sleep(0.5)
    open({str(done)!r}, "w").write("written")
    return print
background.upgrade_later(print, build)
assert started.wait(30)
"""
    result = _python(code, tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert done.read_text() == "written"


@needs_llvm
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_fork_while_compiling(tmp_path: Path) -> None:
    result = _python(FORK, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fork ok" in result.stdout


# --------------------------------------------- short compiles and exit during long ones ---
LONG_COMPILE = """
import json, sys, time
import symgrad
from symgrad.backends import dispatch
from symgrad.backends.native import jit

jit._CHILD = "import time; time.sleep(120)"  # a compile in the child process that takes two minutes
dispatch.ISOLATED_FROM_SECONDS = 0.0  # every compile goes to a child process in the background...
big = symgrad.compile("sin(x)*y + exp(x*y) + 1")
big.vg(0.1, 0.2)
assert not big.wait_native(timeout=0.5)  # ...and this one is still compiling
dispatch.ISOLATED_FROM_SECONDS = 1e9  # a small compile meanwhile: in the caller, queued behind nothing
small = symgrad.compile("x*y + 3")
small.vg(1.0, 2.0)
start = time.monotonic()
assert small.wait_native(timeout=60)
print(json.dumps({"small": time.monotonic() - start, "exit_from": time.time()}), flush=True)
"""


@needs_llvm
def test_a_small_compile_never_waits_behind_a_long_one_and_exit_does_not_wait_for_it(tmp_path: Path) -> None:
    import json
    import time

    env = {**os.environ, "SYMGRAD_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", LONG_COMPILE], capture_output=True, text=True, env=env, timeout=110, check=False
    )
    ended = time.time()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["small"] < 30  # not the two minutes of the long compile
    assert ended - report["exit_from"] < 10  # the child compile is stopped, not waited for (typically < 1.5 s)


@needs_llvm
def test_an_isolated_compile_builds_its_ir_in_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the IR is Python work: in the child it never holds this process's GIL beside the calls."""
    from symgrad.backends.native import jit
    from symgrad.backends.native.kernel import IRRecipe, NativeKernel
    from symgrad.backends.native.program import Program

    tape = symgrad.compile("sin(x) * y + exp(x / y)").gradient_function().tape
    kernel = NativeKernel(Program.from_tape(tape, tape.outputs), list, scalar=False)
    expected = jit.compile_object(kernel.recipe("scalar").text(), 0)

    def not_here(self: IRRecipe) -> str:
        raise AssertionError("the IR was built in the parent")

    monkeypatch.setattr(IRRecipe, "text", not_here)
    with jit.isolated():
        assert jit.compile_object(kernel.recipe("scalar"), 0) == expected  # the same object code


@needs_llvm
def test_ir_text_compiles_in_this_process_even_when_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared entry shim (IR text, a few ms of LLVM) is never worth a child process."""
    from symgrad.backends.native import jit

    def no_child(*args: object) -> bytes:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(jit, "_compile_in_child", no_child)
    with jit.isolated():
        data = jit.compile_object("define double @f(double %x) {\n  ret double %x\n}\n", 0)
    assert jit.load_object(data, ("f",)).addresses["f"] != 0


def test_rentals_learn_setup_costs_from_what_this_process_paid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rent or buy keeps its bound only as far as the expected setup is the setup paid: a code
    generation that took 10x its estimate makes the next rental expect 10x (within the clamp)."""
    from dataclasses import replace

    from symgrad.backends import dispatch
    from symgrad.backends import python as python_code

    monkeypatch.setattr(dispatch, "_measured", {})
    f = symgrad.compile("sin(x)*y + exp(x - y)*x")
    tape = f.gradient_function().tape
    before = dict((name, setup) for name, setup, _ in dispatch.scalar_tiers(tape))
    # An estimate far below what generating the code costs (about 1e-5 s per record here)
    monkeypatch.setattr(python_code.EXECUTOR, "figures", replace(python_code.EXECUTOR.figures, setup_per_record=1e-9))
    tiers = dispatch.scalar_tiers(tape)
    builders = {name: (lambda name=name: lambda *p: interpreter.value_and_grad(f.tape, p)) for name, _, _ in tiers}
    builders["python"] = lambda: python_code.function(tape, lambda *p: None, "value_and_grad")
    rental = dispatch.Rental(tiers, builders, lambda fn: None, builders["interpreter"]())
    rental._buy([name for name, _, _ in tiers].index("python"))
    assert dispatch._measured[("python", "scalar")] == 10.0  # the clamp: at least 10x off
    after = dict((name, setup) for name, setup, _ in dispatch.scalar_tiers(tape))
    assert after["python"] == pytest.approx(10.0 * 1e-9 * len(tape))
    assert after.get("native") == before.get("native")  # one executor's lesson is its own


@needs_llvm
def test_a_failing_child_compile_names_the_childs_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's error output comes back in the exception (it is kept in a file, as its object code)."""
    from symgrad.backends.native import jit
    from symgrad.backends.native.kernel import NativeKernel
    from symgrad.backends.native.program import Program

    tape = symgrad.compile("sin(x) * y").tape
    kernel = NativeKernel(Program.from_tape(tape, tape.outputs), list, scalar=False)
    monkeypatch.setattr(jit, "_CHILD", "import sys; print('first'); sys.exit('the child gave up here')")
    with jit.isolated(), pytest.raises(OSError, match=r"exit 1.*the child gave up here"):
        jit.compile_object(kernel.recipe("scalar"), 0)


@needs_llvm
def test_a_pickled_recipe_leaves_its_layout_behind_and_builds_the_same_ir() -> None:
    """The child process computes the layout itself: the pickle stays the size of the program."""
    import pickle

    from symgrad.backends.native.kernel import NativeKernel
    from symgrad.backends.native.program import Program

    tape = symgrad.compile("sin(x) * y + exp(x / y)").gradient_function().tape
    kernel = NativeKernel(Program.from_tape(tape, tape.outputs), list, scalar=False)
    recipe = kernel.recipe("scalar")
    assert recipe.layout is kernel.layout
    sent = pickle.loads(pickle.dumps(recipe))
    assert sent.layout is None and sent == recipe
    assert sent.text() == recipe.text()


FIRST_COMPILE_COST = """
import json, sys
from symgrad.backends import native
before = [native.EXECUTOR.scalar_cost(100).setup, native.EXECUTOR.array_cost(100, 10).setup]
import symgrad.backends.native.jit
after = [native.EXECUTOR.scalar_cost(100).setup, native.EXECUTOR.array_cost(100, 10).setup]
print(json.dumps({"before": before, "after": after, "start": native.EXECUTOR.figures.llvm_start}))
"""


@needs_llvm
def test_a_first_compile_is_estimated_with_starting_llvm() -> None:
    """A process's first kernel also imports llvmlite and starts LLVM: rent or buy must count it
    (an array call over 10^6 points bought the kernel at once and paid 80 ms it had not expected)."""
    import json

    done = subprocess.run([sys.executable, "-c", FIRST_COMPILE_COST], capture_output=True, text=True, check=True)
    costs = json.loads(done.stdout)
    for before, after in zip(costs["before"], costs["after"], strict=True):
        assert before == pytest.approx(after + costs["start"])
