"""A training job's memory: what the C library and pyarrow keep of what the job freed.

Numpy and torch only ask ``malloc`` for memory; whether freed memory leaves the process is
the allocator's choice. These two functions bring a training job's resident memory closer
to what it holds (issue 21: peak RSS of a job must not grow with the number of clips).
:func:`flat_heap` goes the rest of the way, at a cost in training speed: the README's Scale
section has the figures.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

__all__ = ["release_memory", "bounded_heap", "FLAT_TUNABLES", "flat_heap"]

#: glibc's settings a training job runs under with ``training.flat_memory: true``: every
#: block of 4 MiB or more (a batch, its activations and their gradients) is a mapping of its
#: own, given back when freed, on transparent huge pages.
FLAT_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1"


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


def flat_heap(*, enabled: bool) -> str:
    """Run this process under :data:`FLAT_TUNABLES`: start it again, once, if it is not.

    glibc reads its tunables (the environment variable ``GLIBC_TUNABLES``) only when a
    process starts, so a training job's adapter calls this first: the process is replaced
    (``os.execve``: the same PID, command line and working folder, so Snakemake's
    ``benchmark:`` and a cluster's accounting see one job) by one with the variable set.

    Why: a training step allocates and frees some 300 MB of tensors of many sizes. By default
    glibc serves blocks up to 32 MiB from its heaps once it has freed one of that size, and the
    free space it keeps between live blocks varies from step to step; the more steps a job
    runs, the higher its highest point (the Music job of ``benchmarks/bench_scale.py``, peak
    anonymous RSS: 678-824 MB at N = 2,000, 864 and 873 MB at N = 20,000). With every block of
    4 MiB or more mapped on its own and unmapped when freed, the heaps stay small: 583-603 MB at
    N = 2,000, 616 and 621 MB at N = 20,000. The cost is the pages each step maps again:
    epochs trained 24 % fewer clips a second on the 2-core development VM (job time +8 % at
    N = 20,000); huge pages recover part of it (without them, half the speed).

    Parameters
    ----------
    enabled : bool
        ``training.flat_memory``. False: nothing is done.

    Returns
    -------
    str
        What was found, for the job's log (the process is replaced instead of returning when
        it starts again).

    Raises
    ------
    OSError
        The interpreter could not be started again.

    See Also
    --------
    release_memory : what a training job gives back while it runs either way.
    """
    if not enabled:
        return "heap: glibc defaults (training.flat_memory: false)"
    if platform.libc_ver()[0] != "glibc":
        return "heap: not glibc, training.flat_memory has no effect"
    have = os.environ.get("GLIBC_TUNABLES")
    if have == FLAT_TUNABLES:
        return f"heap: GLIBC_TUNABLES={FLAT_TUNABLES} (training.flat_memory)"
    if have is not None:
        return f"heap: GLIBC_TUNABLES={have} from the environment, left as it is"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**os.environ, "GLIBC_TUNABLES": FLAT_TUNABLES})
    raise AssertionError("unreachable")  # pragma: no cover
