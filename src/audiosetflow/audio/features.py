"""Frame-level audio features identical to librosa 0.11, from one shared STFT, into Parquet.

:func:`compute` returns, for one mono waveform, the same numbers as these librosa calls made
on the same waveform with the same parameters (see ``docs/features_schema.md``)::

    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                       fmin=fmin, fmax=fmax, center=center)
    log_mel  = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=top_db)
    mfcc     = librosa.feature.mfcc(..., n_mfcc=n_mfcc)      # DCT-II (ortho) of log_mel
    centroid = librosa.feature.spectral_centroid(...)
    zcr      = librosa.feature.zero_crossing_rate(y=y, frame_length=n_fft, hop_length=hop)
    chroma   = librosa.feature.chroma_stft(..., tuning=tuning, n_chroma=n_chroma)
    rolloff  = librosa.feature.spectral_rolloff(..., roll_percent=roll_percent)

but with a single STFT per clip (librosa computes one per call) and the filter banks and the
DCT matrix built once per :class:`FeatureParams`. The STFT is computed the way librosa
computes it (float64 FFT of the float32 frames times the float64 Hann window, rounded to
complex64), so magnitudes and powers are bit-identical to librosa's; the mel/chroma products
and the DCT are matrix products whose rounding differs from librosa's by a few float32 ulps.

:func:`write_shard` writes one Parquet file per shard (one row per clip, failed clips
included with null features); :func:`load_split` and :func:`load_summary` read a folder of
shards back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..config import section
from ..errors import machine_error
from ..integrity import check_shards, write_seal
from ..io import atomic_path
from ..shard import ShardLayout, ShardTable, Status, stage_run
from .codec import AudioError
from .inplace import InPlace, clip_exists, is_in_place, read_segment, write_source_record

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "FRAME_FEATURES",
    "SUMMARY_FEATURES",
    "FeatureParams",
    "compute",
    "summarize",
    "summary_columns",
    "write_shard",
    "ShardWriter",
    "read_params",
    "shard_files",
    "ok_row_groups",
    "shard_params",
    "load_split",
    "load_summary",
    "load_meta",
    "mel_filterbank",
    "chroma_filterbank",
    "hann_window",
    "tune_malloc",
    "run_features",
]

log = logging.getLogger(__name__)

#: Version of the Parquet layout written by :func:`write_shard` (see docs/features_schema.md).
SCHEMA_VERSION: int = 2

#: Frame-level features returned by :func:`compute`, in order.
FRAME_FEATURES: tuple[str, ...] = (
    "log_mel",
    "mfcc",
    "spectral_centroid",
    "zcr",
    "chroma",
    "rolloff",
)

#: Metadata columns every shard holds, in order.
META_COLUMNS: tuple[str, ...] = (
    "ytid",
    "split",
    "start",
    "end",
    "labels",
    "label_names",
    "status",
    "reason",
    "short",
    "duration",
    "sample_rate",
    "n_frames",
)

_KV_PREFIX = "audiosetflow."
#: Clips per row group of a features shard (the features stage holds one row group at a time).
_ROW_GROUP = 64

# Amplitude floor and reference of librosa.power_to_db (its defaults).
_AMIN = 1e-10
_REF = 1.0
# librosa.feature.zero_crossing_rate's default threshold: |y| <= 1e-10 counts as zero.
_ZCR_THRESHOLD = 1e-10
# Frames per block of the STFT (float64 temporaries of _BLOCK * n_fft * 8 bytes).
_BLOCK = 64
# Mel bands per block of the banded mel product.
_MEL_GROUP = 8


@dataclass(frozen=True)
class FeatureParams:
    """Parameters of :func:`compute`; every field is a plain JSON value.

    Attributes
    ----------
    sample_rate : int
        Sample rate of the waveforms (Hz).
    n_fft : int
        FFT size = window length = ZCR frame length (samples).
    hop_length : int
        Hop between frames (samples).
    n_mels : int
        Mel bands (Slaney mel scale, Slaney area normalisation: librosa's defaults).
    n_mfcc : int
        MFCC coefficients kept (DCT-II, orthonormal, no liftering).
    n_chroma : int
        Chroma bins.
    roll_percent : float
        Energy fraction of the spectral roll-off, in (0, 1).
    fmin, fmax : float
        Frequency range of the mel filter bank (``fmax`` None: ``sample_rate / 2``).
    tuning : float
        Tuning deviation (fractions of a chroma bin) of the chroma filter bank; fixed so that
        no per-clip tuning estimation happens.
    center : bool
        Centre frames on ``t * hop_length`` (pad ``n_fft // 2`` zeros on both sides for the
        STFT and repeat the edge samples for ZCR, as librosa does).
    top_db : float or None
        Dynamic range of the log-mel below the clip's maximum (librosa.power_to_db).
    frontend : str
        How ``log_mel`` is computed (:mod:`~.frontends`): ``librosa`` (this kernel),
        ``panns`` (this kernel with PANNs' parameters) or ``kaldi_fbank`` (Kaldi's fbank).
    pad_mode : str
        Padding of the centred STFT: ``constant`` (zeros, librosa's default) or ``reflect``
        (PANNs).
    window : str
        ``hann`` (periodic, the kernel's STFT), or the ``kaldi_fbank`` window (``hanning``
        or ``povey``).
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    n_chroma: int = 12
    roll_percent: float = 0.85
    fmin: float = 0.0
    fmax: float | None = None
    tuning: float = 0.0
    center: bool = True
    top_db: float | None = 80.0
    frontend: str = "librosa"
    pad_mode: str = "constant"
    window: str = "hann"

    def __post_init__(self) -> None:
        from .frontends import FRONTENDS, KALDI_WINDOWS

        if self.frontend not in FRONTENDS:
            raise ValueError(f"unknown front-end {self.frontend!r}; one of {list(FRONTENDS)}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}")
        windows = KALDI_WINDOWS if self.frontend == "kaldi_fbank" else ("hann",)
        if self.window not in windows:
            raise ValueError(
                f"window {self.window!r} with the {self.frontend} front-end; one of {list(windows)}"
            )
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc", "n_chroma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"FeatureParams.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must not exceed n_mels ({self.n_mels})")
        if not 0.0 < float(self.roll_percent) < 1.0:
            raise ValueError(f"roll_percent must be in (0, 1), got {self.roll_percent!r}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else float(self.fmax)
        if not 0.0 <= float(self.fmin) < fmax <= nyquist:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.top_db is not None and float(self.top_db) < 0:
            raise ValueError(f"top_db must be non-negative or None, got {self.top_db!r}")
        for name in ("roll_percent", "fmin", "tuning"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.fmax is not None:
            object.__setattr__(self, "fmax", float(self.fmax))
        if self.top_db is not None:
            object.__setattr__(self, "top_db", float(self.top_db))
        object.__setattr__(self, "center", bool(self.center))

    @classmethod
    def from_config(cls, features_cfg: dict, *, sample_rate: int | None) -> FeatureParams:
        """Parameters from ``config['features']`` (unknown keys such as ``threads`` ignored).

        Keys missing from ``features_cfg`` take the config schema's defaults; fields the
        schema does not have (``n_chroma``, ``fmin``, ...) keep the defaults above unless
        ``features_cfg`` sets them.

        Parameters
        ----------
        features_cfg : dict
            The ``features`` section of the configuration.
        sample_rate : int or None
            ``config['audio']['sample_rate']`` (None: 22050 for librosa). The ``panns`` and
            ``kaldi_fbank`` front-ends fix it, with ``n_fft``, ``hop_length``, ``n_mels``,
            ``fmin``, ``fmax``, ``center``, ``top_db``, ``pad_mode`` and ``window``
            (:func:`~.frontends.preset`): the clips are resampled to it.
        """
        from .frontends import frontend_rate, preset

        cfg = dict(features_cfg or {})
        frontend = str(cfg.get("frontend") or "librosa")
        fixed = preset(frontend, kaldi_window=str(cfg.get("kaldi_window") or "hanning"))
        rate = frontend_rate(frontend, sample_rate)
        return section(cls, cfg, "features", **{"sample_rate": rate, **fixed})

    def to_dict(self) -> dict:
        """The fields as a plain dict (``FeatureParams(**p.to_dict()) == p``).

        The front-end fields are left out while they have their defaults (the librosa
        front-end), so that librosa's parameters read exactly as before front-ends existed.
        """
        d = dataclasses.asdict(self)
        for k in ("frontend", "pad_mode", "window"):
            if d[k] == _DEFAULT_FRONTEND[k]:
                del d[k]
        return d

    def n_frames(self, n_samples: int) -> int:
        """Number of frames of a waveform of ``n_samples`` samples."""
        if self.center:
            return 1 + n_samples // self.hop_length
        return 1 + (n_samples - self.n_fft) // self.hop_length

    def rows(self) -> dict[str, int]:
        """Number of rows (coefficients, bands) of each frame-level feature."""
        return {
            "log_mel": self.n_mels,
            "mfcc": self.n_mfcc,
            "spectral_centroid": 1,
            "zcr": 1,
            "chroma": self.n_chroma,
            "rolloff": 1,
        }


_DEFAULT_FRONTEND = {"frontend": "librosa", "pad_mode": "constant", "window": "hann"}


# --- constants per parameter set -------------------------------------------------------------


@dataclass(frozen=True)
class _Bank:
    window: np.ndarray  # float64 (n_fft,), periodic Hann (librosa's window)
    # librosa.filters.mel, transposed, cut into groups of _MEL_GROUP adjacent bands, each
    # restricted to the FFT bins where the group has non-zero weights (the bank is ~98 %
    # zeros): (first band, end band, first bin, end bin, float32 (bins, bands)).
    mel_groups: tuple[tuple[int, int, int, int, np.ndarray], ...]
    chroma_t: np.ndarray  # float32 (n_bins, n_chroma): librosa.filters.chroma transposed
    dct: np.ndarray  # float64 (n_mfcc, n_mels): rows of the orthonormal DCT-II
    freqs: np.ndarray  # float64 (n_bins,): FFT bin centre frequencies
    freqs32: np.ndarray  # float32 copy of freqs


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window, float64: ``scipy.signal.get_window("hann", n, fftbins=True)``.

    Computed the way scipy computes it (same operations, same rounding) without importing
    scipy.signal (0.7 s).
    """
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:-1]


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa.hz_to_mel, htk=False)."""
    f = np.asanyarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mels = np.atleast_1d(f / f_sp)
    ff = np.atleast_1d(f)
    log_t = ff >= min_log_hz
    mels[log_t] = min_log_mel + np.log(ff[log_t] / min_log_hz) / logstep
    return mels if f.ndim else mels[0]


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse Slaney mel scale (librosa.mel_to_hz, htk=False)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    freqs = 0.0 + f_sp * m
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


def mel_filterbank(
    *, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Mel filter bank (n_mels, 1 + n_fft // 2), float32, equal to ``librosa.filters.mel``
    (Slaney scale and area normalisation), computed with the same operations."""
    fmax = float(sr) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def chroma_filterbank(*, sr: int, n_fft: int, n_chroma: int = 12, tuning: float = 0.0):
    """Chroma filter bank (n_chroma, 1 + n_fft // 2), float32, equal to
    ``librosa.filters.chroma`` with its defaults (ctroct=5, octwidth=2, norm=2, base_c=True),
    computed with the same operations."""
    ctroct, octwidth = 5.0, 2
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (float(a440) / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    n_chroma2 = np.round(float(n_chroma) / 2)
    D = np.remainder(D + n_chroma2 + 10 * n_chroma, n_chroma) - n_chroma2
    wts = np.exp(-0.5 * (2 * D / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    # librosa.util.normalize(wts, norm=2, axis=0)
    length = np.sum(np.abs(wts) ** 2, axis=0, keepdims=True) ** (1.0 / 2)
    length[length < np.finfo(wts.dtype).tiny] = 1.0
    wts = wts / length
    wts *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - ctroct) / octwidth) ** 2)), (n_chroma, 1))
    wts = np.roll(wts, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(wts[:, : int(1 + n_fft / 2)], dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _bank(params: FeatureParams) -> _Bank:
    p = params
    mel = mel_filterbank(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    groups = []
    for g0 in range(0, p.n_mels, _MEL_GROUP):
        blk = mel[g0 : g0 + _MEL_GROUP]
        nz = np.flatnonzero(blk.any(axis=0))
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 1)
        groups.append((g0, g0 + len(blk), lo, hi, np.ascontiguousarray(blk[:, lo:hi].T)))
    chroma = chroma_filterbank(
        sr=p.sample_rate, n_fft=p.n_fft, tuning=p.tuning, n_chroma=p.n_chroma
    )
    n = p.n_mels
    k = np.arange(p.n_mfcc)[:, None]
    dct = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    dct[0] *= np.sqrt(0.5)
    freqs = np.fft.rfftfreq(n=p.n_fft, d=1.0 / p.sample_rate)
    return _Bank(
        window=hann_window(p.n_fft),
        mel_groups=tuple(groups),
        chroma_t=np.ascontiguousarray(chroma.T),
        dct=dct,
        freqs=freqs,
        freqs32=freqs.astype(np.float32),
    )


# --- computation -------------------------------------------------------------------------------


def _frames(y: np.ndarray, params: FeatureParams, pad_mode: str) -> np.ndarray:
    """Strided view (T, n_fft) of the (padded) waveform."""
    n_fft, hop = params.n_fft, params.hop_length
    if params.center:
        y = np.pad(y, n_fft // 2, mode=pad_mode)
    elif len(y) < n_fft:
        raise ValueError(f"waveform of {len(y)} samples is shorter than n_fft={n_fft}")
    return np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]


def _zcr(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """librosa.feature.zero_crossing_rate(frame_length=n_fft), exactly (counts / n_fft)."""
    n = params.n_fft
    n_frames = params.n_frames(len(y))
    if params.center:
        y = np.pad(y, n // 2, mode="edge")
    # librosa's signbit(y) & (|y| > threshold) is y < -threshold for finite samples (one pass)
    neg = y < -np.float32(_ZCR_THRESHOLD)
    change = np.empty(len(y), dtype=np.int32)
    change[0] = 0
    np.not_equal(neg[1:], neg[:-1], out=change[1:])
    csum = np.cumsum(change, dtype=np.int32)  # at most len(y) crossings
    starts = np.arange(n_frames) * params.hop_length
    counts = csum[starts + n - 1] - csum[starts]
    return (counts / n).astype(np.float32)[None, :]


class _Workspace:
    """Work arrays of :func:`compute`, reused between calls of one thread.

    Allocating (and the kernel zero-filling) some 10 MB of temporaries per clip costs as much
    as the arithmetic, so they are kept for the last (params, n_frames) used.
    """

    def __init__(self, p: FeatureParams, n_t: int):
        n_bins, blk = p.n_fft // 2 + 1, min(_BLOCK, n_t)
        self.key = (p, n_t)
        self.frames64 = np.empty((blk, p.n_fft), dtype=np.float64)
        self.spec128 = np.empty((blk, n_bins), dtype=np.complex128)
        self.spec64 = np.empty((blk, n_bins), dtype=np.complex64)
        self.mag = np.empty((n_t, n_bins), dtype=np.float32)
        self.power = np.empty((n_t, n_bins), dtype=np.float32)
        self.mag_t = np.empty((n_bins, n_t), dtype=np.float32)
        self.cum_t = np.empty((n_bins, n_t), dtype=np.float32)
        self.mel = np.empty((n_t, p.n_mels), dtype=np.float32)


_local = threading.local()


@functools.cache
def tune_malloc() -> bool:
    """Keep freed heap memory for reuse instead of returning it to the OS (glibc only).

    :func:`compute` allocates a few MB of short-lived arrays per clip; with glibc's defaults
    they are mapped and unmapped (page faults, kernel zero-fill) on every call, which costs
    about as much as the computation. Sets ``M_MMAP_THRESHOLD`` 32 MiB, ``M_TRIM_THRESHOLD``
    64 MiB and ``M_TOP_PAD`` 16 MiB (a process keeps at most ~64 MiB of free heap). Called
    once by the first :func:`compute` of a process; returns whether it took effect.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((-3, 32 << 20), (-1, 64 << 20), (-2, 16 << 20))
        return all(libc.mallopt(k, v) == 1 for k, v in settings)
    except (OSError, AttributeError):  # not glibc
        return False


def _workspace(p: FeatureParams, n_t: int) -> _Workspace:
    ws = getattr(_local, "ws", None)
    if ws is None or ws.key != (p, n_t):
        ws = _local.ws = _Workspace(p, n_t)
    return ws


def compute(y: np.ndarray, *, params: FeatureParams) -> dict[str, np.ndarray]:
    """Frame-level features of one mono waveform from a single STFT.

    With ``params.frontend == "kaldi_fbank"`` the ``log_mel`` (and the MFCC of it) is Kaldi's
    fbank instead (:func:`~.frontends.compute_kaldi`); ``panns`` is this kernel with PANNs'
    parameters (reflect padding, no ``top_db``).

    Parameters
    ----------
    y : ndarray, shape (n_samples,)
        Mono waveform (converted to float32), at ``params.sample_rate``.
    params : FeatureParams

    Returns
    -------
    dict of str to float32 ndarray
        ``log_mel`` (n_mels, T) in dB, ``mfcc`` (n_mfcc, T), ``spectral_centroid`` (1, T) in
        Hz, ``zcr`` (1, T) in crossings per sample, ``chroma`` (n_chroma, T) in [0, 1] and
        ``rolloff`` (1, T) in Hz; ``T = 1 + n_samples // hop_length`` when centred. Silent
        frames give finite values (log-mel at its floor, centroid, roll-off and chroma 0).

    Raises
    ------
    ValueError
        If ``y`` is not one-dimensional, is empty, or holds NaN or infinity.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (n_samples,), got {y.shape}")
    if y.size == 0:
        raise ValueError("empty waveform")
    y = y.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise ValueError("waveform holds NaN or infinite samples")
    p = params
    if p.frontend == "kaldi_fbank":
        from .frontends import compute_kaldi

        return compute_kaldi(y, params=p)
    b = _bank(p)
    tune_malloc()

    # STFT magnitudes as librosa computes them: float64 FFT of the float32 frames times the
    # float64 window, rounded to complex64, abs (bit-identical to np.abs(librosa.stft(y)).T).
    # Blocks of frames keep the float64 temporaries in cache. (A float32 FFT, scipy.fft,
    # takes 40 % less time but fails the parity tests: the centroid of a constant signal,
    # leakage at the rounding floor, 0.0027 against librosa's 0.0014 Hz, and one log-mel
    # value of a speech-like signal off by more than 1e-3 dB.)
    frames = _frames(y, p, p.pad_mode)
    n_t = frames.shape[0]
    ws = _workspace(p, n_t)
    mag, power = ws.mag, ws.power  # (T, n_bins)
    for s in range(0, n_t, _BLOCK):
        e = min(s + _BLOCK, n_t)
        blk = np.multiply(frames[s:e], b.window, out=ws.frames64[: e - s])
        spec = np.fft.rfft(blk, axis=-1, out=ws.spec128[: e - s])
        np.copyto(ws.spec64[: e - s], spec, casting="same_kind")
        np.abs(ws.spec64[: e - s], out=mag[s:e])
    np.square(mag, out=power)  # = np.abs(librosa.stft(y)) ** 2

    # Mel (power) -> dB, exactly as librosa.power_to_db does it in float32.
    mel = ws.mel
    for g0, g1, lo, hi, w in b.mel_groups:
        np.matmul(power[:, lo:hi], w, out=mel[:, g0:g1])
    log_mel = 10.0 * np.log10(np.maximum(np.float32(_AMIN), mel))
    log_mel -= np.float32(10.0 * np.log10(max(_AMIN, _REF)))
    if p.top_db is not None:
        np.maximum(log_mel, log_mel.max() - np.float32(p.top_db), out=log_mel)
    log_mel = np.ascontiguousarray(log_mel.T)  # (n_mels, T)
    mfcc = (b.dct @ log_mel).astype(np.float32)

    # Spectral centroid (magnitude-weighted mean frequency; 0 for a silent frame).
    total = mag.sum(axis=1, dtype=np.float64)
    weighted = mag @ b.freqs32
    silent = total < np.finfo(np.float32).tiny
    centroid = np.where(silent, 0.0, weighted / np.where(silent, 1.0, total))

    # Roll-off: lowest bin frequency where the float32 cumulative magnitude reaches
    # roll_percent of the frame total. librosa's cumsum adds each frame's bins in order in
    # float32; so does this, for all frames at once, bin after bin (a row of the transposed
    # magnitudes at a time: the same sums; 0.7-0.9 ms for a 10-s clip, against 1.2 ms for
    # np.cumsum along each frame's bins).
    mag_t, cum = ws.mag_t, ws.cum_t  # (n_bins, T)
    np.copyto(mag_t, mag.T)
    np.copyto(cum[0], mag_t[0])
    for k in range(1, len(cum)):
        np.add(cum[k - 1], mag_t[k], out=cum[k])
    thresh = np.float32(p.roll_percent) * cum[-1]
    idx = np.count_nonzero(cum < thresh, axis=0)
    rolloff = b.freqs[np.minimum(idx, len(b.freqs) - 1)]

    # Chroma (power), each frame divided by its maximum (left as is when it is ~0).
    raw = power @ b.chroma_t  # (T, n_chroma)
    peak = raw.max(axis=1, keepdims=True)
    peak[peak < np.finfo(np.float32).tiny] = 1.0
    chroma = np.ascontiguousarray((raw / peak).T)

    return {
        "log_mel": log_mel,
        "mfcc": mfcc,
        "spectral_centroid": centroid.astype(np.float32)[None, :],
        "zcr": _zcr(y, p),
        "chroma": chroma,
        "rolloff": rolloff.astype(np.float32)[None, :],
    }


# --- summary statistics ------------------------------------------------------------------------


def _width(n: int) -> int:
    return max(2, len(str(n - 1)))


def summary_columns(params: FeatureParams) -> list[str]:
    """Names of the summary columns, in order: per row of each feature its mean, then std.

    Multi-row features get zero-padded row numbers (``mfcc_mean_00``, ``log_mel_mean_000``);
    single-row features a plain name (``zcr_mean``, ``zcr_std``).
    """
    cols = []
    for name, rows in params.rows().items():
        for stat in ("mean", "std"):
            if rows == 1:
                cols.append(f"{name}_{stat}")
            else:
                w = _width(rows)
                cols.extend(f"{name}_{stat}_{i:0{w}d}" for i in range(rows))
    return cols


def _seed_summary(params: FeatureParams) -> list[str]:
    w_mfcc, w_chroma = _width(params.n_mfcc), _width(params.n_chroma)
    return (
        [f"mfcc_mean_{i:0{w_mfcc}d}" for i in range(params.n_mfcc)]
        + ["spectral_centroid_mean", "zcr_mean"]
        + [f"chroma_mean_{i:0{w_chroma}d}" for i in range(params.n_chroma)]
        + ["rolloff_mean"]
    )


#: Summary columns of the seed project's five features (default parameters): the mean over
#: frames of each MFCC, of the spectral centroid, of the ZCR, of each chroma bin and of the
#: roll-off: 20 + 1 + 1 + 12 + 1 = 35 columns, the input of the dense baseline.
SUMMARY_FEATURES: list[str] = _seed_summary(FeatureParams())


def summarize(feats: dict[str, np.ndarray], *, params: FeatureParams) -> np.ndarray:
    """Summary statistics of one clip, float64, in the order of :func:`summary_columns`."""
    out = []
    for name in params.rows():
        a = np.asarray(feats[name], dtype=np.float64)
        out.append(a.mean(axis=1))
        out.append(a.std(axis=1))
    return np.concatenate(out)


# --- Parquet -----------------------------------------------------------------------------------


def _arrow_schema(params: FeatureParams, *, n_frames: int | None = None):
    import pyarrow as pa

    from .frontends import describe

    fields = [
        pa.field("ytid", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("start", pa.float64()),
        pa.field("end", pa.float64()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("label_names", pa.list_(pa.string())),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("short", pa.bool_()),
        pa.field("duration", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("n_frames", pa.int32()),
    ]
    fields += [pa.field(c, pa.float64()) for c in summary_columns(params)]
    fields += [pa.field(name, pa.list_(pa.float32())) for name in FRAME_FEATURES]
    meta = {
        f"{_KV_PREFIX}schema_version": str(SCHEMA_VERSION),
        f"{_KV_PREFIX}feature_params": json.dumps(params.to_dict(), sort_keys=True),
        f"{_KV_PREFIX}frame_features": json.dumps(
            {
                k: {"rows": r, "layout": "row-major (rows, n_frames)"}
                for k, r in params.rows().items()
            }
        ),
        f"{_KV_PREFIX}summary_features": json.dumps(_seed_summary(params)),
        f"{_KV_PREFIX}frontend": json.dumps(describe(params, n_frames=n_frames), sort_keys=True),
    }
    return pa.schema(fields, metadata=meta)


def _str_list(v) -> list[str]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    if isinstance(v, str):
        return [s for s in v.split(",") if s]
    return [str(s) for s in v]


def write_shard(
    path: str | Path,
    *,
    meta: pd.DataFrame,
    features: Sequence[dict[str, np.ndarray] | None],
    params: FeatureParams,
    compression_level: int = 3,
    row_group_size: int = 64,
) -> None:
    """Write one Parquet shard (one row per clip) atomically, from rows held in memory.

    Parameters
    ----------
    path : path
        Output file (``.../shard-NNNN.parquet``); written under a temporary name in the same
        folder and renamed into place.
    meta : DataFrame
        One row per clip: ``ytid, split, start, end, labels, label_names, status, reason,
        short, duration``.
    features : sequence
        Per row of ``meta``, the dict from :func:`compute`, or None for a clip without
        features (its feature and summary columns are null).
    params : FeatureParams
        The parameters the features were computed with (stored in the file).
    compression_level : int
        zstd level.
    row_group_size : int
        Clips per row group.

    Raises
    ------
    ValueError
        If ``features`` and ``meta`` differ in length, a column is missing, or a feature has
        the wrong shape.

    See Also
    --------
    ShardWriter : the same file written a row group at a time (memory bounded by a row
        group, not by the shard).
    """
    with ShardWriter(path, params=params, compression_level=compression_level,
                     row_group_size=row_group_size) as writer:  # fmt: skip
        writer.add(meta=meta, features=features)


class ShardWriter:
    """Write one Parquet shard row group by row group, atomically; a context manager.

    The file is written under a temporary name in the same folder and, when the ``with``
    block ends without an exception, sealed (:func:`audiosetflow.integrity.write_seal`) and
    renamed into place; on an exception the temporary file is removed and nothing is left
    under ``path``. Memory is bounded by what one :meth:`add` is given, not by the shard: the
    features stage adds one row group (``row_group_size`` clips) at a time. The file is the
    same, byte for byte, as :func:`write_shard` writes from the same rows.

    Parameters
    ----------
    path : path
        Output file (``.../shard-NNNN.parquet``).
    params : FeatureParams
        The parameters the features were computed with (stored in the file).
    compression_level : int
        zstd level.
    row_group_size : int
        Clips per row group, >= 1.

    See Also
    --------
    write_shard : the whole shard from rows held in memory.
    run_features : the features stage, which writes through this class.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        params: FeatureParams,
        compression_level: int = 3,
        row_group_size: int = 64,
    ) -> None:
        self.path = Path(path)
        self.params = params
        self.compression_level = int(compression_level)
        self.row_group_size = max(1, int(row_group_size))
        self.rows = 0
        self._atomic = None
        self._tmp: Path | None = None
        self._writer = None
        self._declared: int | None = None  # the n_frames in the schema the file was opened with
        self._frames: set[int] = set()  # every n_frames of a clip with features
        self._held: list = []  # tables of clips without features, before the file is opened

    def __enter__(self) -> ShardWriter:
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def _options(self) -> dict:
        return {
            "compression": "zstd",
            "compression_level": self.compression_level,
            "use_dictionary": ["split", "status", "labels.list.element",
                               "label_names.list.element"],
            "use_byte_stream_split": [f"{name}.list.element" for name in FRAME_FEATURES],
            "write_statistics": ["ytid", "split", "status"],
        }  # fmt: skip

    def _open(self, target: Path, n_frames: int | None):
        import pyarrow.parquet as pq

        schema = _arrow_schema(self.params, n_frames=n_frames)
        return pq.ParquetWriter(str(target), schema, **self._options())

    def add(self, *, meta: pd.DataFrame, features: Sequence[dict[str, np.ndarray] | None]) -> None:
        """Append rows: ``meta`` and ``features`` as for :func:`write_shard`.

        Raises
        ------
        ValueError
            If ``features`` and ``meta`` differ in length, a column is missing, or a
            feature has the wrong shape.
        """
        table, frames = _rows_table(meta, list(features), self.params)
        self.rows += table.num_rows
        if not frames and self._writer is None:
            self._held.append(table)  # the schema waits for the first clip with features
            return
        self._frames |= frames
        if self._writer is None:
            self._declared = next(iter(frames)) if len(frames) == 1 else None
            self._writer = self._open(self._tmp, self._declared)
            for held in self._held:
                self._write(self._writer, held)
            self._held.clear()
        self._write(self._writer, table)

    def _write(self, writer, table) -> None:
        writer.write_table(table.cast(writer.schema), row_group_size=self.row_group_size)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._finish()
        except BaseException as err:
            self._close_quietly()
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        if exc_type is not None:
            self._close_quietly()
            return bool(self._atomic.__exit__(exc_type, exc, tb))
        self._atomic.__exit__(None, None, None)
        return False

    def _close_quietly(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # the temporary file goes anyway
                pass
            self._writer = None

    def _finish(self) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:  # no clip has features: the schema records no n_frames
            self._writer = self._open(self._tmp, None)
            for held in self._held:
                self._write(self._writer, held)
            self._held.clear()
        self._writer.close()
        self._writer = None
        uniform = next(iter(self._frames)) if len(self._frames) == 1 else None
        if uniform != self._declared:
            # clips of several lengths after the first row group: the schema said one
            # n_frames, so the file is written again (a row group at a time) saying none
            again = self._tmp.with_name(self._tmp.name + ".again")
            try:
                src = pq.ParquetFile(str(self._tmp))
                writer = self._open(again, uniform)
                try:
                    for i in range(src.num_row_groups):
                        self._write(writer, src.read_row_group(i))
                finally:
                    writer.close()
                os.replace(again, self._tmp)
            finally:
                again.unlink(missing_ok=True)
        # the rows and checksum of exactly this file, beside the shard's record, before the
        # file takes its name (a reader checks the shard against it: audiosetflow.integrity)
        write_seal(self._tmp, final=self.path, rows=self.rows)


def _rows_table(
    meta: pd.DataFrame, features: list[dict[str, np.ndarray] | None], params: FeatureParams
):
    """The Arrow table of some rows of a shard (schema without metadata) and the set of
    ``n_frames`` of its clips with features."""
    import pyarrow as pa

    n = len(meta)
    if len(features) != n:
        raise ValueError(f"{n} metadata rows but {len(features)} feature dicts")
    missing = [c for c in META_COLUMNS[:10] if c not in meta.columns]
    if missing:
        raise ValueError(f"metadata lacks columns {missing}")
    rows = params.rows()
    ok = [i for i, f in enumerate(features) if f is not None]
    n_frames = np.zeros(n, dtype=np.int32)
    for i in ok:
        f = features[i]
        t = None
        for name, r in rows.items():
            a = f[name]
            if a.ndim != 2 or a.shape[0] != r or (t is not None and a.shape[1] != t):
                raise ValueError(
                    f"row {i} ({meta['ytid'].iloc[i]}): {name} has shape {a.shape}, "
                    f"expected ({r}, n_frames) like the other features"
                )
            t = a.shape[1]
        n_frames[i] = t
    schema = _arrow_schema(params)
    valid = np.zeros(n, dtype=bool)
    valid[ok] = True
    invalid = ~valid

    cols: dict[str, pa.Array] = {
        "ytid": pa.array(meta["ytid"].astype(str).tolist(), pa.string()),
        "split": pa.array(meta["split"].astype(str).tolist(), pa.string()),
        "start": pa.array(meta["start"].to_numpy(dtype=np.float64)),
        "end": pa.array(meta["end"].to_numpy(dtype=np.float64)),
        "labels": pa.array([_str_list(v) for v in meta["labels"]], pa.list_(pa.string())),
        "label_names": pa.array([_str_list(v) for v in meta["label_names"]], pa.list_(pa.string())),
        "status": pa.array(meta["status"].astype(str).tolist(), pa.string()),
        "reason": pa.array(meta["reason"].astype(str).tolist(), pa.string()),
        "short": pa.array(meta["short"].to_numpy(dtype=bool)),
        "duration": pa.array(meta["duration"].to_numpy(dtype=np.float64)),
        "sample_rate": pa.array(np.full(n, params.sample_rate, dtype=np.int32)),
        "n_frames": pa.array(n_frames, mask=invalid),
    }
    summ = np.full((n, len(summary_columns(params))), np.nan)
    for i in ok:
        summ[i] = summarize(features[i], params=params)
    for j, c in enumerate(summary_columns(params)):
        cols[c] = pa.array(summ[:, j], mask=invalid)
    for name, r in rows.items():
        lengths = r * n_frames.astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        parts = [np.ascontiguousarray(features[i][name], dtype=np.float32).ravel() for i in ok]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        cols[name] = pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(values), mask=pa.array(invalid), type=pa.list_(pa.float32())
        )
    table = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return table, {int(n_frames[i]) for i in ok}


# --- reading -----------------------------------------------------------------------------------


def _shards(features: str | Path | Sequence[str | Path]) -> list[Path]:
    """The shard files of ``features``: exactly the files given, or the ``shard-*.parquet``
    of a folder (sorted)."""
    if features is None:
        raise FileNotFoundError("no features given")
    if not isinstance(features, (str, Path)):
        files = [Path(f) for f in features]
        if not files:
            raise FileNotFoundError("no feature shards given")
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f}: no such features shard")
        check_shards(files)
        return files
    d = Path(features)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such features folder")
    files = sorted(d.glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{d}: no shard-*.parquet files")
    check_shards(files)
    return files


def read_params(path: str | Path) -> tuple[int, FeatureParams]:
    """Schema version and :class:`FeatureParams` stored in a shard's key-value metadata."""
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    key = f"{_KV_PREFIX}feature_params".encode()
    if key not in md:
        raise ValueError(f"{path}: not an audiosetflow features shard (no feature_params)")
    version = int(md.get(f"{_KV_PREFIX}schema_version".encode(), b"0"))
    return version, FeatureParams(**json.loads(md[key]))


def shard_files(features: str | Path | Sequence[str | Path]) -> list[Path]:
    """The shard files of ``features``: exactly the files given, or the ``shard-*.parquet``
    of a folder, sorted by name (the order :func:`load_split` reads them in).

    Raises
    ------
    FileNotFoundError
        If a file given does not exist, or the folder does not exist or holds no shard.
    """
    return _shards(features)


def ok_row_groups(
    features: str | Path | Sequence[str | Path], columns: Sequence[str]
) -> Iterator[pa.Table]:
    """The rows with status ``ok`` of every row group of a split's shards, one row group at a
    time, in file order.

    Parameters
    ----------
    features : str, Path or sequence of path
        The shards (:func:`shard_files`).
    columns : sequence of str
        The columns to read; must name ``status``.

    Yields
    ------
    pyarrow.Table
        ``columns`` of one row group's ok rows; nothing but one row group's columns is read
        at once.

    See Also
    --------
    audiosetflow.learning.multilabel.clip_table, audiosetflow.learning.training.train_prevalence
    """
    yield from _row_groups(shard_files(features), columns, "ok")


def _row_groups(
    files: Sequence[Path], columns: Sequence[str], status: str | None
) -> Iterator[pa.Table]:
    """``columns`` of the rows with ``status`` (None: every row) of each row group of
    ``files``, one row group at a time, in file order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for f in files:
        with pq.ParquetFile(f) as pf:
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i, columns=list(columns))
                if status is not None:
                    st = t if "status" in columns else pf.read_row_group(i, columns=["status"])
                    t = t.filter(pc.equal(st["status"], status))  # a null status: dropped
                yield t


def shard_params(files: Sequence[str | Path]) -> FeatureParams:
    """The :class:`FeatureParams` every shard of ``files`` was computed with (only the file
    footers are read).

    Raises
    ------
    ValueError
        If a shard is of another schema version than :data:`SCHEMA_VERSION`, or shards were
        computed with different parameters.
    """
    files = [Path(f) for f in files]
    versions, params = set(), set()
    for f in files:
        v, p = read_params(f)
        versions.add(v)
        params.add(p)
    if versions != {SCHEMA_VERSION}:
        raise ValueError(
            f"{files[0].parent}: shards of schema version(s) {sorted(versions)}, this code "
            f"reads version {SCHEMA_VERSION}: rerun the features rule"
        )
    if len(params) != 1:
        raise ValueError(
            f"{files[0].parent}: shards computed with different feature parameters: "
            "rerun the features rule"
        )
    return params.pop()


def _to_pandas_meta(table) -> pd.DataFrame:
    df = table.to_pandas()
    for c in ("labels", "label_names"):
        if c in df.columns:
            df[c] = [[] if v is None else list(v) for v in df[c]]
    return df


def _read(features, columns: list[str], status: str | None):
    """``columns`` of every row (with ``status``, if given) of the shards, in shard order.

    Shard by shard, a row group at a time, filtered as it is read: what is held beyond the
    result is one row group's columns (a ``pyarrow.dataset`` scan of the same columns read
    ahead over many shards at once: 170 MB more than its result for 16,000 clips' metadata).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _shards(features)
    params = shard_params(files)
    parts = list(_row_groups(files, columns, status))
    if not parts:
        return pq.read_schema(files[0]).empty_table().select(columns), params
    return pa.concat_tables(parts), params


def load_split(
    features: str | Path | Sequence[str | Path],
    *,
    feature: str = "log_mel",
    status: str | None = "ok",
) -> tuple[np.ndarray, pd.DataFrame]:
    """Frame-level feature of every clip of a folder of shards.

    Parameters
    ----------
    features : path or sequence of path
        The shard files, or a folder holding ``shard-*.parquet`` (e.g.
        ``results/features/train``).
    feature : str
        One of :data:`FRAME_FEATURES`.
    status : str or None
        Keep only rows with this status (None: every row; rows without features are NaN).

    Returns
    -------
    X : ndarray of float32, shape (n_clips, rows, n_frames)
    meta : DataFrame
        The metadata columns of the same clips, in the same order (shards sorted by name,
        rows in file order).

    Raises
    ------
    FileNotFoundError
        If the folder holds no shard.
    ValueError
        If the feature is unknown, shards disagree on schema version or parameters, or clips
        have different numbers of frames.
    """
    if feature not in FRAME_FEATURES:
        raise ValueError(f"unknown feature {feature!r}; one of {list(FRAME_FEATURES)}")
    table, params = _read(features, [*META_COLUMNS, feature], status)
    rows = params.rows()[feature]
    meta = _to_pandas_meta(table.drop_columns([feature]))
    col = table.column(feature).combine_chunks()
    n = len(meta)
    nf = meta["n_frames"].dropna().unique()
    if len(nf) > 1:
        raise ValueError(
            f"{features}: clips have different numbers of frames {sorted(nf)[:5]}: "
            "clips should all be trimmed to the same length"
        )
    t = int(nf[0]) if len(nf) else 0
    if n == 0:
        return np.zeros((0, rows, t), dtype=np.float32), meta
    if col.null_count == 0:
        values = col.flatten().to_numpy(zero_copy_only=False)
        X = values.reshape(n, rows, t)
    else:
        X = np.full((n, rows, t), np.nan, dtype=np.float32)
        valid = ~col.is_null().to_numpy(zero_copy_only=False)
        X[valid] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, rows, t)
    return np.ascontiguousarray(X, dtype=np.float32), meta


def load_meta(
    features: str | Path | Sequence[str | Path], *, status: str | None = "ok"
) -> tuple[pd.DataFrame, FeatureParams]:
    """Only the metadata columns of a folder of shards, and the parameters they share.

    Parameters
    ----------
    features : path or sequence of path
        The shard files, or a folder holding ``shard-*.parquet``.
    status : str or None
        Keep only rows with this status (None: every row).

    Returns
    -------
    meta : DataFrame
        :data:`META_COLUMNS`, one row per clip.
    params : FeatureParams
        The feature parameters every shard was computed with.
    """
    table, params = _read(features, list(META_COLUMNS), status)
    return _to_pandas_meta(table), params


def load_summary(
    features: str | Path | Sequence[str | Path], *, status: str | None = "ok"
) -> pd.DataFrame:
    """Metadata and summary statistics (no frame-level arrays) of a folder of shards.

    Parameters
    ----------
    features : path or sequence of path
        The shard files, or a folder holding ``shard-*.parquet``.
    status : str or None
        Keep only rows with this status (None: every row).

    Returns
    -------
    DataFrame
        :data:`META_COLUMNS` then the columns of :func:`summary_columns` (float64), one row
        per clip; :data:`SUMMARY_FEATURES` are among them for the default parameters.
    """
    files = _shards(features)
    _, params = read_params(files[0])
    table, params = _read(features, [*META_COLUMNS, *summary_columns(params)], status)
    return _to_pandas_meta(table)


# --- the features stage --------------------------------------------------------------------


def run_features(
    table_in: str | Path,
    *,
    shard: ShardLayout,
    out: str | Path,
    out_table: str | Path,
    params: FeatureParams,
    names: Mapping[str, str],
    threads: int = 1,
    keep_clips: bool = True,
    clip_seconds: float = 10.0,
    keep_intermediate: bool = False,
    logger: logging.Logger | None = None,
) -> ShardTable:
    """Compute the features of every trimmed clip of a shard and write one Parquet shard.

    Parameters
    ----------
    table_in : str or Path
        The shard table of the trim stage.
    shard : ShardLayout
        Where the clips are (:meth:`ShardLayout.clip`).
    out : str or Path
        The Parquet shard (:func:`write_shard`): one row per YTID of the shard; those without
        features have ``status`` of the first stage that did not pass them, ``reason``
        ``"{stage}: {reason}"`` and null features.
    out_table : str or Path
        Where the table is written (the rule's declared output; also the shard's record).
    params : FeatureParams
        Feature parameters; ``params.sample_rate`` is the clips' sample rate, or for the
        ``panns`` and ``kaldi_fbank`` front-ends a lower one the clips are resampled to
        (:func:`~.frontends.resample`).
    names : mapping of str to str
        MID to display name (the ``label_names`` column).
    threads : int
        BLAS/OpenMP threads (threadpoolctl), >= 1.
    keep_clips : bool
        ``audio.keep_clips``: ``False`` keeps no FLAC of a clip read in place from a mirror:
        the trim stage wrote none (the clip is cut here from its window, in memory) or, for a
        clip trimmed while the setting was ``true``, it is deleted once the shard's features
        are written, leaving a ``{ytid}.source`` record (:mod:`audiosetflow.audio.inplace`).
        The windows of such clips are deleted then too. A clip not kept is read from the
        mirror again where its features are computed again.
    clip_seconds : float
        ``audio.clip_seconds``, recorded with a clip that is not kept.
    keep_intermediate : bool
        ``audio.keep_intermediate``: keep the windows of clips not kept.
    logger : logging.Logger, optional

    Returns
    -------
    ShardTable
        With ``features_status`` per YTID: ``ok``, ``permanent`` (the clip cannot be read or
        has another sample rate), or ``pending`` for YTIDs the trim did not pass.

    Raises
    ------
    audiosetflow.errors.MachineError
        On a fault of the machine (a full disk, ...), after recording what was done.

    See Also
    --------
    compute : the features of one waveform.
    load_split, load_summary, load_meta : reading the shards back.
    """
    from threadpoolctl import threadpool_limits

    with (
        stage_run("features", table_in, shard=shard, out=out_table, logger=logger or log) as run,
        threadpool_limits(limits=threads),
    ):
        if run.interrupted:  # a killed run may have left a half-written shard
            shard.clean_temporaries(Path(out).parent, [Path(out).name])
        todo = set(run.todo)
        ytids = run.table.ytids
        step = _ROW_GROUP
        # one row group at a time: memory holds the features of one row group, not the shard
        with ShardWriter(out, params=params, row_group_size=step) as writer:
            for i in range(0, len(ytids), step):
                chunk = ytids[i : i + step]
                feats = [
                    _features_of(run, shard, ytid, params) if ytid in todo else None
                    for ytid in chunk
                ]
                run.in_flight.clear()
                writer.add(meta=_shard_meta(run.table, names, chunk), features=feats)
        if not keep_clips:
            n = drop_clips(run.table, shard=shard, clip_seconds=clip_seconds,
                           keep_intermediate=keep_intermediate)  # fmt: skip
            if n:
                msg = "[features %s] %d clips read in place from a mirror are not kept"
                (logger or log).info(msg + " (audio.keep_clips: false)", shard.name, n)
    return run.table


def _features_of(run, shard: ShardLayout, ytid: str, params: FeatureParams):
    """The features of one clip of the features stage (recorded in ``run``), or ``None``."""
    import soundfile as sf

    run.in_flight[:] = [ytid]
    if not clip_exists(shard.clip(ytid)):
        run.record(ytid, Status.TRANSIENT, "clip missing (rerun: --forcerun trim)")
        return None
    try:
        y, sr = read_segment(shard.clip(ytid), window=shard.window(ytid))
        if sr != params.sample_rate:
            if params.frontend == "librosa" or sr < params.sample_rate:
                raise ValueError(
                    f"clip sample rate {sr} Hz, the {params.frontend} front-end "
                    f"computes at {params.sample_rate} Hz (rerun: --forcerun "
                    "transcode)"
                )
            from .frontends import resample

            y = resample(y, sr_in=sr, sr_out=params.sample_rate)
        f = compute(y, params=params)
    except (sf.LibsndfileError, AudioError, ValueError, OSError) as exc:
        if machine_error(exc) is not None:
            raise
        run.record(ytid, Status.PERMANENT, str(exc))
        return None
    run.record(ytid, Status.OK)
    return f


def drop_clips(
    table: ShardTable, *, shard: ShardLayout, clip_seconds: float, keep_intermediate: bool = False
) -> int:
    """Keep no copy of the clips of ``table`` read in place from a mirror: delete the FLAC of
    every such clip with features, after recording where it lives
    (:func:`audiosetflow.audio.inplace.read_segment` reads it from there), and, unless
    ``keep_intermediate``, the window of every such clip not kept; returns how many clips
    with features are not kept."""
    import soundfile as sf

    n = 0
    for ytid in table.ytids:
        row = table.row(ytid)
        if not is_in_place(str(row["media"])):
            continue
        clip = shard.clip(ytid)
        ok = row["features_status"] == Status.OK.value
        if ok and clip.exists():
            rec = InPlace(str(row["media"]), shard.offset(ytid), float(row["start"]),
                          float(row["end"]), int(sf.info(str(clip)).samplerate),
                          float(clip_seconds))  # fmt: skip
            write_source_record(clip, rec)  # first the record, then the clip goes
            clip.unlink()
        if clip.exists() or not clip_exists(clip):  # kept, or never cut (trim failed)
            continue
        n += ok
        if not keep_intermediate and (window := shard.window(ytid)) is not None:
            window.unlink(missing_ok=True)  # the clip is cut again from the mirror if need be
    return n


def _shard_meta(
    table: ShardTable, names: Mapping[str, str], ytids: Sequence[str] | None = None
) -> pd.DataFrame:
    """The metadata columns of a Parquet shard from a shard table (of ``ytids``, default
    all of the table's, in that order)."""
    rows = []
    for ytid in table.ytids if ytids is None else ytids:
        r = table.row(ytid)
        mids = [m for m in str(r["labels"]).split(",") if m]
        status, reason = table.first_failure(ytid)
        ok = status is Status.OK
        rows.append(
            {
                "ytid": ytid,
                "split": r["split"],
                "start": float(r["start"]),
                "end": float(r["end"]),
                "labels": mids,
                "label_names": [names.get(m, m) for m in mids],
                "status": status.value,
                "reason": reason,
                "short": bool(r["short"]) if ok else False,
                "duration": float(r["duration"]) if ok else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=list(META_COLUMNS[:10]))
