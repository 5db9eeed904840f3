"""The ``symgrad`` command: a thin layer over the public API.

Exit status: 0 on success, 2 on a user error (message on stderr), 1 when
``symgrad check`` finds a disagreement.  Each
subcommand is one ``_cmd_*`` function plus its arguments in :func:`build_parser`.

An EXPRESSION argument of ``-`` reads the formula from standard input, and
``@FILE`` from a file, for formulas beyond the operating system's limit on the
length of a command line.  ``--json`` output is always valid JSON (RFC 8259):
see :func:`jsonable` for how numbers that are not finite are written.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import stat
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import api, config
from .errors import (
    ConfigError,
    DomainError,
    InputError,
    ModelError,
    ParseError,
    SymgradError,
    UnknownSizeError,
    clip,
    excerpt,
    quote,
)
from .explain import DEFAULT_MAX_ROWS
from .function import Function
from .model import declared_vectors, vector_items
from .oracle import DEFAULT_ATOL, DEFAULT_FD_ATOL, DEFAULT_FD_RTOL, DEFAULT_RTOL, check

__all__ = ["build_parser", "jsonable", "main", "read_expression"]

EXIT_OK = 0
EXIT_DISAGREE = 1
EXIT_USAGE = 2


def format_number(value: float) -> str:
    """Shortest round-trip text, without a trailing ``.0`` (``20``, ``0.5``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Given:
    """One ``name=value`` of a point: a scalar (``t=2``), a whole vector (``x=1,2,3``) or one element
    (``x[2]=5``).  Which it must be is known only once the formula is compiled (:func:`resolve_point`)."""

    name: str
    index: int | None
    """``2`` for ``x[2]=5``; None otherwise."""
    value: float | tuple[float, ...]
    """A tuple for a whole vector (a comma or brackets in the value), else one number."""
    text: str
    """The assignment as typed, quoted in messages."""

    @property
    def key(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


def parse_point(assignments: Sequence[str]) -> list[Given]:
    """``["x=3", "y=pi/4", "v=1,2,3", "w[2]=5"]`` → one :class:`Given` each.

    Each number is itself a constant symgrad expression (parsed by the grammar,
    never by ``eval``), so ``x=pi/4`` and ``y=-2e-3`` both work.  A value with a
    comma outside parentheses, or in brackets (``v=[1,2,3]``), is a whole vector.
    """
    point: list[Given] = []
    seen: set[str] = set()
    for item in assignments:
        target, sep, text = item.partition("=")
        target = target.strip()
        if not sep or not target or not text.strip():
            raise InputError(f"expected name=value, got {item!r} (for example x=3, x=1,2,3 or x[2]=5)")
        name, index = _target(target, item)
        key = name if index is None else f"{name}[{index}]"
        if key in seen:
            raise InputError(f"variable '{key}' was given twice")
        seen.add(key)
        point.append(Given(name, index, _values_of(key, text), item))
    return point


def _target(target: str, item: str) -> tuple[str, int | None]:
    """``x`` → ``("x", None)``, ``x[2]`` → ``("x", 2)``: the left side of an assignment."""
    name, bracket, rest = target.partition("[")
    name = name.strip()
    if not name.isidentifier():
        raise InputError(f"{clip(name)!r} is not a valid variable name (in {clip(item)!r})")
    if not bracket:
        return name, None
    digits = rest[:-1].strip() if rest.endswith("]") else ""
    if not digits.isascii() or not digits.isdigit() or int(digits) < 1:
        raise InputError(
            f"the element in {clip(target)!r} must be a whole number >= 1, as in {name}[2]=5 "
            "(elements are numbered from 1)"
        )
    return name, int(digits)


def _values_of(key: str, text: str) -> float | tuple[float, ...]:
    """One number, or a tuple of them for a whole vector (``1,2,3`` or ``[1,2,3]``)."""
    stripped = text.strip()
    bracketed = stripped.startswith("[") and stripped.endswith("]")
    parts = _split_commas(stripped[1:-1] if bracketed else stripped)
    if not bracketed and len(parts) == 1:
        return _number(key, stripped)
    quoted = f"the value of '{key}' ({clip(stripped, 40)!r})"
    if key.endswith("]"):
        raise InputError(f"{quoted} gives {len(parts)} values; '{key}' is one element: give one number")
    if parts == [""]:
        raise InputError(f"{quoted} holds no numbers: give the elements, as in {key}=1,2,3")
    for k, part in enumerate(parts, 1):
        if not part.strip():
            raise InputError(f"{quoted} has no number for element {k}: separate the numbers by single commas")
    return tuple(_number(f"{key}[{k}]", part) for k, part in enumerate(parts, 1))


def _split_commas(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses, so ``max(1,2),3`` is two numbers."""
    parts: list[str] = []
    depth = start = 0
    for position, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return parts


_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _number(key: str, text: str) -> float:
    """A plain decimal directly (a vector may have thousands), anything else through the grammar."""
    if _DECIMAL.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value  # the grammar's literal is float(text) too; beyond the range, its error is better
    return _value_of(key, text)


_NOT_FINITE = frozenset({"nan", "inf", "infinity"})


def _value_of(name: str, text: str) -> float:
    """The number ``text`` gives ``name``; every error names the variable and quotes the value."""
    quoted = f"the value of '{name}' ({clip(text.strip(), 40)!r})"
    try:
        value = api.compile(text)
        if value.variables:
            if _NOT_FINITE.intersection(v.lower() for v in value.variables):
                raise InputError(f"{quoted} must be a finite number: formulas are evaluated at finite points")
            names = ", ".join(clip(v, 20) for v in value.variables[:3])
            raise InputError(f"{quoted} must be a number such as 3 or pi/4, not an expression in {names}")
        return float(value())
    except ParseError as e:
        raise InputError(f"{quoted} is not a number: {e.reason}") from None
    except DomainError as e:  # (other errors, a bad SYMGRAD_* setting say, are not about the value)
        raise InputError(f"{quoted} is undefined: {e.reason}") from None


def jsonable(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with every number that is not finite replaced by ``null``, for valid JSON.

    JSON (RFC 8259) has no NaN or Infinity.  Each replaced number is listed under the key
    ``"nonfinite"``: its path of keys joined by ``.`` maps to ``"nan"``, ``"inf"`` or ``"-inf"``,
    e.g. ``{"value.sympy": "nan"}``.  Without such numbers the payload is unchanged.
    """
    nonfinite: dict[str, str] = {}

    def clean(item: Any, path: str) -> Any:
        if isinstance(item, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v, f"{path}.{i}") for i, v in enumerate(item)]
        if isinstance(item, float) and not math.isfinite(item):
            nonfinite[path] = "nan" if math.isnan(item) else "inf" if item > 0 else "-inf"
            return None
        return item

    cleaned: dict[str, Any] = clean(payload, "")
    if nonfinite:
        cleaned["nonfinite"] = nonfinite
    return cleaned


def _write_json(payload: dict[str, Any]) -> None:
    json.dump(jsonable(payload), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


MAX_EXPRESSION_BYTES = 4 * 2**20
"""The most an EXPRESSION read from ``-`` or ``@FILE`` may hold (4 MiB, about 500,000 terms).

Reading stops one byte past it, so ``@/dev/zero`` or ``- < /dev/urandom`` is an error at once,
not a hang or a ``MemoryError``; a formula this long takes minutes and gigabytes to compile anyway.
"""

READ_EXCERPT_WIDTH = 24
"""Characters shown around a parse error in a formula read from a file or stdin.

The file may be anything (``@/etc/shadow``): its error shows only this much of it."""


def read_expression(text: str) -> str:
    """The formula an EXPRESSION argument names: itself, or ``-`` for stdin, or ``@FILE`` for a file.

    What is read must be UTF-8 text of at most :data:`MAX_EXPRESSION_BYTES`; ``@FILE`` must name a
    regular file (a symlink to one is fine), so devices and FIFOs are refused before any read.
    """
    if text == "-":
        buffer = getattr(sys.stdin, "buffer", None)  # (a replaced stdin, e.g. io.StringIO, has none)
        if buffer is not None:
            data = buffer.read(MAX_EXPRESSION_BYTES + 1)
        else:
            data = sys.stdin.read(MAX_EXPRESSION_BYTES + 1).encode("utf-8", "surrogatepass")
        return _as_text(data, "standard input")
    if text.startswith("@"):
        name = text[1:]
        return _as_text(_read_file(name), repr(name))
    return text


def _read_file(name: str) -> bytes:
    """The bytes of the regular file ``name`` (at most the bound + 1); InputError for anything else."""
    where = f"cannot read the expression from {clip(name)!r}"
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise InputError(f"{where}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{where}: it is not a regular file")
        if info.st_size > MAX_EXPRESSION_BYTES:
            raise InputError(f"{where}: it has {info.st_size:,} bytes, more than the {MAX_EXPRESSION_BYTES:,} allowed")
        try:
            return file.read(MAX_EXPRESSION_BYTES + 1)
        except OSError as e:
            raise InputError(f"{where}: {e.strerror or e}") from None


_CONTROL = frozenset(chr(c) for c in [*range(0x20), 0x7F]) - set("\t\n\r")


def _as_text(data: bytes, what: str) -> str:
    """``data`` as a formula: refused, without quoting any of it, unless short UTF-8 text."""
    if len(data) > MAX_EXPRESSION_BYTES:
        raise InputError(f"cannot read the expression from {what}: it has more than {MAX_EXPRESSION_BYTES:,} bytes")
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"cannot read the expression from {what}: it is not UTF-8 text") from None
    if not _CONTROL.isdisjoint(source):
        raise InputError(f"cannot read the expression from {what}: it is not text (it holds control characters)")
    return source.rstrip()


def _short_parse_error(e: ParseError, origin: str) -> str:
    """A parse error in a formula read from ``origin``, quoting at most a short excerpt of it."""
    shown = excerpt(e.source, e.span, READ_EXCERPT_WIDTH)
    return f"{origin}, line {e.line}, column {e.column}: {clip(e.reason, READ_EXCERPT_WIDTH + 20)}\n{shown}"


def parse_sizes(groups: Sequence[str] | None) -> dict[str, int]:
    """``--sizes n=1000,m=3`` (or repeated) → ``{"n": 1000, "m": 3}``: whole numbers, no formulas."""
    sizes: dict[str, int] = {}
    for group in groups or ():
        for item in group.split(","):
            name, sep, text = (part.strip() for part in item.partition("="))
            if not sep or not name or not text:
                raise InputError(f"--sizes takes name=integer, got {clip(item.strip())!r} (for example --sizes n=3)")
            if not name.isidentifier():
                raise InputError(f"{clip(name)!r} is not a valid size name (in --sizes {clip(group)!r})")
            digits = text[1:] if text[:1] in "+-" else text
            if not digits.isascii() or not digits.isdigit():
                raise InputError(f"size '{name}' must be a whole number, got {clip(text)!r}")
            if name in sizes:
                raise InputError(f"size '{name}' was given twice")
            sizes[name] = int(text)
    return sizes


MAX_SIZE_TRIALS = 16
"""The most compilations spent inferring sizes that ``--sizes`` does not give from vector lengths."""


def compile_model(
    expression: str, sizes: Mapping[str, int], point: Sequence[Given] = ()
) -> tuple[Function, dict[str, int]]:
    """``expression`` compiled with ``sizes``, and the sizes in force.

    A size the formula needs but ``sizes`` lacks is inferred from the vectors given whole at the
    point: of their lengths, the one value (one per missing size) for which every such vector has
    exactly its number of values, and on which that length depends (one more would change it),
    so a size the lengths do not decide is never guessed.  Otherwise the error says ``--sizes``.
    """
    try:
        return api.compile(expression, sizes=dict(sizes) or None), dict(sizes)
    except UnknownSizeError as e:
        first = e
    lengths = {g.name: len(g.value) for g in point if isinstance(g.value, tuple)}
    candidates = sorted(set(lengths.values()))
    if not candidates:
        raise _sizes_error(first, f"give it with --sizes {first.name}=N") from None
    fits: list[tuple[Function, dict[str, int]]] = []
    pending: list[dict[str, int]] = [{first.name: c} for c in reversed(candidates)]
    trials = 0
    while pending and trials < MAX_SIZE_TRIALS:
        guess = pending.pop()
        trials += 1
        try:
            f = api.compile(expression, sizes={**sizes, **guess})
        except UnknownSizeError as e:
            pending.extend({**guess, e.name: c} for c in reversed(candidates))
            continue
        except SymgradError:  # e.g. an index below 1 at this size: not the size meant
            continue
        if _lengths(f, lengths) == lengths:
            fits.append((f, guess))
    given = ", ".join(f"{name} has {n}" for name, n in lengths.items())
    if pending or len(fits) != 1:
        what = "several sizes fit" if len(fits) > 1 else "no sizes fit"
        raise _sizes_error(
            first, f"{what} the vectors given ({given}): give them with --sizes {first.name}=N"
        ) from None
    f, guess = fits[0]
    for name, value in guess.items():
        try:
            same = _lengths(api.compile(expression, sizes={**sizes, **guess, name: value + 1}), lengths) == lengths
        except SymgradError:
            same = False
        if same:
            raise _sizes_error(
                first, f"'{name}' does not set the length of a vector given ({given}): give it with --sizes {name}=N"
            ) from None
    return f, {**sizes, **guess}


def _lengths(f: Function, lengths: Mapping[str, int]) -> dict[str, int]:
    vectors = declared_vectors(f.variables)
    return {name: vectors.get(name, -1) for name in lengths}


def _sizes_error(e: UnknownSizeError, how: str) -> ModelError:
    """``e`` with the command line's way to give a size instead of the Python API's."""
    return ModelError(e.reason, e.source, e.span, f"{e.context}\n{how}")


def resolve_point(point: Sequence[Given], f: Function) -> dict[str, Any]:
    """The point as ``{tape input: number}`` (``x=1,2`` → ``x[1]``, ``x[2]``), checked against ``f``'s vectors.

    A name ``f`` does not have passes through unchanged, so the API's message (with its did-you-mean)
    reports it; so does a missing element.
    """
    vectors = declared_vectors(f.variables)
    scalars = set(f.variables)
    where = quote(f.source) if f.source is not None else "the formula"
    flat: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for g in point:
        length = vectors.get(g.name)
        items: list[tuple[str, Any]]
        if isinstance(g.value, tuple):
            if length is None and g.name in scalars:
                raise InputError(f"'{g.name}' is a scalar in {where}, but {clip(g.text)!r} gives {len(g.value)} values")
            if length is not None and len(g.value) != length:
                raise InputError(
                    f"'{g.name}' is a vector of {length} elements in {where} ({g.name}[1]..{g.name}[{length}]), "
                    f"but {clip(g.text)!r} gives {len(g.value)} values"
                )
            items = [(g.name, list(g.value))] if length is None else list(vector_items(g.name, length, g.value))
        elif g.index is None:
            if length is not None:
                raise InputError(
                    f"'{g.name}' is a vector of {length} elements in {where}, but {clip(g.text)!r} gives one number: "
                    f"give all its values, {g.name}=1,2,… (comma-separated), or one element, {g.name}[1]=…"
                )
            items = [(g.name, g.value)]
        else:
            if length is None and g.name in scalars:
                raise InputError(
                    f"'{g.name}' is a scalar in {where}, not a vector: write {g.name}=… (in {clip(g.text)!r})"
                )
            if length is not None and g.index > length:
                raise InputError(
                    f"'{g.key}' is out of range: '{g.name}' has the elements {g.name}[1]..{g.name}[{length}] in {where}"
                )
            items = [(g.key, g.value)]
        for key, value in items:
            if key in origin:
                raise InputError(f"'{key}' was given twice: by {clip(origin[key])!r} and by {clip(g.text)!r}")
            origin[key] = g.text
            flat[key] = value
    return flat


def _prepare(args: argparse.Namespace) -> tuple[Function, dict[str, Any]]:
    """The compiled formula and the point of a subcommand that takes both; notes inferred sizes on stderr."""
    given = parse_point(args.point)
    sizes = parse_sizes(args.sizes)
    f, in_force = compile_model(args.expression, sizes, given)
    inferred = {name: n for name, n in in_force.items() if name not in sizes}
    if inferred:
        vectors = [g.name for g in given if isinstance(g.value, tuple)]
        shown = ",".join(f"{name}={n}" for name, n in inferred.items())
        lengths = f"length{'s' if len(vectors) > 1 else ''} of {', '.join(vectors)}"
        print(f"symgrad: note: --sizes {shown} inferred from the {lengths}", file=sys.stderr)
    args.sizes_in_force = in_force
    return f, resolve_point(given, f)


def _wrt(groups: list[str] | None, f: Function) -> list[str] | None:
    """``--wrt`` names, a vector's name standing for all its elements (``--wrt x`` → ``x[1]``, ``x[2]``, …)."""
    names = _wrt_names(groups)
    if names is None:
        return None
    vectors = declared_vectors(f.variables)
    expanded: list[str] = []
    for name in names:
        length = vectors.get(name) if name not in f.variables else None
        expanded.extend([f"{name}[{k}]" for k in range(1, length + 1)] if length else [name])
    return expanded


def _wrt_names(groups: list[str] | None) -> list[str] | None:
    """``--wrt x --wrt y`` or ``--wrt x,y`` → ``["x", "y"]``."""
    if not groups:
        return None
    return [name.strip() for group in groups for name in group.split(",") if name.strip()]


def _add_point(command: argparse.ArgumentParser, example: str) -> None:
    """The point, one ``name=value`` per variable (``example`` shows a few for this command)."""
    command.add_argument(
        "point",
        nargs="*",
        metavar="name=value",
        help=f"one value per variable, e.g. {example}; a vector as x=1,2,3, an element as x[2]=5",
    )


def _add_sizes(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--sizes",
        action="append",
        metavar="NAME=N",
        help="the sizes of a model, e.g. --sizes n=1000,m=3 (or repeat --sizes); "
        "a size not given is inferred from the lengths of vectors at the point",
    )


def _cmd_grad(args: argparse.Namespace) -> int:
    f, point = _prepare(args)
    wrt = _wrt(args.wrt, f)
    value, grads = f.value_and_grad(point, wrt=wrt)
    partials = grads if isinstance(grads, dict) else {(wrt or f.variables)[0]: grads}
    if args.json:
        _write_json(
            {"expression": args.expression, **_sizes_entry(args), "point": point, "value": value, "grad": partials}
        )
        return EXIT_OK
    width = max([len("value"), *(len(f"d/d{name}") for name in partials)])
    print(f"{'value'.ljust(width)}  {format_number(value)}")
    for name, partial in partials.items():
        print(f"{f'd/d{name}'.ljust(width)}  {format_number(partial)}")
    return EXIT_OK


def _sizes_entry(args: argparse.Namespace) -> dict[str, Any]:
    """``{"sizes": {...}}`` for JSON output when the formula has sizes (given or inferred), else nothing."""
    sizes: dict[str, int] = args.sizes_in_force
    return {"sizes": sizes} if sizes else {}


def _cmd_draw(args: argparse.Namespace) -> int:
    from .drawing import save

    f, point = _prepare(args)
    graph = api.draw(f, point, rankdir=args.rankdir, layout=args.layout)
    if args.output is None:
        sys.stdout.write(graph.source)
    else:
        print(f"wrote {save(graph, args.output, max_nodes=args.max_nodes or None)}")
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plotting import plot

    lo, hi = args.range
    f, point = _prepare(args)
    plot(f, lo, hi, var=args.var, points=args.points, path=args.output, fixed=point)
    print(f"wrote {args.output}")
    return EXIT_OK


def _constant(text: str) -> float:
    """An argparse type: a constant expression such as ``-5``, ``2.5``, ``-pi`` or ``2*pi``."""
    try:
        f = api.compile(text)
        if not f.variables:
            return float(f())
    except SymgradError:
        pass
    raise argparse.ArgumentTypeError(f"expected a number such as -5, 2.5, -pi or 2*pi, got {text.strip()!r}")


def _tolerance(text: str) -> float:
    """An argparse type: a finite number >= 0 (a constant expression such as ``1e-9``)."""
    try:
        value = _constant(text)
    except argparse.ArgumentTypeError:
        value = math.nan
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text.strip()!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _add_drawing_commands(sub: Any) -> None:
    """The ``draw`` and ``plot`` subcommands."""
    from .drawing import LAYOUTS, MAX_RENDER_NODES
    from .plotting import DEFAULT_POINTS  # (matplotlib itself is imported only when a plot is drawn)

    draw = sub.add_parser(
        "draw",
        help="draw the expression's graph with Graphviz",
        description="Draw the tape: one node per slot with its data and grad (when a point is given), "
        "an op node per operation. Without -o, print the DOT source.",
        epilog='example: symgrad draw "a*b + c" a=2 b=-3 c=10 -o graph.svg',
    )
    draw.add_argument("expression", help='the formula, e.g. "a*b + c"; - reads it from stdin, @FILE from a file')
    draw.add_argument(
        "point",
        nargs="*",
        metavar="name=value",
        help="a value for every variable to show data and grads; none for the structure only",
    )
    draw.add_argument(
        "-o", "--output", metavar="FILE", help="write FILE: .svg, .png or .pdf (need Graphviz's dot program) or .dot"
    )
    draw.add_argument(
        "--rankdir",
        type=str.upper,
        choices=["LR", "TB"],
        default="LR",
        help="layout: LR (left to right, default) or TB (top to bottom)",
    )
    draw.add_argument(
        "--layout",
        type=str.lower,
        choices=list(LAYOUTS),
        default="auto",
        help="Graphviz program: dot (layered), sfdp (large graphs) or auto (default: by size)",
    )
    draw.add_argument(
        "--max-nodes",
        type=_count,
        default=MAX_RENDER_NODES,
        metavar="N",
        help=f"refuse to render more than N nodes (default {MAX_RENDER_NODES}; 0: no limit)",
    )
    _add_sizes(draw)
    draw.set_defaults(run=_cmd_draw)

    plot = sub.add_parser(
        "plot",
        help="plot the expression and its derivative (needs matplotlib)",
        description="Plot f and df/dx over a range on one figure; points where either is undefined are gaps.",
        epilog='example: symgrad plot "tanh(x)" --range -5 5 -o tanh.png',
    )
    plot.add_argument(
        "expression", help='a formula in one variable, e.g. "tanh(x)"; - reads it from stdin, @FILE from a file'
    )
    plot.add_argument(
        "point", nargs="*", metavar="name=value", help="values for the other variables, when --var picks one of several"
    )
    plot.add_argument(
        "--range",
        nargs=2,
        type=_constant,
        required=True,
        metavar=("LO", "HI"),
        help="the interval of the variable, e.g. --range -5 5",
    )
    plot.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="plot.png",
        help="the image to write: .png (default plot.png), .svg or .pdf",
    )
    plot.add_argument("--var", help="the variable to plot against (needed when there are several)")
    plot.add_argument(
        "--points", type=int, default=DEFAULT_POINTS, help=f"number of samples (default {DEFAULT_POINTS})"
    )
    _add_sizes(plot)
    plot.set_defaults(run=_cmd_plot)


def _cmd_explain(args: argparse.Namespace) -> int:
    f, point = _prepare(args)
    explanation = f.explain(point, max_rows=None if args.all else DEFAULT_MAX_ROWS)
    if args.json:
        _write_json({"expression": args.expression, **_sizes_entry(args), "point": point, **explanation.to_dict()})
    else:
        print(explanation)
    return EXIT_OK


def _add_explain_command(sub: Any) -> None:
    explain = sub.add_parser(
        "explain",
        help="show the forward and reverse sweeps slot by slot",
        description="Print every slot of the tape with its value (forward sweep), each local partial as the "
        "op table's rule and its number, and its adjoint (reverse sweep); a slot read more than "
        "once lists every contribution added into its adjoint.",
        epilog='example: symgrad explain "tanh(x1*w1 + x2*w2 + b)" x1=2 x2=0 w1=-3 w2=1 b=6.8813735870195432',
    )
    explain.add_argument("expression", help='the formula, e.g. "x*x + y"')
    _add_point(explain, "x=3 y=2")
    explain.add_argument(
        "--all",
        action="store_true",
        help=f"print every slot (by default a tape of more than {DEFAULT_MAX_ROWS} slots is cut in the middle)",
    )
    explain.add_argument("--json", action="store_true", help="print machine-readable JSON (always every slot)")
    _add_sizes(explain)
    explain.set_defaults(run=_cmd_explain)


def _cmd_diff(args: argparse.Namespace) -> int:
    f, _ = compile_model(args.expression, parse_sizes(args.sizes))
    d = api.diff(f, *args.variables)
    if args.latex:
        import sympy  # the oracle's library: LaTeX is sympy's printer over the derivative tape

        from .symbolic import to_sympy

        print(sympy.latex(to_sympy(d.tape)))
    else:
        print(d.formula)
    return EXIT_OK


def _cmd_hessian(args: argparse.Namespace) -> int:
    f, point = _prepare(args)
    wrt = _wrt(args.wrt, f)
    h = f.hessian(point, wrt=wrt)
    names = wrt or list(f.variables)
    table = h if isinstance(h, dict) else {names[0]: {names[0]: h}}
    if args.json:
        _write_json({"expression": args.expression, **_sizes_entry(args), "point": point, "hessian": table})
        return EXIT_OK
    cells = [[format_number(table[i][j]) for j in names] for i in names]
    width = max([len(n) for n in names] + [len(c) for row in cells for c in row])
    print(" " * width + "".join(f"  {n.rjust(width)}" for n in names))
    for name, row in zip(names, cells, strict=True):
        print(name.ljust(width) + "".join(f"  {c.rjust(width)}" for c in row))
    return EXIT_OK


def _add_derivative_commands(sub: Any) -> None:
    """The ``diff`` and ``hessian`` subcommands."""
    diff = sub.add_parser(
        "diff",
        help="print a derivative of any order as a formula",
        description="Differentiate by each VARIABLE in turn and print the result as a formula in symgrad's "
        "language, printed from the derivative tape (sympy is not involved, except for --latex).",
        epilog='example: symgrad diff "sin(x)*y" x x',
    )
    diff.add_argument("expression", help='the formula, e.g. "3*x**2-4*x+5"')
    diff.add_argument("variables", nargs="+", metavar="VARIABLE", help="differentiate by these, in order: x x y")
    diff.add_argument("--latex", action="store_true", help="print LaTeX (through sympy) instead")
    _add_sizes(diff)
    diff.set_defaults(run=_cmd_diff)

    hessian = sub.add_parser(
        "hessian",
        help="the matrix of second partial derivatives at a point",
        description="Print the Hessian at a point as a labelled table (rows and columns by variable).",
        epilog='example: symgrad hessian "x**2*y + exp(x*y)" x=1 y=2',
    )
    hessian.add_argument("expression", help='the formula, e.g. "x**2*y"')
    _add_point(hessian, "x=1 y=2")
    hessian.add_argument(
        "--wrt", action="append", metavar="NAMES", help="only these variables (repeat, or comma-separate: --wrt x,y)"
    )
    hessian.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_sizes(hessian)
    hessian.set_defaults(run=_cmd_hessian)


def _cmd_export_c(args: argparse.Namespace) -> int:
    sets = ("grad", "hessian", "jacobian", "sparse_hessian", "sparse_jacobian")
    kinds = ["value", *(kind for kind in sets if getattr(args, kind))]
    f, _ = compile_model(args.expression, parse_sizes(args.sizes))
    code = f.to_c(args.name, kinds)
    c_path, h_path = code.write(args.output)
    print(f"wrote {c_path} and {h_path}: {', '.join(fn.name for fn in code.functions)}")
    return EXIT_OK


def _add_export_command(sub: Any) -> None:
    export = sub.add_parser(
        "export-c",
        help="write C99 source for the value and derivatives",
        description="Write NAME.c and NAME.h into DIR: C99 with no dependency beyond <math.h>, one function "
        "per output set (the value always; the others as asked), each returning 0 or the slot of the first "
        "value that is inf or nan.",
        epilog='example: symgrad export-c "x*sin(y)" --grad --name model -o build',
    )
    export.add_argument("expression", help='the formula, e.g. "x*sin(y)"; - reads it from stdin, @FILE from a file')
    export.add_argument("--grad", action="store_true", help="also NAME_grad: the value and the gradient")
    export.add_argument("--hessian", action="store_true", help="also NAME_hessian: the Hessian, n*n, row-major")
    export.add_argument("--jacobian", action="store_true", help="also NAME_jacobian: outputs x variables, row-major")
    export.add_argument(
        "--sparse-hessian",
        action="store_true",
        help="also NAME_sparse_hessian: the lower triangle's structural nonzeros, CSR pattern in the header",
    )
    export.add_argument(
        "--sparse-jacobian",
        action="store_true",
        help="also NAME_sparse_jacobian: the Jacobian's structural nonzeros, CSR pattern in the header",
    )
    export.add_argument("--name", default="f", help="the C name prefix, a C identifier (default f: f_value, f_grad)")
    export.add_argument("-o", "--output", metavar="DIR", required=True, help="the directory to write into")
    _add_sizes(export)
    export.set_defaults(run=_cmd_export_c)


def _cmd_check(args: argparse.Namespace) -> int:
    f, point = _prepare(args)
    report = check(f, point, rtol=args.rtol, atol=args.atol, fd_rtol=args.fd_rtol, fd_atol=args.fd_atol)
    if args.json:
        payload = report.to_dict()
        _write_json({"expression": payload.pop("expression"), **_sizes_entry(args), **payload})
    else:
        print(report)
    return EXIT_OK if report.ok else EXIT_DISAGREE


def _cmd_config(args: argparse.Namespace) -> int:
    rows = config.settings()
    if args.json:
        _write_json(
            {
                "settings": [
                    {
                        "variable": row.knob.env,
                        "value": None if row.error else _json_value(row.value),
                        "source": row.source,
                        "default": _json_value(row.knob.default),
                        "accepts": row.knob.accepted,
                        "help": row.knob.help,
                        "error": row.error,
                    }
                    for row in rows
                ]
            }
        )
    else:
        for row in rows:
            value = (
                f"{row.text!r}  (environment, not valid)"
                if row.error
                else f"{row.knob.show(row.value)}  ({row.source})"
            )
            print(f"{row.knob.env}={value}")
            text = f"{row.knob.help}; accepts {row.knob.accepted}"
            print(textwrap.fill(text, width=100, initial_indent="    ", subsequent_indent="    "))
    errors = [row.error for row in rows if row.error]
    if errors:
        raise ConfigError("\n".join(errors), tuple(row.knob.env for row in rows if row.error))
    return EXIT_OK


def _json_value(value: object) -> object:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symgrad",
        description="Exact gradients of formulas by reverse-mode automatic differentiation.",
        epilog='example: symgrad grad "3*x**2-4*x+5" x=3',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    grad = sub.add_parser(
        "grad",
        help="value and partial derivatives at a point",
        description="Print the value and every partial derivative at a point.",
    )
    grad.add_argument("expression", help='the formula, e.g. "a*b + c"; - reads it from stdin, @FILE from a file')
    _add_point(grad, "a=2 b=-3")
    grad.add_argument("--json", action="store_true", help="print machine-readable JSON")
    grad.add_argument(
        "--wrt",
        action="append",
        metavar="NAMES",
        help="only these partials (repeat, or comma-separate: --wrt x,y); the others are not computed",
    )
    _add_sizes(grad)
    grad.set_defaults(run=_cmd_grad)
    _add_derivative_commands(sub)
    _add_drawing_commands(sub)
    _add_explain_command(sub)
    _add_export_command(sub)

    check = sub.add_parser(
        "check",
        help="cross-check value and gradient against sympy and finite differences",
        description="Compare the tape's value and partials with sympy's exact derivative and a "
        "central difference. Exit 1 if any disagree.",
    )
    check.add_argument("expression", help='the formula, e.g. "x*sin(y)"; - reads it from stdin, @FILE from a file')
    _add_point(check, "x=0.7 y=1.3")
    check.add_argument(
        "--rtol", type=_tolerance, default=DEFAULT_RTOL, help=f"relative tolerance vs sympy (default {DEFAULT_RTOL:g})"
    )
    check.add_argument(
        "--atol", type=_tolerance, default=DEFAULT_ATOL, help=f"absolute tolerance vs sympy (default {DEFAULT_ATOL:g})"
    )
    check.add_argument(
        "--fd-rtol",
        type=_tolerance,
        default=DEFAULT_FD_RTOL,
        help=f"relative tolerance vs the central difference (default {DEFAULT_FD_RTOL:g})",
    )
    check.add_argument(
        "--fd-atol",
        type=_tolerance,
        default=DEFAULT_FD_ATOL,
        help=f"absolute tolerance vs the central difference (default {DEFAULT_FD_ATOL:g})",
    )
    check.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_sizes(check)
    check.set_defaults(run=_cmd_check)

    settings = sub.add_parser(
        "config",
        help="the SYMGRAD_* settings in force, and where each comes from",
        description="Print every SYMGRAD_* environment variable symgrad reads: its value, where the value "
        "comes from (default, environment or override), what it does and what it accepts. Exit 2 if any "
        "is invalid (the others are still printed).",
    )
    settings.add_argument("--json", action="store_true", help="print machine-readable JSON")
    settings.set_defaults(run=_cmd_config)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _split_positionals(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Let an expression start with '-' (``symgrad grad "-x**2" x=1``).

    argparse would read ``-x**2`` as an unknown option.  Tokens that are not a
    known option of the chosen subcommand are moved behind ``--``, keeping order.
    """
    if not argv or argv[0].startswith("-") or "--" in argv:
        return argv
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    chosen = subparsers[0].choices.get(argv[0]) if subparsers else None
    if chosen is None:
        return argv
    options = {s: a for a in chosen._actions for s in a.option_strings}
    flags: list[str] = []
    positionals: list[str] = []
    i = 1
    while i < len(argv):
        token = argv[i]
        action = options.get(token.split("=", 1)[0]) if token.startswith("--") else options.get(token)
        if action is None:
            positionals.append(token)
            i += 1
            continue
        takes = 0 if action.nargs == 0 else action.nargs if isinstance(action.nargs, int) else 1
        if "=" in token:
            takes = 0
        values = argv[i + 1 : i + 1 + takes]
        if action.type in (_constant, _tolerance):
            # `--range -pi pi`: a leading space stops argparse reading -pi as an option (the grammar skips it)
            values = [" " + v if v.startswith("-") else v for v in values]
        flags.extend([token, *values])
        i += 1 + takes
    if not positionals or (not flags and not any(p.startswith("-") for p in positionals)):
        return argv  # also reorder when flags sit between positionals: `grad "x*y" --json x=1 y=2`
    return [argv[0], *flags, "--", *positionals]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_split_positionals(parser, args_list))
    origin = ""
    try:
        if hasattr(args, "expression"):
            text = args.expression
            origin = "standard input" if text == "-" else f"{clip(text[1:])}" if text.startswith("@") else ""
            args.expression = read_expression(text)
        status: int = args.run(args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
    except ParseError as e:
        print(f"symgrad: error: {_short_parse_error(e, origin) if origin else e}", file=sys.stderr)
        return EXIT_USAGE
    except SymgradError as e:
        print(f"symgrad: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `symgrad ... | head`: the reader has gone; stop quietly, as Unix tools do
        _silence_stdout()
        return EXIT_OK
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
            raise
        _silence_stdout()
        print(f"symgrad: error: cannot write the output: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    return status


def _silence_stdout() -> None:
    """Point stdout at the null device, so the flush at exit cannot fail a second time."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stdout (tests) has no descriptor
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def entry_point() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
