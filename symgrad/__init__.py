"""symgrad: exact gradients of formulas, by reverse-mode differentiation of a tape.

>>> import symgrad
>>> symgrad.grad("3*x**2-4*x+5", x=3)
14.0
"""

from __future__ import annotations

from .api import compile, grad, value_and_grad
from .errors import (
    ArityError,
    DomainError,
    InputError,
    MissingVariableError,
    ParseError,
    SymgradError,
    UnknownFunctionError,
    UnknownVariableError,
)
from .function import Function
from .ops import OPS, Op
from .oracle import CheckReport, check
from .parser import parse
from .tape import Instr, Tape

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "ArityError",
    "CheckReport",
    "DomainError",
    "Function",
    "InputError",
    "Instr",
    "MissingVariableError",
    "Op",
    "ParseError",
    "SymgradError",
    "Tape",
    "UnknownFunctionError",
    "UnknownVariableError",
    "__version__",
    "check",
    "compile",
    "grad",
    "parse",
    "value_and_grad",
]
