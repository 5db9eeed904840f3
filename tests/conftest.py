"""Hypothesis profiles for the property tests, and whether the rendering tests can find Graphviz's ``dot``.

* ``ci`` (the default): 300 examples per property, derandomized, so every CI
  run draws the same examples and the property tests finish in well under a
  minute on two cores.
* ``long``: 5000 examples per property, randomized, for hunting bugs.  Select
  it with ``pytest --hypothesis-profile=long`` or ``SYMGRAD_HYPOTHESIS_PROFILE=long``.

Whatever a run finds goes into ``tests/regressions.txt`` (see that file).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

CI_EXAMPLES = 300
LONG_EXAMPLES = 5000

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("long", max_examples=LONG_EXAMPLES, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("SYMGRAD_HYPOTHESIS_PROFILE", "ci"))

# Native kernels compiled by the tests go to a fresh directory, never the user's cache: set here, before
# any test module imports symgrad, and removed when the run ends (a test run leaves nothing behind).
_OWN_CACHE: str | None = None
if "SYMGRAD_CACHE_DIR" not in os.environ:
    _OWN_CACHE = os.environ["SYMGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="symgrad-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's kernel cache (not a directory the caller chose with SYMGRAD_CACHE_DIR)."""
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# ------------------------------------------------------------ Graphviz dot ---
# Tests marked ``needs_dot`` render with Graphviz's ``dot`` program.  A test run never installs
# anything (.ci/run installs graphviz before it runs pytest): when dot is missing, those tests are
# skipped with the install command as the reason -- except under CI=true, where a missing dot
# fails the run instead of hiding the tests.

DOT_MISSING = (
    "Graphviz's dot program is not installed: apt-get install graphviz (Debian/Ubuntu), "
    "brew install graphviz (macOS) or conda install graphviz"
)


def dot_decision(needing: int, have_dot: bool, ci: bool) -> str:
    """What to do with ``needing`` tests that need dot: ``"run"``, ``"skip"`` or ``"fail"``."""
    if not needing or have_dot:
        return "run"
    return "fail" if ci else "skip"


CC_MISSING = "no C compiler (cc) is installed: apt-get install gcc (Debian/Ubuntu) or xcode-select --install (macOS)"
"""Tests marked ``needs_cc`` compile exported C (``Function.to_c``); the same rule as for dot."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, have, missing, what in (
        ("needs_dot", shutil.which("dot") is not None, DOT_MISSING, "Graphviz"),
        ("needs_cc", shutil.which("cc") is not None, CC_MISSING, "a C compiler"),
    ):
        needing = [item for item in items if item.get_closest_marker(marker)]
        decision = dot_decision(len(needing), have, bool(os.environ.get("CI")))
        if decision == "fail":
            raise pytest.UsageError(f"{len(needing)} tests need {what}: {missing}")
        if decision == "skip":
            for item in needing:
                item.add_marker(pytest.mark.skip(reason=missing))
