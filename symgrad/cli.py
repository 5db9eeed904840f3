"""The ``symgrad`` command: a thin layer over the public API.

Exit status: 0 on success, 2 on a user error (message on stderr), 1 when
``symgrad check`` finds a disagreement.  Each
subcommand is one ``_cmd_*`` function plus its arguments in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import api
from .errors import InputError, SymgradError
from .oracle import DEFAULT_ATOL, DEFAULT_RTOL, check

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_DISAGREE = 1
EXIT_USAGE = 2


def format_number(value: float) -> str:
    """Shortest round-trip text, without a trailing ``.0`` (``20``, ``0.5``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def parse_point(assignments: Sequence[str]) -> dict[str, float]:
    """``["x=3", "y=pi/4"]`` → ``{"x": 3.0, "y": 0.785…}``.

    Each value is itself a constant symgrad expression (parsed by the grammar,
    never by ``eval``), so ``x=pi/4`` and ``y=-2e-3`` both work.
    """
    point: dict[str, float] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise InputError(f"expected name=value, got {item!r} (for example x=3)")
        if not name.isidentifier():
            raise InputError(f"{name!r} is not a valid variable name (in {item!r})")
        if name in point:
            raise InputError(f"variable '{name}' was given twice")
        value = api.compile(text)
        if value.variables:
            raise InputError(f"the value of '{name}' must be a number, not an expression in {', '.join(value.variables)}")
        point[name] = value()
    return point


def _write_json(payload: dict[str, Any]) -> None:
    json.dump(payload, sys.stdout, indent=2, allow_nan=True)
    sys.stdout.write("\n")


def _cmd_grad(args: argparse.Namespace) -> int:
    point = parse_point(args.point)
    f = api.compile(args.expression)
    value, grads = f.value_and_grad(point)
    partials = grads if isinstance(grads, dict) else {f.variables[0]: grads}
    if args.json:
        _write_json({"expression": args.expression, "point": point, "value": value, "grad": partials})
        return EXIT_OK
    width = max([len("value"), *(len(f"d/d{name}") for name in partials)])
    print(f"{'value'.ljust(width)}  {format_number(value)}")
    for name, partial in partials.items():
        print(f"{f'd/d{name}'.ljust(width)}  {format_number(partial)}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    point = parse_point(args.point)
    report = check(api.compile(args.expression), point, rtol=args.rtol, atol=args.atol)
    if args.json:
        _write_json(report.to_dict())
    else:
        print(report)
    return EXIT_OK if report.ok else EXIT_DISAGREE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symgrad",
        description="Exact gradients of formulas by reverse-mode automatic differentiation.",
        epilog='example: symgrad grad "3*x**2-4*x+5" x=3',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    grad = sub.add_parser("grad", help="value and partial derivatives at a point",
                          description="Print the value and every partial derivative at a point.")
    grad.add_argument("expression", help='the formula, e.g. "a*b + c"')
    grad.add_argument("point", nargs="*", metavar="name=value", help="one value per variable, e.g. a=2 b=-3")
    grad.add_argument("--json", action="store_true", help="print machine-readable JSON")
    grad.set_defaults(run=_cmd_grad)

    check = sub.add_parser("check", help="cross-check value and gradient against sympy and finite differences",
                           description="Compare the tape's value and partials with sympy's exact derivative and a "
                                       "central difference. Exit 1 if any disagree.")
    check.add_argument("expression", help='the formula, e.g. "x*sin(y)"')
    check.add_argument("point", nargs="*", metavar="name=value", help="one value per variable, e.g. x=0.7 y=1.3")
    check.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                       help=f"relative tolerance vs sympy (default {DEFAULT_RTOL:g})")
    check.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                       help=f"absolute tolerance vs sympy (default {DEFAULT_ATOL:g})")
    check.add_argument("--json", action="store_true", help="print machine-readable JSON")
    check.set_defaults(run=_cmd_check)
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
        flags.extend(argv[i : i + 1 + takes])
        i += 1 + takes
    if not any(p.startswith("-") for p in positionals):
        return argv
    return [argv[0], *flags, "--", *positionals]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_split_positionals(parser, args_list))
    try:
        status: int = args.run(args)
    except SymgradError as e:
        print(f"symgrad: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # pragma: no cover - e.g. `symgrad ... | head`
        return EXIT_OK
    return status


def entry_point() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
