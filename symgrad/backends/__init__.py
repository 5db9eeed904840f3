"""Everything that evaluates a tape: the executors, and (soon) the one place that chooses among them.

Each executor evaluates a forward-only tape and knows nothing of derivatives::

    interpreter  the reference: a loop over the records; names the op behind any domain error
    python       straight-line Python generated from the tape, compiled once
    numpy        the same as an array program, broadcasting like numpy
    native       LLVM machine code (llvmlite): a scalar entry and fused array kernels
    dask         arrays chunk by chunk, each chunk through one of the above
    background   the worker that compiles off the caller's thread

Shared types and the fallback convention live in :mod:`symgrad.backends.protocol`.
"""
