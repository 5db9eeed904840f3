"""The benchmark workloads as data: expression strings and points, no timing here."""

from __future__ import annotations

import random

W1 = "3*x**2-4*x+5"
W1_POINT = {"x": 3.0}

W2 = "exp(-((x-mu)/s)**2/2)/(sqrt(2*pi)*s)"
W2_POINT = {"x": 0.7, "mu": 0.2, "s": 1.5}

_UNARY = ("sin", "cos", "tanh")
_BINARY = ("+", "-", "*")


def _term(r: random.Random, names: list[str], ops: int) -> str:
    """A random expression with exactly ``ops`` operators over ``names``, depth about log2(ops)."""
    if ops == 0:
        return r.choice(names) if r.random() < 0.85 else repr(round(r.uniform(0.1, 2.0), 2))
    if r.random() < 0.3:
        fn = r.choice(_UNARY)
        return f"{fn}({_term(r, names, ops - 1)})"
    left = r.randint(0, ops - 1)
    op = r.choice(_BINARY)
    return f"({_term(r, names, left)} {op} {_term(r, names, ops - 1 - left)})"


def generated(n_ops: int, n_vars: int = 20, seed: int = 0) -> str:
    """A sum of random small terms over ``n_vars`` variables with ``n_ops`` operators in all.

    Terms have 8 operators each (depth stays small, so recursive peers such as sympy
    can parse it), joined by ``+``; every variable appears.
    """
    r = random.Random(seed)
    names = [f"x{i}" for i in range(n_vars)]
    terms = [" + ".join(names)]
    used = n_vars - 1
    while used < n_ops:
        size = min(8, n_ops - used - 1)
        terms.append(_term(r, names, max(size, 0)))
        used += size + 1
    return " + ".join(terms)


def generated_point(n_vars: int = 20, seed: int = 1) -> dict[str, float]:
    r = random.Random(seed)
    return {f"x{i}": r.uniform(-1.0, 1.0) for i in range(n_vars)}
