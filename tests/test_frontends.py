"""The literature front-ends (``features.frontend``): parity with their reference
implementations on synthetic and real recorded audio, the shard metadata, the configuration's
sample rate, and the CNNs on their shapes.

References: ``panns`` against librosa called with PANNs' settings (what torchlibrosa's
``Spectrogram`` + ``LogmelFilterBank`` compute in CNN14); ``kaldi_fbank`` against
kaldi-native-fbank (k2-fsa's C++ implementation of Kaldi's ``compute-fbank-feats``, the same
definition as ``torchaudio.compliance.kaldi.fbank``; torchaudio has no release for the pinned
torch 2.13.0).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from audiosetflow.audio.features import FeatureParams, compute
from audiosetflow.audio.frontends import kaldi_fbank, resample

#: Bounds of the parity tests (measured: see docs/features_schema.md).
PANNS_MAX_DB = 1e-3  # dB, max abs over all bins and frames
KALDI_MAX_LOG = 2e-3  # natural-log units, over bins above 1e-4 of the clip's top energy
KALDI_MAX_LOG_ALL = 0.05  # over every bin (float32 rounding of near-zero energies)


def _signals(sr: int, seconds: float = 3.0) -> dict[str, np.ndarray]:
    from scipy.signal import lfilter

    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    src = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / sr) / k for k in range(1, 30))
    speech = np.zeros_like(src)
    for fc, bw in ((700, 110), (1200, 120), (2600, 160)):
        r = np.exp(-np.pi * bw / sr)
        speech += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc / sr), r * r], src)
    speech = 0.3 * speech / np.abs(speech).max() * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    return {
        "silence": np.zeros(len(t)),
        "tone_1k": 0.5 * np.sin(2 * np.pi * 1000 * t),
        "tone_low_level": 1e-4 * np.sin(2 * np.pi * 3000 * t),
        "white_noise": 0.3 * rng.standard_normal(len(t)),
        "chirp": 0.4 * np.sin(2 * np.pi * (50 * t + (sr / 2 - 100) / (2 * seconds) * t * t)),
        "speech_like": speech + 1e-4 * rng.standard_normal(len(t)),
        "impulses": np.where(np.arange(len(t)) % 4000 == 0, 1.0, 0.0),
    }


def _panns_reference(y: np.ndarray) -> np.ndarray:
    """CNN14's log-mel as PANNs computes it (torchlibrosa = these librosa calls)."""
    import librosa

    S = librosa.feature.melspectrogram(
        y=y, sr=32000, n_fft=1024, hop_length=320, win_length=1024, window="hann",
        center=True, pad_mode="reflect", power=2.0, n_mels=64, fmin=50, fmax=14000,
    )  # fmt: skip
    return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)


def _kaldi_reference(y: np.ndarray, window: str, num_bins: int) -> np.ndarray:
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_bins
    opts.mel_opts.low_freq = 20.0
    opts.use_energy = False
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, np.asarray(y, dtype=np.float32).tolist())
    fb.input_finished()
    return np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)]).T


def _params(frontend: str, **cfg) -> FeatureParams:
    return FeatureParams.from_config({"frontend": frontend, **cfg}, sample_rate=None)


def _kaldi_diff(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Max abs difference over the bins above 1e-4 of the clip's top energy, and over all."""
    assert ours.shape == ref.shape
    d = np.abs(ours.astype(np.float64) - ref)
    loud = ref > ref.max() + np.log(1e-4)
    return float(d[loud].max()) if loud.any() else 0.0, float(d.max())


@pytest.mark.parametrize("name", sorted(_signals(32000)))
def test_panns_matches_librosa_with_panns_settings(name):
    y = _signals(32000)[name].astype(np.float32)
    ours = compute(y, params=_params("panns"))["log_mel"]
    ref = _panns_reference(y)
    assert ours.shape == ref.shape == (64, 1 + len(y) // 320)
    assert np.abs(ours - ref).max() <= PANNS_MAX_DB


# Kaldi itself refuses 128 bands at 16 kHz with a 512-point FFT: band 3 (63.0-93.0 Hz)
# catches no FFT bin ("You may have set num_mel_bins too large"); torchaudio, which AST and
# BEATs use, gives that band zero weights, i.e. ln(eps) in every frame, and so does
# kaldi_fbank. The reference is compared at 80 bands and at 126, the most Kaldi accepts.
@pytest.mark.parametrize("num_bins", [80, 126])
@pytest.mark.parametrize("window", ["hanning", "povey"])
@pytest.mark.parametrize("name", sorted(_signals(16000)))
def test_kaldi_fbank_matches_kaldi(name, window, num_bins):
    y = _signals(16000)[name].astype(np.float32)
    ours = kaldi_fbank(y, num_mel_bins=num_bins, window_type=window)
    ref = _kaldi_reference(y, window, num_bins)
    assert ours.shape == (num_bins, 1 + (len(y) - 400) // 160) == ref.shape
    loud, every = _kaldi_diff(ours, ref)
    assert loud <= KALDI_MAX_LOG and every <= KALDI_MAX_LOG_ALL, (loud, every)


def test_kaldi_fbank_frontend_has_128_bands_with_torchaudios_empty_band():
    from audiosetflow.audio.frontends import kaldi_mel_banks

    banks = kaldi_mel_banks(num_bins=128)
    assert banks.shape == (128, 257) and not banks[:, 256].any()
    empty = np.flatnonzero(~(banks > 0).any(axis=1))
    assert list(empty) == [3]
    y = _signals(16000)["white_noise"].astype(np.float32)
    p = _params("kaldi_fbank")
    lm = compute(y, params=p)["log_mel"]
    assert p.n_mels == 128 and lm.shape == (128, 298)
    np.testing.assert_array_equal(lm, kaldi_fbank(y, num_mel_bins=128, window_type="hanning"))
    floor = np.float32(np.log(np.finfo(np.float32).eps))
    assert np.all(lm[3] == floor)
    assert (lm[[2, 4]] > floor).all()  # its neighbours see the noise
    # the 126 bands Kaldi accepts are the same construction: their edges agree with 128's
    # formula (mel spacing (mel(8000) - mel(20)) / (n + 1))
    b126 = kaldi_mel_banks(num_bins=126)
    assert (b126 > 0).any(axis=1).all()


def test_kaldi_windows_differ_and_dc_is_removed():
    rng = np.random.default_rng(0)
    y = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    a = kaldi_fbank(y, window_type="hanning")
    b = kaldi_fbank(y, window_type="povey")
    assert np.abs(a - b).max() > 0.05  # the option is not ignored
    # a constant offset is removed frame by frame: same fbank
    assert np.abs(kaldi_fbank(y + np.float32(0.3)) - a).max() < 1e-3


@pytest.fixture(scope="module")
def real_waves(tmp_path_factory):
    """Ten seconds of two real recordings (Asterisk's US-English voice prompts, concatenated;
    a recorded MP3 track of asc-music), decoded by ffmpeg at 32 and 16 kHz."""
    import realaudio
    import soundfile as sf

    from audiosetflow.audio.codec import transcode_many

    names = ["asterisk-core-sounds-en-g722", "asc-music"]
    try:
        realaudio.ensure_packages(names)
    except realaudio.RealAudioUnavailable as exc:
        pytest.skip(f"no real recordings: {exc}")
    speech = [f for f in realaudio.package_files(names[0]) if f.endswith(".g722")][:40]
    music = [f for f in realaudio.package_files(names[1]) if f.endswith(".mp3")][:1]
    work = tmp_path_factory.mktemp("real")
    out = {}
    for sr in (32000, 16000):
        for kind, files in (("speech", speech), ("music", music)):
            pairs = [(f, work / f"{kind}-{sr}-{i}.wav") for i, f in enumerate(files)]
            secs = transcode_many(pairs, sample_rate=sr)
            ys = [
                sf.read(str(d), dtype="float32")[0]
                for (_, d), s in zip(pairs, secs, strict=True)
                if isinstance(s, float)
            ]
            y = np.concatenate(ys)
            start = len(y) // 3 if kind == "music" else 0  # the middle of the track
            out[kind, sr] = y[start : start + 10 * sr]
            assert len(out[kind, sr]) == 10 * sr and np.abs(out[kind, sr]).max() > 0.01
    return out


@pytest.mark.parametrize("kind", ["speech", "music"])
def test_frontends_match_references_on_real_recordings(real_waves, kind):
    y32 = real_waves[kind, 32000]
    ours = compute(y32, params=_params("panns"))["log_mel"]
    assert ours.shape == (64, 1001)
    assert np.abs(ours - _panns_reference(y32)).max() <= PANNS_MAX_DB
    y16 = real_waves[kind, 16000]
    assert compute(y16, params=_params("kaldi_fbank"))["log_mel"].shape == (128, 998)
    for window in ("hanning", "povey"):
        ours = kaldi_fbank(y16, num_mel_bins=126, window_type=window)
        loud, every = _kaldi_diff(ours, _kaldi_reference(y16, window, 126))
        assert loud <= KALDI_MAX_LOG and every <= KALDI_MAX_LOG_ALL, (window, loud, every)


@pytest.mark.parametrize("frontend", ["panns", "kaldi_fbank"])
def test_every_feature_shares_the_frontend_frames(frontend):
    p = _params(frontend)
    y = _signals(p.sample_rate, seconds=10.0)["speech_like"]
    f = compute(y, params=p)
    t = {"panns": 1001, "kaldi_fbank": 998}[frontend]
    assert {k: v.shape for k, v in f.items()} == {k: (r, t) for k, r in p.rows().items()}
    assert all(np.isfinite(v).all() for v in f.values())
    # the MFCC is the DCT of this front-end's log-mel
    n = p.n_mels
    k = np.arange(p.n_mfcc)[:, None]
    dct = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)
    dct[0] *= np.sqrt(0.5)
    assert np.abs(dct @ f["log_mel"].astype(np.float64) - f["mfcc"]).max() < 1e-3


def test_librosa_frontend_is_unchanged():
    p = FeatureParams.from_config({"frontend": "librosa"}, sample_rate=None)
    assert p == FeatureParams() and p.to_dict() == FeatureParams().to_dict()
    assert "frontend" not in p.to_dict()  # librosa shards' parameters read as before
    q = _params("panns")
    assert FeatureParams(**q.to_dict()) == q and q.to_dict()["pad_mode"] == "reflect"
    # the panns front-end ignores the librosa keys it fixes
    assert _params("panns", n_mels=128, n_fft=2048) == q


@pytest.mark.parametrize("frontend", ["panns", "kaldi_fbank"])
def test_shard_metadata_records_the_frontend(tmp_path, frontend):
    import pandas as pd
    import pyarrow.parquet as pq

    from audiosetflow.audio.features import load_split, read_params, write_shard

    p = _params(frontend, kaldi_window="povey")
    ys = [_signals(p.sample_rate, seconds=2.0)[n] for n in ("speech_like", "white_noise")]
    meta = pd.DataFrame(
        {"ytid": ["aaaaaaaaaaa", "bbbbbbbbbbb"], "split": "train", "start": 0.0, "end": 2.0,
         "labels": [["/m/09x0r"], []], "label_names": [["Speech"], []], "status": "ok",
         "reason": "", "short": False, "duration": 2.0}
    )  # fmt: skip
    path = tmp_path / "shard-0000.parquet"
    write_shard(path, meta=meta, features=[compute(y, params=p) for y in ys], params=p)
    md = pq.read_schema(path).metadata
    fe = json.loads(md[b"audiosetflow.frontend"])
    t = compute(ys[0], params=p)["log_mel"].shape[1]
    assert fe["name"] == frontend and fe["sample_rate"] == p.sample_rate
    assert fe["log_mel_shape"] == [p.n_mels, t]
    if frontend == "kaldi_fbank":
        assert fe["log_mel"]["window_type"] == "povey" and fe["log_mel"]["dither"] == 0.0
        assert fe["log_mel"]["preemphasis_coefficient"] == 0.97
    else:
        assert fe["log_mel"]["pad_mode"] == "reflect" and fe["log_mel"]["fmax"] == 14000.0
    assert read_params(path)[1] == p
    X, got = load_split(path.parent)
    assert X.shape == (2, p.n_mels, t) and list(got["sample_rate"]) == [p.sample_rate] * 2


def test_config_derives_and_checks_the_sample_rate():
    from audiosetflow.config import ConfigError, validate

    def rate(**cfg):
        return validate({"features": cfg.pop("features", {}), "audio": cfg})["audio"]["sample_rate"]

    assert rate() == 22050
    assert rate(features={"frontend": "panns"}) == 32000
    assert rate(features={"frontend": "kaldi_fbank"}) == 16000
    assert rate(sample_rate=48000, features={"frontend": "kaldi_fbank"}) == 48000
    assert rate(sample_rate=16000) == 16000  # librosa computes at any rate
    with pytest.raises(ConfigError, match=r"22050 Hz is below the 32000 Hz the panns") as e:
        rate(sample_rate=22050, features={"frontend": "panns"})
    assert "\n" not in str(e.value)


def test_resample_keeps_a_tone_and_the_clip_length():
    sr_in, sr_out = 32000, 16000
    t = np.arange(10 * sr_in) / sr_in
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), sr_in=sr_in, sr_out=sr_out)
    assert len(y) == 10 * sr_out
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / sr_out)
    assert np.abs(y - ref)[1000:-1000].max() < 1e-3
    assert len(resample(np.zeros(220500, np.float32), sr_in=22050, sr_out=16000)) == 160000


@pytest.mark.parametrize("rows,frames", [(64, 1001), (128, 998)])
def test_cnns_take_the_frontend_shapes(rows, frames):
    import torch

    from audiosetflow.learning.models import AudioCNN, MultiLabelCNN

    x = torch.randn(2, 1, rows, frames)
    assert AudioCNN(rows, 1).eval()(x).shape == (2,)
    assert MultiLabelCNN(5, rows, 1).eval()(x).shape == (2, 5)


def _job_rules(dry_run_stdout: str) -> set[str]:
    """The rules of a ``snakemake -n`` plan (its ``Job stats`` table)."""
    lines = dry_run_stdout.split("Job stats:", 1)[1].splitlines()
    rules = set()
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        rules.add(parts[0])
    return rules


@pytest.mark.slow
def test_panns_demo_trains_and_a_frontend_change_reruns_only_features(tmp_path):
    """The demo at its smallest with ``features.frontend: panns``: 64 x 1001 shards, a CNN
    trained on them; then a change to ``kaldi_fbank`` plans features and training only (the
    clips are kept at ``audio.sample_rate: 32000``)."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from audiosetflow.audio.features import load_split, read_params
    from audiosetflow.learning.checkpoint import load_checkpoint

    repo = Path(__file__).resolve().parent.parent
    small = {
        "demo": {"clips_per_class": 6}, "labels": ["Music"], "shard_size": 64,
        "audio": {"sample_rate": 32000}, "features": {"frontend": "panns"},
        "training": {"epochs": 2, "patience": 1, "min_epochs": 1},
    }  # fmt: skip
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    small["features"] = {"frontend": "kaldi_fbank"}
    (tmp_path / "kaldi.yaml").write_text(yaml.safe_dump(small))
    base = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "2", "--configfile", str(repo / "config.yaml"),
        str(repo / "config/demo.yaml"),
    ]  # fmt: skip
    target = "results/models/music.pt"
    run = subprocess.run(
        [*base, str(tmp_path / "small.yaml"), "--", target],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-5000:]
    res = tmp_path / "results"
    shard = sorted((res / "features/train").glob("shard-*.parquet"))[0]
    assert read_params(shard)[1].frontend == "panns"
    X, meta = load_split(res / "features/train")
    assert X.shape[1:] == (64, 1001) and len(X) >= 8 and set(meta["sample_rate"]) == {32000}
    ck = load_checkpoint(res / "models/music.pt")
    assert ck.feature_params["frontend"] == "panns" and ck.sample_rate == 32000
    plan = subprocess.run(
        [*base, str(tmp_path / "kaldi.yaml"), "-n", "--", target],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = _job_rules(plan.stdout)
    assert "features" in rules and "train" in rules, plan.stdout[-3000:]
    assert not rules & {"download", "transcode", "trim"}, rules
