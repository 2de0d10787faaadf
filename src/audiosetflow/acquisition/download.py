"""Download stage: fetch the labelled segment of every YTID of a shard with yt-dlp.

Design
------
* Only ``[start - margin, end + margin]`` of a source is fetched where yt-dlp can cut it
  (``download_ranges``: ffmpeg reads the section with HTTP Range requests). Sources that cannot be
  cut (``file://`` URLs, some protocols) fall back to a full download. The offset of the fetched
  window within its source is written next to the media as ``{ytid}.offset`` (see
  :func:`audiosetflow.audio.read_offset`), *before* the media is renamed into place.
* yt-dlp writes into a private temporary folder ``out_dir/.dl-{ytid}.{pid}/``; the result is
  decoded with ffmpeg, its duration checked against the segment, and only then renamed to
  ``out_dir/{ytid}.{ext}``. A file with that name is finished by construction and is never
  downloaded again (:func:`media_path`).
* Every failure is classified (:func:`classify_error`) as

  ``permanent``
      the video is gone: unavailable, private, removed, account terminated, blocked on copyright,
      geo-restricted, HTTP 404/410, no audio stream, source shorter than the
      segment start. Not retried (unless ``retry_permanent``).
  ``auth``
      YouTube wants a signed-in user: "Sign in to confirm you're not a bot", age checks,
      members-only. Not retried while ``cookies`` is unset (unless ``retry_permanent``); the
      reason says to configure ``download.cookies``, and once it is set they are tried again.
  ``transient``
      anything that may heal: HTTP 429/403/5xx, timeouts, refused or reset connections,
      truncated bodies, media that decode shorter than the segment, content that is not media,
      "try again later", and errors nobody recognised (nothing is lost by trying again).

  Transient failures are retried inside the job with exponential backoff
  (``backoff_initial * 2**k`` capped at ``backoff_max``; a server's ``Retry-After`` is honoured
  up to ``backoff_max``).
  Rate limiting (HTTP 429, "try again later", "rate-limited") is not retried: the job waits
  ``cooldown`` seconds and stops the shard early; the YTIDs not attempted are recorded as
  ``transient`` with the reason ``not attempted: shard stopped after rate limiting``.
* Short sources: when the source itself ends inside the segment (its duration is known from
  the extractor, from probing the URL with ffmpeg, or because the whole file was downloaded),
  the YTID is ``ok`` when the download covers the source up to its end (the trim stage pads and
  flags the clip as short; the ledger reason says ``short source``), and ``permanent`` ("source
  shorter than segment") when the source ends before the segment starts. A section that decodes
  shorter than requested while the source goes on is a truncated transfer: ``transient``.
* The ledger (one row per YTID, :data:`LEDGER_COLUMNS`) is read first when it exists and
  rewritten atomically after every YTID, so a killed job loses nothing: the next run re-uses the
  ``ok`` rows whose media still exist, skips ``permanent``/``auth`` rows and tries the rest.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..audio.timing import section_start
from ..io import read_tsv, write_tsv
from ..tools import ensure_ffmpeg_on_path, ffmpeg_exe

__all__ = [
    "DownloadConfig",
    "LEDGER_COLUMNS",
    "STATUSES",
    "download_shard",
    "media_path",
    "media_index",
    "classify_error",
    "MediaCheckError",
]

LEDGER_COLUMNS = ["ytid", "split", "shard", "status", "reason", "attempts", "bytes", "updated"]
STATUSES = ("ok", "permanent", "auth", "transient")
NOT_ATTEMPTED = "not attempted: shard stopped after rate limiting"

#: File suffixes next to the media that are not media themselves.
_SIDECARS = {"offset", "part", "ytdl", "json", "tmp", "temp", "lock"}
_TMP_PREFIX = ".dl-"

log_default = logging.getLogger("audiosetflow.download")

# Indirection so tests can record the waits instead of sleeping.
_sleep = time.sleep


# --------------------------------------------------------------------------------------------
# configuration


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
    cookies: str = ""
    proxy: str = ""
    js_runtimes: Mapping[str, Any] = field(default_factory=dict)
    ytdlp_options: Mapping[str, Any] = field(default_factory=dict)
    duration_tolerance: float = 0.1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DownloadConfig:
        """Build from the ``download`` dict of the workflow config.

        Missing keys take the defaults above; ``None`` values of string/mapping keys count as
        empty; keys this class does not know are ignored (the config schema validates them).
        """
        cfg = dict(cfg or {})
        kw: dict[str, Any] = {}
        for name, typ in (
            ("url_template", str),
            ("format", str),
            ("margin", float),
            ("retries", int),
            ("backoff_initial", float),
            ("backoff_max", float),
            ("sleep_between", float),
            ("cooldown", float),
            ("socket_timeout", float),
            ("retry_permanent", bool),
            ("cookies", str),
            ("proxy", str),
            ("duration_tolerance", float),
        ):
            if name in cfg and cfg[name] is not None:
                kw[name] = typ(cfg[name])
            elif name in cfg and typ is str:
                kw[name] = ""
        for name in ("js_runtimes", "ytdlp_options"):
            if name in cfg:
                kw[name] = dict(cfg[name] or {})
        out = cls(**kw)
        if "{ytid}" not in out.url_template:
            raise ValueError(f"download.url_template must contain '{{ytid}}': {out.url_template!r}")
        if out.retries < 0 or out.margin < 0 or out.duration_tolerance < 0:
            raise ValueError("download.retries, margin and duration_tolerance must be >= 0")
        return out

    def backoff(self, k: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``k`` (0-based)."""
        delay = self.backoff_initial * (2.0**k)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return max(0.0, min(delay, self.backoff_max))


# --------------------------------------------------------------------------------------------
# media files


# Extensions yt-dlp gives audio; looked up by name first, so that finding a YTID's media does
# not list a folder that may hold millions of files (the unbalanced set).
_COMMON_EXTS = ("webm", "m4a", "opus", "mp4", "mp3", "ogg", "mka", "aac", "flac", "wav", "mkv")


def _is_media_name(name: str, prefix: str) -> bool:
    if not name.startswith(prefix) or name.startswith("."):
        return False
    ext = name[len(prefix) :]
    return bool(ext) and "." not in ext and ext.lower() not in _SIDECARS


def media_path(out_dir: str | Path, ytid: str) -> Path | None:
    """The finished media file ``out_dir/{ytid}.{ext}`` of a YTID, or ``None``.

    Temporary files (names starting with ``.``) and sidecars (``.offset``, ``.part``, ...) are
    never returned. Where several exist, the newest wins. Common audio extensions are tried by
    name; the folder is listed only when none of them exists (see :func:`media_index` to look
    up many YTIDs with one listing).
    """
    out_dir = Path(out_dir)
    found = []
    for ext in _COMMON_EXTS:
        p = out_dir / f"{ytid}.{ext}"
        try:
            found.append((p.stat().st_mtime, p))
        except OSError:
            continue
    if found:
        return max(found)[1]
    return media_index(out_dir, [ytid]).get(ytid)


def media_index(out_dir: str | Path, ytids) -> dict[str, Path]:
    """Finished media of many YTIDs with one listing of ``out_dir``: YTID to path (newest).

    YTIDs without media are absent from the result.
    """
    out_dir = Path(out_dir)
    wanted = set(ytids)
    best: dict[str, tuple[float, Path]] = {}
    try:
        entries = os.scandir(out_dir)
    except FileNotFoundError:
        return {}
    with entries:
        for e in entries:
            y = e.name.split(".", 1)[0]
            if y not in wanted or not _is_media_name(e.name, f"{y}."):
                continue
            try:
                if not e.is_file():
                    continue
                m = e.stat().st_mtime
            except OSError:
                continue
            if y not in best or m > best[y][0]:
                best[y] = (m, out_dir / e.name)
    return {y: p for y, (_, p) in best.items()}


class MediaCheckError(RuntimeError):
    """A downloaded file failed verification.

    Attributes
    ----------
    status : str
        ``transient`` or ``permanent``.
    """

    def __init__(self, message: str, status: str = "transient"):
        super().__init__(message)
        self.status = status


_TIME_RE = re.compile(r"out_time_us=(\d+)")
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


def decoded_duration(path: str | Path, *, timeout: float = 600.0) -> float:
    """Seconds of audio ffmpeg decodes from ``path`` (first audio stream).

    Raises
    ------
    MediaCheckError
        ``transient`` when the file is not media (HTML, garbage, truncated header) or decodes
        to nothing; ``permanent`` when it is media without an audio stream.
    """
    path = Path(path).absolute()  # absolute: a name starting with '-' is never an option
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-v", "error",
        "-progress", "pipe:1", "-i", str(path), "-map", "0:a:0", "-f", "null", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise MediaCheckError(f"decoding took over {timeout:.0f} s") from exc
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        if "matches no streams" in err:
            raise MediaCheckError("no audio stream in the media", status="permanent")
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"ffmpeg exit {proc.returncode}"
        raise MediaCheckError(f"not media: {why}")
    times = _TIME_RE.findall(proc.stdout.decode("ascii", "replace"))
    seconds = int(times[-1]) / 1e6 if times else 0.0
    if seconds <= 0:
        raise MediaCheckError("not media: no audio decoded")
    return seconds


def probe_source_duration(
    url: str, *, timeout: float, headers: Mapping[str, str] | None = None
) -> float | None:
    """Duration in seconds of a remote media URL as ffmpeg reads it from the headers, or None.

    Only the container header is read (a few kB; ffmpeg seeks with Range requests where the
    index is at the end).
    """
    if not re.match(r"^(https?|file):", url):
        return None
    if url.startswith("file:"):
        url = re.sub(r"^file://(?:localhost)?/", "file:/", url)
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner"]
    if url.startswith("http"):
        cmd += ["-rw_timeout", str(int(timeout * 1e6))]
        if headers:
            cmd += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    cmd += ["-i", url]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout * 3 + 5)
    except subprocess.TimeoutExpired:
        return None
    m = _DURATION_RE.search(proc.stderr.decode("utf-8", "replace"))
    if not m:
        return None
    h, mi, s = m.groups()
    return int(h) * 3600 + int(mi) * 60 + float(s)


# --------------------------------------------------------------------------------------------
# classification


@dataclass(frozen=True)
class _Failure:
    status: str
    reason: str
    rate_limited: bool = False
    retry_after: float | None = None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Patterns on the lower-cased messages of the exception chain, checked in this order.
_RATE_PATTERNS = (
    "too many requests",
    "http error 429",
    "try again later",
    "rate-limit",
    "rate limit",
    "ratelimit",
)
_PERMANENT_PATTERNS = (
    ("private video", "private video"),
    ("video is private", "private video"),
    ("account associated with this video has been terminated", "account terminated"),
    ("account has been terminated", "account terminated"),
    ("has been terminated", "account terminated"),
    ("copyright", "blocked on copyright"),
    ("not available in your country", "geo-restricted"),
    ("blocked it in your country", "geo-restricted"),
    ("geo restrict", "geo-restricted"),
    ("geo-restrict", "geo-restricted"),
    ("from your location", "geo-restricted"),
    ("removed by the uploader", "removed by the uploader"),
    ("has been removed", "video removed"),
    ("violating youtube", "removed for a policy violation"),
    ("video unavailable", "video unavailable"),
    ("video is unavailable", "video unavailable"),
    ("video is no longer available", "video unavailable"),
    ("this video does not exist", "video does not exist"),
    ("this video is not available", "video unavailable"),
    ("uploader has not made this video available", "geo-restricted"),
    ("http error 404", "HTTP 404"),
    ("http error 410", "HTTP 410"),
    ("requested format is not available", "requested format not available"),
    ("no audio stream", "no audio stream"),
    ("source shorter than segment", "source shorter than segment"),
)
_AUTH_PATTERNS = (
    "not a bot",
    "sign in to confirm",
    "confirm your age",
    "age-restricted",
    "age restricted",
    "inappropriate for some users",
    "login required",
    "log in",
    "sign in",
    "members-only",
    "members only",
    "join this channel",
    "use --cookies",
    "cookies",
)
_TRANSIENT_PATTERNS = (
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("connection refused", "connection refused"),
    ("connection reset", "connection reset"),
    ("remote end closed", "connection closed"),
    ("broken pipe", "connection closed"),
    ("incomplete read", "truncated body"),
    ("incompleteread", "truncated body"),
    ("content too short", "truncated body"),
    ("bytes read", "truncated body"),
    ("did not get any data blocks", "truncated body"),
    ("unable to download video data", "media transfer failed"),
    ("temporarily unavailable", "service unavailable"),
    ("http error 5", "server error"),
    ("http error 403", "HTTP 403 (expired URL or throttling)"),
    ("not media", "not media"),
    ("invalid data found", "not media"),
    ("unsupported url", "not media (a web page without media; check download.url_template)"),
    ("ffmpeg exited with code", "ffmpeg could not read the media (not media or broken transfer)"),
    ("decoded", "truncated media"),
    ("name or service not known", "DNS failure"),
    ("temporary failure in name resolution", "DNS failure"),
    ("network is unreachable", "network unreachable"),
)
_AUTH_HINT = "configure download.cookies (a Netscape cookies file of a signed-in browser session)"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (cause, context, yt-dlp's exc_info/cause)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop(0)
        if e is None or id(e) in seen or len(seen) > 50:
            continue
        seen.add(id(e))
        yield e
        nested: list[Any] = [getattr(e, "__cause__", None), getattr(e, "__context__", None)]
        ei = getattr(e, "exc_info", None)
        if isinstance(ei, tuple) and len(ei) >= 2:
            nested.append(ei[1])
        nested.append(getattr(e, "cause", None))
        nested.append(getattr(e, "reason", None))  # urllib URLError
        stack.extend(x for x in nested if isinstance(x, BaseException))


def _http_status(e: BaseException) -> int | None:
    for attr in ("status", "code"):
        v = getattr(e, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            name = type(e).__name__
            if "HTTP" in name or "Http" in name or attr == "status":
                return v
    return None


def _retry_after(e: BaseException) -> float | None:
    headers = None
    resp = getattr(e, "response", None)
    if resp is not None:
        headers = getattr(resp, "headers", None)
    if headers is None:
        headers = getattr(e, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("Retry-After")
    except Exception:  # noqa: BLE001 - any odd header object
        return None
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(when.tzinfo or UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _one_line(text: str, limit: int = 240) -> str:
    text = _ANSI.sub("", text)
    text = re.sub(r"^\s*ERROR:\s*", "", text)
    text = re.sub(r";?\s*please report this issue on .*$", "", text, flags=re.S | re.I)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _classify(exc: BaseException) -> _Failure:
    chain = list(_chain(exc))
    msg = _one_line(str(exc)) or type(exc).__name__
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain).lower()
    retry_after = next((r for e in chain if (r := _retry_after(e)) is not None), None)

    for e in chain:
        if isinstance(e, MediaCheckError):
            return _Failure(e.status, _one_line(str(e)))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise exc  # disk full: stop the job, nothing to classify
    status = next((s for e in chain if (s := _http_status(e)) is not None), None)
    if status is None:
        m = re.search(r"http error (\d{3})", text)
        status = int(m.group(1)) if m else None

    if status == 429 or any(p in text for p in _RATE_PATTERNS):
        return _Failure("transient", f"rate limited: {msg}", True, retry_after)
    # Message patterns for permanent/auth come before the status: YouTube answers some of
    # them with a plain 200 page, and "Private video. Sign in if you've been granted access"
    # must not read as an auth problem.
    for pat, label in _PERMANENT_PATTERNS:
        if pat in text and not (pat.startswith("http error") and status not in (404, 410)):
            if label in ("video unavailable",) and any(p in text for p in _AUTH_PATTERNS[:6]):
                break  # "Video unavailable ... Sign in to confirm your age": auth
            return _Failure("permanent", f"{label}: {msg}")
    if any(p in text for p in _AUTH_PATTERNS):
        return _Failure("auth", f"sign-in required ({_AUTH_HINT}): {msg}")
    if status in (404, 410):
        return _Failure("permanent", f"HTTP {status}: {msg}")
    if status == 401:
        return _Failure("auth", f"HTTP 401 ({_AUTH_HINT}): {msg}")
    if status == 451:
        return _Failure("permanent", f"HTTP 451 (blocked): {msg}")
    if status is not None and (status == 403 or status >= 500 or status == 408):
        return _Failure("transient", f"HTTP {status}: {msg}", False, retry_after)
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return _Failure("permanent", f"no such file: {msg}")
        if isinstance(e, TimeoutError | ConnectionError):
            return _Failure("transient", f"{type(e).__name__}: {msg}", False, retry_after)
    for pat, label in _TRANSIENT_PATTERNS:
        if pat in text:
            return _Failure("transient", f"{label}: {msg}", False, retry_after)
    if status is not None:
        return _Failure("transient", f"HTTP {status}: {msg}", False, retry_after)
    return _Failure("transient", f"unrecognised error: {msg}", False, retry_after)


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Classify a download failure as ``permanent``, ``auth`` or ``transient``.

    The whole exception chain is inspected (``__cause__``, ``__context__``, yt-dlp's
    ``exc_info`` and ``cause``): an HTTP status of a ``yt_dlp.networking.exceptions.HTTPError``
    where present, the messages otherwise (see the module docstring for the classes).

    Returns
    -------
    (status, reason)
        ``reason`` is one line: the class's label, then the original message.
    """
    f = _classify(exc)
    return f.status, f.reason


# --------------------------------------------------------------------------------------------
# one YTID


class _YtdlpLogger:
    """Routes yt-dlp's messages to our logger at DEBUG (we log each outcome ourselves)."""

    def __init__(self, log: logging.Logger):
        self.log = log

    def debug(self, msg: str) -> None:
        self.log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        self.log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        self.log.debug("yt-dlp error: %s", msg)


@dataclass
class _Result:
    path: Path
    offset: float
    duration: float
    reason: str = ""


class _Downloader:
    """Downloads and verifies one YTID at a time; remembers whether sections work."""

    def __init__(self, cfg: DownloadConfig, out_dir: Path, log: logging.Logger):
        self.cfg, self.out_dir, self.log = cfg, out_dir, log
        self.ffmpeg_dir = ensure_ffmpeg_on_path()
        # Sections until yt-dlp says this source cannot be cut; then full files for the run.
        self.sections = True

    def options(self, tmp: Path, ranges: Any | None) -> dict[str, Any]:
        cfg = self.cfg
        opts: dict[str, Any] = {
            "format": cfg.format,
            "outtmpl": {"default": str(tmp / "media.%(ext)s")},
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "noplaylist": True,
            "socket_timeout": cfg.socket_timeout,
            "retries": 0,
            "fragment_retries": 0,
            "extractor_retries": 0,
            "file_access_retries": 0,
            "overwrites": True,
            "continuedl": False,
            "enable_file_urls": True,
            "ffmpeg_location": self.ffmpeg_dir,
            "logger": _YtdlpLogger(self.log),
            "color": {"stdout": "no_color", "stderr": "no_color"},
        }
        if ranges is not None:
            opts["download_ranges"] = ranges
            opts["force_keyframes_at_cuts"] = True  # re-encode: the offset is exact
            # ffmpeg reads the section itself: make its network reads time out too.
            opts["external_downloader_args"] = {
                "ffmpeg_i": ["-rw_timeout", str(int(cfg.socket_timeout * 1e6))]
            }
        if cfg.cookies:
            opts["cookiefile"] = cfg.cookies
        if cfg.proxy:
            opts["proxy"] = cfg.proxy
        if cfg.js_runtimes:
            opts["js_runtimes"] = {k: dict(v or {}) for k, v in cfg.js_runtimes.items()}
        opts.update(dict(cfg.ytdlp_options))
        return opts

    def fetch(self, ytid: str, start: float, end: float) -> _Result:
        """Download, verify and rename one YTID's media; raise on any failure."""
        tmp = self.out_dir / f"{_TMP_PREFIX}{ytid}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            return self._fetch(ytid, start, end, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_ytdlp(self, url: str, tmp: Path, ranges: Any | None) -> dict[str, Any]:
        import yt_dlp

        with yt_dlp.YoutubeDL(self.options(tmp, ranges)) as ydl:
            info = ydl.extract_info(url, download=True)
        return info or {}

    def _fetch(self, ytid: str, start: float, end: float, tmp: Path) -> _Result:
        import yt_dlp

        cfg = self.cfg
        url = cfg.url_template.replace("{ytid}", ytid)
        lo = max(0.0, start - cfg.margin)
        hi = end + cfg.margin
        seen: dict[str, Any] = {}

        def ranges(info_dict: dict, ydl: Any) -> Iterable[dict[str, float]]:
            seen["duration"] = info_dict.get("duration")
            yield {"start_time": lo, "end_time": hi}

        sectioned = self.sections
        try:
            info = self._run_ytdlp(url, tmp, ranges if sectioned else None)
        except yt_dlp.utils.DownloadError as exc:
            if not (sectioned and "cannot be partially downloaded" in str(exc)):
                raise
            self.log.info("source cannot be cut: falling back to full downloads (%s)", url)
            self.sections = sectioned = False
            for p in tmp.iterdir():
                p.unlink()
            info = self._run_ytdlp(url, tmp, None)
        files = [p for p in tmp.iterdir() if p.is_file() and p.name.startswith("media.")]
        files = [p for p in files if p.suffix.lstrip(".").lower() not in _SIDECARS]
        if not files:
            raise MediaCheckError("yt-dlp reported success but wrote no media file")
        media = max(files, key=lambda p: p.stat().st_size)
        offset = section_start(media, lo) if sectioned else 0.0  # where ffmpeg's cut landed
        tol = cfg.duration_tolerance
        probed: list[float | None] = []

        def source_duration() -> float | None:
            """Duration of the whole source: extractor, else the media URL's header."""
            if not probed:
                src = seen.get("duration") if sectioned else info.get("duration")
                if src is None and sectioned:
                    fmt = (info.get("requested_downloads") or [info])[0]
                    media_url = fmt.get("url") or info.get("url")
                    if media_url:
                        src = probe_source_duration(
                            media_url,
                            timeout=cfg.socket_timeout,
                            headers=fmt.get("http_headers") or info.get("http_headers"),
                        )
                probed.append(float(src) if src else None)
            return probed[0]

        def too_short(src: float) -> MediaCheckError:
            return MediaCheckError(
                f"source shorter than segment: source ends at {src:.2f} s, "
                f"segment starts at {start:.2f} s",
                status="permanent",
            )

        try:
            duration = decoded_duration(media)
        except MediaCheckError as exc:
            if not sectioned:
                raise
            # A section past the end of the source comes back as an empty container; a section
            # of a source that goes on is a broken transfer (transient), whatever ffmpeg says.
            src = source_duration()
            if src is not None and src <= start + tol:
                raise too_short(src) from None
            raise MediaCheckError(f"truncated section: it does not decode ({exc})") from None
        covered = offset + duration
        reason = ""
        if covered < end - tol:
            src = source_duration() if sectioned else (info.get("duration") or duration)
            if src is not None and src <= start + tol:
                raise too_short(src)
            if src is not None and src < end - tol and covered >= src - tol:
                reason = f"short source: {src:.2f} s < segment end {end:.2f} s"
            else:
                expected = (min(hi, src) if src else hi) - offset
                raise MediaCheckError(
                    f"decoded {duration:.2f} s, expected {expected:.2f} s "
                    f"(window {offset:.2f}-{offset + expected:.2f} s): truncated transfer"
                )
        ext = media.suffix.lstrip(".") or "media"
        final = self.out_dir / f"{ytid}.{ext}"
        side = self.out_dir / f"{ytid}.offset"
        side_tmp = tmp / "offset"
        side_tmp.write_text(f"{offset:.6f}\n", encoding="utf-8")
        os.replace(side_tmp, side)
        os.replace(media, final)
        return _Result(final, offset, duration, reason)


# --------------------------------------------------------------------------------------------
# shard


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _load_ledger(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        df = read_tsv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError):
        return {}
    if "ytid" not in df.columns or "status" not in df.columns:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        rows[str(rec["ytid"])] = rec
    return rows


def _clean_stale_tmp(out_dir: Path, ytids: set[str]) -> None:
    try:
        entries = list(os.scandir(out_dir))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name.startswith(_TMP_PREFIX):
            ytid = e.name[len(_TMP_PREFIX) :].rsplit(".", 1)[0]
            if ytid in ytids:
                shutil.rmtree(e.path, ignore_errors=True)


def download_shard(
    manifest: pd.DataFrame,
    *,
    out_dir: str | Path,
    ledger_path: str | Path,
    cfg: DownloadConfig,
    log: logging.Logger | None = None,
) -> pd.DataFrame:
    """Download the segments of one shard; resumable per YTID.

    Parameters
    ----------
    manifest : DataFrame
        Columns ``ytid, split, shard, start, end, labels`` (one row per YTID).
    out_dir : str or Path
        Folder of the media: ``out_dir/{ytid}.{ext}`` plus ``{ytid}.offset``.
    ledger_path : str or Path
        TSV with :data:`LEDGER_COLUMNS`; read first when it exists, rewritten atomically after
        every YTID.
    cfg : DownloadConfig
    log : logging.Logger, optional

    Returns
    -------
    DataFrame
        The final ledger (also written to ``ledger_path``), rows in manifest order.
    """
    log = log or log_default
    out_dir = Path(out_dir)
    ledger_path = Path(ledger_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    man = manifest.drop_duplicates("ytid", keep="first").reset_index(drop=True)
    man = man.assign(ytid=man["ytid"].astype(str))
    previous = _load_ledger(ledger_path)
    ytids = man["ytid"].tolist()
    _clean_stale_tmp(out_dir, set(ytids))
    finished = media_index(out_dir, ytids)  # one listing of the folder for the whole shard
    split = str(man["split"].iloc[0]) if len(man) and "split" in man else ""
    shard = man["shard"].iloc[0] if len(man) and "shard" in man else ""
    tag = f"[shard {split}/{shard}]" if split else f"[shard {shard}]"

    rows: dict[str, dict[str, Any]] = {}
    todo: list[int] = []
    for i, rec in enumerate(man.to_dict("records")):
        y = rec["ytid"]
        prev = previous.get(y, {})
        attempts = _int(prev.get("attempts"))
        base = {
            "ytid": y,
            "split": rec.get("split", ""),
            "shard": rec.get("shard", ""),
            "attempts": attempts,
            "updated": prev.get("updated") or _now(),
        }
        done = finished.get(y)
        pstatus = prev.get("status", "")
        if done is not None:
            reason = prev.get("reason", "") if pstatus == "ok" else "found finished media"
            rows[y] = {**base, "status": "ok", "reason": reason, "bytes": done.stat().st_size}
            continue
        # auth failures are retried once cookies are configured (that is their fix: setting
        # download.cookies changes the rule's parameters, so every download job runs again)
        keep = pstatus == "permanent" or (pstatus == "auth" and not cfg.cookies)
        if keep and not cfg.retry_permanent:
            rows[y] = {**base, "status": pstatus, "reason": prev.get("reason", ""), "bytes": 0}
            continue
        reason = prev.get("reason", "") if pstatus == "transient" else "pending"
        if pstatus == "ok":
            reason = "pending: media of an earlier ok run is gone"
        rows[y] = {**base, "status": "transient", "reason": reason or "pending", "bytes": 0}
        todo.append(i)

    def write() -> pd.DataFrame:
        df = pd.DataFrame([rows[y] for y in ytids], columns=LEDGER_COLUMNS)
        write_tsv(ledger_path, df)
        return df

    df = write()
    n = len(ytids)
    log.info("%s %d YTIDs: %d to download, %d done or skipped", tag, n, len(todo), n - len(todo))
    dl = _Downloader(cfg, out_dir, log)
    stopped = False
    first = True
    for k, i in enumerate(todo):
        rec = man.iloc[i]
        y = rec["ytid"]
        if stopped:
            rows[y].update(status="transient", reason=NOT_ATTEMPTED, updated=_now())
            continue
        if not first and cfg.sleep_between > 0:
            _sleep(cfg.sleep_between)
        first = False
        outcome = _download_one(dl, y, float(rec["start"]), float(rec["end"]), cfg, log)
        rows[y].update(
            status=outcome.status,
            reason=outcome.reason,
            attempts=rows[y]["attempts"] + outcome.attempts,
            bytes=outcome.bytes,
            updated=_now(),
        )
        df = write()
        counts = df["status"].value_counts()
        summary = " ".join(f"{s}={int(counts.get(s, 0))}" for s in STATUSES)
        log.info(
            "%s %d/%d %s | %s: %s%s",
            tag, k + 1, len(todo), summary, y, outcome.status,
            f" ({outcome.reason})" if outcome.reason else "",
        )  # fmt: skip
        if outcome.rate_limited:
            left = len(todo) - k - 1
            log.warning(
                "%s rate limited: cooling down %.0f s, then stopping the shard (%d YTIDs left "
                "for the next run)",
                tag, outcome.cooldown, left,
            )  # fmt: skip
            _sleep(outcome.cooldown)
            stopped = True
    df = write()
    counts = df["status"].value_counts()
    log.info("%s finished: %s", tag, " ".join(f"{s}={int(counts.get(s, 0))}" for s in STATUSES))
    return df


def _int(v: Any) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(f) else int(f)


@dataclass
class _Outcome:
    status: str
    reason: str
    attempts: int
    bytes: int = 0
    rate_limited: bool = False
    cooldown: float = 0.0


def _download_one(
    dl: _Downloader, ytid: str, start: float, end: float, cfg: DownloadConfig, log: logging.Logger
) -> _Outcome:
    attempts = 0
    while True:
        attempts += 1
        try:
            res = dl.fetch(ytid, start, end)
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            f = _classify(exc)
            if f.rate_limited:
                cool = cfg.cooldown
                if f.retry_after is not None:
                    cool = max(cool, min(f.retry_after, max(cfg.cooldown, cfg.backoff_max)))
                return _Outcome("transient", f.reason, attempts, 0, True, cool)
            if f.status != "transient" or attempts > cfg.retries:
                return _Outcome(f.status, f.reason, attempts)
            delay = cfg.backoff(attempts - 1, f.retry_after)
            log.info("%s: %s; retry %d/%d in %.1f s", ytid, f.reason, attempts, cfg.retries, delay)
            _sleep(delay)
            continue
        return _Outcome("ok", res.reason, attempts, res.path.stat().st_size)
