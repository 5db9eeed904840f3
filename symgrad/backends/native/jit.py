"""LLVM through llvmlite: IR text → object code → loaded machine code.

Object code is the unit that the persistent cache stores, so a compiled and a
cached kernel take the same loading path.  Choices that keep compile time
linear in tape size (measured, see bench/native.py): for big programs chunked
functions, no IR passes and LLVM's fast instruction selector (``opt=0``); for programs of one chunk (``opt=1``) only the
always-inliner and SROA (so the fused array loop keeps every value in a
register) and the default instruction selector.  The full O2 pipeline
(``opt=2``) costs 5-10x the compile time for a few percent per call (measured
on W3 at N = 200-10,000), so it is only used when asked for.

llvmlite 0.50 notes: ``initialize()`` is gone (native target and asm printer
only); the new pass manager is driven by ``create_pass_builder``; an MCJIT
engine owns its target machine, so each engine gets a fresh one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.resources
import json
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import llvmlite
import llvmlite.binding as llvm

from .. import background
from . import libm
from .emit import PAIRS

__all__ = [
    "Loaded",
    "add_symbols",
    "code_id",
    "compile_object",
    "fused_pairs",
    "host_id",
    "isolated",
    "load_object",
    "optimize_ir",
]

_lock = threading.RLock()
"""LLVM's global state is not thread-safe: one compile or load at a time."""
_ready = False


def _init() -> None:
    global _ready
    if not _ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        libm.register()
        _ready = True


def _target_machine(opt: int) -> llvm.TargetMachine:
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=opt,
        # The large code model: absolute addresses for calls and constants.  With the small one,
        # MCJIT may place code more than 2 GB away from libm or from its own constant pool, and a
        # 32-bit relocation then aborts the process (seen after many kernels in one process).
        codemodel="large",
        jit=True,
    )


def host_id() -> str:
    """What besides the program determines the machine code: triple, CPU, features, versions."""
    with _lock:
        _init()
        return "|".join(
            (
                llvm.get_process_triple(),
                llvm.get_host_cpu_name(),
                llvm.get_host_cpu_features().flatten(),
                llvmlite.__version__,
                ".".join(map(str, llvm.llvm_version_info)),
            )
        )


@functools.cache
def code_id() -> str:
    """What besides the program determines the machine code, as one hash: :func:`host_id` and the
    source of every module of this package (the emitters, the IR builder, the layout, the libm
    choices, these compile options).  Part of every cache key, so an edit to the code generator is
    a new key without a version number to remember to bump.  Computed once per process (about a
    millisecond: the files are read once)."""
    h = hashlib.sha256(host_id().encode())
    package = importlib.resources.files(__package__)
    sources = sorted((entry.name, entry) for entry in package.iterdir() if entry.name.endswith((".py", ".pyc")))
    for name, entry in sources:
        data = entry.read_bytes()
        h.update(struct.pack("<QQ", len(name), len(data)) + name.encode() + data)
    if not sources:  # no files to read (an unusual loader): the installed version stands in for them
        h.update(importlib.metadata.version("symgrad").encode())
    return h.hexdigest()


def add_symbols(symbols: Mapping[str, int]) -> None:
    """Let machine code call these functions by name (address of each), from now on in this process."""
    with _lock:
        for name, address in symbols.items():
            llvm.add_symbol(name, address)


def fused_pairs() -> frozenset[tuple[str, str]]:
    """The (op, op) pairs of :data:`~symgrad.backends.native.emit.PAIRS` this host's libm computes in one call."""
    with _lock:
        _init()
        have = libm.pairs()
        return frozenset(pair for pair, name in PAIRS.items() if name in have)


def _module(ir_text: str, opt: int) -> tuple[llvm.ModuleRef, llvm.TargetMachine]:
    tm = _target_machine(opt)
    mod = llvm.parse_assembly(ir_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    if opt == 1:  # just what the fused loop needs: inline the body, keep the work vector in registers
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=0))
        mpm = llvm.create_new_module_pass_manager()
        mpm.add_always_inliner_pass()
        mpm.add_sroa_pass()
        mpm.run(mod, pb)
    elif opt >= 2:
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=opt))
        pb.getModulePassManager().run(mod, pb)
    return mod, tm


class Source(Protocol):
    """IR yet to be built (:class:`~.kernel.IRRecipe`): picklable, so a child process can build it."""

    def text(self) -> str: ...


def compile_object(ir: str | Source, opt: int) -> bytes:
    """Object code for this host from IR text or its recipe: ``opt`` 0 (no IR passes, fast instruction
    selection), 1 (inliner and SROA only), 2-3 (LLVM's O2/O3 pipelines).  Inside :func:`isolated`, a
    child process builds the IR from the recipe and compiles it (IR text, always small here, is
    compiled in this process)."""
    if not isinstance(ir, str) and getattr(_isolation, "on", False):
        return _compile_in_child(ir, opt)
    ir_text = ir if isinstance(ir, str) else ir.text()
    with _lock:
        _init()
        mod, tm = _module(ir_text, opt)
        return bytes(tm.emit_object(mod))


# ------------------------------------------------------- isolated compiles ---
_isolation = threading.local()
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()
_CHILD = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[2]); "  # the child imports this very symgrad
    "from symgrad.backends.native.jit import child_main; child_main()"
)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Kernels compiled by this thread inside the block are built and compiled in a child process.

    For long compiles on the background worker: neither building the IR (Python
    work, which would hold this process's GIL beside the calls still served
    here) nor LLVM runs in this process, so the calls keep their speed and the
    process can exit at any moment (the child is stopped, see
    :func:`stop_children`) without waiting for it.  The object code is the same:
    the child runs :func:`compile_object` on the same recipe, for the same host.
    """
    before = getattr(_isolation, "on", False)
    _isolation.on = True
    try:
        yield
    finally:
        _isolation.on = before


def _compile_in_child(ir: Source, opt: int) -> bytes:
    """Run the child on the pickled recipe; its object code comes back in a file.

    Files, not pipes: :meth:`subprocess.Popen.communicate` feeds a pipe 512 bytes per
    ``select`` and reads 32 KiB per ``select``, and each of those system calls gives up
    the GIL, which this background thread then waits for behind the calls the caller
    keeps making (up to the switch interval, 5 ms, every time).  A kernel's recipe of a
    few MB took seconds to send that way on a busy caller (W3 N = 10,000: the kernel
    never served within 10,000 calls, 6.3 s); writing it to a file and waiting once
    for the child costs two or three such waits."""
    with (
        tempfile.TemporaryFile() as recipe,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        recipe.write(pickle.dumps(ir, protocol=pickle.HIGHEST_PROTOCOL))  # one write (pickle.dump: one per frame)
        recipe.flush()
        recipe.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(int(opt)), json.dumps([p for p in sys.path if p])],
            stdin=recipe,
            stdout=out,
            stderr=err,
        )
        with _children_lock:
            _children.add(proc)
        try:
            proc.wait()
        finally:
            with _children_lock:
                _children.discard(proc)
        out.seek(0)
        data = out.read()
        if proc.returncode != 0 or not data:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise OSError(f"the compile in a child process failed (exit {proc.returncode}): {tail[0][:300]}")
    return data


def child_main() -> None:
    """The child's side of :func:`isolated`: the recipe (pickled by the parent, which started this
    process) on stdin, object code on stdout."""
    opt = int(sys.argv[1])
    data = compile_object(pickle.loads(sys.stdin.buffer.read()), opt)
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def stop_children() -> None:
    """Kill every child process compiling for this one (at exit: nobody will wait for its result)."""
    with _children_lock:
        children = list(_children)
    for proc in children:
        with contextlib.suppress(OSError):
            proc.kill()


background.on_exit(stop_children)


def optimize_ir(ir_text: str, opt: int) -> str:
    """The IR after the optimisation pipeline, as the machine code is generated from it."""
    with _lock:
        _init()
        mod, _ = _module(ir_text, opt)
        return str(mod)


@dataclass
class Loaded:
    """Machine code in memory; the addresses stay valid while this object lives."""

    engine: llvm.ExecutionEngine
    addresses: dict[str, int]


def load_object(data: bytes, names: tuple[str, ...]) -> Loaded:
    """Link object code into a fresh engine and look up the functions ``names``."""
    with _lock:
        _init()
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine(0))
        engine.add_object_file(llvm.ObjectFileRef.from_data(data))
        engine.finalize_object()
        addresses = {name: engine.get_function_address(name) for name in names}
        missing = [name for name, address in addresses.items() if not address]
        if missing:
            raise OSError(f"object code lacks {', '.join(missing)}")
        return Loaded(engine, addresses)
