"""Where the time goes: Snakemake's ``benchmark:`` files summed per rule, as a table and a plot.

Every rule writes a benchmark file below ``results/benchmarks/``: ``{rule}.tsv`` for a rule with
one job, ``{rule}/.../{job}.tsv`` for a rule with one job per shard or label. Each file holds
one row per repetition with Snakemake's columns (``s``, ``max_rss`` in MB, ``cpu_time`` in
seconds, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_tsv

__all__ = [
    "BENCHMARK_COLUMNS",
    "rule_of",
    "read_benchmarks",
    "summarize_benchmarks",
    "plot_benchmarks",
    "run_benchmarks",
]

log = logging.getLogger("audiosetflow.benchmarks")

#: Columns of ``benchmarks.tsv`` (one row per rule).
BENCHMARK_COLUMNS = [
    "rule",
    "jobs",
    "wall_s",
    "cpu_s",
    "max_wall_s",
    "max_rss_mb",
    "share_wall",
]


def rule_of(path: str | Path, root: str | Path) -> str:
    """The rule a benchmark file belongs to: its first path component below ``root``
    (``root/download/train/shard-0001.tsv`` -> ``download``, ``root/aggregate.tsv`` ->
    ``aggregate``)."""
    rel = Path(path).relative_to(Path(root))
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _number(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x if np.isfinite(x) else float("nan")


def _mean(df: pd.DataFrame, name: str) -> float:
    """Mean of a column's measured values (NaN when the column is missing or all NA)."""
    if name not in df.columns:
        return float("nan")
    vals = [x for x in (_number(v) for v in df[name]) if not np.isnan(x)]
    return float(np.mean(vals)) if vals else float("nan")


def read_benchmarks(files: Sequence[str | Path], root: str | Path) -> pd.DataFrame:
    """One row per job: ``rule, job, wall_s, cpu_s, max_rss_mb``.

    A file with several rows (``benchmark: repeat(...)``) counts as the mean of its rows.
    Missing values (``NA``: Snakemake could not measure a very short job) are NaN; a file that
    cannot be read is skipped with a warning.

    Parameters
    ----------
    files : sequence of path
        Benchmark files (Snakemake's TSV format).
    root : path
        The benchmarks folder; the rule is the first path component below it
        (:func:`rule_of`).
    """
    rows = []
    for f in files:
        try:
            df = pd.read_csv(f, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
            log.warning("%s: not a benchmark file (%s), skipped", f, exc)
            continue
        if df.empty:
            continue
        rel = Path(f).relative_to(Path(root))
        rows.append(
            {
                "rule": rule_of(f, root),
                "job": str(rel.with_suffix("")),
                "wall_s": _mean(df, "s"),
                "cpu_s": _mean(df, "cpu_time"),
                "max_rss_mb": _mean(df, "max_rss"),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "max_rss_mb"])


def summarize_benchmarks(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, wall and CPU time summed over its jobs (shards, labels), the longest
    job, and the peak memory of any one job.

    Parameters
    ----------
    jobs : DataFrame
        :func:`read_benchmarks`.

    Returns
    -------
    DataFrame
        :data:`BENCHMARK_COLUMNS`, the rule with the most wall time first. ``wall_s`` and
        ``cpu_s`` are sums (seconds), ``max_wall_s`` the longest job, ``max_rss_mb`` the
        largest resident set size of one job (MB), ``share_wall`` the rule's fraction of all
        jobs' wall time. Jobs run in parallel, so the sum of ``wall_s`` exceeds the run's
        elapsed time when several cores were used.
    """
    if jobs.empty:
        return pd.DataFrame(columns=BENCHMARK_COLUMNS)
    g = jobs.groupby("rule", sort=False)
    out = pd.DataFrame(
        {
            "jobs": g.size(),
            "wall_s": g["wall_s"].sum(min_count=1),
            "cpu_s": g["cpu_s"].sum(min_count=1),
            "max_wall_s": g["wall_s"].max(),
            "max_rss_mb": g["max_rss_mb"].max(),
        }
    ).reset_index()
    total = out["wall_s"].sum()
    out["share_wall"] = out["wall_s"] / total if total > 0 else np.nan
    out = out.sort_values(["wall_s", "rule"], ascending=[False, True], na_position="last")
    return out[BENCHMARK_COLUMNS].reset_index(drop=True)


def plot_benchmarks(summary: pd.DataFrame, path: str | Path) -> None:
    """Horizontal bars per rule: wall time and CPU time (summed over the rule's jobs) and the
    peak memory of one job; the rule with the most wall time on top. Saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    df = summary.iloc[::-1]
    n = max(len(df), 1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 1.2 + 0.32 * n), sharey=True)
    y = np.arange(len(df))
    panels = (
        ("wall_s", "wall time, summed over jobs (s)", "#3b7dd8"),
        ("cpu_s", "CPU time, summed over jobs (s)", "#e08e29"),
        ("max_rss_mb", "peak memory of one job (MB)", "#5a9e4b"),
    )
    for ax, (col, xlabel, color) in zip(axes, panels, strict=True):
        vals = df[col].to_numpy(dtype=float) if len(df) else np.zeros(0)
        ax.barh(y, np.nan_to_num(vals), color=color)
        top = np.nanmax(vals) if len(vals) and np.isfinite(vals).any() else 1.0
        for yi, v in zip(y, vals, strict=True):
            if np.isfinite(v):
                ax.text(v + 0.01 * top, yi, f"{v:,.1f}", va="center", fontsize=7)
        ax.set_xlim(0, top * 1.22 if top > 0 else 1)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{r} ({j})" for r, j in zip(df["rule"], df["jobs"], strict=True)]
    axes[0].set_yticks(y, labels)
    axes[0].set_ylabel("rule (jobs)")
    fig.suptitle("Where the time goes: every rule's jobs")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_benchmarks(
    *,
    files: Sequence[str | Path],
    root: str | Path,
    table_out: str | Path,
    plot_out: str | Path,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Read every benchmark file, write the per-rule table (TSV) and its plot (PNG).

    Returns
    -------
    DataFrame
        :func:`summarize_benchmarks`.
    """
    logger = logger or log
    summary = summarize_benchmarks(read_benchmarks(files, root))
    write_tsv(table_out, summary.round(3))
    plot_benchmarks(summary, plot_out)
    for row in summary.itertuples(index=False):
        logger.info(
            "%-16s jobs=%d wall=%.1f s cpu=%.1f s max_rss=%.0f MB",
            row.rule,
            row.jobs,
            row.wall_s,
            row.cpu_s,
            row.max_rss_mb,
        )
    return summary
