"""Without llvmlite, symgrad still works: ``auto`` uses Python and says so once; ``native`` is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

BLOCKER = """
import sys

class _NoLlvmlite:
    def find_spec(self, name, path=None, target=None):
        if name == "llvmlite" or name.startswith("llvmlite."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)")
        return None

sys.meta_path.insert(0, _NoLlvmlite())
"""

CHECK = """
import warnings
import symgrad
from symgrad.backends import interpreter, native

text = " + ".join(f"sin(x * {k + 1}) * y" for k in range(80))  # big enough that auto would compile it in time
assert not native.available() and "llvmlite is not installed" in native.unavailable_reason()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    f = symgrad.compile(text)
    g = symgrad.compile(text + " + 1")
    assert f(0.3, 2.0) == interpreter.forward(f.tape, [0.3, 2.0])[f.tape.output]
    assert g(0.3, 2.0) == interpreter.forward(g.tape, [0.3, 2.0])[g.tape.output]
messages = [str(w.message) for w in caught]
assert len(messages) == 1 and "\\n" not in messages[0] and "using Python" in messages[0], messages
try:
    symgrad.compile("x + 1", backend="native")(1.0)
except symgrad.MissingDependencyError as e:
    assert "llvmlite" in str(e)
else:
    raise AssertionError("backend='native' without llvmlite must raise")
print("fallback ok")
"""


TRACE_CHECK = """
import warnings
import symgrad
from symgrad import Value
from symgrad.nn import MLP

model = MLP(2, [8, 8, 1], seed=0)
points = [([0.5 * k, 1.0 - k], (-1.0) ** k) for k in range(6)]
loss = lambda ps: sum(((model(x) - y) ** 2 for x, y in points), Value(0.0))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    traced = symgrad.trace(loss, model.parameters())
    value = traced.backward()
eager = loss(model.parameters())
assert traced._buffer is None and value == eager.data, (value, eager.data)
assert any("using Python" in str(w.message) for w in caught), [str(w.message) for w in caught]
try:
    symgrad.trace(loss, model.parameters(), backend="native").backward()
except symgrad.MissingDependencyError as e:
    assert "llvmlite" in str(e)
else:
    raise AssertionError("trace(backend='native') without llvmlite must raise")
print("trace fallback ok")
"""


def _run(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])}
    env.pop("SYMGRAD_BACKEND", None)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_without_llvmlite_auto_falls_back_with_one_warning(tmp_path: Path) -> None:
    result = _run(tmp_path, ["-c", CHECK])
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout


def test_without_llvmlite_the_api_tests_pass(tmp_path: Path) -> None:
    result = _run(tmp_path, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_api.py")])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_without_llvmlite_traced_replay_runs_as_python(tmp_path: Path) -> None:
    result = _run(tmp_path, ["-c", TRACE_CHECK])
    assert result.returncode == 0, result.stderr
    assert "trace fallback ok" in result.stdout
