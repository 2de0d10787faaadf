"""Front-ends of the literature: the log-mel that PANNs' CNN14 and AST/BEATs were trained on.

``features.frontend`` picks how the frame-level ``log_mel`` matrix of a clip is computed:

``librosa``
    Today's features (:func:`audiosetflow.audio.features.compute`): 22.05 kHz (or
    ``audio.sample_rate``), n_fft 2048, hop 512, 128 Slaney mel bands, zero padding,
    ``top_db=80``. Unchanged; the default.
``panns``
    The input of PANNs' CNN14 (``audioset_tagging_cnn/pytorch/models.py``: torchlibrosa's
    ``Spectrogram`` then ``LogmelFilterBank``): 32 kHz, n_fft = window = 1024 (periodic
    Hann), hop 320, ``center=True`` with **reflect** padding, power spectrogram, 64 Slaney
    mel bands (``librosa.filters.mel``, Slaney area normalisation) from 50 to 14,000 Hz,
    ``10 * log10(max(power, 1e-10))`` (``ref=1.0, amin=1e-10, top_db=None``). 1001 frames
    for 10 s. It is the librosa kernel of :mod:`~.features` with these parameters.
``kaldi_fbank``
    The input of AST and BEATs: Kaldi's ``compute-fbank-feats`` as
    ``torchaudio.compliance.kaldi.fbank`` implements it, at 16 kHz: 25-ms frames (400
    samples), 10-ms shift (160), ``snip_edges=True`` (``1 + (n - 400) // 160`` frames: 998
    for 10 s), dither 0, per-frame DC offset removed, pre-emphasis 0.97, window (``hanning``
    as AST calls it, or Kaldi's default ``povey``: ``features.kaldi_window``), zero-padded to
    a 512-point FFT, power spectrum, 128 triangular bands on Kaldi's mel scale
    ``1127 ln(1 + f / 700)`` from 20 Hz to Nyquist (unnormalised, as Kaldi builds them),
    natural log floored at float32 epsilon, no energy term. Band 3 (63-93 Hz) falls between
    two FFT bins: Kaldi's own code refuses 128 bands here, torchaudio (which AST and BEATs
    use) leaves the band empty, ``ln(eps)`` in every frame, and so does this one. Samples
    are taken as they are (floats in [-1, 1], as AST feeds them; BEATs scales by 2**15
    first, which adds ``ln(2**30) = 20.79`` to every band above the floor).

The other frame-level features (MFCC, centroid, ZCR, chroma, roll-off) come from the same
waveform with the librosa kernel on the front-end's frame grid, so that every matrix of a
clip has the same frames (see ``docs/features_schema.md``).

The waveform reaches the front-end at its own sample rate: with ``audio.sample_rate: null``
the clips are made at that rate; a higher ``audio.sample_rate`` is resampled in the features
stage (:func:`resample`); a lower one is refused by the configuration check
(:func:`check_sample_rate`).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .features import FeatureParams

__all__ = [
    "FRONTENDS",
    "FRONTEND_RATES",
    "KALDI_WINDOWS",
    "KALDI",
    "preset",
    "frontend_rate",
    "check_sample_rate",
    "describe",
    "kaldi_mel_banks",
    "kaldi_window",
    "kaldi_fbank",
    "compute_kaldi",
    "resample",
]

#: The front-ends ``features.frontend`` can name.
FRONTENDS: tuple[str, ...] = ("librosa", "panns", "kaldi_fbank")

#: Sample rate each front-end needs (None: ``audio.sample_rate``, 22050 when that is null).
FRONTEND_RATES: dict[str, int | None] = {"librosa": None, "panns": 32000, "kaldi_fbank": 16000}

#: Windows of the ``kaldi_fbank`` front-end (``features.kaldi_window``).
KALDI_WINDOWS: tuple[str, ...] = ("hanning", "povey")

#: The fixed settings of the ``kaldi_fbank`` front-end (torchaudio.compliance.kaldi.fbank's
#: argument names and defaults, except ``window_type``, ``num_mel_bins`` and ``dither``).
KALDI: dict[str, float | int | bool | str] = {
    "sample_frequency": 16000,
    "frame_length_ms": 25.0,
    "frame_shift_ms": 10.0,
    "snip_edges": True,
    "dither": 0.0,
    "remove_dc_offset": True,
    "preemphasis_coefficient": 0.97,
    "round_to_power_of_two": True,
    "use_power": True,
    "use_log_fbank": True,
    "use_energy": False,
    "low_freq": 20.0,
    "high_freq": 0.0,
    "mel_scale": "1127 ln(1 + f/700) (Kaldi, htk_compat irrelevant without energy)",
    "log_floor": "float32 epsilon (1.1920929e-07)",
    "num_mel_bins": 128,
}

_EPS32 = float(np.finfo(np.float32).eps)


def preset(frontend: str, *, kaldi_window: str = "hanning") -> dict:
    """The :class:`~.features.FeatureParams` fields a front-end fixes (empty for librosa).

    Raises
    ------
    ValueError
        If the front-end or the window is unknown.
    """
    if frontend == "librosa":
        return {}
    if frontend == "panns":
        return {
            "frontend": "panns",
            "sample_rate": 32000,
            "n_fft": 1024,
            "hop_length": 320,
            "n_mels": 64,
            "fmin": 50.0,
            "fmax": 14000.0,
            "center": True,
            "pad_mode": "reflect",
            "top_db": None,
            "window": "hann",
        }
    if frontend == "kaldi_fbank":
        if kaldi_window not in KALDI_WINDOWS:
            raise ValueError(
                f"kaldi_window must be one of {list(KALDI_WINDOWS)}, not {kaldi_window!r}"
            )
        return {
            "frontend": "kaldi_fbank",
            "sample_rate": 16000,
            "n_fft": 400,
            "hop_length": 160,
            "n_mels": 128,
            "fmin": 20.0,
            "fmax": None,
            "center": False,
            "pad_mode": "constant",
            "top_db": None,
            "window": kaldi_window,
        }
    raise ValueError(f"unknown front-end {frontend!r}; one of {list(FRONTENDS)}")


def frontend_rate(frontend: str, audio_rate: int | None) -> int:
    """The sample rate the features are computed at: the front-end's, or for ``librosa``
    ``audio.sample_rate`` (22050 when null)."""
    need = FRONTEND_RATES[frontend]
    if need is None:
        return 22050 if audio_rate is None else int(audio_rate)
    return need


def check_sample_rate(frontend: str, audio_rate: int | None) -> int:
    """The clips' sample rate (``audio.sample_rate``, or the front-end's when null).

    Raises
    ------
    ValueError
        One line, if ``audio.sample_rate`` is below the rate the front-end needs (the bands
        above its Nyquist frequency would be empty).
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"features.frontend: unknown front-end {frontend!r}")
    need = frontend_rate(frontend, audio_rate)
    if audio_rate is None:
        return need
    if int(audio_rate) < need:
        raise ValueError(
            f"audio.sample_rate: {audio_rate} Hz is below the {need} Hz the {frontend} "
            f"front-end needs: set audio.sample_rate: null (clips at {need} Hz) or >= {need}"
        )
    return int(audio_rate)


def describe(params: FeatureParams, *, n_frames: int | None = None) -> dict:
    """The front-end's name, every parameter and the ``log_mel`` shape, as stored in a
    shard's schema metadata (``audiosetflow.frontend``)."""
    p = params
    out: dict = {"name": p.frontend, "sample_rate": p.sample_rate}
    out["log_mel_shape"] = [p.n_mels, n_frames]
    if p.frontend == "kaldi_fbank":
        out["log_mel"] = {**KALDI, "window_type": p.window, "num_mel_bins": p.n_mels}
        out["unit"] = "natural log of mel energies (Kaldi fbank)"
        out["frames"] = "1 + (n_samples - 400) // 160 (snip_edges)"
    else:
        out["log_mel"] = {
            "n_fft": p.n_fft,
            "win_length": p.n_fft,
            "hop_length": p.hop_length,
            "window": "hann (periodic)",
            "center": p.center,
            "pad_mode": p.pad_mode,
            "power": 2.0,
            "n_mels": p.n_mels,
            "fmin": p.fmin,
            "fmax": p.fmax if p.fmax is not None else p.sample_rate / 2,
            "mel_scale": "slaney (htk=False), slaney area normalisation",
            "ref": 1.0,
            "amin": 1e-10,
            "top_db": p.top_db,
        }
        out["unit"] = "dB re 1.0 (10 log10 of mel power)"
        out["frames"] = (
            f"1 + n_samples // {p.hop_length}"
            if p.center
            else f"1 + (n_samples - {p.n_fft}) // {p.hop_length}"
        )
    out["other_features"] = (
        "librosa kernel on the same frames: "
        + ("MFCC = DCT-II (ortho) of this log_mel; " if p.frontend != "librosa" else "")
        + f"n_fft {p.n_fft}, hop {p.hop_length}, center {p.center}"
    )
    return out


# --- Kaldi fbank -------------------------------------------------------------------------------


def _kaldi_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(
    *, num_bins: int = 128, sample_rate: int = 16000, padded: int = 512, low_freq: float = 20.0
) -> np.ndarray:
    """Kaldi's triangular mel banks, float64 (num_bins, padded // 2 + 1): weights on the FFT
    bins ``0 .. padded/2`` (the Nyquist bin's column is 0, as in torchaudio), Nyquist as the
    upper edge, no VTLN, no normalisation (``MelBanks`` of ``feat/mel-computations.cc``)."""
    nyquist = 0.5 * sample_rate
    high = nyquist
    if not 0.0 <= low_freq < high:
        raise ValueError(f"need 0 <= low_freq < {high}, got {low_freq}")
    mel_low, mel_high = float(_kaldi_mel(low_freq)), float(_kaldi_mel(high))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _kaldi_mel((sample_rate / padded) * np.arange(padded // 2))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    w = np.maximum(0.0, np.minimum(up, down))
    out = np.zeros((num_bins, padded // 2 + 1))
    out[:, : padded // 2] = w
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def kaldi_window(kind: str, n: int) -> np.ndarray:
    """Kaldi's ``hanning`` (symmetric Hann, ``0.5 - 0.5 cos(2 pi i / (n - 1))``) or ``povey``
    (that to the power 0.85) window, float64."""
    if kind not in KALDI_WINDOWS:
        raise ValueError(f"unknown Kaldi window {kind!r}; one of {list(KALDI_WINDOWS)}")
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))
    w = w**0.85 if kind == "povey" else w
    w.setflags(write=False)
    return w


def kaldi_fbank(
    y: np.ndarray,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    window_type: str = "hanning",
    low_freq: float = 20.0,
    block: int = 256,
) -> np.ndarray:
    """Log mel filter-bank energies of Kaldi's definition (``torchaudio.compliance.kaldi.fbank``
    with ``dither=0``, ``use_energy=False`` and the other defaults), float32
    ``(num_mel_bins, n_frames)`` with ``n_frames = 1 + (len(y) - win) // shift`` (25-ms
    window, 10-ms shift, ``snip_edges=True``).

    Parameters
    ----------
    y : ndarray, shape (n_samples,)
        Mono waveform at ``sample_rate``, taken as it is (no 2**15 scaling).
    sample_rate : int
    num_mel_bins : int
    window_type : {"hanning", "povey"}
    low_freq : float
        Lower edge of the first band (Hz); the upper edge of the last is Nyquist.
    block : int
        Frames per block of the computation (bounds the float64 temporaries).

    Raises
    ------
    ValueError
        If ``y`` is shorter than one frame.
    """
    y = np.asarray(y, dtype=np.float32)
    win = int(sample_rate * KALDI["frame_length_ms"] / 1000)
    shift = int(sample_rate * KALDI["frame_shift_ms"] / 1000)
    padded = 1 << math.ceil(math.log2(win))
    if len(y) < win:
        raise ValueError(f"waveform of {len(y)} samples is shorter than one {win}-sample frame")
    n_t = 1 + (len(y) - win) // shift
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::shift][:n_t]
    banks = kaldi_mel_banks(
        num_bins=num_mel_bins, sample_rate=sample_rate, padded=padded, low_freq=low_freq
    ).T.copy()  # (bins, num_mel_bins)
    w = kaldi_window(window_type, win)
    coef = float(KALDI["preemphasis_coefficient"])
    out = np.empty((n_t, num_mel_bins), dtype=np.float32)
    for s in range(0, n_t, block):
        x = frames[s : s + block].astype(np.float64)
        x -= x.mean(axis=1, keepdims=True)  # remove_dc_offset
        pre = np.empty_like(x)
        pre[:, 1:] = x[:, 1:] - coef * x[:, :-1]  # pre-emphasis; the first sample uses itself
        pre[:, 0] = x[:, 0] - coef * x[:, 0]
        pre *= w
        power = np.abs(np.fft.rfft(pre, n=padded, axis=1)) ** 2
        e = power @ banks
        out[s : s + block] = np.log(np.maximum(e, _EPS32))
    return np.ascontiguousarray(out.T)


def compute_kaldi(y: np.ndarray, *, params: FeatureParams) -> dict[str, np.ndarray]:
    """The features of a clip with the ``kaldi_fbank`` front-end: ``log_mel`` is
    :func:`kaldi_fbank`; ``mfcc`` its DCT-II (orthonormal, first ``n_mfcc``); centroid, ZCR,
    chroma and roll-off from the librosa kernel on the same frames (n_fft 400 = the 25-ms
    frame, hop 160, no centring)."""
    import dataclasses

    from .features import compute

    kernel = dataclasses.replace(params, frontend="librosa", window="hann")
    feats = compute(y, params=kernel)
    lm = kaldi_fbank(
        y,
        sample_rate=params.sample_rate,
        num_mel_bins=params.n_mels,
        window_type=params.window,
        low_freq=params.fmin,
    )
    if lm.shape[1] != feats["log_mel"].shape[1]:  # pragma: no cover - same frame formula
        raise AssertionError("Kaldi and kernel frames differ")
    n = params.n_mels
    k = np.arange(params.n_mfcc)[:, None]
    dct = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    dct[0] *= np.sqrt(0.5)
    feats["log_mel"] = lm
    feats["mfcc"] = (dct @ lm).astype(np.float32)
    return feats


def resample(y: np.ndarray, *, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, Kaiser window, beta 5) of a mono
    float32 waveform; ``len = ceil(len(y) * sr_out / sr_in)``. Deterministic."""
    if sr_in == sr_out:
        return np.asarray(y, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(sr_in), int(sr_out))
    out = resample_poly(np.asarray(y, dtype=np.float64), sr_out // g, sr_in // g)
    return out.astype(np.float32)
