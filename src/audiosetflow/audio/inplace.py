"""Clips read in place from a local mirror (``audio.keep_clips: false``).

With ``audio.keep_clips: true`` (the default) every clip is stored as FLAC under
``results/audio/clips/{split}/{ytid}.flac``, about 280 KB a clip. With ``false``, no copy is
kept of a clip read in place from a mirror (a tar member or a folder's file: the shard table's
``media`` is a locator, ``tar:...`` or ``file:...``): the trim stage writes, beside the
``.duration`` file, a one-line record ``{ytid}.source`` (where the copy is and how the clip is
cut from it) instead of a FLAC, and the features stage cuts the clip from its transcoded window
in memory (each clip is decoded once), then deletes the window; a FLAC made while the setting
was ``true`` is deleted once the clip's features are written. Clips from YouTube and from
Parquet mirrors (whose bytes were copied by the download stage) are kept.

:func:`read_segment` returns a clip's samples either way: the kept FLAC, or the same samples
made again from the mirror by the very transcode and trim the workflow ran
(:func:`audiosetflow.audio.codec.transcode`, :func:`audiosetflow.audio.codec.trim`), so a
feature computed from either is the same. :func:`clip_file` gives a file to hand to a player
or to ``predict``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from .codec import AudioError, cut, transcode, trim

__all__ = [
    "SOURCE_SUFFIX",
    "InPlace",
    "is_in_place",
    "source_record",
    "write_source_record",
    "read_source_record",
    "clip_exists",
    "read_segment",
    "clip_file",
]

#: Suffix of the record that stands for a clip not kept (beside ``{ytid}.duration``).
SOURCE_SUFFIX = ".source"


def is_in_place(media: str) -> bool:
    """Whether a shard table's ``media`` value says the clip was read in place from a mirror
    (a locator, ``tar:{archive}@{offset}+{size}`` or ``file:{path}``)."""
    return str(media).startswith(("tar:", "file:"))


@dataclass(frozen=True)
class InPlace:
    """Where a clip not kept lives and how it is cut (one ``{ytid}.source`` record).

    Attributes
    ----------
    locator : str
        The download stage's locator of the mirror's copy.
    offset : float
        Seconds of the source at which the copy starts.
    start, end : float
        The segment, in seconds of the source.
    sample_rate : int
        ``audio.sample_rate`` the clip was made at.
    clip_seconds : float
        ``audio.clip_seconds`` (shorter clips are zero-padded).
    """

    locator: str
    offset: float
    start: float
    end: float
    sample_rate: int
    clip_seconds: float

    def line(self) -> str:
        """The record as written: tab-separated, locator last (a path may hold anything but
        a newline)."""
        return (
            f"{self.offset:.6f}\t{self.start:.3f}\t{self.end:.3f}\t{self.sample_rate}\t"
            f"{self.clip_seconds:.6f}\t{self.locator}\n"
        )


def source_record(clip: str | Path) -> Path:
    """The ``.source`` record of the clip ``clip`` (``.../{ytid}.flac``)."""
    return Path(clip).with_suffix(SOURCE_SUFFIX)


def write_source_record(clip: str | Path, rec: InPlace) -> None:
    """Write (atomically) the record of a clip that is not kept."""
    if "\n" in rec.locator:
        raise ValueError(f"{clip}: a locator with a newline cannot be recorded")
    atomic_write_text(source_record(clip), rec.line())


def read_source_record(clip: str | Path) -> InPlace | None:
    """The record of the clip ``clip``, or ``None`` when there is none.

    Raises
    ------
    AudioError
        When the record is there but malformed (naming the file).
    """
    path = source_record(clip)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    fields = text.rstrip("\n").split("\t", 5)
    try:
        offset, start, end, sr, secs, locator = fields
        return InPlace(locator, float(offset), float(start), float(end), int(sr), float(secs))
    except ValueError:
        raise AudioError(
            f"{path}:1: malformed record of a clip read in place (want offset, start, end, "
            "sample rate, clip seconds and locator, tab-separated)"
        ) from None


def clip_exists(clip: str | Path) -> bool:
    """Whether the clip ``clip`` can be read: kept, or recorded as read in place."""
    return Path(clip).is_file() or source_record(clip).is_file()


def _remake(rec: InPlace, clip: Path, dst: Path) -> None:
    """Cut the clip again from the mirror into ``dst`` (FLAC), as transcode + trim did."""
    from ..acquisition.sources import media_input

    media = media_input(rec.locator)
    if media is None:
        raise AudioError(
            f"{clip}: not kept, and its copy in the mirror ({rec.locator}) is gone; rerun with "
            "--forcerun download to take it from the sources again"
        )
    with tempfile.TemporaryDirectory(prefix=".inplace.", dir=dst.parent) as tmp:
        window = Path(tmp) / "window.wav"
        transcode(media, window, sample_rate=rec.sample_rate)
        trim(window, dst, offset=rec.offset, start=rec.start, end=rec.end,
             clip_seconds=rec.clip_seconds)  # fmt: skip


def read_segment(clip: str | Path, *, window: str | Path | None = None) -> tuple[np.ndarray, int]:
    """The samples of a clip (mono float32) and their rate, whether it was kept or not.

    Parameters
    ----------
    clip : str or Path
        The clip's path, ``results/audio/clips/{split}/{ytid}.flac``
        (:meth:`audiosetflow.shard.Layout.clip`), present or not.
    window : str or Path, optional
        The clip's transcoded window, where it is still there (the features stage, with
        ``audio.keep_clips: false``): a clip not kept is then cut from it in memory, exactly as
        the trim stage cuts it (:func:`audiosetflow.audio.codec.cut`), instead of being made
        again from the mirror. Ignored when the clip is kept or the window was made at another
        sample rate than the clip's record says.

    Returns
    -------
    y : ndarray of float32
        The clip's samples: those of the kept FLAC, or the same ones cut again from the
        window or the mirror (16-bit samples over 32768, as a FLAC reads).
    sr : int

    Raises
    ------
    FileNotFoundError
        Neither the clip nor its record is there.
    AudioError
        The mirror's copy is gone or does not decode.
    """
    import soundfile as sf

    clip = Path(clip)
    if window is not None and not clip.is_file():
        got = _cut_from_window(clip, Path(window))
        if got is not None:
            return got
    with clip_file(clip) as path:
        y, sr = sf.read(str(path), dtype="float32")
    return y, int(sr)


def _cut_from_window(clip: Path, window: Path) -> tuple[np.ndarray, int] | None:
    """The samples of a clip not kept, cut from its window; ``None`` where the record or a
    matching mono 16-bit window is not there."""
    import soundfile as sf

    rec = read_source_record(clip)
    if rec is None:
        return None
    try:
        info = sf.info(str(window))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None  # e.g. deleted meanwhile: the mirror has it
    if info.samplerate != rec.sample_rate or info.channels != 1 or info.subtype != "PCM_16":
        return None
    seg, sr, _ = cut(window, offset=rec.offset, start=rec.start, end=rec.end,
                     clip_seconds=rec.clip_seconds)  # fmt: skip
    # what soundfile reads from a 16-bit FLAC as float32: the integer over 2 ** 15
    return seg.astype(np.float32) / np.float32(32768.0), sr


@contextlib.contextmanager
def clip_file(clip: str | Path) -> Iterator[Path]:
    """A FLAC file of the clip for as long as the ``with`` block lasts: the kept clip itself,
    or a temporary one cut from the mirror (deleted afterwards).

    Raises
    ------
    FileNotFoundError
        Neither the clip nor its record is there.
    AudioError
        The mirror's copy is gone or does not decode.
    """
    clip = Path(clip)
    if clip.is_file():
        yield clip
        return
    rec = read_source_record(clip)
    if rec is None:
        raise FileNotFoundError(f"{clip}: no such clip (neither kept nor read in place)")
    fd, tmp = tempfile.mkstemp(prefix=".segment.", suffix=".flac")
    os.close(fd)
    dst = Path(tmp)
    try:
        _remake(rec, clip, dst)
        yield dst
    finally:
        dst.unlink(missing_ok=True)
