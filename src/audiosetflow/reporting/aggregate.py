"""The aggregate stage: the availability funnel and the download ledger over every shard."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..io import write_tsv
from ..shard import STAGES, ShardTable, Status

__all__ = ["AVAILABILITY_COLUMNS", "availability", "aggregate"]

log = logging.getLogger("audiosetflow.aggregate")

#: Columns of ``availability.tsv``.
AVAILABILITY_COLUMNS = ["split", "stage", "entered", "done", "failed", "reasons"]


def _short_reason(reason: str, limit: int = 80) -> str:
    reason = " ".join(reason.split())
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
        x3; transient: HTTP 503 x1"`` (YTIDs a stage has not reached count as ``pending``).

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
                for st, reason in zip(status[bad], part.loc[bad, f"{stage}_reason"], strict=True):
                    key = f"{st}: {_short_reason(str(reason))}".rstrip(": ")
                    r["reasons"][key] = r["reasons"].get(key, 0) + 1
                entered = ok
    order = {s: i for i, s in enumerate(("selected", *STAGES))}
    rows = []
    for (split, stage), r in sorted(recs.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        reasons = "; ".join(f"{k} x{v}" for k, v in sorted(r["reasons"].items()))
        rows.append((split, stage, r["entered"], r["done"], r["entered"] - r["done"], reasons))
    return pd.DataFrame(rows, columns=AVAILABILITY_COLUMNS)


def _rec() -> dict:
    return {"entered": 0, "done": 0, "reasons": {}}


def aggregate(
    *,
    tables: Sequence[str | Path],
    features: Sequence[str | Path],
    availability_out: str | Path,
    ledger_out: str | Path,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Write ``availability.tsv`` and ``download_ledger.tsv`` over every shard, and check that
    each split's feature shards open as one pyarrow dataset with one schema.

    Parameters
    ----------
    tables : sequence of path
        The final shard table of every shard (the features rule's ``features.tsv``).
    features : sequence of path
        The Parquet shards.
    availability_out, ledger_out : path
        The two reports (:func:`availability`; the ledger has
        :data:`audiosetflow.shard.LEDGER_COLUMNS`).
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
    write_tsv(availability_out, table)
    for row in table.itertuples(index=False):
        logger.info("%s %-9s entered=%d done=%d failed=%d %s", *row)
    return table
