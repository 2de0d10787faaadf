"""The one place the export reads a clip's audio.

Every format the export writes takes a clip's bytes from :func:`clip_flac_bytes`: the trimmed
clip the workflow made (``results/audio/clips/{split}/{ytid}.flac``) or, where it was not kept
(``audio.keep_clips: false``), the same segment cut again from the mirror in place
(:func:`audiosetflow.audio.inplace.clip_file`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..shard import Layout

__all__ = ["ClipAudio", "clip_flac_bytes", "clip_info"]


def clip_flac_bytes(*, root: str | Path, split: str, ytid: str) -> bytes:
    """The FLAC bytes of one clip, as the workflow trimmed it (kept, or cut again from the
    mirror when ``audio.keep_clips`` is false).

    Parameters
    ----------
    root : str or Path
        The results folder (``results``).
    split : str
        The clip's AudioSet split (``train``, ``eval``).
    ytid : str
        Its YouTube ID.

    Returns
    -------
    bytes
        The whole FLAC file (about 10 s of mono 16-bit audio: some 300 KB).

    Raises
    ------
    FileNotFoundError
        When the clip is gone and no in-place record says where the mirror's copy is.
    AudioError
        When the mirror's copy is gone or does not decode.
    """
    from ..audio.inplace import clip_file

    with clip_file(Layout(root).clip(split, ytid)) as path:
        return path.read_bytes()


@dataclass(frozen=True)
class ClipAudio:
    """What the manifests say of a clip's audio."""

    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        """Seconds of audio (frames over the sample rate)."""
        return self.frames / self.sample_rate


def clip_info(data: bytes) -> ClipAudio:
    """Sample rate, frames and channels of FLAC bytes, from the header (nothing decoded).

    Raises
    ------
    ValueError
        When the bytes are not audio libsndfile reads.
    """
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise ValueError(f"not a readable audio file: {exc}") from None
    return ClipAudio(int(info.samplerate), int(info.frames), int(info.channels))
