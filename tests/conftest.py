"""Hypothesis profiles for the property tests.

* ``ci`` (the default): 300 examples per property, derandomized, so every CI
  run draws the same examples and the property tests finish in well under a
  minute on two cores.
* ``long``: 5000 examples per property, randomized, for hunting bugs.  Select
  it with ``pytest --hypothesis-profile=long`` or ``SYMGRAD_HYPOTHESIS_PROFILE=long``.

Whatever a run finds goes into ``tests/regressions.txt`` (see that file).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 300
LONG_EXAMPLES = 5000

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("long", max_examples=LONG_EXAMPLES, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("SYMGRAD_HYPOTHESIS_PROFILE", "ci"))
