"""Graph colourings of sparsity patterns, for compressed evaluation of Jacobians and Hessians.

Compressed evaluation computes a sparse Jacobian from one product J·s per
colour, s the sum of the unit vectors of the columns of that colour, and
reads each entry off one product.  That needs a *column colouring* (a
distance-2 colouring of the bipartite row/column graph): no two columns of a
colour share a row, so ``J[i, j] = (J s_colour(j))[i]``.

A symmetric Hessian needs fewer colours: a *star colouring* of its adjacency
graph (adjacent vertices differ, and every path on four vertices uses at least
three colours) is exactly a partition from which every entry is read off
directly, from row i of the product for colour(j) or from row j of the
product for colour(i), whichever has no other column of that colour
(Coleman and Moré, 1984).  :func:`hessian_recovery` says which.

The colourings are greedy in the natural order (Gebremedhin, Manne and
Pothen, "What color is your Jacobian?", SIAM Review 2005: Algorithm 4.1 for
the star colouring).  Their cost is Σ over rows of (row length)² for
columns and up to Σ (degree)³ for stars: linear in n for the banded and
block patterns of chained problems, at least quadratic in the length of a
dense row (an objective term that couples every variable).

symgrad's own sparse derivatives do not use compressed evaluation:
``Function.sparse_hessian`` runs a derived tape that computes each nonzero
directly (:mod:`symgrad.sparse`), which measured faster per call than one
Hessian-vector product per colour, on every executor, and no slower to build
(docs/performance.md, "Sparse Hessians: derived tape, colouring, CasADi,
JAX").  The colourings are here for what they tell: ``max(colours) + 1`` is
how many products a compressed evaluation takes (``hessian_colouring(
f.hessian_sparsity())``), and for users who evaluate products themselves
(``f.hvp`` per colour, then :func:`hessian_recovery`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InputError

__all__ = [
    "hessian_colouring",
    "hessian_recovery",
    "is_column_colouring",
    "is_star_colouring",
    "jacobian_colouring",
]


def _entries(pattern: Any) -> tuple[list[int], list[int], tuple[int, int]]:
    """``(rows, cols, shape)`` of a scipy.sparse pattern (what ``jacobian_sparsity``/``hessian_sparsity`` give)."""
    import scipy.sparse  # (a pattern is a scipy.sparse array already, so scipy is there)

    coo = scipy.sparse.coo_array(pattern)
    return coo.row.tolist(), coo.col.tolist(), (int(coo.shape[0]), int(coo.shape[1]))


def _square(pattern: Any) -> tuple[list[int], list[int], int]:
    rows, cols, (m, n) = _entries(pattern)
    if m != n:
        raise InputError(f"a Hessian pattern is square; this one is {m}×{n}")
    return rows, cols, n


def _check_length(colours: Sequence[int], n: int) -> None:
    if len(colours) != n:
        raise InputError(f"{len(colours)} colours for a pattern of {n} columns: give one colour per column")


def _lists(rows: Sequence[int], cols: Sequence[int], n: int) -> list[list[int]]:
    """Per index below ``n``, the sorted distinct partners: ``out[r]`` lists the ``c`` of the entries ``(r, c)``."""
    out: list[set[int]] = [set() for _ in range(n)]
    for r, c in zip(rows, cols, strict=True):
        out[r].add(c)
    return [sorted(s) for s in out]


def jacobian_colouring(pattern: Any) -> list[int]:
    """A colour (0, 1, …) per column of an m×n pattern such that no two columns of a colour have an
    entry in the same row (greedy, columns in order).  ``max(colours) + 1`` Jacobian-vector
    products then give every entry."""
    rows, cols, (m, n) = _entries(pattern)
    row_cols = _lists(rows, cols, m)
    col_rows = _lists(cols, rows, n)
    colour = [-1] * n
    forbidden = [-1] * (n + 1)  # forbidden[c] == j: colour c is taken for column j
    for j in range(n):
        for i in col_rows[j]:
            for k in row_cols[i]:
                c = colour[k]
                if c >= 0:
                    forbidden[c] = j
        colour[j] = _first_free(forbidden, j)
    return colour


def _adjacency(rows: Sequence[int], cols: Sequence[int], n: int) -> list[list[int]]:
    """The off-diagonal neighbours of each vertex of a symmetric pattern (either triangle, or both)."""
    adj: list[set[int]] = [set() for _ in range(n)]
    for r, c in zip(rows, cols, strict=True):
        if r != c:
            adj[r].add(c)
            adj[c].add(r)
    return [sorted(s) for s in adj]


def hessian_colouring(pattern: Any) -> list[int]:
    """A star colouring (a colour per variable) of a symmetric n×n pattern, given in full or as
    either triangle: greedy, vertices in order (Gebremedhin, Manne and Pothen's Algorithm 4.1).
    ``max(colours) + 1`` Hessian-vector products then give every entry."""
    rows, cols, n = _square(pattern)
    adj = _adjacency(rows, cols, n)
    colour = [-1] * n
    forbidden = [-1] * (n + 1)
    for v in range(n):
        for w in adj[v]:
            cw = colour[w]
            if cw >= 0:
                forbidden[cw] = v
            for x in adj[w]:
                cx = colour[x]
                if x == v or cx < 0:
                    continue
                # v and x meet at an uncoloured w (whose colour would end a two-coloured P4 either way),
                # or at a coloured w that x's other neighbour y repeats (v-w-x-y would be two-coloured)
                if cw < 0 or any(y != w and colour[y] == cw for y in adj[x]):
                    forbidden[cx] = v
        colour[v] = _first_free(forbidden, v)
    return colour


def _first_free(forbidden: list[int], marker: int) -> int:
    """The smallest colour not marked forbidden for this vertex (greedy colouring's one choice)."""
    c = 0
    while forbidden[c] == marker:
        c += 1
    return c


def is_column_colouring(pattern: Any, colours: Sequence[int]) -> bool:
    """No two columns of a colour have an entry in the same row."""
    rows, cols, (_, n) = _entries(pattern)
    _check_length(colours, n)
    seen: dict[tuple[int, int], int] = {}
    return all(seen.setdefault((r, colours[c]), c) == c for r, c in zip(rows, cols, strict=True))


def hessian_recovery(pattern: Any, colours: Sequence[int]) -> list[tuple[int, int]] | None:
    """Where each entry ``(r, c)`` of a symmetric pattern (in the pattern's COO order) is read from
    the products ``H s_k`` (``s_k``: the sum of the unit vectors of colour k): ``(k, row)``.  None
    when some entry can be read from neither of its two places, i.e. the colouring is not a star
    colouring.  The diagonal counts as structural (a product sees it whether or not it is stored)."""
    rows, cols, n = _square(pattern)
    _check_length(colours, n)
    adj = _adjacency(rows, cols, n)
    counts: dict[tuple[int, int], int] = {}  # (row, colour) -> columns of that colour with an entry in the row
    for r, partners in enumerate(adj):
        for c in (r, *partners):
            key = (r, colours[c])
            counts[key] = counts.get(key, 0) + 1
    places: list[tuple[int, int]] = []
    for r, c in zip(rows, cols, strict=True):
        if r == c or (colours[r] != colours[c] and counts[r, colours[c]] == 1):
            places.append((colours[c], r))
        elif colours[r] != colours[c] and counts[c, colours[r]] == 1:
            places.append((colours[r], c))
        else:
            return None
    return places


def is_star_colouring(pattern: Any, colours: Sequence[int]) -> bool:
    """Every entry of the symmetric pattern can be read off directly from the per-colour products
    (Coleman and Moré's symmetric orthogonality, equivalent to a star colouring)."""
    return hessian_recovery(pattern, colours) is not None
