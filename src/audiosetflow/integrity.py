"""Features shards checked against their shard's record before anything uses them.

When the features stage writes a shard (``features/{split}/shard-N.parquet``) it also writes
the shard's *seal* beside the shard's record (``shards/{split}/shard-N/features.seal.json``,
:attr:`audiosetflow.shard.ShardLayout.seal`): the file's rows, bytes and SHA-256, computed
from the temporary file before it is renamed into place (so a seal never describes a
half-written file; a shard without a seal is one a killed job left, or one of older code, and
is checked by its rows against the record instead).

Two checks use it, both through :func:`problem`:

* :func:`check_shards`, called by every reader of the shards (:func:`audiosetflow.audio.
  features.shard_files` and the loaders built on it: datasets, training, the multi-label
  model, the aggregation): rows, bytes and checksum. A damaged shard stops the job with one
  line naming the file, what is wrong and what to do (:class:`DamagedShardError`): no job
  ever trains or counts on fewer clips than the record says.
* :func:`set_aside_damaged`, called when the workflow is parsed: a shard whose size differs
  from its seal (a truncated copy, a shard rewritten with fewer rows) is renamed to
  ``*.parquet.damaged`` with one line saying so, so that Snakemake sees the features job's
  output missing and a plain rerun (rule ``all`` lists every features shard) rebuilds that
  shard and what depends on it. Nothing else is deleted. A shard changed without changing its
  size is left to the readers' checksum (Snakemake touches outputs after a job, so the
  modification time cannot tell, and hashing every shard at every parse costs too much).

:func:`mark_damaged` makes ``audiosetflow status`` count the clips of a damaged or missing
shard as not done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import InputError, machine_error
from .io import atomic_write_text

__all__ = [
    "Seal",
    "DamagedShardError",
    "file_sha256",
    "write_seal",
    "read_seal",
    "problem",
    "check_shards",
    "set_aside_damaged",
    "mark_damaged",
]

log = logging.getLogger("audiosetflow.integrity")

_BLOCK = 1 << 20
#: The suffix a damaged shard is renamed with (:func:`set_aside_damaged`).
DAMAGED_SUFFIX = ".damaged"


@dataclass(frozen=True)
class Seal:
    """What the features stage wrote: the shard's file name, rows, bytes and SHA-256."""

    file: str
    rows: int
    bytes: int
    sha256: str


class DamagedShardError(InputError):
    """A features shard differs from its shard's record; the message is one line that names
    the file, what differs and what to do."""


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1-MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _shard_of(path: str | Path):
    from .shard import Layout

    try:
        return Layout.locate(path)
    except ValueError:
        return None


def write_seal(written: str | Path, *, final: str | Path, rows: int) -> Seal | None:
    """Write the seal of a features shard: call it on the finished temporary file ``written``
    before it is renamed to ``final`` (a shard of the results layout; else nothing is
    written and ``None`` returned)."""
    shard = _shard_of(final)
    if shard is None:
        return None
    st = os.stat(written)
    seal = Seal(Path(final).name, int(rows), st.st_size, file_sha256(written))
    shard.seal.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(shard.seal, json.dumps(asdict(seal), indent=1) + "\n")
    return seal


def read_seal(path: str | Path) -> Seal | None:
    """The seal of the features shard ``path``, or ``None`` (no seal, or not a shard of the
    results layout). An unreadable seal reads as none."""
    shard = _shard_of(path)
    if shard is None:
        return None
    try:
        return Seal(**json.loads(shard.seal.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        if (m := machine_error(exc, str(shard.seal))) is not None:
            raise m from exc
        log.warning("%s: unreadable seal, ignored (%s)", shard.seal, exc)
        return None


def _rows(path: Path) -> int | str:
    """The rows a Parquet file's footer says it has, or why it cannot be read."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        if (m := machine_error(exc, str(path))) is not None:
            raise m from exc
        return f"not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else exc})"


def _record_rows(path: str | Path) -> int | None:
    shard = _shard_of(path)
    if shard is None:
        return None
    from .shard import ShardTable

    table = ShardTable.read_record(shard)
    return None if table is None else len(table)


def problem(path: str | Path, *, full: bool = True) -> str | None:
    """What is wrong with the features shard ``path`` compared with its shard's record, in a
    few words, or ``None`` when nothing is (or there is nothing to compare it with: a file
    outside the results layout, a shard with neither seal nor record, or without a seal and
    not there). A shard with a seal that is gone is ``missing``.

    Parameters
    ----------
    path : str or Path
    full : bool
        Compare the SHA-256 too. Without it only the size (and the rows where the size
        differs) are compared: cheap enough to run over every shard when the workflow is
        parsed.
    """
    p = Path(path)
    seal = read_seal(p)
    if seal is None:  # only the rows of a file that is there can be compared
        want = _record_rows(p) if p.exists() else None
        if want is None:
            return None
        rows = _rows(p)
        if isinstance(rows, str):
            return rows
        return None if rows == want else f"{rows} rows, the shard record says {want}"
    try:
        st = p.stat()
    except FileNotFoundError:
        return f"missing; the shard record says {seal.rows} rows"
    if st.st_size != seal.bytes:
        rows = _rows(p)
        if isinstance(rows, str):
            return f"{rows}, {st.st_size} bytes; the shard record says {seal.bytes} bytes"
        if rows != seal.rows:
            return f"{rows} rows, the shard record says {seal.rows}"
        return f"{st.st_size} bytes, the shard record says {seal.bytes}"
    if not full:
        return None
    if file_sha256(p) != seal.sha256:
        rows = _rows(p)
        if isinstance(rows, int) and rows != seal.rows:
            return f"{rows} rows, the shard record says {seal.rows}"
        return "its SHA-256 differs from the shard record's (the file was changed)"
    return None


def check_shards(files: Iterable[str | Path]) -> None:
    """Check every features shard against its shard's record before it is read (rows, bytes
    and SHA-256; see :func:`problem`).

    Raises
    ------
    DamagedShardError
        At the first damaged shard, with one line, e.g. ``results/features/train/
        shard-0003.parquet: 120 rows, the shard record says 250: the features shard is
        damaged; delete it and rerun (the features rule rebuilds it)``.
    """
    for f in files:
        what = problem(f)
        if what is not None:
            raise DamagedShardError(
                f"{f}: {what}: the features shard is damaged; delete it and rerun (the "
                "features rule rebuilds it)"
            )


def set_aside_damaged(files: Sequence[str | Path]) -> list[str]:
    """Rename every damaged shard among ``files`` to ``{name}.damaged`` (the cheap check of
    :func:`problem`), so that Snakemake reruns its features job; return one line per shard
    set aside (for the caller to print)."""
    lines = []
    for f in files:
        p = Path(f)
        if not p.exists() or read_seal(p) is None:
            continue  # not written yet, or nothing to compare it with
        what = problem(p, full=False)
        if what is None:
            continue
        aside = p.with_name(p.name + DAMAGED_SUFFIX)
        os.replace(p, aside)
        lines.append(
            f"{p}: {what}: the features shard is damaged; moved to {aside.name}, this run "
            "rebuilds it"
        )
    return lines


def mark_damaged(table, shard) -> str | None:
    """Count the clips of a shard whose features shard is cut, shrunk or missing (the cheap
    check of :func:`problem`: its size against the seal) as not done:
    their ``features`` status becomes ``transient`` with the reason (a :class:`~audiosetflow.
    shard.ShardTable` ``table`` of :class:`~audiosetflow.shard.ShardLayout` ``shard``, changed
    in place, not written). Returns the reason, or ``None`` when the shard is sound."""
    from .shard import Status

    done = table.df.index[table.is_("features", Status.OK)]
    if not len(done):
        return None
    what = problem(shard.parquet, full=False)  # no checksum: status stays cheap
    if what is None:
        return None
    reason = f"features shard damaged ({what}): rerun"
    for y in done:
        table.set("features", y, Status.TRANSIENT, reason)
    return reason
