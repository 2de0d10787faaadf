"""Parity of audiosetflow.features.compute with librosa 0.11, on many kinds of signal."""

from __future__ import annotations

import warnings
from dataclasses import asdict

import librosa
import numpy as np
import pytest

from audiosetflow.audio.features import (
    FRAME_FEATURES,
    SUMMARY_FEATURES,
    FeatureParams,
    compute,
    summary_columns,
)

SR = 22050
SECONDS = 3.0


def _t(seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    return np.arange(int(seconds * sr)) / sr


def _speech_like(seed: int = 0) -> np.ndarray:
    """Harmonic source (gliding f0) through three formant resonators, syllable-rate AM."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    t = _t()
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    src = sum(np.sin(k * phase) / k for k in range(1, 40))
    y = np.zeros_like(src)
    for fc, bw in ((700, 110), (1200, 120), (2600, 160)):
        r = np.exp(-np.pi * bw / SR)
        a = [1, -2 * r * np.cos(2 * np.pi * fc / SR), r * r]
        y += lfilter([1 - r], a, src)
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2  # silent gaps between "syllables"
    return 0.3 * y / np.abs(y).max() * env + 1e-4 * rng.standard_normal(len(t))


def _music_like() -> np.ndarray:
    """Chord sequence (C major, A minor, F major, G major) of harmonic tones with decays."""
    t = _t()
    chords = [(261.63, 329.63, 392.0), (220.0, 261.63, 329.63), (174.61, 220.0, 261.63),
              (196.0, 246.94, 293.66)]  # fmt: skip
    y = np.zeros_like(t)
    seg = len(t) // len(chords)
    for i, ch in enumerate(chords):
        tt = t[:seg]
        env = np.exp(-2.5 * tt)
        y[i * seg : (i + 1) * seg] = env * sum(
            np.sin(2 * np.pi * k * f * tt) / k**1.5 for f in ch for k in range(1, 6)
        )
    return 0.2 * y


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    t = _t()
    return {
        "silence": np.zeros(len(t)),
        "dc": np.full(len(t), 0.25),
        "tone_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "tone_low_level": 1e-4 * np.sin(2 * np.pi * 1000 * t),
        "white_noise": 0.3 * rng.standard_normal(len(t)),
        "speech_like": _speech_like(),
        "music_like": _music_like(),
        "clipped": np.clip(3.0 * np.sin(2 * np.pi * 220 * t), -1, 1),
        "very_short": 0.3 * np.sin(2 * np.pi * 660 * _t(0.1)),
        "shorter_than_fft": 0.3 * rng.standard_normal(1000),
        "impulses": np.where(np.arange(len(t)) % 5000 == 0, 1.0, 0.0),
        "half_silent": np.concatenate(
            [np.zeros(len(t) // 2), 0.3 * rng.standard_normal(len(t) - len(t) // 2)]
        ),
    }


SIGNALS = _signals()


def librosa_features(y: np.ndarray, p: FeatureParams) -> dict[str, np.ndarray]:
    """The seed's way: one librosa call per feature, same waveform and parameters."""
    common = dict(y=y, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, center=p.center)
    mel_kw = dict(n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_fft larger than a very short signal
        mel = librosa.feature.melspectrogram(**common, **mel_kw)
        log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=p.top_db)
        if p.top_db == 80.0:  # librosa.feature.mfcc's own power_to_db uses top_db=80
            mfcc = librosa.feature.mfcc(**common, **mel_kw, n_mfcc=p.n_mfcc)
        else:
            mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=p.n_mfcc)
        return {
            "log_mel": log_mel,
            "mfcc": mfcc,
            "spectral_centroid": librosa.feature.spectral_centroid(**common),
            "zcr": librosa.feature.zero_crossing_rate(
                y=y, frame_length=p.n_fft, hop_length=p.hop_length, center=p.center
            ),
            "chroma": librosa.feature.chroma_stft(**common, tuning=p.tuning, n_chroma=p.n_chroma),
            "rolloff": librosa.feature.spectral_rolloff(**common, roll_percent=p.roll_percent),
        }


def assert_parity(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(FRAME_FEATURES)
    for name in FRAME_FEATURES:
        a, r = ours[name], ref[name]
        assert a.dtype == np.float32, name
        assert a.shape == r.shape, (name, a.shape, r.shape)
        assert np.isfinite(a).all(), name
    np.testing.assert_allclose(ours["log_mel"], ref["log_mel"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours["mfcc"], ref["mfcc"], rtol=0, atol=1e-2)
    np.testing.assert_allclose(ours["chroma"], ref["chroma"], rtol=0, atol=1e-4)
    c, rc = ours["spectral_centroid"].astype(np.float64), ref["spectral_centroid"]
    np.testing.assert_array_less(np.abs(c - rc), 1e-4 * np.abs(rc) + 1e-3)
    np.testing.assert_array_equal(ours["zcr"], ref["zcr"].astype(np.float32))
    # the roll-off adds each frame's bins in order in float32, as librosa's cumsum: the same bin
    same = ours["rolloff"] == ref["rolloff"].astype(np.float32)
    assert same.all(), f"roll-off equal on {same.mean():.4%} of frames"


@pytest.fixture(scope="module")
def default_params() -> FeatureParams:
    return FeatureParams()


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_parity_with_librosa(name: str, default_params: FeatureParams) -> None:
    y = SIGNALS[name].astype(np.float32)
    ours = compute(y, params=default_params)
    assert ours["log_mel"].shape[1] == 1 + len(y) // default_params.hop_length
    assert_parity(ours, librosa_features(y, default_params))


@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64, n_mfcc=13),
        FeatureParams(fmin=50.0, fmax=8000.0, roll_percent=0.5, tuning=0.25, n_chroma=24),
        FeatureParams(center=False, hop_length=300, top_db=None),
    ],
    ids=["16k-1024", "band-tuned", "uncentred"],
)
@pytest.mark.parametrize("name", ["white_noise", "speech_like", "music_like"])
def test_parity_other_parameters(name: str, params: FeatureParams) -> None:
    y = SIGNALS[name].astype(np.float32)
    assert_parity(compute(y, params=params), librosa_features(y, params))


def test_rolloff_adds_each_frame_in_float32_like_librosa() -> None:
    """On heavy-tailed noise the float32 running sum crosses 85 % at another bin than the exact
    (float64) one in some frame; the kernel, which sums all frames at once bin after bin, must
    pick librosa's bin there too."""
    p = FeatureParams()
    rng = np.random.default_rng(1)
    y = (rng.standard_normal(5 * p.sample_rate) ** 3 * 0.05).astype(np.float32)
    mag = np.abs(librosa.stft(y=y, n_fft=p.n_fft, hop_length=p.hop_length))
    exact = np.cumsum(mag.astype(np.float64), axis=0)
    exact_bin = np.count_nonzero(exact < p.roll_percent * exact[-1], axis=0)
    ref = librosa.feature.spectral_rolloff(
        y=y, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, roll_percent=p.roll_percent
    )[0]
    freqs = librosa.fft_frequencies(sr=p.sample_rate, n_fft=p.n_fft)
    assert (freqs[exact_bin] != ref).any()  # the signal tells the two sums apart
    np.testing.assert_array_equal(compute(y, params=p)["rolloff"][0], ref.astype(np.float32))


def test_float64_input_is_converted() -> None:
    p = FeatureParams()
    y64 = SIGNALS["white_noise"]
    a = compute(y64, params=p)
    b = compute(y64.astype(np.float32), params=p)
    for k in FRAME_FEATURES:
        np.testing.assert_array_equal(a[k], b[k])


def test_silence_gives_finite_floor_values() -> None:
    f = compute(np.zeros(SR, dtype=np.float32), params=FeatureParams())
    np.testing.assert_allclose(f["log_mel"], -100.0, atol=1e-3)  # 10 log10(amin)
    for k in ("spectral_centroid", "zcr", "chroma", "rolloff"):
        assert np.all(f[k] == 0.0), k
    assert all(np.isfinite(v).all() for v in f.values())


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros((2, 1000), dtype=np.float32), "mono"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.array([0.0, np.nan, 0.0] * 1000, dtype=np.float32), "NaN"),
        (np.array([0.0, np.inf] * 1000, dtype=np.float32), "NaN or infinite"),
    ],
    ids=["stereo", "empty", "nan", "inf"],
)
def test_bad_waveforms_raise_value_error(y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute(y, params=FeatureParams())


def test_uncentred_too_short_raises() -> None:
    with pytest.raises(ValueError, match="shorter than n_fft"):
        compute(np.zeros(100, dtype=np.float32), params=FeatureParams(center=False))


def test_params_from_config_ignores_unknown_keys() -> None:
    cfg = {
        "n_fft": 1024,
        "hop_length": 256,
        "n_mels": 64,
        "n_mfcc": 13,
        "roll_percent": 0.9,
        "threads": 1,
        "example_clips": [],
        "n_examples": 3,
    }
    p = FeatureParams.from_config(cfg, sample_rate=16000)
    assert (p.sample_rate, p.n_fft, p.hop_length, p.n_mels, p.n_mfcc) == (16000, 1024, 256, 64, 13)
    assert p.roll_percent == 0.9 and p.tuning == 0.0 and p.center is True
    assert FeatureParams(**asdict(p)) == p  # checkpoints store asdict(params)
    assert FeatureParams.from_config({}, sample_rate=22050) == FeatureParams()
    assert hash(p) != hash(FeatureParams())


@pytest.mark.parametrize(
    "kw",
    [
        {"n_fft": 0},
        {"hop_length": -1},
        {"n_mfcc": 200},
        {"roll_percent": 1.5},
        {"fmax": 30000.0},
        {"fmin": 5000.0, "fmax": 4000.0},
        {"top_db": -1.0},
    ],
)
def test_params_validation(kw: dict) -> None:
    with pytest.raises(ValueError):
        FeatureParams(**kw)


def test_summary_feature_names() -> None:
    cols = summary_columns(FeatureParams())
    assert set(SUMMARY_FEATURES) <= set(cols)
    assert len(SUMMARY_FEATURES) == 20 + 1 + 1 + 12 + 1
    assert "mfcc_mean_00" in SUMMARY_FEATURES and "mfcc_mean_19" in SUMMARY_FEATURES
    assert "log_mel_std_127" in cols and "rolloff_std" in cols
    assert len(cols) == len(set(cols)) == 2 * (128 + 20 + 1 + 1 + 12 + 1)


def test_plot_clip_writes_png(tmp_path) -> None:
    from audiosetflow.reporting.examples import plot_clip

    p = FeatureParams()
    y = SIGNALS["music_like"].astype(np.float32)
    out = tmp_path / "plots" / "clip.png"
    plot_clip(y, compute(y, params=p), params=p, title="music-like / chords", path=out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [f.name for f in out.parent.iterdir()] == ["clip.png"]  # no temporary left behind


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax, n_chroma, tuning",
    [
        (22050, 2048, 128, 0.0, None, 12, 0.0),
        (16000, 1024, 64, 50.0, 7000.0, 24, 0.25),
        (44100, 4096, 40, 20.0, None, 12, -0.3),
    ],
)
def test_filter_banks_equal_librosa(sr, n_fft, n_mels, fmin, fmax, n_chroma, tuning) -> None:
    import scipy.signal

    from audiosetflow.audio.features import chroma_filterbank, hann_window, mel_filterbank

    ours = mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    np.testing.assert_array_equal(ours, ref)
    ours = chroma_filterbank(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning)
    ref = librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(
        hann_window(n_fft), scipy.signal.get_window("hann", n_fft, fftbins=True)
    )


def test_compute_does_not_import_librosa() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from audiosetflow.audio.features import FeatureParams, compute\n"
        "compute(np.ones(5000, dtype=np.float32), params=FeatureParams())\n"
        "bad = [m for m in ('librosa', 'scipy.signal', 'numba') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
