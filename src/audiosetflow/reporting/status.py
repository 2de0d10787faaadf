"""Where a run stands, read from the shard records alone (no Snakemake): per split and stage how
many clips are done, failed and left (:func:`status`), why they failed
(:func:`failure_reasons`), and the failed YTIDs one row each (:func:`failures`).

The records are the shards' ``table.tsv`` files (:attr:`audiosetflow.shard.ShardLayout.record`),
the latest state of every YTID, written by every stage and kept across reruns. The counting is
:func:`audiosetflow.reporting.aggregate.stage_outcomes`, the one ``availability.tsv`` is made of.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..integrity import mark_damaged
from ..progress import ProgressBar
from ..shard import FAILED, STAGES, Layout, ShardTable, Status
from .aggregate import _short_reason, stage_outcomes

__all__ = [
    "STATUS_COLUMNS",
    "REASON_COLUMNS",
    "FAILURE_COLUMNS",
    "NoRecordsError",
    "record_paths",
    "read_records",
    "status",
    "failure_reasons",
    "failures",
    "format_table",
    "format_status",
    "to_json",
]

#: Columns of :func:`status`.
STATUS_COLUMNS = [
    "split",
    "stage",
    "entered",
    "done",
    "failed",
    *(s.value for s in FAILED),
    "left",
    "reasons",
]

#: Columns of :func:`failure_reasons`.
REASON_COLUMNS = ["split", "stage", "status", "reason", "count"]

#: Columns of :func:`failures`.
FAILURE_COLUMNS = ["ytid", "split", "shard", "stage", "status", "reason", "attempts", "runs"]

_FAILED = [s.value for s in FAILED]


class NoRecordsError(ValueError):
    """The results folder holds no shard record: the workflow has not run there yet."""


def record_paths(results: str | Path = "results") -> list[Path]:
    """The shard records below ``results``, sorted by split and shard."""
    layout = Layout(glob.escape(str(results)))
    pattern = layout.pattern("record").format(split="*", shard="[0-9]*")
    found = []
    for p in glob.glob(pattern):
        try:
            shard = Layout.locate(p)
        except ValueError:
            continue
        found.append((shard.split, shard.shard, Path(p)))
    return [p for _, _, p in sorted(found)]


def read_records(results: str | Path = "results", *, progress: bool = False) -> list[ShardTable]:
    """Read every shard record below ``results`` (``progress``: with a progress bar on stderr
    when it is a terminal).

    Raises
    ------
    NoRecordsError
        When there is none (the message says to run Snakemake first).
    ValueError
        When a record is not a shard table (the message names the file).
    """
    paths = record_paths(results)
    if not paths:
        where = "no such folder" if not Path(results).is_dir() else "no shard records"
        raise NoRecordsError(
            f"{results}: {where} (shards/{{split}}/shard-N/table.tsv); "
            "run snakemake first, or give the results folder with --results"
        )
    tables = []
    with ProgressBar(
        len(paths), "reading shard records", unit="shards", enabled=None if progress else False
    ) as bar:
        for p in paths:
            tables.append(ShardTable.read(p))
            mark_damaged(tables[-1], Layout.locate(p))  # a damaged features shard: not done
            bar.update()
    return tables


def _tables(source: str | Path | Sequence[ShardTable]) -> list[ShardTable]:
    if isinstance(source, (str, Path)):
        return read_records(source)
    return list(source)


def _failed_outcomes(outcomes: pd.DataFrame) -> pd.DataFrame:
    bad = outcomes[outcomes["status"].isin(_FAILED) & (outcomes["count"] > 0)]
    return bad.assign(reason=bad["reason"].map(_short_reason))


def status(source: str | Path | Sequence[ShardTable] = "results") -> pd.DataFrame:
    """Per split and stage: how many clips entered the stage, are done, failed, and are left.

    Parameters
    ----------
    source : path or sequence of ShardTable
        A results folder (its shard records are read with :func:`read_records`) or the tables.

    Returns
    -------
    DataFrame
        :data:`STATUS_COLUMNS`, one row per split and stage (splits sorted, stages in
        :data:`audiosetflow.shard.STAGES` order):

        ``entered``
            YTIDs the stage works on: those the stage before finished (every YTID enters
            ``download``); ``entered = done + failed + left``.
        ``done``
            finished (``ok``).
        ``failed``
            ``permanent + auth + transient``, each also a column of its own.
        ``left``
            entered and not tried yet (``pending``). YTIDs still left at an earlier stage are
            not counted again in the later ones.
        ``reasons``
            the failures by class and reason, most frequent first, e.g. ``"permanent: HTTP
            404 x3; transient: HTTP 503 x1"`` (reasons cut to 80 characters).

    Raises
    ------
    NoRecordsError, ValueError
        See :func:`read_records`.
    """
    outcomes = stage_outcomes(_tables(source))
    rows = []
    for (split, stage), part in outcomes.groupby(["split", "stage"], sort=False):
        n = part.groupby("status")["count"].sum()
        by_class = {s: int(n.get(s, 0)) for s in _FAILED}
        reasons = failure_reasons(outcomes=part)
        text = "; ".join(
            f"{st}: {r}".rstrip(": ") + f" x{c}"
            for st, r, c in zip(reasons["status"], reasons["reason"], reasons["count"], strict=True)
        )
        rows.append(
            {
                "split": split,
                "stage": stage,
                "entered": int(part["count"].sum()),
                "done": int(n.get(Status.OK.value, 0)),
                "failed": sum(by_class.values()),
                **by_class,
                "left": int(n.get(Status.PENDING.value, 0)),
                "reasons": text,
            }
        )
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def failure_reasons(
    source: str | Path | Sequence[ShardTable] = "results", *, outcomes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The failures per split, stage, class and reason.

    Parameters
    ----------
    source : path or sequence of ShardTable
        As for :func:`status`.
    outcomes : DataFrame, optional
        :func:`audiosetflow.reporting.aggregate.stage_outcomes` already computed (then
        ``source`` is not read).

    Returns
    -------
    DataFrame
        :data:`REASON_COLUMNS`: ``count`` YTIDs failed with ``status`` (``permanent``,
        ``auth`` or ``transient``) and ``reason`` (cut to 80 characters) at ``stage``; per
        split and stage the most frequent first.
    """
    if outcomes is None:
        outcomes = stage_outcomes(_tables(source))
    bad = _failed_outcomes(outcomes)
    bad = bad.groupby(["split", "stage", "status", "reason"], sort=False)["count"].sum()
    bad = bad.reset_index()
    order = {s: i for i, s in enumerate(STAGES)}
    bad = bad.assign(_o=bad["stage"].map(order), _c=-bad["count"])
    bad = bad.sort_values(["split", "_o", "_c", "status", "reason"], kind="stable")
    return bad.reset_index(drop=True)[REASON_COLUMNS]


def failures(
    source: str | Path | Sequence[ShardTable] = "results",
    *,
    status: str | Status | None = None,
    reason: str | None = None,
    stage: str | None = None,
) -> pd.DataFrame:
    """The failed YTIDs, one row each, at the first stage that did not pass them.

    Parameters
    ----------
    source : path or sequence of ShardTable
        As for :func:`status`.
    status : {"permanent", "auth", "transient"}, optional
        Only this failure class.
    reason : str, optional
        Only reasons that contain this text (case-insensitive).
    stage : str, optional
        Only failures at this stage (one of :data:`audiosetflow.shard.STAGES`).

    Returns
    -------
    DataFrame
        :data:`FAILURE_COLUMNS`: ``ytid``, ``split``, ``shard``, the ``stage`` it failed at,
        ``status`` and ``reason`` there, and the download's ``attempts`` (yt-dlp calls) and
        ``runs`` (runs that tried it); in split, shard and manifest order.
    """
    if status is not None and str(status) not in _FAILED:
        raise ValueError(f"status must be one of {', '.join(_FAILED)}, not {status!r}")
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    parts = []
    for table in _tables(source):
        df = table.df
        position = pd.Series(range(len(df)), index=df.index)
        entered = pd.Series(True, index=df.index)
        for st in STAGES:
            s = df[f"{st}_status"]
            bad = entered & s.isin(_FAILED)
            if bad.any():
                part = df.loc[bad, ["ytid", "split", "shard", "attempts", "runs"]].assign(
                    stage=st, status=s[bad], reason=df.loc[bad, f"{st}_reason"], _p=position[bad]
                )
                parts.append(part)
            entered &= s == Status.OK.value
    if not parts:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    out = pd.concat(parts)
    out = out.sort_values(["split", "shard", "_p"], kind="stable")
    if status is not None:
        out = out[out["status"] == str(status)]
    if stage is not None:
        out = out[out["stage"] == stage]
    if reason:
        out = out[out["reason"].str.contains(reason, case=False, regex=False)]
    return out.reset_index(drop=True)[FAILURE_COLUMNS]


# --- output ---------------------------------------------------------------------------------


def format_table(df: pd.DataFrame, *, columns: Sequence[str] | None = None) -> str:
    """An aligned plain-text table: a header, then one line per row; numbers right-aligned."""
    cols = list(columns or df.columns)
    cells = [[str(c) for c in cols]]
    for row in df[cols].itertuples(index=False):
        cells.append(["" if _missing(v) else str(v) for v in row])
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in cols]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = []
    for r in cells:
        out = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric, strict=True)
        ]
        lines.append("  ".join(out).rstrip())
    return "\n".join(lines)


def format_status(
    results: str | Path,
    tables: Sequence[ShardTable],
    table: pd.DataFrame | None = None,
    *,
    top: int = 10,
) -> str:
    """``audiosetflow status`` for people: what was read, the :func:`status` table (without the
    reasons) and the ``top`` most frequent failure reasons of each split and stage."""
    table = status(tables) if table is None else table
    shards: dict[str, list[int]] = {}
    for t in tables:
        for split, n in t.df.groupby("split", sort=True).size().items():
            shards.setdefault(str(split), []).append(int(n))
    per_split = "; ".join(
        f"{split} {len(ns)} shard{'s' * (len(ns) != 1)}, {sum(ns)} clips"
        for split, ns in sorted(shards.items())
    )
    lines = [f"{results}: {len(tables)} shard records ({per_split})", ""]
    lines.append(format_table(table, columns=[c for c in STATUS_COLUMNS if c != "reasons"]))
    reasons = failure_reasons(tables)
    lines.append("")
    if reasons.empty:
        lines.append("no failures")
    else:
        shown = reasons.groupby(["split", "stage"], sort=False).head(top)
        cut = len(reasons) - len(shown)
        lines.append("failures by reason:")
        lines.append(format_table(shown, columns=["split", "stage", "status", "count", "reason"]))
        if cut:
            lines.append(f"... and {cut} more reasons (--format tsv lists them all)")
        lines.append(f"the failed YTIDs: {PROG_HINT} --results {results}")
    return "\n".join(lines)


PROG_HINT = "audiosetflow failures"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def to_json(df: pd.DataFrame) -> str:
    """The rows of ``df`` as a JSON list of objects (NaN as ``null``)."""
    rows = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
    return json.dumps(rows, indent=1, default=_json_default)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
