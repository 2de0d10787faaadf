"""Per-shard stage runners: transcode, trim, features, and the aggregate reports.

Each runner takes the previous stage's per-YTID table for one shard, skips every YTID whose
output already exists (so reruns and resumes cost nothing for finished clips), processes the
others (transcode: a batch of YTIDs per ffmpeg process; every file is still renamed into place
on its own), and writes its own table (``ytid, status, reason, ...``) atomically.
A YTID that failed a stage is recorded with the reason and dropped from later stages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .audio.codec import AudioError, read_offset, transcode_many, trim
from .io import read_tsv, write_tsv

__all__ = [
    "write_manifest",
    "run_transcode",
    "run_trim",
    "run_features",
    "availability",
    "STAGES",
]

log = logging.getLogger(__name__)

STAGES = ("download", "transcode", "trim", "features")
MANIFEST_COLUMNS = ["ytid", "split", "shard", "start", "end", "labels"]


def _media_file(download_dir: Path, ytid: str) -> Path | None:
    from .acquisition.download import media_path

    return media_path(download_dir, ytid)


class _Progress:
    """Logs ``[stage split/shard] i/n ok=.. failed=..`` at most every ``every`` seconds."""

    def __init__(self, name: str, total: int, logger: logging.Logger, every: float = 5.0):
        self.name, self.total, self.log, self.every = name, total, logger, every
        self.last = 0.0
        self.counts: dict[str, int] = {}

    def step(self, i: int, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        now = time.monotonic()
        if now - self.last >= self.every or i == self.total:
            self.last = now
            parts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.log.info("[%s] %d/%d %s", self.name, i, self.total, parts)


def write_manifest(path: str | Path, rows: pd.DataFrame) -> None:
    """Write one shard's manifest (``ytid, split, shard, start, end, labels``)."""
    write_tsv(path, rows[MANIFEST_COLUMNS])


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a shard manifest written by :func:`write_manifest`."""
    return read_tsv(path, dtype={"ytid": str, "labels": str})


# The transcoded window of a YTID: an intermediate (deleted by trim unless
# audio.keep_intermediate), 16-bit WAV since it is cheaper than FLAC to write and to cut.
WINDOW_SUFFIX = ".wav"
_LEGACY_WINDOW_SUFFIXES = (".flac",)  # windows of earlier versions are still used


def _window(pcm_dir: Path, ytid: str) -> Path | None:
    """The existing transcoded window of ``ytid`` (``{ytid}.wav``, or an older ``.flac``)."""
    for suffix in (WINDOW_SUFFIX, *_LEGACY_WINDOW_SUFFIXES):
        p = pcm_dir / f"{ytid}{suffix}"
        if p.exists():
            return p
    return None


def _reason(exc: AudioError, media: Path) -> str:
    """The reason of a transcode error, without the leading file name."""
    msg = str(exc)
    for prefix in (f"{media.absolute()}: ", f"{media}: "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg.split(": ", 1)[-1]


def run_transcode(
    *,
    ledger: str | Path,
    download_dir: str | Path,
    pcm_dir: str | Path,
    clips_dir: str | Path,
    out: str | Path,
    sample_rate: int,
    batch: int = 20,
    name: str = "transcode",
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Transcode every downloaded YTID of a shard to a mono 16-bit window at ``sample_rate``.

    The window is ``pcm_dir/{ytid}.wav``. A YTID whose window (also an older
    ``pcm_dir/{ytid}.flac``) or final clip (``clips_dir/{ytid}.flac``) exists is not
    transcoded again. ``batch`` YTIDs share one ffmpeg process (:func:`audio.transcode_many`);
    each window is renamed into place on its own, so an interrupted run keeps every finished
    window and leaves nothing half-written under a final name.

    Returns
    -------
    DataFrame
        ``ytid, status, reason`` (status ``ok`` or ``failed``), also written to ``out``.
    """
    logger = logger or log
    download_dir, pcm_dir, clips_dir = Path(download_dir), Path(pcm_dir), Path(clips_dir)
    led = read_tsv(ledger)
    todo = led.loc[led["status"] == "ok", "ytid"].tolist()
    prog = _Progress(name, len(todo), logger)
    rows: list[tuple[str, str, str] | None] = [None] * len(todo)
    pending: list[tuple[int, Path, Path]] = []  # (row, media, window)
    done = 0

    def record(k: int, row: tuple[str, str, str]) -> None:
        nonlocal done
        rows[k] = row
        done += 1
        prog.step(done, row[1])

    def flush() -> None:
        results = transcode_many(
            [(media, dst) for _, media, dst in pending], sample_rate=sample_rate, batch=batch
        )
        for (k, media, _), res in zip(pending, results, strict=True):
            if isinstance(res, AudioError):
                record(k, (todo[k], "failed", _reason(res, media)))
            else:
                record(k, (todo[k], "ok", ""))
        pending.clear()

    for k, ytid in enumerate(todo):
        if _window(pcm_dir, ytid) is not None or (clips_dir / f"{ytid}.flac").exists():
            record(k, (ytid, "ok", "reused"))
            continue
        media = _media_file(download_dir, ytid)
        if media is None:
            record(k, (ytid, "failed", "downloaded media missing (rerun the download)"))
            continue
        pending.append((k, media, pcm_dir / f"{ytid}{WINDOW_SUFFIX}"))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    table = pd.DataFrame(rows, columns=["ytid", "status", "reason"])
    write_tsv(out, table)
    return table


def run_trim(
    *,
    transcoded: str | Path,
    manifest: str | Path,
    download_dir: str | Path,
    pcm_dir: str | Path,
    clips_dir: str | Path,
    out: str | Path,
    clip_seconds: float,
    keep_intermediate: bool = False,
    name: str = "trim",
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Cut each transcoded window to exactly ``[start, end)``, padding short clips.

    Clips are ``clips_dir/{ytid}.flac`` (mono 16-bit); the window (``pcm_dir/{ytid}.wav`` or an
    older ``.flac``) is deleted once its clip is written unless ``keep_intermediate``.

    Returns
    -------
    DataFrame
        ``ytid, status, reason, duration, short``, also written to ``out``.
    """
    logger = logger or log
    download_dir, pcm_dir, clips_dir = Path(download_dir), Path(pcm_dir), Path(clips_dir)
    man = read_manifest(manifest).set_index("ytid")
    tr = read_tsv(transcoded)
    todo = tr.loc[tr["status"] == "ok", "ytid"].tolist()
    prog = _Progress(name, len(todo), logger)
    rows = []
    for i, ytid in enumerate(todo, start=1):
        seg = man.loc[ytid]
        dst = clips_dir / f"{ytid}.flac"
        window = _window(pcm_dir, ytid)
        duration = _read_trim_meta(dst)
        if dst.exists() and duration is not None:
            rows.append((ytid, "ok", "reused", duration, bool(duration < clip_seconds - 1e-6)))
        elif window is None:
            rows.append((ytid, "failed", "transcoded window missing", np.nan, False))
        else:
            try:
                media = _media_file(download_dir, ytid)
                offset = read_offset(media) if media is not None else 0.0
                res = trim(
                    window,
                    dst,
                    offset=offset,
                    start=float(seg["start"]),
                    end=float(seg["end"]),
                    clip_seconds=clip_seconds,
                )
                _write_trim_meta(dst, res.duration)
                rows.append((ytid, "ok", "", res.duration, res.short))
                if not keep_intermediate:
                    window.unlink(missing_ok=True)
            except (AudioError, RuntimeError, OSError) as exc:
                rows.append((ytid, "failed", str(exc), np.nan, False))
        prog.step(i, rows[-1][1])
    table = pd.DataFrame(rows, columns=["ytid", "status", "reason", "duration", "short"])
    write_tsv(out, table)
    return table


def _write_trim_meta(clip: Path, duration: float) -> None:
    from .io import atomic_write_text

    atomic_write_text(clip.with_suffix(".duration"), f"{duration:.6f}\n")


def _read_trim_meta(clip: Path) -> float | None:
    try:
        return float(clip.with_suffix(".duration").read_text())
    except (OSError, ValueError):
        return None


def _first_rows(table: pd.DataFrame) -> dict[str, dict]:
    """YTID to its first row (as a dict) of a per-shard stage table."""
    out: dict[str, dict] = {}
    for row in table.to_dict("records"):
        out.setdefault(str(row["ytid"]), row)
    return out


def _failure_status(ytid: str, tables: Sequence[tuple[str, dict[str, dict]]]) -> str:
    """``ok``, or the first stage where a YTID failed or that it never reached, with the reason.

    ``tables`` holds ``(stage, {ytid: row})`` in stage order (see :func:`_first_rows`).
    """
    for stage, rows in tables:
        row = rows.get(ytid)
        if row is None:
            return f"{stage}: not reached"
        if row["status"] != "ok":
            reason = row.get("reason", "")
            reason = "" if reason is None or pd.isna(reason) else str(reason)
            return f"{stage}: {row['status']}: {reason}".rstrip(": ")
    return "ok"


def run_features(
    *,
    manifest: str | Path,
    ledger: str | Path,
    transcoded: str | Path,
    trimmed: str | Path,
    clips_dir: str | Path,
    out: str | Path,
    features_cfg: dict,
    sample_rate: int,
    names: dict[str, str],
    threads: int = 1,
    name: str = "features",
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Compute features of every trimmed clip of a shard and write one Parquet shard.

    Every manifest YTID gets a row; those without audio carry the failing stage and reason in
    ``status`` and null features.

    Returns
    -------
    DataFrame
        The metadata written (one row per manifest YTID).
    """
    import soundfile as sf
    from threadpoolctl import threadpool_limits

    from .audio import features as ft

    logger = logger or log
    clips_dir = Path(clips_dir)
    params = ft.FeatureParams.from_config(features_cfg, sample_rate=sample_rate)
    man = read_manifest(manifest)
    led = read_tsv(ledger)
    tr = read_tsv(transcoded)
    tm = read_tsv(trimmed)
    tables = [("download", _first_rows(led)), ("transcode", _first_rows(tr)),
              ("trim", _first_rows(tm))]  # fmt: skip
    trim_info = tables[2][1]
    prog = _Progress(name, len(man), logger)
    metas, feats = [], []
    with threadpool_limits(limits=threads):
        for i, seg in enumerate(man.itertuples(index=False), start=1):
            mids = [m for m in str(seg.labels).split(",") if m]
            status = _failure_status(seg.ytid, tables)
            short, duration, f = False, float("nan"), None
            if status == "ok":
                info = trim_info[seg.ytid]
                short, duration = bool(info["short"]), float(info["duration"])
                try:
                    y, sr = sf.read(str(clips_dir / f"{seg.ytid}.flac"), dtype="float32")
                    if sr != sample_rate:
                        raise RuntimeError(f"clip sample rate {sr} != audio.sample_rate")
                    f = ft.compute(y, params=params)
                except (RuntimeError, OSError, ValueError) as exc:
                    status, f = f"features: failed: {exc}", None
            metas.append(
                {
                    "ytid": seg.ytid,
                    "split": seg.split,
                    "start": float(seg.start),
                    "end": float(seg.end),
                    "labels": mids,
                    "label_names": [names.get(m, m) for m in mids],
                    "status": status,
                    "short": short,
                    "duration": duration,
                }
            )
            feats.append(f)
            prog.step(i, "ok" if status == "ok" else "failed")
    meta = pd.DataFrame(
        metas,
        columns=["ytid", "split", "start", "end", "labels", "label_names", "status", "short",
                 "duration"],
    )  # fmt: skip
    ft.write_shard(out, meta=meta, features=feats, params=params)
    return meta


def availability(
    *,
    manifests: Sequence[str | Path],
    ledgers: Sequence[str | Path],
    transcoded: Sequence[str | Path],
    trimmed: Sequence[str | Path],
    features: Sequence[str | Path],
) -> pd.DataFrame:
    """Per split and stage: how many YTIDs entered, how many are done, how many failed and why.

    All sequences are aligned (one entry per shard).

    Returns
    -------
    DataFrame
        Columns ``split, stage, entered, done, failed, reasons`` where ``reasons`` reads like
        ``"permanent: HTTP 404 x3; transient: HTTP 503 x1"``.
    """
    import pyarrow.parquet as pq

    recs: dict[tuple[str, str], dict] = {}

    def add(split: str, stage: str, table: pd.DataFrame, ok_value: str = "ok") -> None:
        r = recs.setdefault((split, stage), {"entered": 0, "done": 0, "reasons": {}})
        r["entered"] += len(table)
        ok = table["status"] == ok_value
        r["done"] += int(ok.sum())
        bad = table.loc[~ok]
        for st, reason in zip(bad["status"], bad.get("reason", [""] * len(bad)), strict=False):
            key = f"{st}: {_short_reason(str(reason))}".rstrip(": ")
            r["reasons"][key] = r["reasons"].get(key, 0) + 1

    for man_p, led_p, tr_p, tm_p, ft_p in zip(
        manifests, ledgers, transcoded, trimmed, features, strict=True
    ):
        man = read_manifest(man_p)
        split = str(man["split"].iloc[0]) if len(man) else "?"
        recs.setdefault((split, "selected"), {"entered": 0, "done": 0, "reasons": {}})
        recs[(split, "selected")]["entered"] += len(man)
        recs[(split, "selected")]["done"] += len(man)
        add(split, "download", read_tsv(led_p))
        add(split, "transcode", read_tsv(tr_p))
        add(split, "trim", read_tsv(tm_p))
        fm = pq.read_table(ft_p, columns=["ytid", "status"]).to_pandas()
        entered = fm.loc[~fm["status"].str.match(r"^(download|transcode|trim):")]
        r = recs.setdefault((split, "features"), {"entered": 0, "done": 0, "reasons": {}})
        r["entered"] += len(entered)
        r["done"] += int((entered["status"] == "ok").sum())
        for st in entered.loc[entered["status"] != "ok", "status"]:
            r["reasons"][st] = r["reasons"].get(st, 0) + 1
    order = {s: i for i, s in enumerate(("selected", *STAGES))}
    rows = []
    for (split, stage), r in sorted(recs.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        reasons = "; ".join(f"{k} x{v}" for k, v in sorted(r["reasons"].items()))
        rows.append((split, stage, r["entered"], r["done"], r["entered"] - r["done"], reasons))
    return pd.DataFrame(rows, columns=["split", "stage", "entered", "done", "failed", "reasons"])


def _short_reason(reason: str, limit: int = 80) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def manifest_from_param(path: str | Path, rows: str, *, split: str, shard: int) -> pd.DataFrame:
    """Write a shard manifest from the compact ``ytid,start,end,labels;...`` form that the
    workflow passes as a parameter (labels keep their inner commas)."""
    recs = []
    for item in rows.split(";") if rows else []:
        ytid, start, end, labels = item.split(",", 3)
        recs.append((ytid, split, shard, float(start), float(end), labels))
    df = pd.DataFrame(recs, columns=MANIFEST_COLUMNS)
    write_manifest(path, df)
    return df


def retryable(ledger: pd.DataFrame, *, retry_permanent: bool = False) -> pd.DataFrame:
    """Rows of a download ledger that a plain rerun should try again."""
    statuses = {"transient"} | ({"permanent", "auth"} if retry_permanent else set())
    return ledger.loc[ledger["status"].isin(statuses)]


def next_retry_token(ledger: pd.DataFrame, *, current: str, retry_permanent: bool = False) -> str:
    """The value of the download rule's ``retry_token`` parameter for the next run.

    Snakemake reruns a job whose parameters changed since it last ran. So, when YTIDs remain
    to be retried, the next token is new (derived from the ledger's content, which changes on
    every attempt); when none remain, it is ``current``, the token this run was started with,
    and a rerun after a complete run has nothing to do.
    """
    import hashlib

    todo = retryable(ledger, retry_permanent=retry_permanent)
    if not len(todo):
        return current
    digest = hashlib.sha1(ledger.to_csv(sep="\t", index=False).encode()).hexdigest()[:16]
    return f"retry-{len(todo)}-{digest}"


def write_retry_token(
    path: str | Path, ledger: pd.DataFrame, *, current: str, retry_permanent: bool = False
) -> str:
    """Write :func:`next_retry_token` to ``path`` (atomically); return it."""
    from .io import atomic_write_text

    token = next_retry_token(ledger, current=current, retry_permanent=retry_permanent)
    atomic_write_text(path, token + "\n")
    return token


def aggregate(
    *,
    manifests: Sequence[str | Path],
    ledgers: Sequence[str | Path],
    transcoded: Sequence[str | Path],
    trimmed: Sequence[str | Path],
    features: Sequence[str | Path],
    availability_out: str | Path,
    ledger_out: str | Path,
    logger: logging.Logger | None = None,
) -> pd.DataFrame:
    """Write ``availability.tsv`` and the concatenated ``download_ledger.tsv``; check that each
    split's feature shards open as one pyarrow dataset with one schema."""
    import pyarrow.dataset as ds

    logger = logger or log
    table = availability(
        manifests=manifests,
        ledgers=ledgers,
        transcoded=transcoded,
        trimmed=trimmed,
        features=features,
    )
    by_dir: dict[Path, list[str]] = {}
    for f in features:
        by_dir.setdefault(Path(f).parent, []).append(str(f))
    for folder, files in by_dir.items():
        dset = ds.dataset(files, format="parquet")
        logger.info("%s: %d shards, %d rows, one schema", folder, len(files), dset.count_rows())
    led = [read_tsv(p) for p in ledgers]
    write_tsv(ledger_out, pd.concat(led, ignore_index=True) if led else pd.DataFrame())
    write_tsv(availability_out, table)
    for row in table.itertuples(index=False):
        logger.info("%s %-9s entered=%d done=%d failed=%d %s", *row)
    return table
