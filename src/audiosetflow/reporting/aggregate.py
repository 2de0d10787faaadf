"""The aggregate stage: the availability funnel and the download ledger over every shard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..integrity import check_shards
from ..io import write_tsv
from ..shard import STAGES, ShardTable, Status

__all__ = [
    "AVAILABILITY_COLUMNS",
    "OUTCOME_COLUMNS",
    "FAILURE_COLUMNS",
    "stage_outcomes",
    "availability",
    "failures",
    "by_source",
    "aggregate",
]

log = logging.getLogger("audiosetflow.aggregate")

#: Columns of ``availability.tsv``.
AVAILABILITY_COLUMNS = ["split", "stage", "entered", "done", "failed", "reasons"]

#: Columns of ``sources.tsv`` (:func:`by_source`).
SOURCE_COLUMNS = ["split", "source", "clips", "features"]

#: Columns of :func:`stage_outcomes`.
OUTCOME_COLUMNS = ["split", "stage", "status", "reason", "count"]
#: Columns of ``failures.tsv`` (:func:`failures`).
FAILURE_COLUMNS = OUTCOME_COLUMNS


def _short_reason(reason: str, limit: int = 80) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def stage_outcomes(tables: Sequence[ShardTable]) -> pd.DataFrame:
    """How the YTIDs that entered each stage came out of it: counts by status and reason.

    A YTID *enters* a stage when the stage before passed it (``ok``); every YTID enters
    ``download``. This is the one count that :func:`availability` and
    :func:`audiosetflow.reporting.status.status` format.

    Parameters
    ----------
    tables : sequence of ShardTable
        The tables of every shard (a stage's output or the shard's record).

    Returns
    -------
    DataFrame
        :data:`OUTCOME_COLUMNS`, one row per split, stage, status and reason (the reason as
        recorded, blanks collapsed to single spaces, the YTID written ``{ytid}``): ``count``
        YTIDs. Rows are in split
        order, then stage order (:data:`audiosetflow.shard.STAGES`); a stage that no YTID of a
        split entered has one row with status ``pending`` and ``count`` 0.
    """
    parts = []
    for table in tables:
        df = table.df
        entered = pd.Series(True, index=df.index)
        for stage in STAGES:
            status = df[f"{stage}_status"]
            # the YTID itself (in yt-dlp's messages, file names) is written {ytid}, so that the
            # same failure of many YTIDs counts as one reason
            reason = [
                " ".join(r.replace(y, "{ytid}").split())
                for r, y in zip(df.loc[entered, f"{stage}_reason"], df.index[entered], strict=True)
            ]
            parts.append(
                pd.DataFrame(
                    {
                        "split": df.loc[entered, "split"],
                        "stage": stage,
                        "status": status[entered],
                        "reason": reason,
                    }
                )
            )
            entered &= status == Status.OK.value
    if not parts:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    keys = ["split", "stage", "status", "reason"]
    out = pd.concat(parts, ignore_index=True).groupby(keys, sort=False).size()
    out = out.rename("count").reset_index()
    splits = sorted({str(s) for t in tables for s in t.df["split"].unique()})
    seen = set(zip(out["split"], out["stage"], strict=True))
    missing = [(sp, st) for sp in splits for st in STAGES if (sp, st) not in seen]
    if missing:
        zero = pd.DataFrame(missing, columns=["split", "stage"]).assign(
            status=Status.PENDING.value, reason="", count=0
        )
        out = pd.concat([out, zero], ignore_index=True)
    order = {s: i for i, s in enumerate(STAGES)}
    out = out.assign(_o=out["stage"].map(order)).sort_values(["split", "_o"], kind="stable")
    return out.reset_index(drop=True)[OUTCOME_COLUMNS]


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
        x3; transient: HTTP 503 x1"`` (YTIDs a stage has not reached count as ``pending``).

    See Also
    --------
    stage_outcomes : the counts this table is made of.
    audiosetflow.reporting.funnel.plot_funnel : the figure of this table.
    """
    rows = []
    outcomes = stage_outcomes(tables)
    for split, by_split in outcomes.groupby("split", sort=False):
        for stage, part in by_split.groupby("stage", sort=False):
            entered = int(part["count"].sum())
            done = int(part.loc[part["status"] == Status.OK.value, "count"].sum())
            if stage == STAGES[0]:
                rows.append((split, "selected", entered, entered, 0, ""))
            bad = part[(part["status"] != Status.OK.value) & (part["count"] > 0)]
            reasons: dict[str, int] = {}
            for st, reason, n in zip(bad["status"], bad["reason"], bad["count"], strict=True):
                key = f"{st}: {_short_reason(str(reason))}".rstrip(": ")
                reasons[key] = reasons.get(key, 0) + int(n)
            text = "; ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
            rows.append((split, stage, entered, done, entered - done, text))
    return pd.DataFrame(rows, columns=AVAILABILITY_COLUMNS)


def failures(tables: Sequence[ShardTable]) -> pd.DataFrame:
    """Per split, stage, status and reason: how many YTIDs stopped there.

    A YTID stops at the first stage it did not finish; those a stage has not reached yet count
    as ``pending``.

    Parameters
    ----------
    tables : sequence of ShardTable
        The final table of every shard (the features stage's).

    Returns
    -------
    DataFrame
        :data:`FAILURE_COLUMNS`, one row per (split, stage, status, reason), in split and stage
        order, then by count (largest first); ``reason`` is at most 120 characters, with the
        YTID written ``{ytid}``. Empty when every YTID finished.

    See Also
    --------
    stage_outcomes : the counts this table is made of.
    """
    out = stage_outcomes(tables)
    out = out[(out["status"] != Status.OK.value) & (out["count"] > 0)]
    out = out.assign(reason=[_short_reason(r, 120) for r in out["reason"]])
    out = out.groupby(["split", "stage", "status", "reason"], sort=False)["count"].sum()
    out = out.reset_index()
    order = {s: i for i, s in enumerate(STAGES)}
    out = out.assign(_o=out["stage"].map(order), _n=-out["count"])
    out = out.sort_values(["split", "_o", "_n", "status", "reason"], kind="stable")
    return out.reset_index(drop=True)[FAILURE_COLUMNS]


def by_source(tables: Sequence[ShardTable]) -> pd.DataFrame:
    """Per split and source: the clips taken from it and how many of them have features.

    Parameters
    ----------
    tables : sequence of ShardTable
        The final table of every shard.

    Returns
    -------
    DataFrame
        :data:`SOURCE_COLUMNS`: ``source`` as the ledger writes it (``youtube``,
        ``tar:eval03.tar``, ...; ``none`` for YTIDs no source gave), ``clips`` the YTIDs the
        download stage got from it (for ``none``: the YTIDs it did not get), ``features``
        those of them with features. Sorted by split, then by clips (most first).
    """
    parts = [t.df[["split", "source", "download_status", "features_status"]] for t in tables]
    if not parts:
        return pd.DataFrame(columns=SOURCE_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    got = df["download_status"] == Status.OK.value
    df = df.assign(
        source=df["source"].where(got & (df["source"] != ""), "none"),
        features=df["features_status"] == Status.OK.value,
    )
    out = df.groupby(["split", "source"]).agg(
        clips=("source", "size"), features=("features", "sum")
    )
    out = out.reset_index().astype({"clips": int, "features": int})
    out = out.sort_values(["split", "clips", "source"], ascending=[True, False, True])
    return out.reset_index(drop=True)[SOURCE_COLUMNS]


def aggregate(
    *,
    tables: Sequence[str | Path],
    features: Sequence[str | Path],
    availability_out: str | Path,
    ledger_out: str | Path,
    failures_out: str | Path | None = None,
    sources_out: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Write ``availability.tsv``, ``download_ledger.tsv``, ``failures.tsv`` and
    ``sources.tsv`` over every shard, and check that each split's feature shards open as one
    pyarrow dataset with one schema.

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
    sources_out : path, optional
        The clips by source (:func:`by_source`).
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
    check_shards(features)  # each as its shard's record says, or one line and no report
    for folder, files in by_dir.items():
        dset = ds.dataset(files, format="parquet")
        logger.info("%s: %d shards, %d rows, one schema", folder, len(files), dset.count_rows())
    ledgers = [t.ledger() for t in shard_tables]
    write_tsv(ledger_out, pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame())
    if failures_out is not None:
        write_tsv(failures_out, failures(shard_tables))
    if sources_out is not None:
        src = by_source(shard_tables)
        write_tsv(sources_out, src)
        for row in src.itertuples(index=False):
            logger.info("%s from %s: %d clips, %d with features", *row)
    write_tsv(availability_out, table)
    for row in table.itertuples(index=False):
        logger.info("%s %-9s entered=%d done=%d failed=%d %s", *row)
    return table
