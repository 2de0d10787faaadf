"""A training job's memory: what the C library and pyarrow keep of what the job freed.

Numpy and torch only ask ``malloc`` for memory; whether freed memory leaves the process is
the allocator's choice. These two functions bring a training job's resident memory closer
to what it holds (issue 21: peak RSS of a job must not grow with the number of clips). Not
all the way: the README's Scale section has the figures.
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["release_memory", "bounded_heap"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_memory() -> bool:
    """Give the pages the process has freed back to the system (glibc's ``malloc_trim``).

    glibc keeps freed memory in its heaps for reuse. A training loop frees and allocates
    batches, activations and gradients of many sizes from several threads, and the free
    space it leaves between live blocks is never returned: the job's resident memory rose
    with the number of batches while what it held did not (the per-label job of
    ``benchmarks/bench_scale.py``, traced with memray: its live allocations at their peak
    were 6.5 MB larger at N = 20,000 than at 2,000, its anonymous RSS 356 MB larger, 802
    against 1,158 MB).
    :func:`~.trainer.fit` calls this every :data:`~.trainer.RELEASE_EVERY` batches and after
    each epoch, :func:`~.pack.pack` after a part is written (no measurable cost to training
    throughput: ``benchmarks/bench_training.py``, 268 against 265 clips/s).

    Returns
    -------
    bool
        False where the C library has no ``malloc_trim`` (nothing done).
    """
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


def bounded_heap() -> None:
    """Set a training job's process up so that less of what it frees stays resident:
    pyarrow allocates with the C library's ``malloc`` (its own pool, jemalloc
    or mimalloc, keeps what the reads of many row groups freed: one epoch over 20,000
    synthetic clips peaked at 1,441 MiB against 1,107 MiB over 2,000, with the system
    allocator 1,270 against 1,078 MiB, at the same speed; ``benchmarks/bench_multilabel.py``),
    and what is freed goes back to the system (:func:`release_memory`).
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    release_memory()
