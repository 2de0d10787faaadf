"""The download stage: fetch the labelled segment of every YTID of a shard, resumable per YTID.

* Each YTID is fetched by :class:`~audiosetflow.acquisition.ytdlp.YtdlpFetcher` (sections
  where the source can be cut, whole files otherwise) and every failure is classified
  (:mod:`audiosetflow.acquisition.classify`) as ``permanent``, ``auth`` or ``transient``.
* Transient failures are retried inside the job with exponential backoff
  (``backoff_initial * 2**k`` capped at ``backoff_max``; a server's ``Retry-After`` is honoured
  up to ``backoff_max``). Rate limiting is not retried: the job waits ``cooldown`` seconds and
  stops the shard early; the YTIDs not attempted stay ``transient`` (``not attempted: shard
  stopped after rate limiting``), and the rate-limited YTID goes last in the next run, so one
  YTID that keeps answering HTTP 429 never starves the others.
* What to try again is one policy, :func:`retry_wanted`: finished media is never fetched again,
  ``permanent`` YTIDs are not retried (unless ``retry_permanent``), ``auth`` YTIDs once
  ``cookies`` is set, everything else is.
* With ``max_per_hour`` set, every fetch first waits for the job's ``youtube`` slot budget
  (:mod:`audiosetflow.acquisition.budget`: a sliding hour, kept in ``results/state/youtube``).
* The shard's state lives in its :class:`~audiosetflow.shard.ShardTable`: the download columns
  are restored from the shard's record (which Snakemake never deletes) and the record is
  rewritten atomically after every YTID, so neither a rerun nor a killed job loses what failed
  for good or what was tried (``attempts``: yt-dlp calls; ``runs``: runs that tried the YTID).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..config import register_secrets, section
from ..errors import MachineError
from ..io import atomic_path
from ..shard import ShardLayout, ShardTable, Status
from .budget import FetchBudget, _NoBudget, fetch_budget
from .classify import classify
from .sources import (
    ClipError,
    Entry,
    MirrorReader,
    Source,
    check_audio,
    clip_offset,
    has_youtube,
    judge_duration,
    longest_copy,
    lookup,
    media_input,
    mirrors,
    sniff,
)
from .ytdlp import YtdlpFetcher

__all__ = ["DownloadConfig", "NOT_ATTEMPTED", "NO_SOURCE", "download_shard", "retry_wanted"]

NOT_ATTEMPTED = "not attempted: shard stopped after rate limiting"
#: The reason of a YTID that no source has (when ``youtube`` is not one of them).
NO_SOURCE = "in no source (youtube is not in sources)"
YOUTUBE = Source("youtube", 0, cut=False)
#: Statuses in the order progress lines count them.
_COUNTED = (Status.OK, Status.PERMANENT, Status.AUTH, Status.TRANSIENT, Status.PENDING)

#: Keys whose ``None`` means empty.
_TEXT_KEYS = frozenset({"url_template", "format", "cookies", "proxy"})

log_default = logging.getLogger("audiosetflow.download")

# Indirection so tests can record the waits instead of sleeping (and move the clock).
_sleep = time.sleep
_clock = time.time


@dataclass(frozen=True)
class DownloadConfig:
    """Settings of the download stage (the ``download`` section of ``config.yaml``).

    Attributes
    ----------
    url_template : str
        URL of a YTID's media; ``{ytid}`` is replaced. Any URL yt-dlp supports.
    format : str
        yt-dlp format selector.
    margin : float
        Seconds fetched before and after the segment.
    retries : int
        Retries of a transient failure inside one job (attempts = 1 + retries).
    backoff_initial, backoff_max : float
        Wait before retry ``k`` (0-based): ``min(backoff_initial * 2**k, backoff_max)`` seconds,
        at least the server's ``Retry-After`` (still capped at ``backoff_max``).
    sleep_between : float
        Pause between two YTIDs of one job (seconds).
    cooldown : float
        Wait after rate limiting before the shard stops early (seconds).
    socket_timeout : float
        Per-request socket timeout of yt-dlp and of ffmpeg's network reads (seconds).
    retry_permanent : bool
        Try ``permanent`` and ``auth`` YTIDs of a previous run again.
    max_runs : int
        Runs after which a ``transient`` YTID no longer makes a plain rerun run its shard
        again (:func:`retry_wanted` with ``rerun=True``); 0: no limit.
    cookies : str
        Netscape cookies file (yt-dlp ``cookiefile``); empty: none.
    proxy : str
        Proxy URL (yt-dlp ``proxy``); empty: none.
    js_runtimes : Mapping
        yt-dlp ``js_runtimes`` (e.g. ``{"deno": {}}``); empty: yt-dlp's default.
    ytdlp_options : Mapping
        Extra yt-dlp options (Python API names), merged last.
    duration_tolerance : float
        Accepted shortfall of the decoded media against the segment (seconds).
    max_per_hour : int or None
        Fetches per hour of each ``youtube`` resource slot
        (:class:`~audiosetflow.acquisition.budget.FetchBudget`); 0 or None: no budget.
    sleep_requests, sleep_interval, max_sleep_interval : float
        yt-dlp's ``sleep_interval_requests``, ``sleep_interval`` and ``max_sleep_interval``
        (seconds); 0: off.
    sections : {"auto", "always", "never"}
        Section downloads where the source can be cut (``auto``), always (``always``: a source
        that cannot be cut fails), or never (whole files, cut by the trim stage).
    """

    url_template: str = "https://www.youtube.com/watch?v={ytid}"
    format: str = "bestaudio/best"
    margin: float = 1.0
    retries: int = 3
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    sleep_between: float = 0.0
    cooldown: float = 300.0
    socket_timeout: float = 30.0
    retry_permanent: bool = False
    max_runs: int = 5
    cookies: str = ""
    proxy: str = ""
    js_runtimes: Mapping[str, Any] = field(default_factory=dict)
    ytdlp_options: Mapping[str, Any] = field(default_factory=dict)
    duration_tolerance: float = 0.1
    max_per_hour: int | None = 0
    sleep_requests: float = 0.0
    sleep_interval: float = 0.0
    max_sleep_interval: float = 0.0
    sections: Literal["auto", "always", "never"] = "auto"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DownloadConfig:
        """Build from the ``download`` dict of the workflow config.

        Missing keys take the schema's defaults (:func:`audiosetflow.config.section`);
        ``None`` values of text keys count as empty; keys this class does not know are ignored.
        """
        cfg = {k: ("" if v is None and k in _TEXT_KEYS else v) for k, v in dict(cfg or {}).items()}
        # the cookies file's path, passwords, auth headers: never in a reason, log or ledger
        register_secrets(cfg)
        out = section(cls, cfg, "download")
        if "{ytid}" not in out.url_template:
            raise ValueError(f"download.url_template must contain '{{ytid}}': {out.url_template!r}")
        if out.retries < 0 or out.margin < 0 or out.duration_tolerance < 0:
            raise ValueError("download.retries, margin and duration_tolerance must be >= 0")
        if out.max_sleep_interval and out.max_sleep_interval < out.sleep_interval:
            raise ValueError("download.max_sleep_interval must be >= sleep_interval (or 0)")
        return out

    def backoff(self, k: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``k`` (0-based)."""
        delay = self.backoff_initial * (2.0**k)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, min(delay, self.backoff_max))


# --------------------------------------------------------------------------------------------


def retry_wanted(
    status: Status | str, *, cfg: DownloadConfig, rerun: bool = False, runs: int = 0
) -> bool:
    """Whether a YTID whose last download status is ``status`` is tried again.

    Parameters
    ----------
    status : Status or str
        The YTID's ``download_status`` (``ok`` here means: its media has gone missing).
    cfg : DownloadConfig
    rerun : bool
        False: the question of a download job that runs (which YTIDs it tries). True: whether
        the YTID alone is reason to run the job again (the retry token). Only ``transient``
        ones are, and only until they have been tried in ``cfg.max_runs`` runs: ``auth`` and
        ``permanent`` YTIDs are tried again by a job once ``cookies`` or ``retry_permanent``
        is set (setting them changes the rule's parameters, so every job runs again once),
        but they do not make every plain rerun run the job again.
    runs : int
        Runs in which the YTID was tried (with ``rerun=True``).

    Returns
    -------
    bool
    """
    status = Status(status)
    if rerun:
        return status is Status.TRANSIENT and not (cfg.max_runs and runs >= cfg.max_runs)
    if status is Status.PERMANENT:
        return cfg.retry_permanent
    if status is Status.AUTH:
        return cfg.retry_permanent or bool(cfg.cookies)
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def download_shard(
    table: ShardTable,
    *,
    shard: ShardLayout,
    cfg: DownloadConfig,
    out: str | Path | None = None,
    log: logging.Logger | None = None,
    sources: Sequence[Source] | None = None,
    index: str | Path | None = None,
) -> ShardTable:
    """Get the segments of one shard, from local mirrors or YouTube; resumable per YTID.

    Parameters
    ----------
    table : ShardTable
        The shard's YTIDs and segments (:meth:`ShardTable.from_manifest`); its download
        columns are filled in place.
    shard : ShardLayout
        Where the media go (``{ytid}.{ext}`` plus ``{ytid}.offset``) and where the shard's
        record is, which is read first (what failed for good and what was tried in earlier
        runs) and rewritten atomically after every YTID.
    cfg : DownloadConfig
    out : str or Path, optional
        Where the finished table is written too (the rule's declared output).
    log : logging.Logger, optional
    sources : sequence of Source, optional
        Where clips come from, in order (:func:`audiosetflow.acquisition.sources.
        parse_sources`); default: YouTube only. A YTID that a local source has is taken from
        the first that has a usable copy (decoded completely first: an empty, non-audio or
        truncated copy is a recorded failure, and the next source that has the YTID is
        tried, YouTube last). Without ``youtube``, a YTID no local source has is
        ``permanent`` (:data:`NO_SOURCE`).
    index : str or Path, optional
        The index of the local sources (:func:`audiosetflow.acquisition.sources.build_index`);
        needed when ``sources`` has any.

    Returns
    -------
    ShardTable
        ``table``: per YTID ``download_status`` (``ok``, ``permanent``, ``auth`` or
        ``transient``), ``download_reason``, ``attempts``, ``runs``, ``rate_limited``,
        ``bytes``, ``updated``, ``media`` and ``source`` (``youtube``, ``tar:eval03.tar``,
        ...).

    Raises
    ------
    audiosetflow.errors.MachineError
        On a fault of the machine (a full disk, ...), after recording the YTIDs done so far.

    See Also
    --------
    retry_wanted : which YTIDs are tried again.
    audiosetflow.smk.write_retry_token : whether a plain rerun runs the job again.
    """
    log = log or log_default
    shard.download_dir.mkdir(parents=True, exist_ok=True)
    previous = ShardTable.read_record(shard)
    ytids = table.ytids
    if previous is not None:
        restored = set(table.restore("download", previous))
        for y in set(previous.ytids) & set(ytids) - restored:
            shard.forget_media(y)  # its segment changed: what was fetched is not the segment
    marker = shard.running("download")
    if marker.exists():  # the last run was killed: clean up what it left
        shard.clean_download_tmp(ytids)
        shard.clean_temporaries(shard.download_dir, [f"{y}.offset" for y in ytids])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    sources = list(sources) if sources else [YOUTUBE]
    local = lookup(index, ytids) if index is not None and mirrors(sources) else {}
    try:
        with fetch_budget(shard.layout.root, per_hour=cfg.max_per_hour, clock=_clock,
                          sleep=_sleep, log=log) as budget:  # fmt: skip
            return _download(table, shard, cfg, out, log, sources, local, budget)
    finally:
        marker.unlink(missing_ok=True)


def _download(
    table: ShardTable,
    shard: ShardLayout,
    cfg: DownloadConfig,
    out,
    log: logging.Logger,
    sources: list[Source],
    local: dict[str, list[Entry]],
    budget: FetchBudget | _NoBudget,
) -> ShardTable:
    ytids = table.ytids
    finished = shard.media_index(ytids, dict(zip(ytids, table.df["media"], strict=True)))
    tag = f"[shard {shard.name}]"
    youtube = has_youtube(sources)

    todo: list[str] = []
    from_mirror: list[str] = []
    earlier: dict[str, tuple[Status, str, int]] = {}  # download state before this run
    for y in ytids:
        row = table.row(y)
        status = Status(row["download_status"])
        media = finished.get(y)
        if media is not None:
            reason = row["download_reason"] if status is Status.OK else "found finished media"
            size = media.size if hasattr(media, "start") else media.stat().st_size
            name = row["media"] if str(row["media"]).startswith(("tar:", "file:")) else media.name
            table.set("download", y, Status.OK, reason, bytes=size, media=name,
                      source=row["source"] or "youtube")  # fmt: skip
        elif y in local:
            earlier[y] = (status, row["download_reason"], int(row["attempts"]))
            table.set("download", y, Status.PENDING, "", media="")
            from_mirror.append(y)
        elif not youtube:
            table.set("download", y, Status.PERMANENT, NO_SOURCE, media="", source="")
        elif (status is not Status.PENDING and not retry_wanted(status, cfg=cfg)
              and int(row["attempts"]) > 0):  # fmt: skip
            continue  # failed for good on YouTube: kept as it is
        elif status is not Status.PENDING and not retry_wanted(status, cfg=cfg):
            # failed only for want of a source (no youtube, or unusable local copies in an
            # earlier run): YouTube, now among the sources, has never been asked
            table.set("download", y, Status.PENDING, row["download_reason"], media="")
            todo.append(y)
        else:
            reason = "pending: media of an earlier ok run is gone" if status is Status.OK else ""
            table.set("download", y, Status.PENDING, reason, media="")
            todo.append(y)
    table.save(shard)
    fallback = _from_mirrors(table, shard, from_mirror, local, youtube, log)
    for y in fallback:
        status, reason, attempts = earlier[y]
        if attempts > 0 and status is not Status.PENDING and not retry_wanted(status, cfg=cfg):
            # its local copy is unusable and YouTube already answered for good: not asked again
            note = table.df.at[y, "download_reason"]
            table.set("download", y, status, "; ".join(r for r in (reason, note) if r))
        else:
            todo.append(y)
    fallback = [y for y in fallback if y in todo]
    # a YTID that was rate limited last time goes last, so that it cannot starve the others
    todo.sort(key=lambda y: bool(table.df.at[y, "rate_limited"]))
    table.save(shard)
    n = len(ytids)
    log.info(
        "%s %d YTIDs: %d from local sources, %d to download, %d done or skipped",
        tag, n, len(from_mirror) - len(fallback), len(todo),
        n - len(todo) - len(from_mirror) + len(fallback),
    )  # fmt: skip
    notes = {y: table.df.at[y, "download_reason"] for y in fallback}

    fetcher = budget.pace(YtdlpFetcher(cfg, shard, log))  # each fetch waits for the budget
    stopped = False
    for k, y in enumerate(todo):
        if stopped:
            table.set("download", y, Status.TRANSIENT, NOT_ATTEMPTED, updated=_now())
            continue
        if k and cfg.sleep_between > 0:
            _sleep(cfg.sleep_between)
        row = table.row(y)
        try:
            outcome = _download_one(fetcher, y, row["start"], row["end"], cfg, log)
        except MachineError as exc:
            table.set("download", y, Status.TRANSIENT, f"machine: {exc}", updated=_now())
            table.save(shard)
            raise
        reason = outcome.reason
        if y in notes:
            reason = "; ".join(r for r in (reason, notes[y]) if r)
        table.set(
            "download", y, outcome.status, reason,
            source="youtube" if outcome.status is Status.OK else "",
            attempts=int(row["attempts"]) + outcome.attempts,
            runs=int(row["runs"]) + 1,
            rate_limited=outcome.rate_limited,
            bytes=outcome.bytes,
            media=outcome.media,
            updated=_now(),
        )  # fmt: skip
        table.save(shard)
        log.info(
            "%s %d/%d %s | %s: %s%s",
            tag, k + 1, len(todo), _summary(table), y, outcome.status.value,
            f" ({outcome.reason})" if outcome.reason else "",
        )  # fmt: skip
        if outcome.rate_limited:
            log.warning(
                "%s rate limited: cooling down %.0f s, then stopping the shard (%d YTIDs left "
                "for the next run; %s goes last then)",
                tag, outcome.cooldown, len(todo) - k - 1, y,
            )  # fmt: skip
            _sleep(outcome.cooldown)
            stopped = True
    table.save(shard, out)
    log.info("%s finished: %s", tag, _summary(table))
    return table


def _from_mirrors(
    table: ShardTable,
    shard: ShardLayout,
    ytids: list[str],
    local: dict[str, list[Entry]],
    youtube: bool,
    log: logging.Logger,
) -> list[str]:
    """Take ``ytids`` from the local sources that have them; return those to try on YouTube.

    Each copy is decoded completely first (:func:`~audiosetflow.acquisition.sources.
    check_audio`); an unusable one is recorded, and the next source that has the YTID is
    tried. A YTID with no usable copy is ``permanent`` (the reasons of every copy), or, with
    YouTube among the sources, passed on to it with those reasons as a note.
    """
    reader = MirrorReader()
    fallback: list[str] = []
    # in file order: each Parquet row group is read once, tar members are read front to back
    first = {y: local[y][0] for y in ytids}
    ytids = sorted(ytids, key=lambda y: (first[y].source, first[y].path, first[y].row_group,
                                         first[y].row, first[y].offset))  # fmt: skip
    tag = f"[shard {shard.name}]"
    for k, y in enumerate(ytids):
        row = table.row(y)
        start, end = float(row["start"]), float(row["end"])
        problems = []
        for e in local[y]:
            copy = None  # a Parquet clip, written to the download folder (ffmpeg reads files)
            try:
                try:
                    clip = reader.open(e)
                    where = media_input(e.locator) if e.kind != "parquet" else None
                    if e.kind == "parquet" and sniff(clip.data or b"") not in (
                        "flac", "wav", "ogg", "",
                    ):  # fmt: skip
                        copy = _write_copy(shard, y, e, clip.data or b"")
                        where = copy
                    seconds = check_audio(
                        clip,
                        name=f"{e.origin}:{y}",
                        media=where,
                        max_seconds=longest_copy(e, start=start, end=end),
                    )
                    cut = judge_duration(e, seconds=seconds, start=start, end=end)
                except MemoryError:  # the machine's, never the clip's: the job stops cleanly
                    raise MachineError(errno.ENOMEM, e.path, "out of memory") from None
            except MachineError:
                table.set("download", y, Status.TRANSIENT, f"machine: reading {e.path}")
                table.save(shard)
                raise
            except (ClipError, OSError) as exc:
                if copy is not None:
                    copy.unlink(missing_ok=True)
                problems.append(f"{e.origin}: {exc}")
                continue
            try:
                # the offset first: media without one are never taken as finished
                shard.write_offset(y, clip_offset(e, cut=cut, start=start))
                if e.kind == "parquet":
                    name = (copy or _write_copy(shard, y, e, clip.data or b"")).name
                else:
                    name = e.locator
            except OSError as exc:
                table.set("download", y, Status.TRANSIENT, f"machine: {exc}")
                table.save(shard)
                raise MachineError(exc.errno or 5, str(shard.download_dir), str(exc)) from exc
            note = "; ".join(problems)
            reason = f"{'cut' if cut else 'whole'} copy, {seconds:.2f} s"
            if note:
                reason += f" (after {note})"
            table.set("download", y, Status.OK, reason, bytes=clip.size, media=name,
                      source=e.origin, updated=_now())  # fmt: skip
            if e.kind == "parquet":  # its copy now exists: the record says where it came from
                table.save(shard)
            break
        else:
            note = "local copy unusable: " + "; ".join(problems)
            if youtube:
                table.set("download", y, Status.PENDING, note, media="", source="")
                fallback.append(y)
            else:
                table.set("download", y, Status.PERMANENT, note, media="", source="",
                          updated=_now())  # fmt: skip
            log.warning("%s %s: %s", tag, y, note)
        if (k + 1) % 100 == 0 or k + 1 == len(ytids):
            table.save(shard)
            log.info("%s local sources: %d/%d | %s", tag, k + 1, len(ytids), _summary(table))
    return fallback


def _write_copy(shard: ShardLayout, ytid: str, entry: Entry, data: bytes) -> Path:
    """Write a Parquet clip's bytes (atomically) as the YTID's media in the download folder."""
    media = shard.media_name(ytid, MirrorReader.parquet_ext(entry, data))
    media.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(media) as tmp:
        tmp.write_bytes(data)
    return media


def _summary(table: ShardTable) -> str:
    counts = table.counts("download")
    return " ".join(f"{s.value}={counts[s.value]}" for s in _COUNTED)


@dataclass
class _Outcome:
    status: Status
    reason: str
    attempts: int
    bytes: int = 0
    rate_limited: bool = False
    cooldown: float = 0.0
    media: str = ""


def _download_one(
    fetcher: YtdlpFetcher,
    ytid: str,
    start: float,
    end: float,
    cfg: DownloadConfig,
    log: logging.Logger,
) -> _Outcome:
    """Fetch one YTID, retrying transient failures with backoff (not rate limits)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            res = fetcher.fetch(ytid, float(start), float(end))
        except MachineError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            f = classify(exc, ytid)  # raises MachineError for a fault of the machine
            if f.rate_limited:
                cool = cfg.cooldown
                if f.retry_after is not None:
                    cool = max(cool, min(f.retry_after, max(cfg.cooldown, cfg.backoff_max)))
                return _Outcome(Status.TRANSIENT, f.reason, attempts, 0, True, cool)
            if f.status is not Status.TRANSIENT or attempts > cfg.retries:
                return _Outcome(f.status, f.reason, attempts)
            delay = cfg.backoff(attempts - 1, f.retry_after)
            log.info("%s: %s; retry %d/%d in %.1f s", ytid, f.reason, attempts, cfg.retries, delay)
            _sleep(delay)
            continue
        return _Outcome(
            Status.OK, res.reason, attempts, res.path.stat().st_size, media=res.path.name
        )
