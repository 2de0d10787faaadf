"""A part's model inputs in one canonical order on disk, so that training does not depend on
how the clips were sharded.

The feature shards hold clips in the order the plan and the jobs wrote them: another
``shard_size``, another source or another job order gives other row groups, and a stream that
reads row groups in a shuffled order then trains on other batches (other weights, other
metrics). :func:`pack` reads a part's inputs once, in file order, and writes each clip as a
fixed-size float32 record at the position of its YTID in sorted order (``os.pwrite``: nothing
is held but one row group). Every later pass reads that file in blocks of
:data:`BLOCK` consecutive records:

* in order (evaluation, normalisation statistics): the canonical order itself;
* shuffled (training): the blocks in an order drawn from ``seed`` and the epoch, through a
  shuffle buffer fed by the same generator.

Batches, their composition and their order are therefore a function of the part's YTIDs, the
seed and the epoch alone; a part of ``n`` clips costs ``n`` records of disk while its model
trains (float32, 220 kB a clip of 128 x 431 log-mel) and is deleted afterwards. The training
jobs pack through :func:`pack_parts`, in a child process, so that what the reads of the row
groups leave in a heap leaves with it.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .heap import release_memory
from .stream import DEFAULT_BUFFER, FeatureStream, stream_stats

__all__ = ["BLOCK", "PackedPart", "PackedSource", "pack", "pack_parts", "pack_folder"]

#: Records read at once; the unit the shuffled order permutes.
BLOCK = 64


class PackedPart:
    """A part's inputs in canonical (sorted YTID) order in one file of float32 records.

    Attributes
    ----------
    path : Path
    ytids : tuple of str
        The part's clips in the part's order (positions refer to it).
    slot : ndarray of int64, shape (n,)
        For each position, its record in the file.
    clip_shape : tuple of int
        ``(C, n_mels, T)`` of one record.
    targets : ndarray of float32, shape (n,) or (n, L)
        The part's targets (NaN without).
    """

    def __init__(self, path: Path, ytids: Sequence[str], slot: np.ndarray, clip_shape, targets):
        self.path = Path(path)
        self.ytids = tuple(ytids)
        self.slot = np.asarray(slot, dtype=np.int64)
        self.pos_of_slot = np.empty_like(self.slot)
        self.pos_of_slot[self.slot] = np.arange(len(self.slot))
        self.clip_shape = tuple(int(v) for v in clip_shape)
        self.targets = targets
        self.clip_bytes = 4 * int(np.prod(self.clip_shape))

    def __len__(self) -> int:
        return len(self.ytids)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.clip_shape)

    def read(self, lo: int, hi: int, *, out: np.ndarray | None = None) -> np.ndarray:
        """Records ``[lo, hi)``: (hi - lo, C, n_mels, T) float32.

        ``out``: a C-contiguous float32 array of at least ``hi - lo`` records to read into
        (its first ``hi - lo`` are returned); by default a new one.
        """
        n = hi - lo
        if out is None:
            out = np.empty((n, *self.clip_shape), dtype=np.float32)
        else:
            out = out[:n]
        view = memoryview(out).cast("B")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            got, want, off = 0, n * self.clip_bytes, lo * self.clip_bytes
            while got < want:
                k = os.preadv(fd, [view[got:]], off + got)
                if k <= 0:
                    at = lo + got // self.clip_bytes
                    raise OSError(f"{self.path}: short read at record {at}")
                got += k
        finally:
            os.close(fd)
        return out

    def source(
        self,
        *,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = DEFAULT_BUFFER,
        positions: np.ndarray | None = None,
        targets: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> PackedSource:
        """A batch source over the part, or over a list of its positions (repeats allowed)."""
        return PackedSource(
            self, batch_size=batch_size, shuffle=shuffle, seed=seed, buffer_size=buffer_size,
            positions=positions, targets=targets,
        )  # fmt: skip

    def channel_stats(self, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel, per-row mean and standard deviation (:func:`~.stream.stream_stats`)
        over the part (or the given positions), read in canonical order."""
        src = self.source(batch_size=64, positions=positions)
        return stream_stats(b[0] for b in src.batches())


class PackedSource:
    """A :class:`~.stream.BatchSource` over a :class:`PackedPart`: batches ``(x, y, index)``
    with ``index`` the positions in the part (for :func:`~.trainer.score`).

    ``targets``: one row per entry of ``positions`` (default: the part's targets of those
    positions), or a function of an array of positions giving their rows. In order: the
    entries sorted by record. Shuffled: the blocks holding them in an order drawn from
    ``(seed, epoch)``, each entry through a shuffle buffer of ``buffer_size`` clips drawn
    from the same generator.
    """

    def __init__(
        self,
        part: PackedPart,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        buffer_size: int,
        positions: np.ndarray | None,
        targets: np.ndarray | None,
    ):
        if batch_size < 1 or buffer_size < 1:
            raise ValueError("batch_size and buffer_size must be >= 1")
        self.part = part
        n = len(part)
        self.positions = np.arange(n) if positions is None else np.asarray(positions, np.int64)
        if targets is None:
            t = part.targets
            targets = None if t is None else np.asarray(t, np.float32)[self.positions]
        if targets is None:
            targets = np.full(len(self.positions), np.nan, np.float32)
        if callable(targets):  # rows computed per block (a large sparse label matrix)
            self._rows = targets
            self._row_shape = np.asarray(targets(self.positions[:1])).shape[1:]
        else:
            arr = np.asarray(targets, dtype=np.float32)
            if len(arr) != len(self.positions):
                raise ValueError(f"{len(arr)} targets for {len(self.positions)} entries")
            self._rows = None
            self._targets = arr
            self._row_shape = arr.shape[1:]
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        self.seed, self.buffer_size = int(seed), int(buffer_size)
        slots = part.slot[self.positions]
        self._entries = np.argsort(slots, kind="stable")  # entries in record order
        self._slots = slots[self._entries]
        self.peak_buffered = 0

    def __len__(self) -> int:
        return len(self.positions)

    def _blocks(self) -> list[tuple[int, np.ndarray]]:
        """(block, entries in it in record order) for every block holding an entry."""
        blocks = self._slots // BLOCK
        cuts = np.flatnonzero(np.diff(blocks)) + 1
        return [(int(blocks[g[0]]), g) for g in np.split(np.arange(len(blocks)), cuts) if len(g)]

    def _read(self, block: int, idx: np.ndarray, into: np.ndarray):
        """Read ``block`` into ``into``; (records, row of each entry in them, targets,
        positions) of the entries ``idx``."""
        lo = block * BLOCK
        x = self.part.read(lo, min(lo + BLOCK, len(self.part)), out=into)
        e = self._entries[idx]
        pos = self.positions[e]
        y = self._targets[e] if self._rows is None else np.asarray(self._rows(pos), np.float32)
        return x, self._slots[idx] - lo, y, pos

    def _entries_in_order(self, epoch: int):
        """(record, target row, position) of every entry, in the source's order for
        ``epoch``; each record a view into a buffer that the next entry may overwrite."""
        blocks = self._blocks()
        block = np.empty((min(BLOCK, len(self.part)), *self.part.clip_shape), dtype=np.float32)
        if not self.shuffle:
            for b, idx in blocks:
                x, rows, y, p = self._read(b, idx, block)
                for k in range(len(rows)):
                    yield x[rows[k]], y[k], p[k]
            return
        rng = np.random.default_rng([self.seed, 0x504B, int(epoch)])
        cap = max(1, min(self.buffer_size, len(self)))
        buf = np.empty((cap, *self.part.clip_shape), dtype=np.float32)
        buf_y = np.empty((cap, *self._row_shape), dtype=np.float32)
        buf_p = np.empty(cap, dtype=np.int64)
        fill = 0
        for i in rng.permutation(len(blocks)):
            x, rows, y, p = self._read(*blocks[i], block)
            for k in range(len(rows)):
                if fill < cap:
                    buf[fill], buf_y[fill], buf_p[fill] = x[rows[k]], y[k], p[k]
                    fill += 1
                    self.peak_buffered = max(self.peak_buffered, fill)
                    continue
                j = int(rng.integers(cap))
                yield buf[j], buf_y[j], buf_p[j]  # taken before the slot is refilled
                buf[j], buf_y[j], buf_p[j] = x[rows[k]], y[k], p[k]
        for j in rng.permutation(fill):
            yield buf[j], buf_y[j], buf_p[j]

    def batches(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Every large array here has one of two sizes, a block or a batch, and a block is
        # read into the same buffer each time (no copy of part of a block, no concatenation
        # of what was left of one): fewer sizes for the C library's heap to keep apart. The
        # training jobs' peaks did not measurably change with it (README, Scale).
        bs = self.batch_size

        def batch():  # filled in place: no per-clip copies for the heap to keep
            return (np.empty((bs, *self.part.clip_shape), dtype=np.float32),
                    np.empty((bs, *self._row_shape), dtype=np.float32),
                    np.empty(bs, dtype=np.int64))  # fmt: skip

        ox, oy, op = batch()
        n_out = 0
        for x, y, p in self._entries_in_order(epoch):
            ox[n_out], oy[n_out], op[n_out] = x, y, p
            n_out += 1
            if n_out == bs:
                yield ox, oy, op
                ox, oy, op = batch()
                n_out = 0
        if n_out:
            yield ox[:n_out], oy[:n_out], op[:n_out]


def pack(
    stream: FeatureStream, folder: str | Path, *, name: str, targets: np.ndarray | None = None
) -> PackedPart:
    """Write a stream's clips to ``{folder}/{name}.f32`` in sorted-YTID order.

    Parameters
    ----------
    stream : FeatureStream
        The part (its clips listed once each); read once, in file order.
    folder : path
    name : str
    targets : ndarray, optional
        Per position (default: the stream's targets).

    Returns
    -------
    PackedPart
    """
    ytids = list(stream.ytids)
    if len(set(ytids)) != len(ytids):
        raise ValueError(f"{name}: a clip is listed twice; pack a part of distinct clips")
    order = np.argsort(np.asarray(ytids, dtype=object), kind="stable")
    slot = np.empty(len(ytids), dtype=np.int64)
    slot[order] = np.arange(len(ytids))
    path = Path(folder) / f"{name}.f32"
    _, c, r, t = stream.shape
    clip_bytes = 4 * c * r * t
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, clip_bytes * len(ytids))
        for b in stream.replace(batch_size=16).batches(shuffle=False):
            x = np.ascontiguousarray(b.x, dtype=np.float32)
            for k, pos in enumerate(b.index):
                os.pwrite(fd, memoryview(x[k]).cast("B"), int(slot[pos]) * clip_bytes)
    finally:
        os.close(fd)
    stream.close()
    release_memory()  # what the row groups' reads left in the heap
    return PackedPart(path, ytids, slot, (c, r, t), stream.targets if targets is None else targets)


def pack_parts(
    streams: Mapping[str, FeatureStream], folder: str | Path, *, isolate: bool = True
) -> dict[str, PackedPart]:
    """:func:`pack` every part, named by its key, in a child process (by default).

    Reading the shards' row groups leaves the reading process's heap fragmented in proportion
    to how many it read, and what is left between live blocks stays resident (``malloc_trim``
    returns only whole free pages). A child process takes all of that with it when it exits,
    so the training process that goes on to hold activations and gradients for the rest of
    the job starts from the same heap whatever the number of clips (issue 21; the first
    trial, the per-label job at N = 20,000: median anonymous RSS while training 766 MB
    packed in the process, 723 MB packed in a child; the README's Scale section has the
    figures of the final code).

    Parameters
    ----------
    streams : mapping of str to FeatureStream
        The parts; each written to ``{folder}/{key}.f32``.
    folder : path
    isolate : bool
        False: pack in this process (what the child does).

    Returns
    -------
    dict of str to PackedPart
        In the order of ``streams``; the same records and metadata either way.

    Raises
    ------
    audiosetflow.errors.InputError, OSError
        What :func:`pack` raised in the child, re-raised here (a full disk stays a full disk).
    RuntimeError
        If the child ended without an answer (killed, out of memory): one line with its
        exit status and the last line it printed.
    """
    if not isolate:
        return {k: pack(st, folder, name=k) for k, st in streams.items()}
    payload = pickle.dumps((dict(streams), str(folder)), protocol=pickle.HIGHEST_PROTOCOL)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import _child; _child()"],
        input=payload, capture_output=True, env=env, check=False,
    )  # fmt: skip
    try:
        status, value = pickle.loads(proc.stdout)
    except Exception:  # noqa: BLE001 - no answer: say how the child ended
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(
            f"packing {', '.join(streams)} into {folder}: the child process ended with status "
            f"{proc.returncode} and no result ({lines[-1] if lines else 'nothing printed'}); "
            "if it was killed for memory, give the rule more (resources: mem_mb)"
        ) from None
    if status == "error":
        raise value
    return value


def _child() -> None:
    """The child of :func:`pack_parts`: a pickled ``(streams, folder)`` on stdin, a pickled
    ``("ok", parts)`` or ``("error", exception)`` on stdout."""
    streams, folder = pickle.load(sys.stdin.buffer)
    try:
        answer = ("ok", pack_parts(streams, folder, isolate=False))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        answer = ("error", exc)
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.flush()


@contextmanager
def pack_folder(near: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``near`` (an output file) for packed parts, removed after."""
    parent = Path(near).parent
    parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=".pack-", dir=parent))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
