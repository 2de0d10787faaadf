"""Audio decoding, transcoding and exact trimming (ffmpeg + soundfile).

Conventions
-----------
* PCM files are mono 16-bit FLAC at the configured sample rate.
* The transcoded *window* of a YTID starts at ``offset`` seconds of the source video (the
  download stage fetches ``[start - margin, end + margin]`` where it can cut the source, the
  whole video otherwise); the offset is stored next to the media as ``{ytid}.offset``.
* A clip is exactly ``[start, end)`` of the source in samples: sample ``i`` of the clip is
  sample ``round((start - offset) * sr) + i`` of the window. Clips shorter than
  ``clip_seconds`` are zero-padded at the end and flagged ``short``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .io import atomic_path
from .tools import ffmpeg_exe

__all__ = ["AudioError", "decode", "transcode", "trim", "load_clip", "TrimResult", "read_offset"]


class AudioError(RuntimeError):
    """A media file could not be decoded; the message names the file and ffmpeg's reason."""


def _ffmpeg_error(path: Path, stderr: bytes) -> AudioError:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    reason = lines[-1].strip() if lines else "ffmpeg failed"
    return AudioError(f"{path}: cannot decode audio: {reason}")


def decode(
    path: str | Path,
    *,
    sample_rate: int,
    start: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode any media file to mono float32 PCM with ffmpeg.

    Parameters
    ----------
    path : str or Path
        Media file (any container/codec ffmpeg reads).
    sample_rate : int
        Output sample rate in Hz.
    start : float
        Seconds to skip from the start of the file.
    duration : float, optional
        Seconds to decode (``None``: to the end).

    Returns
    -------
    ndarray of float32, shape (n_samples,)

    Raises
    ------
    AudioError
        When the file does not exist, is not media, or has no audio stream.
    """
    path = Path(path).absolute()  # absolute: a name starting with '-' is never an option
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error"]
    if start > 0:
        cmd += ["-ss", f"{start:.6f}"]
    cmd += ["-i", str(path)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise _ffmpeg_error(path, proc.stderr)
    y = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32, copy=True)
    if y.size == 0:
        raise AudioError(f"{path}: cannot decode audio: no samples")
    return y


def read_offset(media: str | Path) -> float:
    """Offset in seconds of a downloaded media file within its source video (0 if unknown)."""
    side = Path(media).with_suffix(".offset")
    try:
        return float(side.read_text().strip())
    except (OSError, ValueError):
        return 0.0


def transcode(src: str | Path, dst: str | Path, *, sample_rate: int) -> float:
    """Transcode ``src`` to mono 16-bit FLAC at ``sample_rate`` (atomically); return seconds.

    Raises
    ------
    AudioError
        When ffmpeg cannot decode ``src``.
    """
    src = Path(src).absolute()
    dst = Path(dst).absolute()
    with atomic_path(dst) as tmp:
        cmd = [
            ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(src),
            "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
            "-c:a", "flac", "-sample_fmt", "s16", str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise _ffmpeg_error(src, proc.stderr)
        info = sf.info(str(tmp))
        if info.frames == 0:
            raise AudioError(f"{src}: cannot decode audio: no samples")
    return info.frames / info.samplerate


@dataclass(frozen=True)
class TrimResult:
    """Outcome of :func:`trim`.

    Attributes
    ----------
    duration : float
        Seconds of real audio in the clip (before padding).
    short : bool
        Whether the clip was zero-padded to reach ``clip_seconds``.
    """

    duration: float
    short: bool


def trim(
    window: str | Path,
    dst: str | Path,
    *,
    offset: float,
    start: float,
    end: float,
    clip_seconds: float = 10.0,
) -> TrimResult:
    """Cut exactly ``[start, end)`` (source seconds) out of a transcoded window.

    Parameters
    ----------
    window : str or Path
        Mono FLAC/WAV whose first sample is at ``offset`` seconds of the source.
    dst : str or Path
        Output FLAC (16-bit), written atomically, ``round(clip_seconds * sr)`` samples long
        (or the segment length if that is longer).
    offset, start, end : float
        Seconds in source time.
    clip_seconds : float
        Minimum clip length; shorter clips are zero-padded at the end and flagged.

    Returns
    -------
    TrimResult
    """
    y, sr = sf.read(str(window), dtype="float32", always_2d=False)
    if y.ndim > 1:
        y = y.mean(axis=1)
    first = int(round((start - offset) * sr))
    want = int(round((end - start) * sr))
    if first < 0:
        raise AudioError(
            f"{window}: window starts at {offset:.3f} s, after the segment start {start:.3f} s"
        )
    seg = y[first : first + want]
    n_out = max(want, int(round(clip_seconds * sr)))
    short = len(seg) < n_out
    duration = len(seg) / sr
    if short:
        seg = np.concatenate([seg, np.zeros(n_out - len(seg), dtype=np.float32)])
    with atomic_path(dst) as tmp:
        sf.write(str(tmp), seg, sr, subtype="PCM_16", format="FLAC")
    return TrimResult(duration=duration, short=short)


def load_clip(
    path: str | Path,
    *,
    sample_rate: int,
    clip_seconds: float = 10.0,
    start: float = 0.0,
) -> np.ndarray:
    """Decode ``clip_seconds`` of a media file from ``start``, zero-padded; for prediction.

    Returns
    -------
    ndarray of float32, shape (round(clip_seconds * sample_rate),)
    """
    y = decode(path, sample_rate=sample_rate, start=start, duration=clip_seconds)
    n = int(round(clip_seconds * sample_rate))
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), dtype=np.float32)])
    return y[:n]
