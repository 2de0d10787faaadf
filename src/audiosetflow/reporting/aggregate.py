"""The aggregate stage: the availability funnel and the download ledger over every shard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..io import write_tsv
from ..shard import STAGES, ShardTable, Status

__all__ = ["AVAILABILITY_COLUMNS", "FAILURE_COLUMNS", "availability", "failures", "aggregate"]

log = logging.getLogger("audiosetflow.aggregate")

#: Columns of ``availability.tsv``.
AVAILABILITY_COLUMNS = ["split", "stage", "entered", "done", "failed", "reasons"]
#: Columns of ``failures.tsv``.
FAILURE_COLUMNS = ["split", "stage", "status", "reason", "count"]


def _short_reason(reason: str, limit: int = 80, ytid: str = "") -> str:
    """One line of at most ``limit`` characters; the YTID itself (in yt-dlp's messages and
    file names) is written ``{ytid}``, so that the same failure of many YTIDs counts as one
    reason."""
    reason = " ".join(reason.split())
    if ytid and len(ytid) > 3:
        reason = reason.replace(ytid, "{ytid}")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def availability(tables: Sequence[ShardTable]) -> pd.DataFrame:
    """Per split and stage: how many YTIDs entered, how many are done, how many failed and why.

    Parameters
    ----------
    tables : sequence of ShardTable
        The final table of every shard (the features stage's).

    Returns
    -------
    DataFrame
        :data:`AVAILABILITY_COLUMNS`, one row per split and stage (``selected`` first, then
        :data:`audiosetflow.shard.STAGES`); ``entered`` counts the YTIDs the stage before
        passed, ``failed = entered - done``, and ``reasons`` reads like ``"permanent: HTTP 404
        x3; transient: HTTP 503 x1"`` (YTIDs a stage has not reached count as ``pending``; a
        YTID inside a reason is written ``{ytid}``).

    See Also
    --------
    audiosetflow.reporting.funnel.plot_funnel : the figure of this table.
    """
    recs: dict[tuple[str, str], dict] = {}
    for table in tables:
        df = table.df
        for split, part in df.groupby("split", sort=False):
            sel = recs.setdefault((str(split), "selected"), _rec())
            sel["entered"] += len(part)
            sel["done"] += len(part)
            entered = pd.Series(True, index=part.index)
            for stage in STAGES:
                status = part[f"{stage}_status"]
                r = recs.setdefault((str(split), stage), _rec())
                r["entered"] += int(entered.sum())
                ok = entered & (status == Status.OK.value)
                r["done"] += int(ok.sum())
                bad = entered & ~ok
                for st, reason, ytid in zip(
                    status[bad],
                    part.loc[bad, f"{stage}_reason"],
                    part.loc[bad, "ytid"],
                    strict=True,
                ):
                    key = f"{st}: {_short_reason(str(reason), ytid=str(ytid))}".rstrip(": ")
                    r["reasons"][key] = r["reasons"].get(key, 0) + 1
                entered = ok
    order = {s: i for i, s in enumerate(("selected", *STAGES))}
    rows = []
    for (split, stage), r in sorted(recs.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        reasons = "; ".join(f"{k} x{v}" for k, v in sorted(r["reasons"].items()))
        rows.append((split, stage, r["entered"], r["done"], r["entered"] - r["done"], reasons))
    return pd.DataFrame(rows, columns=AVAILABILITY_COLUMNS)


def failures(tables: Sequence[ShardTable]) -> pd.DataFrame:
    """Per split, stage, status and reason: how many YTIDs stopped there.

    A YTID stops at the first stage it did not finish (later stages are not counted again,
    unlike the ``pending`` YTIDs of :func:`availability`'s later stages, which never entered).

    Parameters
    ----------
    tables : sequence of ShardTable
        The final table of every shard (the features stage's).

    Returns
    -------
    DataFrame
        :data:`FAILURE_COLUMNS`, one row per (split, stage, status, reason), in stage order,
        then by count (largest first); ``reason`` is whitespace-collapsed, at most 120
        characters, and has the YTID replaced by ``{ytid}``. Empty when every YTID finished.
    """
    counts: dict[tuple[str, str, str, str], int] = {}
    for table in tables:
        df = table.df
        for split, part in df.groupby("split", sort=False):
            entered = pd.Series(True, index=part.index)
            for stage in STAGES:
                status = part[f"{stage}_status"]
                ok = entered & (status == Status.OK.value)
                bad = entered & ~ok
                for st, reason, ytid in zip(
                    status[bad],
                    part.loc[bad, f"{stage}_reason"],
                    part.loc[bad, "ytid"],
                    strict=True,
                ):
                    key = (str(split), stage, str(st), _short_reason(str(reason), 120, str(ytid)))
                    counts[key] = counts.get(key, 0) + 1
                entered = ok
    order = {s: i for i, s in enumerate(STAGES)}
    rows = sorted(counts.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], -kv[1], kv[0][2:]))
    return pd.DataFrame([(*k, n) for k, n in rows], columns=FAILURE_COLUMNS)


def _rec() -> dict:
    return {"entered": 0, "done": 0, "reasons": {}}


def aggregate(
    *,
    tables: Sequence[str | Path],
    features: Sequence[str | Path],
    availability_out: str | Path,
    ledger_out: str | Path,
    failures_out: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Write ``availability.tsv``, ``download_ledger.tsv`` and ``failures.tsv`` over every
    shard, and check that each split's feature shards open as one pyarrow dataset with one
    schema.

    Parameters
    ----------
    tables : sequence of path
        The final shard table of every shard (the features rule's ``features.tsv``).
    features : sequence of path
        The Parquet shards.
    availability_out, ledger_out : path
        The two reports (:func:`availability`; the ledger has
        :data:`audiosetflow.shard.LEDGER_COLUMNS`).
    failures_out : path, optional
        The failures by stage and reason (:func:`failures`).
    logger : logging.Logger, optional

    Returns
    -------
    DataFrame
        The availability table.
    """
    import pyarrow.dataset as ds

    logger = logger or log
    shard_tables = [ShardTable.read(p) for p in tables]
    table = availability(shard_tables)
    by_dir: dict[Path, list[str]] = {}
    for f in features:
        by_dir.setdefault(Path(f).parent, []).append(str(f))
    for folder, files in by_dir.items():
        dset = ds.dataset(files, format="parquet")
        logger.info("%s: %d shards, %d rows, one schema", folder, len(files), dset.count_rows())
    ledgers = [t.ledger() for t in shard_tables]
    write_tsv(ledger_out, pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame())
    if failures_out is not None:
        write_tsv(failures_out, failures(shard_tables))
    write_tsv(availability_out, table)
    for row in table.itertuples(index=False):
        logger.info("%s %-9s entered=%d done=%d failed=%d %s", *row)
    return table
