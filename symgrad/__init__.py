"""symgrad: exact gradients of formulas, by reverse-mode differentiation of a tape.

>>> import symgrad
>>> symgrad.grad("3*x**2-4*x+5", x=3)
14.0
"""

from __future__ import annotations

from .api import clear_cache, compile, diff, draw, grad, hessian, hvp, jacobian, jvp, value_and_grad
from .batch import TracedExamples, trace_examples
from .errors import (
    ArityError,
    ConfigError,
    DomainError,
    InputError,
    MissingDependencyError,
    MissingVariableError,
    ParseError,
    SymgradError,
    UnknownFunctionError,
    UnknownVariableError,
)
from .fit import FitResult, fit
from .function import Function
from .ops import OPS, Op
from .optimize import Constraint, OptimizeResult, minimize
from .oracle import CheckReport, check
from .parser import parse
from .plotting import plot
from .tape import Instr, Tape
from .trace import Traced, trace
from .value import Value

__version__ = "0.1.0"

__all__ = [
    "OPS",
    "ArityError",
    "CheckReport",
    "ConfigError",
    "Constraint",
    "DomainError",
    "FitResult",
    "Function",
    "InputError",
    "Instr",
    "MissingDependencyError",
    "MissingVariableError",
    "Op",
    "OptimizeResult",
    "ParseError",
    "SymgradError",
    "Tape",
    "Traced",
    "TracedExamples",
    "UnknownFunctionError",
    "UnknownVariableError",
    "Value",
    "__version__",
    "check",
    "clear_cache",
    "compile",
    "diff",
    "draw",
    "fit",
    "grad",
    "hessian",
    "hvp",
    "jacobian",
    "jvp",
    "minimize",
    "parse",
    "plot",
    "trace",
    "trace_examples",
    "value_and_grad",
]
