"""Audio decoding, transcoding and exact trimming (ffmpeg + soundfile).

Conventions
-----------
* PCM files are mono 16-bit FLAC or WAV (chosen by the file's suffix) at the configured
  sample rate. Clips are FLAC; the transcoded window, an intermediate, is WAV (cheapest to write
  and to cut).
* The transcoded *window* of a YTID starts at ``offset`` seconds of the source video (the
  download stage fetches ``[start - margin, end + margin]`` where it can cut the source, the
  whole video otherwise); the offset is stored next to the media as ``{ytid}.offset``.
* A clip is exactly ``[start, end)`` of the source in samples: sample ``i`` of the clip is
  sample ``round((start - offset) * sr) + i`` of the window. Clips shorter than
  ``clip_seconds`` are zero-padded at the end and flagged ``short``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..io import atomic_path, atomic_write_text
from ..tools import ffmpeg_exe

__all__ = [
    "AudioError",
    "Subfile",
    "MediaInput",
    "decode",
    "transcode",
    "transcode_many",
    "trim",
    "cut",
    "cut_length",
    "load_clip",
    "TrimResult",
]


class AudioError(RuntimeError):
    """A media file could not be decoded; the message names the file and ffmpeg's reason."""


@dataclass(frozen=True)
class Subfile:
    """A byte range of a file that ffmpeg reads as a media file of its own (a member of an
    uncompressed tar), through its ``subfile`` protocol: nothing is extracted or copied.

    Attributes
    ----------
    path : Path
        The archive.
    start : int
        Byte offset of the member's data, >= 0.
    size : int
        Bytes of the member, > 0.
    """

    path: Path
    start: int
    size: int

    def absolute(self) -> Subfile:
        return Subfile(Path(self.path).absolute(), self.start, self.size)

    def is_file(self) -> bool:
        """Whether the archive exists and holds the whole range."""
        try:
            return self.size > 0 and Path(self.path).stat().st_size >= self.start + self.size
        except OSError:
            return False

    @property
    def name(self) -> str:
        return f"{Path(self.path).name}@{self.start}"

    def __str__(self) -> str:
        # ffmpeg's subfile protocol: the range [start, end) of the file after the last ':'
        return f"subfile,,start,{self.start},end,{self.start + self.size},,:{self.path}"


#: What the decoders take: a media file, or a byte range of one (:class:`Subfile`).
MediaInput = Path | Subfile


def _media(src: str | Path | Subfile) -> MediaInput:
    """``src`` as ffmpeg is given it: an absolute path (a name starting with '-' is never an
    option), or a :class:`Subfile`."""
    return src.absolute() if isinstance(src, Subfile) else Path(src).absolute()


# ffmpeg's log context ("[dec:aac @ 0x55d...] "): its address differs from run to run
_LOG_CONTEXT = re.compile(r"\[[^\]]* @ 0x[0-9a-f]+\] ")
# lines of ffmpeg >= 7 that only say that a thread ended because of the error logged before
_TEARDOWN = re.compile(r"^(Task finished with error code|Terminating thread with return code)")


def _ffmpeg_error(path: MediaInput, stderr: bytes) -> AudioError:
    """``{path}: cannot decode audio: {reason}`` with ffmpeg's last meaningful line as the
    reason, free of memory addresses (so that equal reasons read, and count, as equal)."""
    lines = [
        _LOG_CONTEXT.sub("", ln).strip() for ln in stderr.decode("utf-8", "replace").splitlines()
    ]
    lines = [ln for ln in lines if ln]
    reasons = [ln for ln in lines if not _TEARDOWN.match(ln)] or lines
    reason = reasons[-1] if reasons else "ffmpeg failed"
    # ffmpeg names the input by its path: keep only the file's name, so that the same failure
    # of many clips reads alike (reports count them by reason)
    reason = reason.replace(f"{path}: ", "").replace(str(path), path.name)
    return AudioError(f"{path}: cannot decode audio: {reason}")


def decode(
    path: str | Path | Subfile,
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
    path = _media(path)
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


# RF64 only where a window passes 4 GiB (27 h at 22050 Hz); libsndfile reads both.
_WAV_MUXER = ["-f", "wav", "-rf64", "auto"]
# Output options by suffix: mono 16-bit PCM.
_OUTPUT_ARGS = {
    ".flac": ["-c:a", "flac", "-sample_fmt", "s16", "-f", "flac"],
    ".wav": ["-c:a", "pcm_s16le", *_WAV_MUXER],
}


def _output_args(dst: Path) -> list[str]:
    try:
        return _OUTPUT_ARGS[dst.suffix.lower()]
    except KeyError:
        raise ValueError(f"{dst}: PCM output must end in .flac or .wav") from None


def _reserve_tmp(dst: Path) -> Path:
    """An empty temporary file next to ``dst``, named as :func:`io.atomic_path` names them
    (``.{name}.XXXX.tmp{suffix}``): never taken for a finished file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".tmp{dst.suffix}", dir=dst.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def transcode(src: str | Path | Subfile, dst: str | Path, *, sample_rate: int) -> float:
    """Transcode ``src`` to mono 16-bit PCM at ``sample_rate`` (atomically); return seconds.

    One ffmpeg process for this one file. ``dst`` ends in ``.flac`` or ``.wav``, which sets the
    format. :func:`transcode_many` writes the same samples at a fraction of the cost.

    Raises
    ------
    AudioError
        When ffmpeg cannot decode ``src``: ``"{src}: cannot decode audio: {reason}"``.
    ValueError
        When ``dst`` has another suffix.
    """
    src = _media(src)
    dst = Path(dst).absolute()
    out_args = _output_args(dst)
    with atomic_path(dst) as tmp:
        cmd = [
            ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-filter_threads", "1",
            "-threads", "1", "-i", str(src),
            "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-threads", "1",
            *out_args, str(tmp),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise _ffmpeg_error(src, proc.stderr)
        info = sf.info(str(tmp))
        if info.frames == 0:
            raise AudioError(f"{src}: cannot decode audio: no samples")
    return info.frames / info.samplerate


# Samples per frame handed between ffmpeg's threads on the batch route: large enough that the
# hand-offs cost little (per 20-ms packet they cost as much as the decoding), small enough that
# frames stay below glibc's mmap threshold (no page faults per frame).
_FRAME_SAMPLES = 16384


def _graph_quote(text: str) -> str:
    """Quote ``text`` for one level of ffmpeg's filter-graph syntax (everything literal)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _lavfi_graph(src: MediaInput, sample_rate: int) -> str:
    """A libavfilter graph that decodes ``src`` (the ``amovie`` source) to the window's format.

    Demuxing, decoding, down-mixing and resampling then run in the graph's thread, and the
    resampler (one ``aresample``, the conversion ffmpeg inserts for ``-ac 1 -ar SR
    -sample_fmt s16``) yields the same samples as a plain ``-i src``. Frames of
    ``_FRAME_SAMPLES`` instead of one per packet cut the hand-offs between the threads of
    ffmpeg >= 7 (demuxer, decoder, filters, encoder, muxer), which with a plain input cost about
    as much CPU as the decoding itself. ``s=a`` takes the first audio stream, like
    ``-map 0:a:0``.
    """
    movie = _graph_quote(f"filename={_graph_quote(str(src))}:s=a:dec_threads=1")
    return (
        f"amovie={movie},aresample=osr={sample_rate}:ochl=mono:osf=s16,"
        f"asetnsamples=n={_FRAME_SAMPLES}:p=0"
    )


# Longest filter graph passed as one argument (Linux takes at most 128 KiB per argument).
_MAX_GRAPH_CHARS = 100_000


def _batch_cmd(
    pairs: Sequence[tuple[MediaInput, Path]], sample_rate: int, *, lavfi: bool
) -> list[str]:
    """One ffmpeg command: media ``pairs[k][0]`` -> PCM file ``pairs[k][1]``.

    ``lavfi``: all files are decoded by ONE libavfilter graph (one ``-f lavfi`` input with an
    output ``out{k}`` per file), so the decoding of a batch runs in one thread, one file after
    another, and WAV outputs are the graph's PCM copied as it is; otherwise one plain ``-i``
    input per file.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-filter_threads", "1"]
    if lavfi:
        cmd += ["-cpucount", "1"]  # no thread pools anywhere, the lavfi graph's included
        graphs = [_lavfi_graph(src, sample_rate) for src, _ in pairs]
        graph = ";".join(f"{g}[out{k}]" for k, g in enumerate(graphs))
        if len(graph) <= _MAX_GRAPH_CHARS:
            cmd += ["-threads", "1", "-f", "lavfi", "-i", graph]
            streams = [f"0:a:{k}" for k in range(len(pairs))]
        else:  # very long paths: a graph per input (its one output is out0)
            for g in graphs:
                cmd += ["-threads", "1", "-f", "lavfi", "-i", g]
            streams = [f"{k}:a:0" for k in range(len(pairs))]
    else:
        for src, _ in pairs:
            cmd += ["-threads", "1", "-i", str(src)]
        streams = [f"{k}:a:0" for k in range(len(pairs))]
    for stream, (_, out) in zip(streams, pairs, strict=True):
        cmd += ["-map", stream]
        if lavfi and out.suffix.lower() == ".wav":
            # the graph's output is the window's PCM already: copied, not decoded + encoded
            cmd += ["-c:a", "copy", *_WAV_MUXER]
        else:
            cmd += ["-ac", "1", "-ar", str(sample_rate), "-threads", "1", *_output_args(out)]
        cmd.append(str(out))
    return cmd


def _route_memo(ffmpeg: str) -> Path | None:
    """Where a passed check of the ``amovie`` route is remembered for this ffmpeg binary.

    A file in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) named by a hash of
    the binary's identity (resolved path, size, modification time, inode), of
    ``LD_LIBRARY_PATH`` (which libraries it loads) and of the route's filter graph (a changed
    route is checked again); ``None`` when the binary cannot be found.
    """
    exe = shutil.which(ffmpeg) or ffmpeg
    try:
        real = Path(exe).resolve()
        st = real.stat()
    except OSError:
        return None
    graph = _lavfi_graph(Path("x"), 8000)
    key = "\0".join(
        [str(real), str(st.st_size), str(st.st_mtime_ns), str(st.st_ino),
         os.environ.get("LD_LIBRARY_PATH", ""), graph]
    )  # fmt: skip
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "audiosetflow"
    return base / f"ffmpeg-amovie-ok.{hashlib.sha256(key.encode()).hexdigest()[:20]}"


@functools.cache
def _lavfi_route_ok(ffmpeg: str) -> bool:
    """Whether this ffmpeg runs the ``amovie`` route (lavfi device, ``ochl``, ``-cpucount``)
    and gives the same samples as plain inputs.

    Checked once per process on two tiny files (three ffmpeg runs, about 0.35 s of CPU: as
    much as transcoding 30 clips); a passed check is remembered for the same binary
    (:func:`_route_memo`), so the transcode jobs of a run check it once. A failed check is
    not remembered (it may have failed for a passing reason: the plain route is then used).
    """
    memo = _route_memo(ffmpeg)
    try:
        if memo is not None and memo.read_text() == "ok\n":
            return True
    except OSError:
        pass
    ok = _check_lavfi_route()
    if ok and memo is not None:
        try:
            atomic_write_text(memo, "ok\n")
        except OSError:  # no writable cache folder: checked again by the next process
            pass
    return ok


def _check_lavfi_route() -> bool:
    """:func:`_lavfi_route_ok` of ``ffmpeg_exe()``, checked now."""
    sr = 8000
    y = (np.sin(np.arange(3000) * 0.05) * 8000).astype(np.int16)
    with tempfile.TemporaryDirectory(prefix="audiosetflow-probe.") as tmp:
        srcs = [Path(tmp, "-'in, [x]:y.wav"), Path(tmp, "b.wav")]
        sf.write(str(srcs[0]), np.stack([y, y[::-1]], axis=1), 44100, subtype="PCM_16")
        sf.write(str(srcs[1]), y[::2], 22050, subtype="PCM_16")
        outs = [Path(tmp, "out0.wav"), Path(tmp, "out1.wav")]
        try:
            cmd = _batch_cmd(list(zip(srcs, outs, strict=True)), sr, lavfi=True)
            proc = subprocess.run(cmd, capture_output=True, check=False)
            if proc.returncode != 0 or proc.stderr.strip():
                return False
            for k, (src, out) in enumerate(zip(srcs, outs, strict=True)):
                ref = Path(tmp, f"ref{k}.wav")
                transcode(src, ref, sample_rate=sr)
                got, want = sf.read(str(out), dtype="int16")[0], sf.read(str(ref), dtype="int16")[0]
                if not np.array_equal(got, want):
                    return False
            return True
        except (OSError, RuntimeError):
            return False


def _transcode_batch(
    pairs: Sequence[tuple[MediaInput, Path]], sample_rate: int
) -> list[float] | None:
    """Transcode ``pairs`` with one ffmpeg process; ``None`` when anything at all went wrong
    (non-zero exit, any message at ``-v error``, an empty output): nothing is then written."""
    tmps: list[Path] = []
    try:
        for _, dst in pairs:
            tmps.append(_reserve_tmp(dst))
        lavfi = _lavfi_route_ok(ffmpeg_exe())
        cmd = _batch_cmd([(src, tmp) for (src, _), tmp in zip(pairs, tmps, strict=True)],
                         sample_rate, lavfi=lavfi)  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0 or proc.stderr.strip():
            return None
        seconds = []
        for tmp in tmps:
            info = sf.info(str(tmp))
            if info.frames == 0:
                return None
            seconds.append(info.frames / info.samplerate)
        for (_, dst), tmp in zip(pairs, tmps, strict=True):
            os.replace(tmp, dst)
        return seconds
    except (OSError, RuntimeError):  # soundfile's errors are RuntimeErrors
        return None
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _transcode_or_error(src: MediaInput, dst: Path, sample_rate: int) -> float | AudioError:
    try:
        return transcode(src, dst, sample_rate=sample_rate)
    except AudioError as exc:
        return exc


def _transcode_halves(
    items: Sequence[tuple[Path, Path]], sample_rate: int
) -> list[float | AudioError]:
    """Transcode ``items`` after their batch went wrong: each half as a batch of its own, and
    so on down to single files, which get :func:`transcode`'s own result. One bad file in a
    batch of n costs about ``2 log2(n)`` more ffmpeg processes instead of n."""
    if len(items) <= 2:
        return [_transcode_or_error(src, dst, sample_rate) for src, dst in items]
    results: list[float | AudioError] = []
    mid = len(items) // 2
    for half in (items[:mid], items[mid:]):
        done = None if len(half) == 1 else _transcode_batch(half, sample_rate)
        results += done if done is not None else _transcode_halves(half, sample_rate)
    return results


#: Files per ffmpeg process: one start of ffmpeg costs about as much CPU as decoding 5 to 8
#: 10-s clips (about 40-90 ms for a dynamically linked build), and a batch that goes wrong is
#: halved, not redone file by file, so a larger batch costs little where a file is bad.
DEFAULT_BATCH = 50


def transcode_many(
    pairs: Iterable[tuple[str | Path | Subfile, str | Path]],
    *,
    sample_rate: int,
    batch: int = DEFAULT_BATCH,
) -> list[float | AudioError]:
    """Transcode many media files like :func:`transcode`, ``batch`` files per ffmpeg process.

    Each output is written under a temporary name and renamed into place once its batch has
    finished, so no half-written file ever has a final name. Where a batch goes wrong in any
    way (one undecodable input fails the whole process), it is halved and each half tried
    again as a batch, down to single files transcoded one process each, so that exactly the
    bad ones fail, each with :func:`transcode`'s own error. The samples written are those
    :func:`transcode` writes.

    Parameters
    ----------
    pairs : iterable of (str or Path or Subfile, str or Path), length n
        ``(src, dst)``: media file (or a tar member, :class:`Subfile`) in, PCM file out
        (``.flac`` or ``.wav``, see :func:`transcode`); destinations must differ.
    sample_rate : int
        Output sample rate in Hz.
    batch : int
        Files per ffmpeg process (>= 1).

    Returns
    -------
    list of (float or AudioError), length n
        For pair ``k``: the seconds of audio written to its ``dst``, or the :class:`AudioError`
        that ``transcode(src, dst)`` raises (nothing written then).

    Raises
    ------
    ValueError
        When a ``dst`` ends in neither ``.flac`` nor ``.wav``, or ``batch < 1``.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, not {batch}")
    items = [(_media(s), Path(d).absolute()) for s, d in pairs]
    for _, dst in items:
        _output_args(dst)
    results: list[float | AudioError | None] = [None] * len(items)
    present = []
    for k, (src, dst) in enumerate(items):
        if src.is_file():
            present.append(k)
        else:  # fails at once, with transcode's own message
            results[k] = _transcode_or_error(src, dst, sample_rate)
    for lo in range(0, len(present), batch):
        ks = present[lo : lo + batch]
        done = _transcode_batch([items[k] for k in ks], sample_rate)
        if done is None:
            done = _transcode_halves([items[k] for k in ks], sample_rate)
        for k, r in zip(ks, done, strict=True):
            results[k] = r
    return results  # type: ignore[return-value]


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


def cut(
    window: str | Path,
    *,
    offset: float,
    start: float,
    end: float,
    clip_seconds: float = 10.0,
) -> tuple[np.ndarray, int, TrimResult]:
    """The samples of exactly ``[start, end)`` (source seconds) of a transcoded window, in
    memory: what :func:`trim` writes.

    Parameters
    ----------
    window : str or Path
        Mono FLAC/WAV whose first sample is at ``offset`` seconds of the source.
    offset, start, end : float
        Seconds in source time.
    clip_seconds : float
        Minimum clip length; shorter clips are zero-padded at the end and flagged.

    Returns
    -------
    samples : ndarray, shape (max(round((end - start) * sr), round(clip_seconds * sr)),)
        int16 (the window's very samples) when the window is mono 16-bit PCM, else float32
        (the channels' mean; :func:`trim` stores it as 16-bit).
    sr : int
        The window's sample rate.
    result : TrimResult

    Raises
    ------
    AudioError
        The window starts after the segment.

    See Also
    --------
    trim : the same samples as a FLAC file.
    cut_length : the result alone, from the window's header.
    """
    with sf.SoundFile(str(window)) as f:
        sr, n_window = f.samplerate, f.frames
        first, want = _cut_bounds(window, sr, offset=offset, start=start, end=end)
        if f.channels == 1 and f.subtype == "PCM_16":
            # only the segment, as integers: the very samples of the window
            n_seg = max(0, min(want, n_window - first))
            if n_seg:
                f.seek(first)
            seg = f.read(n_seg, dtype="int16")
        else:
            y = f.read(dtype="float32", always_2d=True).mean(axis=1, dtype=np.float32)
            seg = y[first : first + want]
    n_out = max(want, int(round(clip_seconds * sr)))
    short = len(seg) < n_out
    duration = len(seg) / sr
    if short:
        seg = np.concatenate([seg, np.zeros(n_out - len(seg), dtype=seg.dtype)])
    return seg, int(sr), TrimResult(duration=duration, short=short)


def _cut_bounds(window, sr: int, *, offset: float, start: float, end: float) -> tuple[int, int]:
    """The first sample of the segment in the window and the segment's length in samples."""
    first = int(round((start - offset) * sr))
    want = int(round((end - start) * sr))
    if first < 0:
        raise AudioError(
            f"{window}: window starts at {offset:.3f} s, after the segment start {start:.3f} s"
        )
    return first, want


def cut_length(
    window: str | Path,
    *,
    offset: float,
    start: float,
    end: float,
    clip_seconds: float = 10.0,
) -> TrimResult | None:
    """What :func:`cut` would return as its result, read from the window's header alone (no
    sample is decoded); ``None`` when the window is not mono 16-bit PCM (whose samples
    :func:`cut` returns as they are).

    Raises
    ------
    AudioError
        The window starts after the segment.
    """
    info = sf.info(str(window))
    if info.channels != 1 or info.subtype != "PCM_16":
        return None
    sr = int(info.samplerate)
    first, want = _cut_bounds(window, sr, offset=offset, start=start, end=end)
    n_seg = max(0, min(want, info.frames - first))
    n_out = max(want, int(round(clip_seconds * sr)))
    return TrimResult(duration=n_seg / sr, short=n_seg < n_out)


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

    See Also
    --------
    cut : the same samples in memory.
    """
    seg, sr, result = cut(window, offset=offset, start=start, end=end, clip_seconds=clip_seconds)
    buf = io.BytesIO()
    sf.write(buf, seg, sr, subtype="PCM_16", format="FLAC")
    with atomic_path(dst) as tmp:
        tmp.write_bytes(buf.getvalue())  # Python's own write: a full disk is an OSError (ENOSPC)
    return result


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
