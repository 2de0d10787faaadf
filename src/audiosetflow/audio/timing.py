"""Where a section cut with ffmpeg's input ``-ss`` really starts in its source.

yt-dlp cuts a section (``download_ranges``) as ``ffmpeg -ss T -t D -i URL OUT``. ffmpeg does
not seek to ``T`` of the decoded audio but to ``T + start_time`` in the file's timestamps,
``start_time`` being the file's start as libavformat reports it (``start:`` in ``ffmpeg -i``).
The source's own timeline (the one :func:`audiosetflow.audio.codec.decode` gives and the
``.offset`` files are in) begins at its first decoded sample instead. The two differ by an
amount that depends on the ffmpeg build:

* ffmpeg 5.1 (Debian 12's package) reports the start of Opus in WebM/Matroska as the first
  packet's timestamp, before the codec delay (pre-skip, 312 samples = 6.5 ms, stored as 7 ms),
  ``start: -0.007000``: its cut lands 7 ms early. Vorbis in WebM: 3 ms early.
* newer ffmpeg (imageio-ffmpeg's 9.0) reports the start of the decoded audio,
  ``start: 0.000000`` for the same file: no shift.
* AAC in MP4/M4A (edit lists), MP3 (encoder delay in the start time), Ogg: no shift in either.

:func:`seek_bias` measures that shift on a file with this ffmpeg: its reported start time
minus the timestamp of its first decoded audio sample. Measured on the section, which ffmpeg
re-encoded into the source's container with the container's default codec (yt-dlp's
``force_keyframes_at_cuts``), it is the shift of the cut of the source wherever that codec is
the source's (WebM: Opus, M4A: AAC, as YouTube serves them), since a build applies the same
convention to both files. :func:`section_start` adds it to the requested time.

What stays: ffmpeg cuts by timestamps, and WebM/Matroska stores them in whole milliseconds, so
a WebM cut lies within 1 ms of where any timestamp says (for Opus muxed by ffmpeg: 48 samples
at 48 kHz early, with both builds alike). MP4, Ogg and MP3 cuts are exact to the sample.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from ..tools import ffmpeg_exe

__all__ = ["seek_bias", "section_start"]

log = logging.getLogger("audiosetflow.audio")

# "  Duration: 00:00:12.01, start: -0.007000, bitrate: 34 kb/s" (first input's dump)
_START = re.compile(r"^\s*Duration: [^,]*, start: (-?\d+(?:\.\d+)?)", re.MULTILINE)
_TIMEBASE = re.compile(r"^#tb 0: (\d+)/(\d+)$", re.MULTILINE)


def seek_bias(path: str | Path, *, timeout: float = 60.0) -> float:
    """Seconds by which this ffmpeg's input ``-ss T`` lands after source time ``T`` on ``path``.

    That is ``start_time - t0``: the start time libavformat reports for the file (which the
    command line adds to ``-ss``; 0 where it reports none) minus the timestamp of the first
    audio sample ffmpeg decodes (time 0 of the file's audio, as :func:`decode` gives it). One
    ffmpeg run reading the header and the first packet, rounded to the microsecond (the
    resolution ffmpeg prints the start time in). Negative: the cut starts early.

    Raises
    ------
    RuntimeError
        When ffmpeg cannot decode an audio frame of ``path``.
    """
    path = Path(path).absolute()  # absolute: a name starting with '-' is never an option
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-copyts", "-i", str(path),
        "-map", "0:a:0", "-frames:a", "1", "-c:a", "pcm_s16le", "-f", "framecrc", "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=timeout)
    out = proc.stdout.decode("ascii", "replace")
    tb = _TIMEBASE.search(out)
    frames = [ln.split(",") for ln in out.splitlines() if ln and not ln.startswith("#")]
    if proc.returncode != 0 or tb is None or not frames:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"{path}: no audio frame decoded ({err[-1] if err else 'ffmpeg'})")
    # framecrc: stream, dts, pts, duration, size, crc; pts in the stream's time base
    t0 = int(frames[0][2]) * int(tb.group(1)) / int(tb.group(2))
    m = _START.search(proc.stderr.decode("utf-8", "replace"))
    start = float(m.group(1)) if m else 0.0
    return round(start - t0, 6)


def section_start(path: str | Path, requested: float) -> float:
    """Source time (seconds) of the first sample of a section ffmpeg cut at ``requested``.

    ``path`` is the section as written by the cut (``ffmpeg -ss requested -i SOURCE path``,
    re-encoded into the source's container, as yt-dlp's ``download_ranges`` with
    ``force_keyframes_at_cuts`` does). ``requested <= 0`` means no ``-ss`` at all (yt-dlp
    passes none): 0. When the section cannot be measured, ``requested`` (and a log line).
    """
    if requested <= 0:
        return 0.0
    try:
        bias = seek_bias(path)
    except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        # (media that do not decode fail the download's own check right after)
        log.debug("cannot measure where the section %s starts, taking %.3f s: %s",
                  path, requested, exc)  # fmt: skip
        return requested
    return max(0.0, requested + bias)
