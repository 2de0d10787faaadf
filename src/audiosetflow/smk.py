"""The only Snakemake-aware code of the package: parameter strings, the retry token, how a
script adapter ends a job, and where the per-rule conda environment finds the project.

Snakemake reruns a job when its parameters change. Two parameters of the download rule use
that: the shard's segments (:func:`manifest_param`: a change of the selection reruns exactly
the shards it touches) and the retry token (:func:`write_retry_token`: a plain rerun runs again
exactly the shards that left YTIDs to retry).

Snakemake's HTML report (``--report``) shows the parameters of every job whose output is in
the report, as ``str(value)``, inside a ``<script>`` block and without escaping: a display
name such as ``Dog</script><img src=x onerror=...>`` in a parameter would be live markup in
``report.html``. Every parameter of such a rule that carries names or config therefore goes
through :func:`report_param`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError, machine_error
from .io import atomic_write_text
from .shard import MANIFEST_COLUMNS, ShardTable

__all__ = [
    "manifest_param",
    "manifest_from_param",
    "read_retry_token",
    "next_retry_token",
    "write_retry_token",
    "stage_job",
    "DOWNLOAD_PACING_KEYS",
    "PROJECT_VARIABLE",
    "export_project",
    "report_param",
    "ReportDict",
    "ReportList",
]

#: The environment variable that names the project folder to the post-deploy script of the
#: per-rule conda environment (``workflow/envs/audiosetflow.post-deploy.sh``).
PROJECT_VARIABLE = "AUDIOSETFLOW_PROJECT"

#: ``download`` settings that only pace the requests: not in the download rule's params (a
#: change does not rerun the shards); the adapter reads them from the config.
DOWNLOAD_PACING_KEYS: tuple[str, ...] = (
    "max_per_hour",
    "sleep_requests",
    "sleep_interval",
    "max_sleep_interval",
    "sleep_between",
    "cooldown",
)


def export_project(basedir: str | Path) -> str:
    """Name the project folder (the Snakefile's, ``workflow.basedir``) in
    :data:`PROJECT_VARIABLE` for the processes Snakemake starts, and return it (absolute).

    ``snakemake --sdm conda`` builds the per-rule environment from a copy of its file in
    ``.snakemake/conda/`` and runs the post-deploy script from the run's working directory
    (``--directory``), so neither tells the script where the package is. Snakemake builds the
    environments in its own process, after the Snakefile is read: the variable set here is in
    their environment.
    """
    project = str(Path(basedir).resolve())
    os.environ[PROJECT_VARIABLE] = project
    return project


def is_job_process(workflow: Any) -> bool:
    """True in a Snakemake process that runs jobs for another one (a cluster job, remote
    mode), False in the main process (the one a user starts, dry runs and lint included)."""
    return not bool(getattr(workflow, "is_main_process", True))


def default_partition(workflow: Any) -> str | None:
    """The ``slurm_partition`` of the default resources (a profile's ``default-resources``,
    or ``--default-resources``), or None."""
    dr = getattr(workflow.resource_settings, "default_resources", None)
    if not dr or "slurm_partition" not in dr:
        return None
    raw = dr["slurm_partition"].raw
    return raw.strip().strip("'\"") or None if isinstance(raw, str) else None


def cap_cores(workflow: Any, cpus: int) -> int:
    """Cap Snakemake's ``--cores`` at ``cpus`` (a rule's threads and what a group job sums
    never exceed it); return the value now in force."""
    cur = workflow.global_resources["_cores"].value
    value = int(cpus) if cur is None else min(int(cur), int(cpus))
    workflow.global_resources["_cores"] = value
    return value


def manifest_param(rows: pd.DataFrame) -> str:
    """A shard's segments as one compact string ``ytid,start,end,labels;...`` (labels keep
    their inner commas)."""
    return ";".join(
        f"{y},{s:.3f},{e:.3f},{lab}"
        for y, s, e, lab in rows[["ytid", "start", "end", "labels"]].itertuples(index=False)
    )


def manifest_from_param(rows: str, *, split: str, shard: int) -> pd.DataFrame:
    """The manifest (:data:`audiosetflow.shard.MANIFEST_COLUMNS`) from :func:`manifest_param`."""
    recs = []
    for item in rows.split(";") if rows else []:
        ytid, start, end, labels = item.split(",", 3)
        recs.append((ytid, split, int(shard), float(start), float(end), labels))
    return pd.DataFrame(recs, columns=list(MANIFEST_COLUMNS))


def read_retry_token(path: str | Path) -> str:
    """The token the last download run of a shard wrote, or ``"new"``."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        return "new"


def next_retry_token(table: ShardTable, *, current: str, cfg) -> str:
    """The value of the download rule's ``retry_token`` parameter for the next run.

    When YTIDs remain to be retried (:func:`audiosetflow.acquisition.download.retry_wanted`
    with ``rerun=True``: ``transient`` ones tried in fewer than ``download.max_runs`` runs),
    the next token is new (derived from the download columns, which change on every
    attempt); when none remain it is ``current``, the token this run was started with, so a
    rerun after a complete run has nothing to do.
    """
    from .acquisition.download import retry_wanted

    df = table.df
    todo = [
        y
        for y, st, runs in zip(df.index, df["download_status"], df["runs"], strict=True)
        if retry_wanted(st, cfg=cfg, rerun=True, runs=int(runs))
    ]
    if not todo:
        return current
    digest = hashlib.sha1(table.ledger().to_csv(sep="\t", index=False).encode()).hexdigest()
    return f"retry-{len(todo)}-{digest[:16]}"


def write_retry_token(path: str | Path, table: ShardTable, *, current: str, cfg) -> str:
    """Write :func:`next_retry_token` to ``path`` (atomically); return it."""
    token = next_retry_token(table, current=current, cfg=cfg)
    atomic_write_text(path, token + "\n")
    return token


@contextlib.contextmanager
def stage_job(stage: str, log: logging.Logger) -> Iterator[None]:
    """End a script adapter's job with one line, not a traceback, on a fault of the machine
    (:class:`~audiosetflow.errors.MachineError`) or a bad input
    (:class:`~audiosetflow.errors.InputError`).

    The stage has kept everything it finished; the job fails (exit status 1) so that Snakemake
    runs it again on the next invocation.
    """
    try:
        yield
    except InputError as exc:
        log.error("%s: %s", stage, exc)
        raise SystemExit(1) from None
    except Exception as exc:
        machine = machine_error(exc)
        if machine is None:
            raise
        log.error("%s", machine.line(stage))
        raise SystemExit(1) from None


# --- parameters shown by the Snakemake report ----------------------------------------------------


def _report_text(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=True, default=str)
    # Inside JSON strings these are the same characters; outside (there are none) they could
    # not occur: the text can close no element and open no tag or entity.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _ReportText:
    """Shown (``str``, ``repr``) as JSON with ``<``, ``>`` and ``&`` escaped; see
    :func:`report_param`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return _report_text(self)

    __str__ = __repr__


class ReportDict(_ReportText, dict):
    """A dict that the Snakemake report shows as escaped JSON (:func:`report_param`)."""

    __slots__ = ()


class ReportList(_ReportText, list):
    """A list that the Snakemake report shows as escaped JSON (:func:`report_param`)."""

    __slots__ = ()


def report_param(value: Mapping | list | tuple) -> ReportDict | ReportList:
    """A rule parameter that the Snakemake report cannot turn into markup.

    The report writes each parameter as ``str(value)`` into a ``<script>`` block of
    ``report.html`` (and Snakemake stores ``repr(value)`` to notice changed parameters); a
    plain dict or list shows its strings as they are. The value returned is the same data (a
    dict or list subclass, so the script reads it as before) whose ``str`` and ``repr`` are
    JSON with sorted keys, ASCII only, and ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``
    and ``\\u0026``: it closes no ``<script>``, opens no tag, and is the same text for the
    same content (so it does not rerun jobs by itself).

    Only the outer value is wrapped; nested values are plain. Tuples become lists. Redact
    config before passing it (:func:`audiosetflow.config.redact_config`).

    Parameters
    ----------
    value : mapping, list or tuple

    Returns
    -------
    ReportDict or ReportList
    """
    if isinstance(value, Mapping):
        return ReportDict(value)
    if isinstance(value, (list, tuple)):
        return ReportList(value)
    raise TypeError(f"report_param takes a mapping, list or tuple, not {type(value).__name__}")
