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
from .emit import Builder, Value, constant

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
    lines += (
        _run()
        + _slow()
        + _fill("tuple", "PyTuple_New", "PyTuple_SetItem")
        + _fill("list", "PyList_New", "PyList_SetItem")
    )
    for shape in ("value", "tuple", "value_and_grad"):
        lines += _entry(shape)
    return "\n".join(lines) + "\n"


def _i64(value: int) -> Value:
    return constant("i64", value)


_NULL = constant("ptr", "null")


def _field(b: Builder, e: Value, offset: int, type: str, name: str) -> Value:
    """The field of the entry record ``e`` at byte ``offset``."""
    return b.load(type, b.gep("i8", e, offset, name=f"{name}.p"), align=None, name=name)


def _run() -> list[str]:
    """``i1 @run``: 1 when the outputs are in ``out``; 0: take the Python path (args or flag).

    The arguments are read into ``in`` first: ``__float__`` may run Python code,
    even this kernel (from this thread or, as the GIL may be released there,
    from another).  From the copy into w to the copy out of it only machine
    code runs, so no other call of the kernel comes in between.
    """
    b = Builder(
        "define internal i1 @run({}) {{",
        [("ptr", "e"), ("ptr", "args"), ("i64", "nargs"), ("ptr", "in"), ("ptr", "out")],
    )
    e, args, nargs, in_, out = b.args
    read, no = b.append_basic_block("read"), b.append_basic_block("no")
    nin = _field(b, e, _N_IN, "i64", "nin")
    work = _field(b, e, _WORK, "ptr", "work")
    b.cbranch(b.icmp("eq", nargs, nin), read, no)
    b.position_at_end(read)
    with b.for_range(nin, name="j") as j:
        check, clear, stored = map(b.append_basic_block, ("check", "clear", "stored"))
        a = b.load("ptr", b.gep("ptr", args, j), align=None, name="a")
        v = b.call("double", "@PyFloat_AsDouble", [a], name="v")
        b.cbranch(b.fcmp("oeq", v, constant("double", "-1.0")), check, stored)  # the C API's error value: look closer
        b.position_at_end(check)
        err = b.call("ptr", "@PyErr_Occurred", [], name="err")
        b.cbranch(b.icmp("eq", err, _NULL), stored, clear)
        b.position_at_end(clear)
        b.call("void", "@PyErr_Clear", [])  # the fallback raises the usual error for this argument
        b.branch(no)
        b.position_at_end(stored)
        b.store(v, b.gep("double", in_, j), align=None)
    memcpy = "@llvm.memcpy.p0.p0.i64"
    b.call("void", memcpy, [work, in_, b.shl(nin, _i64(3)), constant("i1", "false")])
    flag = b.call("i32", b.load("ptr", e, align=None, name="fn").ref, [work], name="flag")
    nout = _field(b, e, _N_OUT, "i64", "nout")
    out_bytes = b.shl(nout, _i64(3))
    b.call("void", memcpy, [out, b.gep("double", work, nin), out_bytes, constant("i1", "false")])
    b.ret(b.icmp("eq", flag, constant("i32", 0), name="clean"))
    b.position_at_end(no)
    b.ret(constant("i1", 0))
    return b.text()


def _slow() -> list[str]:
    """``ptr @slow``: the Python path, ``fallback(*args)``."""
    b = Builder("define internal ptr @slow({}) {{", [("ptr", "e"), ("ptr", "args"), ("i64", "nargs")])
    e, args, nargs = b.args
    put, fail = b.append_basic_block("put"), b.append_basic_block("fail")
    t = b.call("ptr", "@PyTuple_New", [nargs], name="t")
    b.cbranch(b.icmp("eq", t, _NULL), fail, put)
    b.position_at_end(put)
    with b.for_range(nargs, name="k") as k:
        a = b.load("ptr", b.gep("ptr", args, k), align=None, name="a")
        b.call("void", "@Py_IncRef", [a])  # PyTuple_SetItem steals a reference
        b.call("i32", "@PyTuple_SetItem", [t, k, a])
    fallback = _field(b, e, _FALLBACK, "ptr", "fallback")
    r = b.call("ptr", "@PyObject_Call", [fallback, t, _NULL], name="r")
    b.call("void", "@Py_DecRef", [t])
    b.ret(r)
    b.position_at_end(fail)
    b.ret(_NULL)
    return b.text()


def _fill(kind: str, new: str, put: str) -> list[str]:
    """``ptr @tuple``/``@list``: floats ``w[0:n]`` into a new tuple or list; null if out of memory."""
    b = Builder(f"define internal ptr @{kind}({{}}) {{{{", [("ptr", "w"), ("i64", "n")])
    w, n = b.args
    fill, drop, fail = map(b.append_basic_block, ("fill", "drop", "fail"))
    c = b.call("ptr", f"@{new}", [n], name=kind)
    b.cbranch(b.icmp("eq", c, _NULL), fail, fill)
    b.position_at_end(fill)
    with b.for_range(n, name="k") as k:
        set_ = b.append_basic_block("set")
        f = b.call("ptr", "@PyFloat_FromDouble", [b.load("double", b.gep("double", w, k), align=None)], name="f")
        b.cbranch(b.icmp("eq", f, _NULL), drop, set_)
        b.position_at_end(set_)
        b.call("i32", f"@{put}", [c, k, f])  # steals the float's reference
    b.ret(c)
    b.position_at_end(drop)
    b.call("void", "@Py_DecRef", [c])
    b.branch(fail)
    b.position_at_end(fail)
    b.ret(_NULL)
    return b.text()


def _entry(shape: str) -> list[str]:
    """``ptr @entry_<shape>``: the built-in function's C body, ``(self, args, nargs) -> result``."""
    b = Builder(f"define ptr @entry_{shape}({{}}) {{{{", [("ptr", "self"), ("ptr", "args"), ("i64", "nargs")])
    self, args, nargs = b.args
    slow, fast = b.append_basic_block("slow"), b.append_basic_block("fast")
    h = b.call("ptr", "@PyTuple_GetItem", [self, _i64(0)], name="h")
    e = b.call("ptr", "@PyLong_AsVoidPtr", [h], name="e")
    nin = _field(b, e, _N_IN, "i64", "nin")
    nout = _field(b, e, _N_OUT, "i64", "nout")
    in_ = b.alloca("double", 8, nin, name="in")  # this call's own copies: see @run
    out = b.alloca("double", 8, nout, name="out")
    b.cbranch(b.call("i1", "@run", [e, args, nargs, in_, out], name="ok"), fast, slow)
    b.position_at_end(slow)
    b.ret(b.call("ptr", "@slow", [e, args, nargs]))
    b.position_at_end(fast)
    if shape == "tuple":
        b.ret(b.call("ptr", "@tuple", [out, nout]))
        return b.text()
    f = b.call("ptr", "@PyFloat_FromDouble", [b.load("double", out, align=None, name="x")], name="value")
    if shape == "value":
        b.ret(f)
        return b.text()
    # (value, [partials])
    grads, pair, fill, drop_fl, drop_f, fail = map(
        b.append_basic_block, ("grads", "pair", "fill", "drop.fl", "drop.f", "fail")
    )
    b.cbranch(b.icmp("eq", f, _NULL), fail, grads)
    b.position_at_end(grads)
    rest = b.gep("double", out, 1, name="rest")
    partials = b.call("ptr", "@list", [rest, b.sub(nout, _i64(1))], name="partials")
    b.cbranch(b.icmp("eq", partials, _NULL), drop_f, pair)
    b.position_at_end(pair)
    t = b.call("ptr", "@PyTuple_New", [_i64(2)], name="t")
    b.cbranch(b.icmp("eq", t, _NULL), drop_fl, fill)
    b.position_at_end(fill)
    b.call("i32", "@PyTuple_SetItem", [t, _i64(0), f])
    b.call("i32", "@PyTuple_SetItem", [t, _i64(1), partials])
    b.ret(t)
    b.position_at_end(drop_fl)
    b.call("void", "@Py_DecRef", [partials])
    b.branch(drop_f)
    b.position_at_end(drop_f)
    b.call("void", "@Py_DecRef", [f])
    b.branch(fail)
    b.position_at_end(fail)
    b.ret(_NULL)
    return b.text()


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
    return hashlib.sha256(f"pyentry|{jit.code_id()}|{sys.implementation.cache_tag}|{_ir()}".encode()).hexdigest()


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
