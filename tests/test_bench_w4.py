"""The W4 benchmark's array peers compute the same loss as the symgrad model they are compared with."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train_step.py"


@pytest.fixture(scope="module")
def bench_on_path() -> Iterator[None]:
    """The bench scripts import their neighbours (``timing``) as the scripts' own folder is on sys.path."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH.parent))


@pytest.fixture(scope="module")
def train_step(bench_on_path: None) -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_step", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_step"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_weights_are_laid_out_as_matrices(train_step: ModuleType) -> None:
    pb = train_step.problem(0)
    shapes = [a.shape for a in pb.arrays()]
    assert shapes == [(16, 2), (16,), (16, 16), (16,), (1, 16), (1,)]
    model = pb.model()
    assert pb.arrays()[2][5, 7] == model.layers[1].neurons[5].w[7].data


def test_array_loss_equals_the_example_loss(train_step: ModuleType) -> None:
    pb = train_step.problem(1)
    ours = pb.moons.loss_of(pb.model(), pb.X, pb.y).data
    theirs = train_step.array_loss(pb.arrays(), pb.X, pb.y, lambda h: np.maximum(h, 0.0))
    assert theirs == pytest.approx(ours, rel=1e-12)
