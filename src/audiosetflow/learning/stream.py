"""Streaming reads of feature shards: a dataset part's clips in batches, row group by row group.

A training job never holds a split's frame-level features in memory (a 10-s clip's log-mel
is 128 x 431 float32, 220 KB). :func:`index_parts` makes one cheap pass over the shards'
``ytid``, ``status`` and ``n_frames`` columns (row groups whose ``ytid`` statistics exclude
every wanted clip are not even read) and records, for each dataset part, which rows of which
row groups hold its clips. A :class:`FeatureStream` then reads only those row groups, and of
them only the columns it needs (``log_mel`` plus the extra channels), one row group at a time
(:meth:`pyarrow.parquet.ParquetFile.read_row_group`), and yields :class:`Batch` es:

* shuffled (training): the order of the row groups of all shards is drawn anew each epoch
  from a generator seeded with ``(seed, epoch)``, and the clips pass through a shuffle buffer
  of ``buffer_size`` clips (the same seed and epoch give the same order);
* unshuffled (evaluation): file order (sources in the order given, each folder's shards
  sorted by name, row groups and rows in file order); each batch carries the clips'
  positions in the part (``Batch.index``), so scores can be put back in the part's order.

Memory is bounded by the shuffle buffer, one decoded row group and one batch, whatever the
number of clips; what grows with the clips is only the index (a few integers per clip) and
the targets. :meth:`FeatureStream.channel_stats` computes the normalisation statistics in one
streaming pass (float64, Chan's pairwise update), equal to those of the in-memory array.

The module uses numpy and pyarrow only (no torch).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from ..audio.features import FeatureParams

__all__ = [
    "DEFAULT_BUFFER",
    "Batch",
    "BatchSource",
    "RowGroupRef",
    "ClipIndex",
    "FeatureStream",
    "index_parts",
    "index_clips",
    "part_streams",
    "stream_stats",
]

#: Clips held by the shuffle buffer of a training stream (113 MB of 128 x 431 log-mel).
DEFAULT_BUFFER: int = 512

FeatureSource = str | Path | Sequence[str | Path]

_INDEX_COLUMNS = ["ytid", "status", "n_frames"]
_OPEN_FILES = 8  # ParquetFile objects kept open by a stream (their footers are parsed once)


class Batch(NamedTuple):
    """A batch of clips.

    Attributes
    ----------
    x : ndarray of float32, shape (B, C, n_mels, T)
        Inputs: log-mel, then each extra channel (:func:`~.training.stack_channels`).
    y : ndarray of float32, shape (B,)
        Targets (NaN where the stream has none).
    index : ndarray of int64, shape (B,)
        Positions of the clips in the stream's clip list (the dataset part's rows).
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray


class BatchSource(Protocol):
    """What :func:`~.training.fit_batches` trains and validates on: ``len()`` examples per
    epoch, and ``batches(epoch)`` yielding tuples whose first two items are the inputs and
    the targets of a batch (arrays or tensors)."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int = 0) -> Iterator[tuple]: ...


@dataclass(frozen=True)
class RowGroupRef:
    """The wanted clips of one row group.

    Attributes
    ----------
    file : int
        Position in :attr:`ClipIndex.files`.
    group : int
        Row group of that file.
    rows : ndarray of int64
        Rows of the row group holding wanted clips, ascending (repeated where the part lists
        a clip twice).
    pos : ndarray of int64
        For each row, its position in the clip list.
    """

    file: int
    group: int
    rows: np.ndarray
    pos: np.ndarray


@dataclass(frozen=True)
class ClipIndex:
    """Where the clips of one YTID list are in the shards (:func:`index_parts`).

    Attributes
    ----------
    ytids : tuple of str
        The clips, in the part's order (positions refer to it).
    files : tuple of Path
        Every shard file of every source, in file order.
    groups : tuple of RowGroupRef
        The row groups holding at least one wanted clip, in file order.
    params : FeatureParams
        The parameters every shard was computed with.
    n_frames : int
        Frames of every wanted clip (0 without clips).
    groups_total : int
        Row groups of the files searched (those of the splits the wanted clips are in).
    groups_pruned : int
        Row groups among them whose ``ytid`` statistics exclude every wanted clip (their
        ``ytid`` column was not read). Both counts are of the whole :func:`index_parts`
        pass, which searches for the clips of all its parts at once.
    """

    ytids: tuple[str, ...]
    files: tuple[Path, ...]
    groups: tuple[RowGroupRef, ...]
    params: FeatureParams
    n_frames: int
    groups_total: int = 0
    groups_pruned: int = 0

    def __len__(self) -> int:
        return len(self.ytids)


def _sources(
    features: Mapping[str, FeatureSource | None],
) -> tuple[dict[str, list[Path]], FeatureParams | None]:
    from ..audio.features import shard_files, shard_params

    files, params = {}, None
    for split, src in features.items():
        if src is None:
            continue
        fs = shard_files(src)
        p = shard_params(fs)
        if params is not None and p.rows() != params.rows():
            raise ValueError(
                f"{fs[0].parent}: feature shards of the {split} split have other rows per "
                "feature than the other splits: rerun the features rule"
            )
        params = params or p
        files[split] = fs
    return files, params


def _stale(split: str, missing: list[str]) -> InputError:
    what = f"the {split} features" if split else "the features"
    return InputError(
        f"{what} have no clip with status ok for {len(missing)} YTIDs of the dataset "
        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the "
        "dataset is stale, rebuild it (snakemake --forcerun dataset)"
    )


def index_parts(
    parts: Mapping[str, pd.DataFrame],
    features: Mapping[str, FeatureSource | None],
) -> dict[str, ClipIndex]:
    """Where the clips of every dataset part are in the feature shards, in one pass.

    Only the ``ytid``, ``status`` and ``n_frames`` columns are read, and only of the row groups
    whose ``ytid`` statistics (min, max) do not exclude every wanted clip. A clip is the first
    row with status ``ok`` of its YTID in file order (as :func:`~.audio.features.load_split`
    with ``status="ok"`` would give it).

    Parameters
    ----------
    parts : mapping of str to DataFrame
        ``ytid`` and ``split`` per clip (a dataset part, :func:`~.datasets.read_dataset`).
    features : mapping of str to (path, sequence of path or None)
        Per split, its shards (a folder of ``shard-*.parquet`` or the files); None: no such
        split.

    Returns
    -------
    dict of str to ClipIndex
        Per part, in the order of ``parts``.

    Raises
    ------
    audiosetflow.errors.InputError
        If a clip has no row with status ``ok`` in its split's shards (a stale dataset), or
        its split has no features.
    ValueError
        If shards disagree on schema version or parameters, or the clips have different
        numbers of frames.
    """
    import pyarrow.parquet as pq

    files, params = _sources(features)
    # (split, ytid) -> [(part, position)]
    want: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for name, df in parts.items():
        ytids = df["ytid"].astype(str).tolist()
        splits = df["split"].astype(str).tolist() if "split" in df.columns else [""] * len(ytids)
        for i, (y, s) in enumerate(zip(ytids, splits, strict=True)):
            want.setdefault(s, {}).setdefault(y, []).append((name, i))
    for s in want:
        if s not in files:
            raise InputError(
                f"the dataset has clips of the {s} split but there are no {s} features: "
                "rebuild the dataset (snakemake --forcerun dataset)"
            )
    all_files: list[Path] = []
    groups: dict[str, list[RowGroupRef]] = {p: [] for p in parts}
    frames: dict[str, set[int]] = {p: set() for p in parts}
    total = pruned = 0
    for split, fs in files.items():
        wanted = want.get(split, {})
        ordered = sorted(wanted)
        found: set[str] = set()
        for path in fs:
            fi = len(all_files)
            all_files.append(path)
            if not wanted:
                continue
            pf = pq.ParquetFile(path)
            md = pf.metadata
            total += md.num_row_groups
            col = _leaf(md, "ytid")
            keep = []
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(col).statistics
                if st is not None and st.has_min_max:
                    k = bisect.bisect_left(ordered, st.min)
                    if k == len(ordered) or ordered[k] > st.max:
                        pruned += 1
                        continue
                keep.append(g)
            for g in keep:
                t = pf.read_row_group(g, columns=_INDEX_COLUMNS, use_threads=False)
                ytids = t.column("ytid").to_pylist()
                status = t.column("status").to_pylist()
                nf = t.column("n_frames").to_pylist()
                per_part: dict[str, tuple[list[int], list[int]]] = {}
                for r, (y, st_, n) in enumerate(zip(ytids, status, nf, strict=True)):
                    if st_ != "ok" or y in found or y not in wanted:
                        continue
                    found.add(y)
                    for name, i in wanted[y]:
                        rows, pos = per_part.setdefault(name, ([], []))
                        rows.append(r)
                        pos.append(i)
                        frames[name].add(int(n))
                for name, (rows, pos) in per_part.items():
                    groups[name].append(
                        RowGroupRef(fi, g, np.asarray(rows, np.int64), np.asarray(pos, np.int64))
                    )
            del pf
        missing_by_part = {}
        for y in set(wanted) - found:
            for name, i in wanted[y]:
                missing_by_part.setdefault(name, []).append((i, y))
        for name in parts:
            if name in missing_by_part:
                raise _stale(split, [y for _, y in sorted(missing_by_part[name])])
    out = {}
    for name, df in parts.items():
        nf = sorted(frames[name])
        if len(nf) > 1:
            raise ValueError(
                f"the {name} part's clips have different numbers of frames {nf[:5]}: "
                "clips should all be trimmed to the same length"
            )
        out[name] = ClipIndex(
            ytids=tuple(df["ytid"].astype(str)),
            files=tuple(all_files),
            groups=tuple(groups[name]),
            params=params,
            n_frames=nf[0] if nf else 0,
            groups_total=total,
            groups_pruned=pruned,
        )
    all_frames = {out[p].n_frames for p in out if len(out[p])}
    if len(all_frames) > 1:
        raise ValueError(
            f"dataset parts have clips of different numbers of frames {sorted(all_frames)}: "
            "clips should all be trimmed to the same length"
        )
    return out


def index_clips(
    features: FeatureSource | Mapping[str, FeatureSource | None],
    ytids: Sequence[str],
    *,
    splits: Sequence[str] | None = None,
) -> ClipIndex:
    """:func:`index_parts` of one list of YTIDs.

    ``features`` is one source (a folder or shard files) or a mapping of split to source;
    with a mapping, ``splits`` gives each clip's split.
    """
    import pandas as pd

    if isinstance(features, Mapping):
        if splits is None:
            raise ValueError("splits is needed with a mapping of split to features")
        srcs = dict(features)
    else:
        if splits is not None:
            raise ValueError("splits is only for a mapping of split to features")
        srcs, splits = {"": features}, [""] * len(ytids)
    part = pd.DataFrame({"ytid": list(ytids), "split": list(splits)})
    return index_parts({"": part}, srcs)[""]


def _leaf(md, name: str) -> int:
    for i in range(md.num_columns):
        if md.schema.column(i).path == name:
            return i
    raise ValueError(f"no {name} column in the shard")


class FeatureStream:
    """Batches of a clip list's CNN inputs, read from the shards one row group at a time.

    Parameters
    ----------
    index : ClipIndex
        Where the clips are (:func:`index_parts`, :func:`index_clips`).
    targets : array-like of float, optional
        One per clip, in the index's order (``Batch.y``; NaN without).
    extra_channels : sequence of str
        Frame-level features stacked after log-mel (:func:`~.training.stack_channels`).
    batch_size : int
        Clips per batch (the last batch of an epoch may be smaller).
    shuffle : bool
        Default of :meth:`batches`: shuffled (training) or in file order (evaluation).
    seed : int
        Seed of the shuffled orders (with the epoch).
    buffer_size : int
        Clips held by the shuffle buffer, >= 1.

    Attributes
    ----------
    peak_buffered : int
        Most clips held by the shuffle buffer so far.
    peak_group : int
        Most clips decoded from one row group so far.
    groups_read : int
        Row groups read by the last :meth:`batches` pass.

    Examples
    --------
    >>> index = index_clips("results/features/train", ytids)  # doctest: +SKIP
    >>> stream = FeatureStream(index, targets=y, shuffle=True, seed=1)  # doctest: +SKIP
    >>> for x, y, pos in stream.batches(epoch=0):  # doctest: +SKIP
    ...     ...
    """

    def __init__(
        self,
        index: ClipIndex,
        *,
        targets: Sequence[float] | np.ndarray | None = None,
        extra_channels: Sequence[str] = (),
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = DEFAULT_BUFFER,
    ):
        from ..audio.features import FRAME_FEATURES

        for f in extra_channels:
            if f not in FRAME_FEATURES:
                raise ValueError(f"unknown feature {f!r}; one of {list(FRAME_FEATURES)}")
        if batch_size < 1 or buffer_size < 1:
            raise ValueError("batch_size and buffer_size must be >= 1")
        self.index = index
        n = len(index)
        if targets is None:
            self.targets = np.full(n, np.nan, dtype=np.float32)
        else:
            self.targets = np.asarray(targets, dtype=np.float32).reshape(-1)
            if len(self.targets) != n:
                raise ValueError(f"{len(self.targets)} targets for {n} clips")
        self.extra_channels = tuple(extra_channels)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.buffer_size = int(buffer_size)
        self.peak_buffered = 0
        self.peak_group = 0
        self.groups_read = 0
        self._open: OrderedDict[int, object] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickled without its open files (another process opens its own)."""
        return {**self.__dict__, "_open": OrderedDict()}

    def replace(self, **changes) -> FeatureStream:
        """A stream over the same index with other options (``targets``, ``extra_channels``,
        ``batch_size``, ``shuffle``, ``seed``, ``buffer_size``)."""
        kw = {
            "targets": self.targets,
            "extra_channels": self.extra_channels,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "buffer_size": self.buffer_size,
        }
        kw.update(changes)
        return FeatureStream(self.index, **kw)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ytids(self) -> tuple[str, ...]:
        return self.index.ytids

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n_clips, channels, n_mels, n_frames)`` of the whole stream (never allocated)."""
        p = self.index.params
        return (len(self), 1 + len(self.extra_channels), p.n_mels, self.index.n_frames)

    @property
    def clip_bytes(self) -> int:
        """Bytes of one clip's input (float32)."""
        _, c, r, t = self.shape
        return 4 * c * r * t

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    # --- reading -------------------------------------------------------------------------

    def _file(self, i: int):
        import pyarrow.parquet as pq

        pf = self._open.pop(i, None)
        if pf is None:
            pf = pq.ParquetFile(self.index.files[i])
        self._open[i] = pf
        while len(self._open) > _OPEN_FILES:
            self._open.popitem(last=False)
        return pf

    def close(self) -> None:
        """Forget the open shard files (a later read opens them again)."""
        self._open.clear()

    def _read_group(self, ref: RowGroupRef) -> np.ndarray:
        """The wanted clips of one row group: (n, C, n_mels, T) float32, in ``ref.rows``
        order."""
        from .inputs import stack_channels

        rows, t = self.index.params.rows(), self.index.n_frames
        names = ["log_mel", *self.extra_channels]
        table = self._file(ref.file).read_row_group(
            ref.group, columns=list(dict.fromkeys(names)), use_threads=False
        )
        arrays = {
            f: _frames(table.column(f), ref.rows, rows[f], t, self.index.files[ref.file], f)
            for f in dict.fromkeys(names)
        }
        del table
        self.groups_read += 1
        self.peak_group = max(self.peak_group, len(ref.rows))
        return stack_channels(arrays["log_mel"], [arrays[f] for f in self.extra_channels])

    def read_columns(self, columns: Sequence[str]) -> np.ndarray:
        """Scalar columns (e.g. summary statistics) of every clip, in the clips' order.

        Only ``columns`` of the indexed row groups are read.

        Returns
        -------
        ndarray of float32, shape (n_clips, len(columns))
        """
        cols = list(columns)
        out = np.empty((len(self), len(cols)), dtype=np.float32)
        for ref in self.index.groups:
            table = self._file(ref.file).read_row_group(ref.group, columns=cols, use_threads=False)
            block = (
                np.column_stack(
                    [table.column(c).to_numpy().astype(np.float32, copy=False) for c in cols]
                )
                if cols
                else np.empty((table.num_rows, 0), dtype=np.float32)
            )
            out[ref.pos] = block[ref.rows]
        return out

    # --- batches -------------------------------------------------------------------------

    def order(self, epoch: int = 0, *, shuffle: bool | None = None) -> tuple[RowGroupRef, ...]:
        """The row groups in the order an epoch reads them."""
        groups = self.index.groups
        if not (self.shuffle if shuffle is None else shuffle):
            return groups
        perm = self._rng(epoch).permutation(len(groups))
        return tuple(groups[i] for i in perm)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch)])

    def batches(self, epoch: int = 0, *, shuffle: bool | None = None) -> Iterator[Batch]:
        """One epoch of batches: every clip once (a clip listed twice: twice).

        Parameters
        ----------
        epoch : int
            Seeds the shuffled order with ``seed`` (ignored unshuffled).
        shuffle : bool, optional
            Override the stream's ``shuffle``.
        """
        shuffle = self.shuffle if shuffle is None else shuffle
        self.groups_read = 0
        if shuffle:
            return self._shuffled(epoch)
        return self._in_order()

    def _in_order(self) -> Iterator[Batch]:
        out = _Collector(self.batch_size, self.shape[1:])
        for ref in self.index.groups:
            x = self._read_group(ref)
            y = self.targets[ref.pos]
            lo = 0
            while lo < len(x):
                lo += out.add_many(x[lo:], y[lo:], ref.pos[lo:])
                if out.full:
                    yield out.take()
            del x
        if out.count:
            yield out.take()

    def _shuffled(self, epoch: int) -> Iterator[Batch]:
        rng = self._rng(epoch)  # the same first draw as order()
        order = [self.index.groups[i] for i in rng.permutation(len(self.index.groups))]
        cap = max(1, min(self.buffer_size, len(self)))
        clip_shape = self.shape[1:]
        buf = np.empty((cap, *clip_shape), dtype=np.float32)
        buf_y = np.empty(cap, dtype=np.float32)
        buf_pos = np.empty(cap, dtype=np.int64)
        fill = 0
        out = _Collector(self.batch_size, clip_shape)
        for ref in order:
            x = self._read_group(ref)
            y = self.targets[ref.pos]
            for k in range(len(x)):
                if fill < cap:
                    buf[fill], buf_y[fill], buf_pos[fill] = x[k], y[k], ref.pos[k]
                    fill += 1
                    self.peak_buffered = max(self.peak_buffered, fill)
                    continue
                j = int(rng.integers(cap))
                out.add(buf[j], buf_y[j], buf_pos[j])
                buf[j], buf_y[j], buf_pos[j] = x[k], y[k], ref.pos[k]
                if out.full:
                    yield out.take()
            del x
        for j in rng.permutation(fill):
            out.add(buf[j], buf_y[j], buf_pos[j])
            if out.full:
                yield out.take()
        del buf
        if out.count:
            yield out.take()

    # --- statistics ----------------------------------------------------------------------

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation per channel and mel row over clips and frames, in one
        pass in file order (:func:`stream_stats`); equal to
        :func:`~.training.channel_stats` of the whole array."""
        return stream_stats(b.x for b in self.batches(shuffle=False))


def _frames(col, rows: np.ndarray, r: int, t: int, path, name: str) -> np.ndarray:
    """Rows ``rows`` of a list<float32> column (one row group) as (n, r, t) float32."""
    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    null = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    out = np.empty((len(rows), r, t), dtype=np.float32)
    size = r * t
    for k, i in enumerate(rows):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if hi - lo != size or (null is not None and null[i]):
            raise ValueError(
                f"{path}: row {int(i)} of a row group has {hi - lo} {name} values, "
                f"expected {r} x {t}"
            )
        out[k] = values[lo:hi].reshape(r, t)
    return out


class _Collector:
    """Fills one batch at a time (a new array per batch: the consumer keeps the last)."""

    def __init__(self, size: int, clip_shape: tuple[int, ...]):
        self.size, self.clip_shape = size, clip_shape
        self._new()

    def _new(self) -> None:
        self.x = np.empty((self.size, *self.clip_shape), dtype=np.float32)
        self.y = np.empty(self.size, dtype=np.float32)
        self.pos = np.empty(self.size, dtype=np.int64)
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count == self.size

    def add(self, x, y, pos) -> None:
        self.x[self.count], self.y[self.count], self.pos[self.count] = x, y, pos
        self.count += 1

    def add_many(self, x, y, pos) -> int:
        n = min(len(x), self.size - self.count)
        sl = slice(self.count, self.count + n)
        self.x[sl], self.y[sl], self.pos[sl] = x[:n], y[:n], pos[:n]
        self.count += n
        return n

    def take(self) -> Batch:
        n = self.count
        b = Batch(self.x[:n], self.y[:n], self.pos[:n])
        self._new()
        return b


def stream_stats(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per channel and row over clips and frames of a stream of
    (B, C, R, T) arrays, in one pass.

    Each batch's mean and sum of squared deviations are computed in float64 and merged with
    Chan et al.'s pairwise update, so the result equals :func:`~.training.channel_stats` of
    the concatenated array (float64 accumulators there too) to rounding.

    Returns
    -------
    mean, std : ndarray of float32, shape (C, R, 1)
    """
    n = 0
    mean = m2 = None
    for x in batches:
        k = x.shape[0] * x.shape[3]
        if k == 0:
            continue
        bm = x.mean(axis=(0, 3), dtype=np.float64)
        d = x - bm[None, :, :, None]  # float64 (float32 - float64)
        bm2 = np.einsum("bcrt,bcrt->cr", d, d)
        del d
        if mean is None:
            mean, m2, n = bm, bm2, k
            continue
        tot = n + k
        delta = bm - mean
        mean = mean + delta * (k / tot)
        m2 = m2 + bm2 + delta**2 * (n * k / tot)
        n = tot
    if mean is None:
        raise ValueError("no clips to compute statistics over")
    std = np.sqrt(m2 / n)
    return mean[..., None].astype(np.float32), std[..., None].astype(np.float32)


def part_streams(
    parts: Mapping[str, pd.DataFrame],
    features: Mapping[str, FeatureSource | None],
    *,
    extra_channels: Sequence[str] = (),
    batch_size: int = 32,
    buffer_size: int = DEFAULT_BUFFER,
    seed: int = 0,
) -> dict[str, FeatureStream]:
    """An unshuffled :class:`FeatureStream` per dataset part (:func:`index_parts`, one pass).

    Targets come from the parts' ``target`` column when present. Use
    :meth:`FeatureStream.replace` for a shuffled training stream.
    """
    idx = index_parts(parts, features)
    out = {}
    for name, df in parts.items():
        y = df["target"].to_numpy(dtype=np.float32) if "target" in df.columns else None
        out[name] = FeatureStream(
            idx[name],
            targets=y,
            extra_channels=extra_channels,
            batch_size=batch_size,
            buffer_size=buffer_size,
            seed=seed,
        )
    return out
