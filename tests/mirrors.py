"""Small local AudioSet mirrors of every kind, built from generated audio (not a test module).

Issue 11's sources, in miniature:

* :func:`make_tar`: the public mirror's tar shards, members ``audio/{split}/{YTID}.flac``
  (24-bit FLAC, already cut to the segment);
* :func:`make_parquet`: the same mirror as Parquet (``video_id``, ``audio`` = struct of
  ``bytes`` and ``path``, ``labels``, ``human_labels``), a few row groups;
* :func:`make_panns_folder`: PANNs-style ``Y{YTID}.wav``, 32 kHz 16-bit, cut;
* :func:`make_ms_folder`: older downloaders' ``{YTID}_{start_ms}_{end_ms}.flac``, cut;
* :func:`make_whole_folder`: ``{YTID}.flac``, whole videos (longer than the segment);

plus broken members (:func:`corrupt_members`: a truncated FLAC, a text file, an empty file)
and :func:`short_clip` (9.2 s for a 10-s segment).

Audio is deterministic: :func:`signal` seeds tones + noise from the YTID, so every clip (and
its features) differs from every other. Every ``make_*`` returns what it wrote as
:class:`Written` records whose ``samples`` are what a lossless decoder yields from the file
(the generated samples after quantisation to the file's bit depth): the expected decoded
samples. :func:`reference_clip` runs those samples through the workflow's own transcode and
trim from a plain FLAC file, i.e. the "same samples decoded directly" to compare against.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "YTIDS",
    "NAMES",
    "Written",
    "signal",
    "make_clips",
    "short_clip",
    "flac_bytes",
    "quantize",
    "corrupt_members",
    "make_tar",
    "make_parquet",
    "make_panns_folder",
    "make_ms_folder",
    "make_whole_folder",
    "ms_name",
    "reference_clip",
]

#: AudioSet-like YTIDs (11 characters of ``[A-Za-z0-9_-]``), several starting with ``-``.
YTIDS: tuple[str, ...] = (
    "-0RWZT-miFs",
    "--4gqARaEJE",
    "-1nilez17Dg",
    "_0-2Kaf9LtM",
    "0Ao6GJRiw6k",
    "aB3_x-Yz9Qw",
    "Zz9-a_B1c2D",
    "y8UbmQ0x-3E",
)

#: Display names of the MIDs the fixtures use (``human_labels``).
NAMES: dict[str, str] = {
    "/m/09x0r": "Speech",
    "/m/04rlf": "Music",
    "/m/0jbk": "Animal",
    "/m/07yv9": "Vehicle",
}

PCM_24 = "PCM_24"
PCM_16 = "PCM_16"


@dataclass(frozen=True)
class Written:
    """One clip as a fixture wrote it.

    Attributes
    ----------
    ytid : str
    name : str
        The tar member name, the Parquet ``audio.path``, or the file name in the folder.
    samples : ndarray of float32, shape (n,) or (n, channels)
        What a lossless decoder reads back from the file (float, full scale 1.0).
    sample_rate : int
        Sample rate of the file in Hz.
    subtype : str
        soundfile subtype of the file (``PCM_24`` or ``PCM_16``).
    """

    ytid: str
    name: str
    samples: np.ndarray
    sample_rate: int
    subtype: str

    @property
    def seconds(self) -> float:
        """Duration of the file in seconds."""
        return len(self.samples) / self.sample_rate


def _seed(ytid: str, salt: int = 0) -> int:
    return zlib.crc32(ytid.encode()) ^ (salt * 0x9E3779B9 & 0xFFFFFFFF)


def signal(
    ytid: str, *, seconds: float = 10.0, sample_rate: int = 48_000, channels: int = 1
) -> np.ndarray:
    """Deterministic audio for ``ytid``: three tones, an amplitude envelope and noise.

    Parameters
    ----------
    ytid : str
        Seeds the generator (same YTID, same samples).
    seconds : float
        Duration.
    sample_rate : int
        Samples per second.
    channels : int
        1: shape ``(n,)``; more: shape ``(n, channels)`` (channels differ slightly).

    Returns
    -------
    ndarray of float32
        Peak about 0.5 full scale.
    """
    rng = np.random.default_rng(_seed(ytid))
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    freqs = rng.uniform(80.0, 4000.0, 3)
    amps = rng.uniform(0.2, 1.0, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    parts = zip(amps, freqs, phases, strict=True)
    y = sum(a * np.sin(2 * np.pi * f * t + ph) for a, f, ph in parts)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 3.0) * t)
    y = y * env / amps.sum()
    noise = rng.uniform(0.005, 0.1)
    out = [0.5 * y + noise * rng.standard_normal(n) for _ in range(channels)]
    arr = np.stack(out, axis=1) if channels > 1 else out[0]
    return np.clip(arr, -0.95, 0.95).astype(np.float32)


def make_clips(
    ytids: Iterable[str],
    *,
    seconds: float = 10.0,
    sample_rate: int = 48_000,
    every_44k: int = 0,
) -> dict[str, tuple[np.ndarray, int]]:
    """Clips for ``ytids`` as the fixtures take them: YTID -> (samples, sample_rate).

    Parameters
    ----------
    ytids : iterable of str
    seconds : float
    sample_rate : int
        Sample rate of most clips.
    every_44k : int
        When > 0, every ``every_44k``-th clip (0-based index ``k`` with ``k % every_44k ==
        every_44k - 1``) is at 44100 Hz instead, like about 10 % of the public mirror.

    Returns
    -------
    dict of str to (ndarray, int)
    """
    clips = {}
    for k, y in enumerate(ytids):
        sr = 44_100 if every_44k > 0 and k % every_44k == every_44k - 1 else sample_rate
        clips[y] = (signal(y, seconds=seconds, sample_rate=sr), sr)
    return clips


def short_clip(
    ytid: str, *, seconds: float = 9.2, sample_rate: int = 48_000
) -> dict[str, tuple[np.ndarray, int]]:
    """A clip shorter than its 10-s segment (to be flagged short, not silently padded)."""
    return {ytid: (signal(ytid, seconds=seconds, sample_rate=sample_rate), sample_rate)}


def quantize(samples: np.ndarray, sample_rate: int, *, subtype: str = PCM_24) -> np.ndarray:
    """The samples a lossless decoder reads back from a FLAC file of ``samples``
    (:func:`flac_bytes`, then read by libsndfile)."""
    y, _ = sf.read(io.BytesIO(flac_bytes(samples, sample_rate, subtype=subtype)), dtype="float32")
    return y


def flac_bytes(samples: np.ndarray, sample_rate: int, *, subtype: str = PCM_24) -> bytes:
    """``samples`` as a FLAC file in memory (``subtype``: ``PCM_24`` or ``PCM_16``)."""
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, subtype=subtype, format="FLAC")
    return buf.getvalue()


def _wav_bytes(samples: np.ndarray, sample_rate: int, *, subtype: str = PCM_16) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def corrupt_members(*, prefix: str = "-bad") -> dict[str, bytes]:
    """Raw members that are no usable audio: YTID -> bytes.

    ``{prefix}trunc00``: a 10-s 24-bit FLAC cut in half; ``{prefix}text000``: a text file;
    ``{prefix}empty00``: no bytes at all. YTIDs are 11 characters (for the default ``-bad``)
    and start with ``-``.
    """
    whole = flac_bytes(signal(f"{prefix}trunc00"), 48_000)
    return {
        f"{prefix}trunc00": whole[: len(whole) // 2],
        f"{prefix}text000": b"<html><body>This video is unavailable.</body></html>\n",
        f"{prefix}empty00": b"",
    }


def _written(ytid: str, name: str, data: bytes, subtype: str) -> Written:
    """The record of a file of ``data``: its samples as libsndfile decodes them."""
    y, sr = sf.read(io.BytesIO(data), dtype="float32")
    return Written(ytid, name, y, sr, subtype)


def make_tar(
    path: str | Path,
    clips: Mapping[str, tuple[np.ndarray, int]],
    *,
    split: str = "bal_train",
    raw: Mapping[str, bytes] | None = None,
    subtype: str = PCM_24,
) -> dict[str, Written]:
    """Write a mirror tar shard: a member ``audio/{split}/{YTID}.flac`` per clip.

    Parameters
    ----------
    path : str or Path
        The tar file (e.g. ``bal_train00.tar``); its folder is created.
    clips : mapping of str to (ndarray, int)
        YTID -> (samples, sample_rate), written as FLAC of ``subtype``.
    split : str
        The member folder (``bal_train``, ``eval``, ``unbal_train``).
    raw : mapping of str to bytes, optional
        YTID -> member bytes written as they are (e.g. :func:`corrupt_members`), after the
        clips.
    subtype : str
        ``PCM_24`` (the public mirror) or ``PCM_16``.

    Returns
    -------
    dict of str to Written
        The clips of ``clips`` (not those of ``raw``), by YTID.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    members = []
    for ytid, (y, sr) in clips.items():
        name = f"audio/{split}/{ytid}.flac"
        data = flac_bytes(y, sr, subtype=subtype)
        members.append((name, data))
        written[ytid] = _written(ytid, name, data, subtype)
    for ytid, data in (raw or {}).items():
        members.append((f"audio/{split}/{ytid}.flac", data))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return written


def make_parquet(
    path: str | Path,
    clips: Mapping[str, tuple[np.ndarray, int]],
    labels: Mapping[str, list[str]],
    *,
    split: str = "bal_train",
    row_group_size: int = 3,
    raw: Mapping[str, bytes] | None = None,
    subtype: str = PCM_24,
) -> dict[str, Written]:
    """Write the Parquet form of the mirror: one row per clip, several row groups.

    Columns: ``video_id`` (string), ``audio`` (struct of ``bytes``: binary, ``path``: string,
    the FLAC file and ``audio/{split}/{YTID}.flac``), ``labels`` (list of MIDs) and
    ``human_labels`` (their :data:`NAMES`, the MID itself when unknown).

    Parameters
    ----------
    path : str or Path
    clips : mapping of str to (ndarray, int)
        YTID -> (samples, sample_rate).
    labels : mapping of str to list of str
        YTID -> MIDs (every YTID of ``clips`` and ``raw``; missing ones get ``[]``).
    split : str
        Used in ``audio.path``.
    row_group_size : int
        Rows per row group.
    raw : mapping of str to bytes, optional
        YTID -> audio bytes stored as they are (e.g. :func:`corrupt_members`).
    subtype : str

    Returns
    -------
    dict of str to Written
        The clips of ``clips``, by YTID.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, bytes, str]] = []
    written = {}
    for ytid, (y, sr) in clips.items():
        name = f"audio/{split}/{ytid}.flac"
        data = flac_bytes(y, sr, subtype=subtype)
        rows.append((ytid, data, name))
        written[ytid] = _written(ytid, name, data, subtype)
    for ytid, data in (raw or {}).items():
        rows.append((ytid, data, f"audio/{split}/{ytid}.flac"))
    mids = [list(labels.get(r[0], [])) for r in rows]
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "video_id": pa.array([r[0] for r in rows], pa.string()),
            "audio": pa.array([{"bytes": r[1], "path": r[2]} for r in rows], audio_type),
            "labels": pa.array(mids, pa.list_(pa.string())),
            "human_labels": pa.array(
                [[NAMES.get(m, m) for m in ms] for ms in mids], pa.list_(pa.string())
            ),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return written


def _resample(y: np.ndarray, sr: int, to: int) -> np.ndarray:
    if sr == to:
        return y
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr, to)
    out = resample_poly(y.astype(np.float64), to // g, sr // g, axis=0)
    return np.clip(out, -1.0, 1.0 - 2**-15).astype(np.float32)


def make_panns_folder(
    folder: str | Path, clips: Mapping[str, tuple[np.ndarray, int]], *, sample_rate: int = 32_000
) -> dict[str, Written]:
    """Write PANNs-style cut clips ``Y{YTID}.wav``: 16-bit WAV at ``sample_rate`` (32 kHz).

    Clips at another rate are resampled first (scipy's ``resample_poly``); ``samples`` of the
    result are those of the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for ytid, (y, sr) in clips.items():
        y = _resample(y, sr, sample_rate)
        name = f"Y{ytid}.wav"
        data = _wav_bytes(y, sample_rate)
        (folder / name).write_bytes(data)
        written[ytid] = _written(ytid, name, data, PCM_16)
    return written


def ms_name(ytid: str, start: float, end: float, *, ext: str = "flac") -> str:
    """``{YTID}_{start_ms}_{end_ms}.{ext}``: segment bounds in whole milliseconds."""
    return f"{ytid}_{int(round(start * 1000))}_{int(round(end * 1000))}.{ext}"


def make_ms_folder(
    folder: str | Path,
    clips: Mapping[str, tuple[np.ndarray, int]],
    segments: Mapping[str, tuple[float, float]],
    *,
    subtype: str = PCM_16,
) -> dict[str, Written]:
    """Write older downloaders' cut clips ``{YTID}_{start_ms}_{end_ms}.flac``.

    Parameters
    ----------
    folder : str or Path
    clips : mapping of str to (ndarray, int)
        YTID -> (samples of the segment, sample_rate).
    segments : mapping of str to (float, float)
        YTID -> (start, end) seconds of the segment in its video (only the name uses them).
    subtype : str
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for ytid, (y, sr) in clips.items():
        name = ms_name(ytid, *segments[ytid])
        data = flac_bytes(y, sr, subtype=subtype)
        (folder / name).write_bytes(data)
        written[ytid] = _written(ytid, name, data, subtype)
    return written


def make_whole_folder(
    folder: str | Path,
    clips: Mapping[str, tuple[np.ndarray, int]],
    *,
    subtype: str = PCM_16,
) -> dict[str, Written]:
    """Write whole videos ``{YTID}.flac`` (uncut: pass clips longer than their segment, e.g.
    ``make_clips(ytids, seconds=30)``; the segment is then ``samples[start*sr : end*sr]``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for ytid, (y, sr) in clips.items():
        name = f"{ytid}.flac"
        data = flac_bytes(y, sr, subtype=subtype)
        (folder / name).write_bytes(data)
        written[ytid] = _written(ytid, name, data, subtype)
    return written


def reference_clip(
    written: Written,
    folder: str | Path,
    *,
    sample_rate: int = 22_050,
    offset: float = 0.0,
    start: float = 0.0,
    end: float = 10.0,
    clip_seconds: float = 10.0,
) -> np.ndarray:
    """The clip the workflow makes of ``written``'s samples when read from a plain file.

    The expected samples are written as a FLAC file of their own (as they are, at their rate
    and bit depth), transcoded and trimmed by :mod:`audiosetflow.audio.codec` exactly as the
    transcode and trim stages do (window at ``offset`` s of the source, clip ``[start, end)``),
    and read back as the features stage reads clips.

    Returns
    -------
    ndarray of float32, shape (round(max(end - start, clip_seconds) * sample_rate),)
    """
    from audiosetflow.audio import codec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"ref-{written.ytid}.flac"
    src.write_bytes(flac_bytes(written.samples, written.sample_rate, subtype=written.subtype))
    window = folder / f"ref-{written.ytid}.wav"
    (res,) = codec.transcode_many([(src, window)], sample_rate=sample_rate)
    if isinstance(res, Exception):
        raise res
    clip = folder / f"ref-{written.ytid}.clip.flac"
    codec.trim(window, clip, offset=offset, start=start, end=end, clip_seconds=clip_seconds)
    y, _ = sf.read(str(clip), dtype="float32")
    return y
