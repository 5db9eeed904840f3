"""Record counts of derivative tapes: the table in docs/derivatives.md.

    python bench/derivative_sizes.py

For each formula: the primal tape, d/dx .. d⁴/dx⁴ (``symgrad.diff``), the
gradient tape (value and every partial) and the Hessian by both methods.
"""

from __future__ import annotations

import symgrad
from symgrad import transforms

FORMULAS = (
    "3*x**2-4*x+5",
    "x**5 - 3*x**2 + 1",
    "sin(x)*y",
    "tanh(x*y + sin(x))",
    "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)",
    "exp(x)*sin(x)/(1 + x*x)",
)


def main() -> None:
    print("| formula | primal | d¹ | d² | d³ | d⁴ | gradient | Hessian (fwd over rev) | Hessian (rev over rev) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for text in FORMULAS:
        f = symgrad.compile(text)
        x = f.variables[0]
        orders = [len(f.tape)] + [len(symgrad.diff(text, *[x] * k).tape) for k in range(1, 5)]
        gradient = len(transforms.grad_tape(f.tape))
        fwd = len(transforms.hessian_tape(f.tape, method="forward-over-reverse"))
        rev = len(transforms.hessian_tape(f.tape, method="reverse-over-reverse"))
        cells = [*orders, gradient, fwd, rev]
        print(f"| `{text}` | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
