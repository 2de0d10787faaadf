"""Streaming prediction: analysis windows of a media file of any length, in bounded memory.

ffmpeg decodes the file to mono float32 PCM on a pipe, read in fixed-size blocks
(:data:`READ_SAMPLES`); the windows (``window`` seconds, starting every ``hop`` seconds, as
:func:`audiosetflow.learning.multilabel.window_starts` lays them out over the whole file) are
cut from a buffer that holds at most one window plus one block and one hop of samples, and
yielded as soon as their samples have arrived. Features and model scores are computed for a
bounded batch of windows at a time (:func:`score_windows`). Peak memory therefore does not
grow with the file's length (``benchmarks/bench_predict.py`` measures it).

The windows are exactly those of :func:`~audiosetflow.learning.multilabel.window_starts` of
the decoded duration, with the samples ``[round(start * sample_rate), ... + n)`` of the whole
decoded signal (``n = round(window * sample_rate)``), zero-padded where the file ends: the
same as decoding the whole file first.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

__all__ = ["WindowStream", "iter_windows", "score_windows", "READ_SAMPLES", "BATCH_WINDOWS"]

#: Samples read from ffmpeg's pipe at a time (1 MiB of float32).
READ_SAMPLES = 1 << 18
#: Windows whose features are computed and scored together.
BATCH_WINDOWS = 32


class WindowStream:
    """The analysis windows of one media file, decoded as a stream (see the module's notes).

    Iterate once to get ``(start_s, samples)`` pairs (samples: float32, shape ``(n,)``);
    afterwards :attr:`duration` holds the seconds decoded.

    Parameters
    ----------
    path : str or Path
        A media file (any container and codec ffmpeg reads).
    window : float
        Seconds per window, > 0.
    hop : float
        Seconds between window starts, > 0.
    sample_rate : int
        Hz of the decoded samples.
    limit : float, optional
        Decode at most this many seconds from the start (ffmpeg's ``-t``).

    Raises
    ------
    audiosetflow.audio.codec.AudioError
        While iterating: the file does not exist, cannot be decoded, or has no samples. The
        windows yielded before a mid-file failure have been yielded; the error names the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        window: float,
        hop: float,
        sample_rate: int,
        limit: float | None = None,
    ):
        if not (window > 0 and hop > 0):
            raise ValueError("hop and window must be > 0")
        self.path = path
        self.window = float(window)
        self.hop = float(hop)
        self.sample_rate = int(sample_rate)
        self.limit = limit
        self.n = int(round(self.window * self.sample_rate))
        self.duration: float | None = None
        self.n_samples = 0

    def _command(self, media: Path) -> list[str]:
        from .tools import ffmpeg_exe

        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(media)]
        if self.limit is not None:
            cmd += ["-t", f"{self.limit:.6f}"]
        return cmd + ["-map", "0:a:0", "-ac", "1", "-ar", str(self.sample_rate), "-f", "f32le", "-"]

    def _blocks(self) -> Iterator[np.ndarray]:
        """The decoded samples, block by block; raises AudioError when ffmpeg fails."""
        from .audio.codec import AudioError, _ffmpeg_error, _media

        media = _media(self.path)
        if not media.is_file():
            raise AudioError(f"{media}: no such file")
        # ffmpeg's messages go to a file (never a pipe that could fill up and stall it)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self._command(media), stdout=subprocess.PIPE, stderr=err)
            try:
                assert proc.stdout is not None
                rest = b""
                while True:
                    data = proc.stdout.read(READ_SAMPLES * 4)
                    if not data:
                        break
                    data = rest + data
                    cut = len(data) - len(data) % 4
                    rest = data[cut:]
                    if cut:
                        yield np.frombuffer(data[:cut], dtype="<f4").astype(np.float32)
                rc = proc.wait()
            finally:
                if proc.poll() is None:  # the consumer stopped early
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            if rc != 0:
                err.seek(0)
                raise _ffmpeg_error(media, err.read()[-65536:])
        if self.n_samples == 0:
            raise AudioError(f"{media}: cannot decode audio: no samples")

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        from .learning.multilabel import window_starts

        sr, n = self.sample_rate, self.n
        buf = np.zeros(0, dtype=np.float32)
        buf0 = 0  # index in the whole signal of buf[0]
        k = 0  # windows yielded so far; the next starts at k * hop
        self.n_samples, self.duration = 0, None

        def cut(start: float, total: int) -> np.ndarray:
            lo = int(round(start * sr))
            w = buf[lo - buf0 : lo - buf0 + n]
            if len(w) < n:  # the file ends inside the window
                w = np.concatenate([w, np.zeros(n - len(w), dtype=np.float32)])
            return w.copy()

        for block in self._blocks():
            buf = np.concatenate([buf, block]) if len(buf) else block
            self.n_samples += len(block)
            got = self.n_samples
            # window k is certainly among window_starts(duration) and all its samples are
            # here once start * sr + window * sr + 1 <= got (duration >= got / sr)
            while True:
                start = round(float(k * self.hop), 6)
                if start * sr + self.window * sr + 1 > got:
                    break
                yield start, cut(start, got)
                k += 1
            # keep what a later window can need: from the next start, and the last n samples
            # (the final window ends at the end of the file)
            nxt = int(round(round(float(k * self.hop), 6) * sr))
            keep = max(0, min(nxt, got - n - 1))
            if keep > buf0:
                buf = buf[keep - buf0 :].copy()
                buf0 = keep
        total = self.n_samples
        self.duration = total / sr
        starts = window_starts(self.duration, window=self.window, hop=self.hop)
        for start in starts[k:]:
            yield start, cut(start, total)


def iter_windows(
    path: str | Path,
    *,
    window: float,
    hop: float,
    sample_rate: int,
    limit: float | None = None,
) -> WindowStream:
    """The ``(start_s, samples)`` windows of a media file, decoded as a stream.

    See :class:`WindowStream` (its :attr:`~WindowStream.duration` is set once iterated).
    """
    return WindowStream(path, window=window, hop=hop, sample_rate=sample_rate, limit=limit)


def score_windows(
    windows: Iterable[tuple[float, np.ndarray]],
    *,
    feature_params: Mapping,
    to_input: Callable[[Mapping[str, np.ndarray]], np.ndarray],
    predict: Callable[[np.ndarray], np.ndarray],
    batch: int = BATCH_WINDOWS,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Model scores of windows, ``batch`` windows at a time.

    Parameters
    ----------
    windows : iterable of (float, ndarray)
        E.g. :func:`iter_windows`.
    feature_params : mapping
        :class:`~audiosetflow.audio.features.FeatureParams` fields.
    to_input : callable
        The model input ``(C, n_mels, T)`` of one window from its features.
    predict : callable
        Scores ``(N, ...)`` of inputs ``(N, C, n_mels, T)``.
    batch : int
        Windows per batch, >= 1.

    Yields
    ------
    starts : ndarray of float, shape (m,)
    scores : ndarray, shape (m, ...)
    """
    from .audio.features import FeatureParams, compute

    params = FeatureParams(**feature_params)
    starts: list[float] = []
    X: list[np.ndarray] = []
    for start, w in windows:
        starts.append(start)
        X.append(to_input(compute(w, params=params)))
        if len(X) >= batch:
            yield np.asarray(starts), predict(np.stack(X))
            starts, X = [], []
    if X:
        yield np.asarray(starts), predict(np.stack(X))
