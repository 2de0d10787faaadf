"""Distillation from stored teacher predictions (``multilabel.teacher``).

A teacher file holds, per clip (YTID), a teacher's 527 AudioSet logits or probabilities, in
AudioSet's class order (the ``index`` of ``class_labels_indices.csv``). EfficientAT publishes
its teacher ensemble's logits as an ``.npy`` with a pickled name-to-row dict: the dict is never
unpickled here, its YTIDs go to a text index. The formats read:

Parquet (``.parquet``)
    a ``ytid`` column and a list column ``logits`` or ``probabilities`` (527 values), or one
    numeric column per MID (then only the selected labels' columns are read);
NumPy (``.npy``)
    an (n_clips, 527) array, with a text file of the rows' YTIDs (one a line;
    ``multilabel.teacher.index``, default ``<path without .npy>.ytids.txt``);
HDF5 (``.h5``, ``.hdf5``; the ``hdf5`` extra: h5py)
    a dataset of YTIDs (``ytid``, ``ytids`` or ``audio_name``: PANNs' ``Y<ytid>.wav`` names
    are reduced to the YTID) and one of predictions (``logits``, ``probabilities``,
    ``predictions``), (n_clips, 527).

:func:`read_teacher` reads the rows of the wanted clips only, a batch of rows at a time, and
writes the selected labels' logits (float16) to a memory-mapped file: memory does not grow with
the number of clips. :func:`distill_loss` is the student's loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError

__all__ = ["TEACHER_COLUMNS", "read_teacher", "distill_loss", "TeacherTargets"]

#: Names of the prediction column (Parquet) or dataset (HDF5).
TEACHER_COLUMNS = ("logits", "probabilities", "predictions")
_YTID_NAMES = ("ytid", "ytids", "audio_name")
_BATCH = 4096


def _fail(path, what: str) -> InputError:
    return InputError(f"{path}: teacher predictions: {what}")


def _ytid(v) -> str:
    """A YTID from an HDF5 name: ``Y<ytid>.wav`` (PANNs) or the YTID itself."""
    stem = Path(v.decode() if isinstance(v, bytes) else str(v)).name.split(".", 1)[0]
    return stem[1:] if len(stem) == 12 and stem.startswith("Y") else stem


def _blocks_parquet(path: Path, mids: Sequence[str]) -> Iterator[tuple[list[str], np.ndarray, str]]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors name no file
        raise _fail(path, f"not a Parquet file ({exc})") from None
    names = f.schema_arrow.names
    if "ytid" not in names:
        raise _fail(path, f"no ytid column (columns {names[:6]})")
    col = next((c for c in TEACHER_COLUMNS if c in names), None)
    if col is None:
        missing = [m for m in mids if m not in names]
        if missing:
            raise _fail(path, f"no column {TEACHER_COLUMNS} and no column for MID {missing[0]}")
        for b in f.iter_batches(batch_size=_BATCH, columns=["ytid", *mids]):
            v = np.stack([b.column(m).to_numpy(zero_copy_only=False) for m in mids], axis=1)
            yield [str(y) for y in b.column("ytid").to_pylist()], v.astype(np.float64), "mid"
        return
    for b in f.iter_batches(batch_size=_BATCH, columns=["ytid", col]):
        rows = b.column(col).to_pylist()
        widths = {len(r) if r is not None else -1 for r in rows}
        if len(widths) > 1 or -1 in widths:
            raise _fail(
                path, f"column {col}: rows of different lengths or null ({sorted(widths)[:4]})"
            )
        v = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        yield [str(y) for y in b.column("ytid").to_pylist()], v, "index"


def _blocks_npy(path: Path, index: Path) -> Iterator[tuple[list[str], np.ndarray, str]]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise _fail(path, f"not a NumPy .npy array ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2:
        raise _fail(path, f"shape {arr.shape}: expected (clips, classes)")
    if not index.is_file():
        raise _fail(path, f"no YTID index {index} (multilabel.teacher.index)")
    with open(index, encoding="utf-8") as fh:
        ytids = [line.strip() for line in fh if line.strip()]
    if len(ytids) != arr.shape[0]:
        raise _fail(path, f"{arr.shape[0]} rows but {len(ytids)} YTIDs in {index}")
    for i in range(0, len(ytids), _BATCH):
        yield ytids[i : i + _BATCH], np.asarray(arr[i : i + _BATCH], dtype=np.float64), "index"


def _blocks_hdf5(path: Path) -> Iterator[tuple[list[str], np.ndarray, str]]:
    try:
        import h5py
    except ImportError:
        raise _fail(path, "HDF5 needs h5py: pip install 'audiosetflow[hdf5]'") from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, f"not an HDF5 file ({exc})") from None
    with f:
        yk = next((k for k in _YTID_NAMES if k in f), None)
        pk = next((k for k in TEACHER_COLUMNS if k in f), None)
        if yk is None or pk is None:
            raise _fail(
                path, f"needs datasets {_YTID_NAMES} and {TEACHER_COLUMNS}; has {list(f)[:6]}"
            )
        ys, ps = f[yk], f[pk]
        if ps.ndim != 2 or ps.shape[0] != ys.shape[0]:
            raise _fail(path, f"{pk} has shape {ps.shape} for {ys.shape[0]} YTIDs")
        for i in range(0, ys.shape[0], _BATCH):
            yield (
                [_ytid(v) for v in ys[i : i + _BATCH]],
                np.asarray(ps[i : i + _BATCH], np.float64),
                "index",
            )


class TeacherTargets:
    """The teacher's logits of a list of clips, for the selected labels.

    Attributes
    ----------
    logits : numpy.memmap of float16, shape (n_clips, n_labels)
        0 where a clip has no teacher row.
    has : ndarray of bool, shape (n_clips,)
    n_rows : int
        Rows of the file.
    """

    def __init__(self, logits: np.ndarray, has: np.ndarray, n_rows: int):
        self.logits, self.has, self.n_rows = logits, has, int(n_rows)

    @property
    def n_with(self) -> int:
        return int(self.has.sum())

    def soft_rows(self, positions: np.ndarray, temperature: float) -> np.ndarray:
        """Soft targets ``sigmoid(logit / T)`` and the has-a-row mask, (len, L + 1)."""
        z = np.asarray(self.logits[positions], dtype=np.float32) / float(temperature)
        p = 1.0 / (1.0 + np.exp(-z))
        m = self.has[positions].astype(np.float32)
        return np.concatenate([p * m[:, None], m[:, None]], axis=1)


def read_teacher(
    path: str | Path,
    *,
    ytids: Sequence[str],
    labels: Sequence[Mapping],
    outputs: str = "logits",
    index: str | Path | None = None,
    folder: str | Path,
) -> TeacherTargets:
    """The teacher's logits of the clips ``ytids`` for ``labels``.

    Parameters
    ----------
    path : path
        The teacher file (module docstring).
    ytids : sequence of str
        The clips, in the order of the rows wanted.
    labels : sequence of mapping
        ``mid`` and ``index`` (the AudioSet class index: the file's column) of each label.
    outputs : {"logits", "probabilities"}
        What the file holds (probabilities are turned into logits, clipped at 1e-7).
    index : path, optional
        YTIDs of a ``.npy`` file's rows.
    folder : path
        Where the memory-mapped logits are written.

    Raises
    ------
    audiosetflow.errors.InputError
        One line naming the file and what is wrong: unknown format, missing column, a row of
        another width, a YTID twice, a value that is not finite (or a probability outside
        [0, 1]).
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(path, "no such file")
    suffix = p.suffix.lower()
    mids = [str(lab["mid"]) for lab in labels]
    if suffix == ".parquet":
        blocks = _blocks_parquet(p, mids)
    elif suffix == ".npy":
        blocks = _blocks_npy(p, Path(index) if index else p.with_suffix(".ytids.txt"))
    elif suffix in (".h5", ".hdf5"):
        blocks = _blocks_hdf5(p)
    else:
        raise _fail(path, f"unknown format {suffix!r}: use .parquet, .npy or .h5")
    cols: list[int | None] = []
    for lab in labels:
        i = lab.get("index")
        cols.append(None if i is None else int(i))
    pos = {y: i for i, y in enumerate(map(str, ytids))}
    n, L = len(pos), len(labels)
    mm = np.lib.format.open_memmap(Path(folder) / "teacher_logits.npy", mode="w+",
                                   dtype=np.float16, shape=(max(n, 1), max(L, 1)))  # fmt: skip
    has = np.zeros(n, dtype=bool)
    seen: set[str] = set()
    n_rows = 0
    for ys, v, kind in blocks:
        if kind == "index":
            width = v.shape[1]
            bad = [c for c in cols if c is None or c >= width]
            if bad:
                raise _fail(path, f"rows of {width} classes: no column for label index {bad[0]}")
            v = v[:, cols]  # type: ignore[index]
        for r, y in enumerate(ys):
            if y in seen:
                raise _fail(path, f"YTID {y} listed twice (row {n_rows + r})")
            seen.add(y)
        if not np.isfinite(v).all():
            r = int(np.flatnonzero(~np.isfinite(v).all(axis=1))[0])
            raise _fail(path, f"row {n_rows + r} (YTID {ys[r]}): a value is not finite")
        if outputs == "probabilities":
            if (v < 0).any() or (v > 1).any():
                raise _fail(path, "probabilities outside [0, 1] (multilabel.teacher.outputs)")
            v = np.clip(v, 1e-7, 1 - 1e-7)
            v = np.log(v) - np.log1p(-v)
        rows = np.array([pos.get(y, -1) for y in ys], dtype=np.int64)
        ok = rows >= 0
        mm[rows[ok]] = np.clip(v[ok], -60000, 60000).astype(np.float16)
        has[rows[ok]] = True
        n_rows += len(ys)
    mm.flush()
    return TeacherTargets(mm, has, n_rows)


def distill_loss(n_labels: int, *, weight: float, temperature: float):
    """The student's loss on targets ``[labels (L), soft targets (L), has-teacher (1)]``.

    Per clip: ``(1 - w m) BCE(z, y) + w m BCE(z / T, s)``, ``m`` 1 where the clip has a
    teacher row (0: labels alone), ``s = sigmoid(teacher logit / T)``, each BCE averaged over
    the labels; the mean over the batch.
    """
    L, w, T = int(n_labels), float(weight), float(temperature)
    if not math.isfinite(T) or T <= 0:
        raise ValueError("temperature must be > 0")

    def loss(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits
        y, s, m = target[:, :L], target[:, L : 2 * L], target[:, 2 * L]
        hard = bce(z, y, reduction="none").mean(dim=1)
        soft = bce(z / T, s, reduction="none").mean(dim=1)
        return ((1 - w * m) * hard + w * m * soft).mean()

    return loss
