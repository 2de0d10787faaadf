"""Streaming prediction (audiosetflow.predicting): the windows of a file decoded as a stream
are exactly those of decoding the whole file first (real ffmpeg, every build), and the
multi-label model scores them as before."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from audiosetflow import predicting
from audiosetflow.audio.codec import AudioError, decode
from audiosetflow.learning.checkpoint import save_checkpoint, window_starts
from audiosetflow.learning.models import MultiLabelCNN
from audiosetflow.learning.multilabel import load_multilabel

SR = 8000


def _wav(path: Path, seconds: float, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    y = 0.3 * np.sin(2 * np.pi * (200 + 50 * t) * t) + 0.05 * rng.standard_normal(n)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _whole_file_windows(path, *, window, hop):
    """What predicting did before streaming: decode all, then cut (multilabel.predict_file)."""
    y = decode(path, sample_rate=SR)
    duration = len(y) / SR
    n = int(round(window * SR))
    out = []
    for s in window_starts(duration, window=window, hop=hop):
        lo = int(round(s * SR))
        w = y[lo : lo + n]
        out.append((s, np.concatenate([w, np.zeros(n - len(w), np.float32)])))
    return out, duration


@pytest.mark.parametrize(
    "seconds, window, hop",
    [
        (7.3, 2.0, 0.5),
        (7.3, 2.0, 0.7),  # the last window ends at the end, off the hop grid
        (7.3, 2.0, 3.0),  # hop > window: samples between windows never kept
        (6.0, 2.0, 1.0),  # windows exactly to the end
        (1.5, 2.0, 1.0),  # shorter than a window: one, zero-padded
        (2.0, 2.0, 1.0),  # exactly one window
        (9.0001, 1.37, 0.333),  # window and hop not whole samples
    ],
)
def test_streamed_windows_equal_whole_file_windows(
    tmp_path, monkeypatch, ffmpeg_build, seconds, window, hop
):
    path = _wav(tmp_path / "a.wav", seconds)
    monkeypatch.setattr(predicting, "READ_SAMPLES", 1000)  # many small reads
    want, duration = _whole_file_windows(path, window=window, hop=hop)
    stream = predicting.iter_windows(path, window=window, hop=hop, sample_rate=SR)
    got = list(stream)
    assert stream.duration == pytest.approx(duration)
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_windows_arrive_before_the_file_is_decoded_and_memory_stays_bounded(tmp_path, monkeypatch):
    """The first windows come while ffmpeg is still decoding; the buffer never holds more
    than a window, a read and a sample."""
    path = _wav(tmp_path / "long.wav", 120.0)
    monkeypatch.setattr(predicting, "READ_SAMPLES", 4096)
    stream = predicting.iter_windows(path, window=2.0, hop=1.0, sample_rate=SR)
    it = iter(stream)
    start, w = next(it)
    assert start == 0.0 and len(w) == 2 * SR
    assert stream.n_samples < 120 * SR / 10  # far from the whole file
    assert stream.duration is None
    it.close()  # stopping early ends ffmpeg (no process left behind)
    assert sum(1 for _ in stream) == 119 and stream.duration == pytest.approx(120.0)


def test_bad_and_missing_files_raise_one_line_naming_the_file(tmp_path, ffmpeg_build):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    for path, want in ((bad, "cannot decode audio"), (tmp_path / "none.wav", "no such file")):
        with pytest.raises(AudioError) as exc:
            list(predicting.iter_windows(path, window=1.0, hop=1.0, sample_rate=SR))
        msg = str(exc.value)
        assert str(path) in msg and want in msg and "\n" not in msg


def test_a_file_without_samples_is_an_error(tmp_path, ffmpeg_build):
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
    with pytest.raises(AudioError, match="no samples"):
        list(predicting.iter_windows(empty, window=1.0, hop=1.0, sample_rate=SR))


def test_limit_decodes_only_the_start(tmp_path):
    path = _wav(tmp_path / "a.wav", 5.0)
    stream = predicting.iter_windows(path, window=2.0, hop=2.0, sample_rate=SR, limit=2.0)
    (start, w), *rest = list(stream)
    assert start == 0.0 and rest == [] and stream.duration == pytest.approx(2.0)
    np.testing.assert_array_equal(w, decode(path, sample_rate=SR)[: 2 * SR])


def test_multilabel_predict_file_scores_as_the_whole_file_did(tmp_path, monkeypatch):
    """MultilabelCheckpoint.predict_file (streamed, in batches) against the whole-file
    computation it replaced: the same starts, duration and scores."""
    import torch

    from audiosetflow.audio.features import FeatureParams, compute

    params = FeatureParams.from_config({"n_mels": 32}, sample_rate=SR)
    torch.manual_seed(0)
    model = MultiLabelCNN(3, params.n_mels, width=4)
    model.eval()
    labels = [{"mid": f"/m/{i}", "name": f"L{i}", "slug": f"l{i}"} for i in range(3)]
    from dataclasses import asdict

    ck_path = tmp_path / "multilabel.pt"
    save_checkpoint(ck_path, model=model, labels=labels, thresholds=[0.5] * 3,
                    feature_params=asdict(params), sample_rate=SR, clip_seconds=1.0)  # fmt: skip
    ck = load_multilabel(ck_path)
    path = _wav(tmp_path / "a.wav", 40.3, seed=3)
    monkeypatch.setattr(predicting, "BATCH_WINDOWS", 7)
    monkeypatch.setattr(predicting, "READ_SAMPLES", 3000)
    starts, scores, duration = ck.predict_file(path, hop=0.5)
    want, want_duration = _whole_file_windows(path, window=1.0, hop=0.5)
    X = np.stack([compute(w, params=params)["log_mel"][None] for _, w in want])
    assert duration == pytest.approx(want_duration)
    assert starts.tolist() == [s for s, _ in want] and len(starts) == 80
    np.testing.assert_allclose(scores, ck.predict(X), rtol=1e-5, atol=1e-6)


def test_no_ffmpeg_left_running_after_a_consumer_stops(tmp_path):
    path = _wav(tmp_path / "a.wav", 60.0)
    before = _ffmpeg_children()
    it = iter(predicting.iter_windows(path, window=1.0, hop=1.0, sample_rate=SR))
    next(it)
    it.close()
    assert _ffmpeg_children() == before


def _ffmpeg_children() -> int:
    import os

    out = subprocess.run(["ps", "-o", "comm=", "--ppid", str(os.getpid())], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    return sum("ffmpeg" in ln for ln in out.splitlines())
