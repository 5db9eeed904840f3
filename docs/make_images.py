"""Regenerate the pictures the docs show: ``python docs/make_images.py``.

* ``docs/img/neuron.svg`` — the tape of ``tanh(x1*w1 + x2*w2 + b)`` at micrograd's
  neuron point, with every slot's data and grad (needs Graphviz's ``dot``);
* ``docs/img/tanh.png`` — ``tanh(x)`` and its derivative on [-5, 5] (needs matplotlib).
"""

from __future__ import annotations

import sys
from pathlib import Path

import symgrad
from symgrad.drawing import save

IMG = Path(__file__).resolve().parent / "img"

NEURON = "tanh(x1*w1 + x2*w2 + b)"
NEURON_POINT = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}


def make_neuron(path: Path) -> Path:
    return save(symgrad.draw(NEURON, **NEURON_POINT), path)


def make_tanh(path: Path) -> Path:
    symgrad.plot("tanh(x)", -5, 5, path=path)
    return path


def main(out_dir: Path = IMG) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [make_neuron(out_dir / "neuron.svg"), make_tanh(out_dir / "tanh.png")]


if __name__ == "__main__":
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else IMG):
        print(f"wrote {written}")
