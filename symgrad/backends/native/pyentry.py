"""A kernel's scalar entry as a Python built-in function: one C call from arguments to result.

Through ctypes, a call of the scalar entry costs packing the floats into the
work vector, the foreign call and unpacking the outputs: about 1.6 µs on a
20-input gradient, more than the whole kernel of a 1,000-record tape.  And as
those are separate Python steps, a second thread could pack its point between
another thread's packing and its call.  Here the whole call is one function
written in LLVM IR against CPython's C API (``METH_FASTCALL``): it reads the
arguments with ``PyFloat_AsDouble`` (what ``struct`` does: floats, ints and
objects with ``__float__``) into its own stack memory, copies them into the
work vector, runs the kernel, copies the outputs out and then builds the
result.  Between the two copies only machine code runs, under the GIL, so no
other call of the kernel can come in between: not from another thread, and
not from Python code run by ``__float__`` or by a garbage collection that
starts while the result is built.

Anything unusual (a wrong number of arguments, an argument that is not a
number, the kernel's domain flag) is handed to a Python callable with the same
arguments, which raises the usual error or returns the interpreter's result.

One module of three entries (one per result shape) is compiled once per
process and serves every kernel: each built-in function carries its kernel's
address, work vector and fallback in the object CPython passes as ``self``.
Only CPython with a GIL qualifies (:func:`available`); elsewhere the ctypes
entry serves (a call that finds the shared work vector taken uses its own).
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
import sysconfig
import threading
from collections.abc import Callable
from typing import Any

from ..protocol import Returns
from . import cache, jit

__all__ = ["available", "cache_key", "entry"]

_C_API = {
    "PyFloat_AsDouble": "double (ptr)",
    "PyFloat_FromDouble": "ptr (double)",
    "PyErr_Occurred": "ptr ()",
    "PyErr_Clear": "void ()",
    "PyTuple_New": "ptr (i64)",
    "PyTuple_SetItem": "i32 (ptr, i64, ptr)",
    "PyTuple_GetItem": "ptr (ptr, i64)",
    "PyList_New": "ptr (i64)",
    "PyList_SetItem": "i32 (ptr, i64, ptr)",
    "PyLong_AsVoidPtr": "ptr (ptr)",
    "PyObject_Call": "ptr (ptr, ptr, ptr)",
    "Py_IncRef": "void (ptr)",
    "Py_DecRef": "void (ptr)",
}
"""The C API functions the entries call (all in the stable ABI), with their LLVM signatures."""

METH_FASTCALL = 0x0080


class _Entry(ctypes.Structure):
    """What one built-in function needs per call; ``self`` of the function holds its address."""

    _fields_ = [
        ("kernel", ctypes.c_void_p),  # i32 (ptr w): the scalar entry of the machine code
        ("work", ctypes.c_void_p),  # w: inputs at the front, outputs right after them
        ("fallback", ctypes.py_object),  # fallback(*args): the Python path, same result shape
        ("n_in", ctypes.c_int64),
        ("n_out", ctypes.c_int64),
    ]


class _MethodDef(ctypes.Structure):
    _fields_ = [
        ("ml_name", ctypes.c_char_p),
        ("ml_meth", ctypes.c_void_p),
        ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p),
    ]


def available() -> bool:
    """Whether this Python can call the entries: CPython, with the GIL that makes a call atomic."""
    if sys.implementation.name != "cpython" or not hasattr(ctypes, "pythonapi"):
        return False
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    return all(hasattr(ctypes.pythonapi, name) for name in (*_C_API, "PyCFunction_NewEx"))


# Offsets in _Entry, as IR constants.
_WORK, _FALLBACK, _N_IN, _N_OUT = (getattr(_Entry, name).offset for name in ("work", "fallback", "n_in", "n_out"))


def _ir() -> str:
    """The module: a shared prologue (read the arguments, run the kernel) and one epilogue per shape."""
    lines = [f"declare {sig.split(' ', 1)[0]} @{name}{sig.split(' ', 1)[1]}" for name, sig in _C_API.items()]
    lines.append("declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)")
    lines += [
        # 1: the outputs are in ``out``; 0: take the Python path (args or flag).  The arguments are
        # read into ``in`` first: ``__float__`` may run Python code, even this kernel (from this
        # thread or, as the GIL may be released there, from another).  From the copy into w to the
        # copy out of it only machine code runs, so no other call of the kernel comes in between.
        "define internal i1 @run(ptr %e, ptr %args, i64 %nargs, ptr %in, ptr %out) {",
        "start:",
        f"  %nin.p = getelementptr inbounds i8, ptr %e, i64 {_N_IN}",
        "  %nin = load i64, ptr %nin.p",
        f"  %work.p = getelementptr inbounds i8, ptr %e, i64 {_WORK}",
        "  %work = load ptr, ptr %work.p",
        "  %count.ok = icmp eq i64 %nargs, %nin",
        "  br i1 %count.ok, label %head, label %no",
        "head:",
        "  %j = phi i64 [0, %start], [%j.next, %stored]",
        "  %more = icmp ult i64 %j, %nin",
        "  br i1 %more, label %read, label %call",
        "read:",
        "  %a.p = getelementptr inbounds ptr, ptr %args, i64 %j",
        "  %a = load ptr, ptr %a.p",
        "  %v = call double @PyFloat_AsDouble(ptr %a)",
        "  %maybe = fcmp oeq double %v, -1.0",  # the C API's error value: look closer
        "  br i1 %maybe, label %check, label %stored",
        "check:",
        "  %err = call ptr @PyErr_Occurred()",
        "  %fine = icmp eq ptr %err, null",
        "  br i1 %fine, label %stored, label %clear",
        "clear:",
        "  call void @PyErr_Clear()",  # the fallback raises the usual error for this argument
        "  br label %no",
        "stored:",
        "  %in.j = getelementptr inbounds double, ptr %in, i64 %j",
        "  store double %v, ptr %in.j",
        "  %j.next = add i64 %j, 1",
        "  br label %head",
        "call:",
        "  %in.bytes = shl i64 %nin, 3",
        "  call void @llvm.memcpy.p0.p0.i64(ptr %work, ptr %in, i64 %in.bytes, i1 false)",
        "  %fn = load ptr, ptr %e",
        "  %flag = call i32 %fn(ptr %work)",
        f"  %nout.p = getelementptr inbounds i8, ptr %e, i64 {_N_OUT}",
        "  %nout = load i64, ptr %nout.p",
        "  %out.bytes = shl i64 %nout, 3",
        "  %w.out = getelementptr inbounds double, ptr %work, i64 %nin",
        "  call void @llvm.memcpy.p0.p0.i64(ptr %out, ptr %w.out, i64 %out.bytes, i1 false)",
        "  %clean = icmp eq i32 %flag, 0",
        "  ret i1 %clean",
        "no:",
        "  ret i1 0",
        "}",
        # The Python path: fallback(*args).
        "define internal ptr @slow(ptr %e, ptr %args, i64 %nargs) {",
        "start:",
        "  %t = call ptr @PyTuple_New(i64 %nargs)",
        "  %none = icmp eq ptr %t, null",
        "  br i1 %none, label %fail, label %head",
        "head:",
        "  %k = phi i64 [0, %start], [%k.next, %put]",
        "  %more = icmp ult i64 %k, %nargs",
        "  br i1 %more, label %put, label %call",
        "put:",
        "  %a.p = getelementptr inbounds ptr, ptr %args, i64 %k",
        "  %a = load ptr, ptr %a.p",
        "  call void @Py_IncRef(ptr %a)",  # PyTuple_SetItem steals a reference
        "  %r1 = call i32 @PyTuple_SetItem(ptr %t, i64 %k, ptr %a)",
        "  %k.next = add i64 %k, 1",
        "  br label %head",
        "call:",
        f"  %fb.p = getelementptr inbounds i8, ptr %e, i64 {_FALLBACK}",
        "  %fb = load ptr, ptr %fb.p",
        "  %r = call ptr @PyObject_Call(ptr %fb, ptr %t, ptr null)",
        "  call void @Py_DecRef(ptr %t)",
        "  ret ptr %r",
        "fail:",
        "  ret ptr null",
        "}",
        # Floats w[from:from+n] into a new tuple or list (``new``/``set``); null if out of memory.
        *_fill("tuple", "PyTuple_New", "PyTuple_SetItem"),
        *_fill("list", "PyList_New", "PyList_SetItem"),
    ]
    for shape in ("value", "tuple", "value_and_grad"):
        lines += [
            f"define ptr @entry_{shape}(ptr %self, ptr %args, i64 %nargs) {{",
            "start:",
            "  %h = call ptr @PyTuple_GetItem(ptr %self, i64 0)",
            "  %e = call ptr @PyLong_AsVoidPtr(ptr %h)",
            f"  %nin.p = getelementptr inbounds i8, ptr %e, i64 {_N_IN}",
            "  %nin = load i64, ptr %nin.p",
            f"  %nout.p = getelementptr inbounds i8, ptr %e, i64 {_N_OUT}",
            "  %nout = load i64, ptr %nout.p",
            "  %in = alloca double, i64 %nin, align 8",  # this call's own copies: see @run
            "  %out = alloca double, i64 %nout, align 8",
            "  %ok = call i1 @run(ptr %e, ptr %args, i64 %nargs, ptr %in, ptr %out)",
            "  br i1 %ok, label %fast, label %slow",
            "slow:",
            "  %s = call ptr @slow(ptr %e, ptr %args, i64 %nargs)",
            "  ret ptr %s",
            "fast:",
            *_shape(shape),
            "}",
        ]
    return "\n".join(lines) + "\n"


def _fill(kind: str, new: str, put: str) -> list[str]:
    return [
        f"define internal ptr @{kind}(ptr %w, i64 %n) {{",
        "start:",
        f"  %c = call ptr @{new}(i64 %n)",
        "  %none = icmp eq ptr %c, null",
        "  br i1 %none, label %fail, label %head",
        "head:",
        "  %k = phi i64 [0, %start], [%k.next, %set]",
        "  %more = icmp ult i64 %k, %n",
        "  br i1 %more, label %make, label %done",
        "make:",
        "  %w.k = getelementptr inbounds double, ptr %w, i64 %k",
        "  %x = load double, ptr %w.k",
        "  %f = call ptr @PyFloat_FromDouble(double %x)",
        "  %bad = icmp eq ptr %f, null",
        "  br i1 %bad, label %drop, label %set",
        "set:",
        f"  %r = call i32 @{put}(ptr %c, i64 %k, ptr %f)",  # steals the float's reference
        "  %k.next = add i64 %k, 1",
        "  br label %head",
        "drop:",
        "  call void @Py_DecRef(ptr %c)",
        "  br label %fail",
        "done:",
        "  ret ptr %c",
        "fail:",
        "  ret ptr null",
        "}",
    ]


def _shape(shape: str) -> list[str]:
    if shape == "value":
        return ["  %x = load double, ptr %out", "  %f = call ptr @PyFloat_FromDouble(double %x)", "  ret ptr %f"]
    if shape == "tuple":
        return ["  %t = call ptr @tuple(ptr %out, i64 %nout)", "  ret ptr %t"]
    return [  # (value, [partials])
        "  %x = load double, ptr %out",
        "  %f = call ptr @PyFloat_FromDouble(double %x)",
        "  %nf = icmp eq ptr %f, null",
        "  br i1 %nf, label %fail, label %grads",
        "grads:",
        "  %rest = getelementptr inbounds double, ptr %out, i64 1",
        "  %n = sub i64 %nout, 1",
        "  %l = call ptr @list(ptr %rest, i64 %n)",
        "  %nl = icmp eq ptr %l, null",
        "  br i1 %nl, label %drop.f, label %pair",
        "pair:",
        "  %t = call ptr @PyTuple_New(i64 2)",
        "  %nt = icmp eq ptr %t, null",
        "  br i1 %nt, label %drop.fl, label %fill",
        "fill:",
        "  %r0 = call i32 @PyTuple_SetItem(ptr %t, i64 0, ptr %f)",
        "  %r1 = call i32 @PyTuple_SetItem(ptr %t, i64 1, ptr %l)",
        "  ret ptr %t",
        "drop.fl:",
        "  call void @Py_DecRef(ptr %l)",
        "  br label %drop.f",
        "drop.f:",
        "  call void @Py_DecRef(ptr %f)",
        "  br label %fail",
        "fail:",
        "  ret ptr null",
    ]


_lock = threading.Lock()
_loaded: jit.Loaded | None = None


def _addresses() -> dict[str, int]:
    """The entries' machine code: compiled once per process (9 ms), or loaded from the persistent cache."""
    global _loaded
    with _lock:
        if _loaded is None:
            api = ctypes.pythonapi
            jit.add_symbols({name: ctypes.cast(getattr(api, name), ctypes.c_void_p).value or 0 for name in _C_API})
            text = _ir()
            key = cache_key()
            data = cache.load(key)
            if data is None:
                data = jit.compile_object(text, 0)
                cache.store(key, data)
            names = tuple(f"entry_{shape}" for shape in ("value", "tuple", "value_and_grad"))
            _loaded = jit.load_object(data, names)
        return _loaded.addresses


def cache_key() -> str:
    """What the persistent cache files the entries' object code under (one file for all kernels)."""
    return hashlib.sha256(f"pyentry|{jit.host_id()}|{sys.implementation.cache_tag}|{_ir()}".encode()).hexdigest()


_new_function = None


_DOCS = {
    "value": "The value at one point (one float per input, in order), computed by machine code.",
    "tuple": "The outputs at one point (one float per input, in order), computed by machine code.",
    "value_and_grad": "(value, [partials]) at one point (one float per input, in order), computed by machine code.",
}


class machine_code(tuple[object, ...]):
    """``self`` of an entry: its record's address first (read per call), then what must outlive it."""

    __slots__ = ()


def entry(
    kernel: int,
    work: int,
    n_in: int,
    n_out: int,
    returns: Returns,
    fallback: Callable[..., Any],
    keep: object,
) -> Callable[..., Any]:
    """A built-in ``fn(*floats)`` running the kernel at address ``kernel`` on the work vector at ``work``.

    It returns one float (``"value"``: output 0), a tuple of the outputs
    (``"tuple"``) or ``(output 0, [the others])`` (``"value_and_grad"``).
    ``fallback(*args)`` gives the result (or raises) wherever the machine code
    does not: wrong arguments, a flagged point.  ``keep`` is kept alive as long
    as the function (the machine code and the work vector).
    """
    global _new_function
    address = _addresses()[f"entry_{returns}"]
    if _new_function is None:
        fn = ctypes.pythonapi.PyCFunction_NewEx
        fn.restype = ctypes.py_object
        fn.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p]
        _new_function = fn
    record = _Entry(kernel, work, fallback, n_in, n_out)
    name_bytes = returns.encode()
    doc = f"{returns}($self, /, *floats)\n--\n\n{_DOCS[returns]}".encode()  # the signature line: inspect reads it
    method = _MethodDef(name_bytes, address, METH_FASTCALL, doc)
    state = machine_code((ctypes.addressof(record), record, method, name_bytes, doc, fallback, keep))
    result: Callable[..., Any] = _new_function(ctypes.addressof(method), state, None)
    return result
