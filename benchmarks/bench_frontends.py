"""Throughput of the features computation per front-end (``features.frontend``), one process,
one BLAS thread, on the same synthetic 10-s clips.

For each front-end prints clips/s (and ms per clip) of

* ``compute``: :func:`audiosetflow.audio.features.compute` on a waveform already at the
  front-end's sample rate (every frame-level feature: log-mel, MFCC, centroid, ZCR, chroma,
  roll-off);
* ``log_mel`` alone, where it has its own function (``kaldi_fbank``: :func:`~audiosetflow.
  audio.frontends.kaldi_fbank`), to show what the front-end itself costs;
* ``resample 32k + compute``: the same from a 32-kHz clip (what the features stage does with
  ``audio.sample_rate: 32000``; for ``panns`` no resampling is needed then, the row shows
  the same work as ``compute``);

and, for comparison, the reference implementations the parity tests use (librosa with
PANNs' settings; kaldi-native-fbank), where they are installed. Usage::

    .venv/bin/python benchmarks/bench_frontends.py [--clips 20] [--tiny]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from audiosetflow.audio.features import FeatureParams, compute  # noqa: E402
from audiosetflow.audio.frontends import kaldi_fbank, resample  # noqa: E402


def synth(i: int, seconds: float, sr: int) -> np.ndarray:
    """Clip ``i``: three tones, noise, or an amplitude-modulated harmonic tone."""
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * sr)) / sr
    kind = i % 3
    if kind == 0:
        y = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 4000, 3)) / 3
    elif kind == 1:
        y = 0.5 * rng.standard_normal(len(t))
    else:
        f0 = rng.uniform(100, 250)
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 20))
        y *= np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.3 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def _rate(fn, clips) -> tuple[float, float]:
    fn(clips[0])  # warm-up: filter banks, work arrays
    t0 = time.perf_counter()
    for y in clips:
        fn(y)
    dt = time.perf_counter() - t0
    return len(clips) / dt, 1000 * dt / len(clips)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tiny", action="store_true", help="2 clips of 10 s (the test suite)")
    a = ap.parse_args(argv)
    n = 2 if a.tiny else a.clips
    print(f"{n} clips of {a.seconds:g} s, one process, one BLAS thread")
    print(f"{'front-end':12s} {'what':28s} {'clips/s':>8s} {'ms/clip':>8s}  log_mel shape")
    src32 = [synth(i, a.seconds, 32000) for i in range(n)]
    for fe in ("librosa", "panns", "kaldi_fbank"):
        p = FeatureParams.from_config({"frontend": fe}, sample_rate=None)
        clips = [synth(i, a.seconds, p.sample_rate) for i in range(n)]
        shape = compute(clips[0], params=p)["log_mel"].shape
        rows = [("compute", _rate(lambda y, p=p: compute(y, params=p), clips))]
        if fe == "kaldi_fbank":
            rows.append(("log_mel alone (kaldi_fbank)", _rate(kaldi_fbank, clips)))
        if fe != "librosa":  # the features stage resamples only for panns and kaldi_fbank
            rows.append(
                (
                    "resample 32k + compute",
                    _rate(
                        lambda y, p=p: compute(
                            resample(y, sr_in=32000, sr_out=p.sample_rate), params=p
                        ),
                        src32,
                    ),
                )
            )
        for what, (cps, ms) in rows:
            print(f"{fe:12s} {what:28s} {cps:8.1f} {ms:8.1f}  {shape}")
    try:  # the references of the parity tests
        import librosa

        def panns_ref(y):
            S = librosa.feature.melspectrogram(
                y=y, sr=32000, n_fft=1024, hop_length=320, center=True, pad_mode="reflect",
                n_mels=64, fmin=50, fmax=14000,
            )  # fmt: skip
            return librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=None)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cps, ms = _rate(panns_ref, src32)
        print(f"{'reference':12s} {'librosa, PANNs log-mel only':28s} {cps:8.1f} {ms:8.1f}")
    except ImportError:
        print("reference: librosa not installed")
    try:
        import kaldi_native_fbank as knf

        def kaldi_ref(y):
            o = knf.FbankOptions()
            o.frame_opts.dither = 0.0
            o.frame_opts.window_type = "hanning"
            o.mel_opts.num_bins = 126  # the most Kaldi accepts at 16 kHz
            o.use_energy = False
            fb = knf.OnlineFbank(o)
            fb.accept_waveform(16000, y.tolist())
            fb.input_finished()
            return [fb.get_frame(i) for i in range(fb.num_frames_ready)]

        src16 = [synth(i, a.seconds, 16000) for i in range(n)]
        cps, ms = _rate(kaldi_ref, src16)
        print(f"{'reference':12s} {'kaldi-native-fbank, 126 bands':28s} {cps:8.1f} {ms:8.1f}")
    except ImportError:
        print("reference: kaldi-native-fbank not installed")


if __name__ == "__main__":
    main()
