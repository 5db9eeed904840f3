"""The cyclic collector is paused while symgrad builds big structures, and resumed as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import symgrad
from symgrad import parser, transforms
from symgrad.gcpause import gc_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_and_resumed_after_also_on_errors() -> None:
    seen: list[bool] = []

    @gc_paused
    def inner() -> None:
        seen.append(gc.isenabled())

    @gc_paused
    def outer(fail: bool) -> None:
        inner()
        seen.append(gc.isenabled())  # the inner pause ending does not resume it early
        if fail:
            raise ValueError("boom")

    outer(False)
    assert seen == [False, False] and gc.isenabled()
    with pytest.raises(ValueError, match="boom"):
        outer(True)
    assert gc.isenabled()


def test_a_program_that_disabled_the_collector_keeps_it_disabled() -> None:
    gc.disable()
    symgrad.compile("sin(x) * y + 1").grad(x=0.5, y=2.0)
    assert not gc.isenabled()


def test_entry_points_pause_and_resume() -> None:
    with pytest.raises(symgrad.ParseError):
        parser.parse("x + $")
    assert gc.isenabled()
    f = symgrad.compile("x * log(y)")
    transforms.hessian_tape(f.tape)
    assert gc.isenabled()
