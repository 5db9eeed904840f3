"""Regenerate the pictures the docs show: ``python docs/make_images.py``.

* ``docs/img/neuron.svg`` — the tape of ``tanh(x1*w1 + x2*w2 + b)`` at micrograd's
  neuron point, with every slot's data and grad (needs Graphviz's ``dot``);
* ``docs/img/tanh.png`` — ``tanh(x)`` and its derivative on [-5, 5] (needs matplotlib);
* ``docs/img/optimisation_patterns.png`` — the structural nonzeros of the constraint Jacobian and of
  the Lagrangian's Hessian of the chained problem in docs/optimisation.md at n = 40 (needs matplotlib
  and scipy).
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


CHAINED_OBJECTIVE = "sum(100*(x[i]**2 - x[i+1])**2 + (x[i] - 1)**2 for i in 1..n-1)"
CHAINED_CONSTRAINTS = (
    "3*x[i+1]**3 + 2*x[i+2] - 5 + sin(x[i+1] - x[i+2])*sin(x[i+1] + x[i+2]) + 4*x[i+1]"
    " - x[i]*exp(x[i] - x[i+1]) - 3 == 0 for i in 1..n-2"
)


def make_patterns(path: Path, n: int = 40) -> Path:
    """Spy plots of the patterns the solver gets: from one pass over the tapes, no evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from symgrad.constraints import lower_constraints
    from symgrad.nlp import NonlinearProgram

    variables = {"x": n}
    f = symgrad.compile(CHAINED_OBJECTIVE, sizes={"n": n}, variables=variables)
    c = symgrad.Function(lower_constraints([CHAINED_CONSTRAINTS], variables=variables, sizes={"n": n}).tape)
    program = NonlinearProgram(f, c, f.variables)
    import numpy as np
    import scipy.sparse

    jacobian = c.jacobian_sparsity()
    rows, cols = program.hessian_structure()  # the lower triangle the solver gets; drawn whole
    lower = scipy.sparse.coo_array((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))
    hessian = (lower + lower.T).tocsr()
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.2))
    for ax, pattern, title in (
        (axes[0], jacobian, f"constraint Jacobian ({n - 2}×{n}, {jacobian.nnz} nonzeros)"),
        (axes[1], hessian, f"Hessian of the Lagrangian ({n}×{n}, {hessian.nnz} nonzeros)"),
    ):
        ax.spy(pattern.toarray(), markersize=3)  # (a 40×40 picture; the solver never sees a dense array)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(out_dir: Path = IMG) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        make_neuron(out_dir / "neuron.svg"),
        make_tanh(out_dir / "tanh.png"),
        make_patterns(out_dir / "optimisation_patterns.png"),
    ]


if __name__ == "__main__":
    for written in main(Path(sys.argv[1]) if len(sys.argv) > 1 else IMG):
        print(f"wrote {written}")
