"""Fetching and checking one YTID's media with yt-dlp (the download stage's worker).

* Only ``[start - margin, end + margin]`` of a source is fetched where yt-dlp can cut it
  (``download_ranges``: ffmpeg reads the section with HTTP Range requests). Sources that cannot
  be cut (``file://`` URLs, some protocols) fall back to a full download. The offset of the
  fetched window within its source is recorded (:meth:`ShardLayout.write_offset`) *before* the
  media is renamed into place.
* yt-dlp writes into a private temporary folder (:meth:`ShardLayout.download_tmp`); the result
  is decoded with ffmpeg, its duration checked against the segment, and only then renamed to
  its final name. A file with that name is finished by construction and is never downloaded
  again (:meth:`ShardLayout.media`).
* Short sources: when the source itself ends inside the segment (its duration is known from
  the extractor, from probing the URL with ffmpeg, or because the whole file was downloaded),
  the fetch succeeds when the download covers the source up to its end (the trim stage pads
  and flags the clip as short; the reason says ``short source``), and fails ``permanent``
  ("source shorter than segment") when the source ends before the segment starts. A section
  that decodes shorter than requested while the source goes on is a truncated transfer
  (``transient``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audio.timing import section_start
from ..shard import SIDECARS, ShardLayout, Status
from ..tools import ensure_ffmpeg_on_path, ffmpeg_exe
from .classify import MediaCheckError

if TYPE_CHECKING:
    from .download import DownloadConfig

__all__ = ["COPY_EXACT", "Fetched", "YtdlpFetcher", "decoded_duration", "probe_source_duration"]

#: Containers whose sections are stream-copied instead of re-encoded: ffmpeg's input ``-ss``
#: with ``-c copy`` starts at the packet before the cut and the MP4 muxer writes an edit list
#: that skips to the cut, so the section's first decoded sample is the requested one (checked
#: to the sample, with both ffmpeg builds: tests/test_download.py). Not WebM/Matroska: a
#: copied section there starts at the cue point before the cut (up to seconds early, its
#: start known only to the 1-ms timestamp resolution), and the Opus decoder, started cold
#: there, decodes samples that differ from those of the whole file for a while (0.03 of full
#: scale after 0.1 s): WebM sections stay re-encoded (``force_keyframes_at_cuts``).
COPY_EXACT = frozenset({"m4a", "mp4"})

_TIME_RE = re.compile(r"out_time_us=(\d+)")
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


def _private_cookies(cookies: str, folder: Path) -> str:
    """A copy of the user's cookies file in ``folder`` (private, outside ``results/``), for
    yt-dlp.

    yt-dlp writes its cookie jar back to its ``cookiefile`` when it closes: given the user's
    file, parallel download jobs (and the user's browser export) would race on it, and a job
    reading it mid-write fails with "does not look like a Netscape format cookies file". The
    copy goes with the folder. Where the file cannot be read, yt-dlp is given it as it is
    (and says why).
    """
    dst = folder / "cookies.txt"
    try:
        shutil.copyfile(os.path.expanduser(cookies), dst)
        os.chmod(dst, 0o600)
    except OSError:
        return cookies
    return str(dst)


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
            raise MediaCheckError("no audio stream in the media", status=Status.PERMANENT)
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
class Fetched:
    """A finished download: the media, where it starts in its source, its decoded length and
    a remark (``short source: ...``) or ``""``."""

    path: Path
    offset: float
    duration: float
    reason: str = ""


class YtdlpFetcher:
    """Downloads and verifies one YTID at a time; remembers whether sections work.

    Parameters
    ----------
    cfg : DownloadConfig
    shard : ShardLayout
        Where the media, offsets and temporary folders go.
    log : logging.Logger
    """

    def __init__(self, cfg: DownloadConfig, shard: ShardLayout, log: logging.Logger):
        self.cfg, self.shard, self.log = cfg, shard, log
        self.ffmpeg_dir = ensure_ffmpeg_on_path()
        # Sections until yt-dlp says this source cannot be cut; then full files for the run
        # (download.sections "auto"); "never": full files only.
        self.sections = cfg.sections != "never"
        #: Whether the last section was stream-copied (a container in COPY_EXACT).
        self.copied = False
        #: This attempt's private copy of the cookies file (:func:`_private_cookies`).
        self._cookies = ""

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
            # re-encode (the cut lands where asked); _run_ytdlp copies where that is exact too
            opts["force_keyframes_at_cuts"] = True
            # ffmpeg reads the section itself: make its network reads time out too.
            opts["external_downloader_args"] = {
                "ffmpeg_i": ["-rw_timeout", str(int(cfg.socket_timeout * 1e6))]
            }
        for key, name in (
            ("sleep_interval_requests", "sleep_requests"),
            ("sleep_interval", "sleep_interval"),
            ("max_sleep_interval", "max_sleep_interval"),
        ):
            if getattr(cfg, name) > 0:
                opts[key] = getattr(cfg, name)
        if cfg.cookies:
            opts["cookiefile"] = self._cookies or cfg.cookies
        if cfg.proxy:
            opts["proxy"] = cfg.proxy
        if cfg.js_runtimes:
            opts["js_runtimes"] = {k: dict(v or {}) for k, v in cfg.js_runtimes.items()}
        opts.update(dict(cfg.ytdlp_options))
        return opts

    def fetch(self, ytid: str, start: float, end: float) -> Fetched:
        """Download, verify and rename one YTID's media; raise on any failure."""
        tmp = self.shard.download_tmp(ytid)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        private = tempfile.mkdtemp(prefix="audiosetflow-ytdlp-") if self.cfg.cookies else ""
        try:
            self._cookies = _private_cookies(self.cfg.cookies, Path(private)) if private else ""
            return self._fetch(ytid, start, end, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if private:
                shutil.rmtree(private, ignore_errors=True)
            self._cookies = ""

    def _run_ytdlp(self, url: str, tmp: Path, ranges: Any | None) -> dict[str, Any]:
        import yt_dlp

        with yt_dlp.YoutubeDL(self.options(tmp, ranges)) as ydl:
            if ranges is None:
                return ydl.extract_info(url, download=True) or {}
            # Select the format first: a section of a container in COPY_EXACT is copied, not
            # re-encoded (no second generation of lossy coding, a fraction of the CPU).
            info = ydl.extract_info(url, download=False) or {}
            copy = str(info.get("ext", "")).lower() in COPY_EXACT
            ydl.params["force_keyframes_at_cuts"] = not copy
            self.copied = copy
            return ydl.process_ie_result(info, download=True) or {}

    def _fetch(self, ytid: str, start: float, end: float, tmp: Path) -> Fetched:
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
            if cfg.sections == "always":
                raise MediaCheckError(
                    "source cannot be cut and download.sections is 'always'",
                    status=Status.PERMANENT,
                ) from None
            self.log.info("source cannot be cut: falling back to full downloads (%s)", url)
            self.sections = sectioned = False
            for p in tmp.iterdir():
                p.unlink()
            info = self._run_ytdlp(url, tmp, None)
        files = [p for p in tmp.iterdir() if p.is_file() and p.name.startswith("media.")]
        files = [p for p in files if p.suffix.lstrip(".").lower() not in SIDECARS]
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
                status=Status.PERMANENT,
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
        final = self.shard.media_name(ytid, ext)
        self.shard.write_offset(ytid, offset)  # before the media: a finished file has its offset
        os.replace(media, final)
        return Fetched(final, offset, duration, reason)
