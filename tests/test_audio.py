"""Transcode and exact trimming with real ffmpeg on generated media."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from audiosetflow.audio import AudioError, decode, load_clip, transcode, trim
from audiosetflow.tools import ffmpeg_exe

SR = 22050


def _clicks(seconds: float, sr: int = SR) -> np.ndarray:
    """Silence with a unit click at every whole second: positions are easy to check."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    y[::sr] = 0.9
    return y


def _encode(y: np.ndarray, path, codec: str = "flac", sr: int = SR):
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "-",
         "-c:a", codec, str(path)],
        input=y.tobytes(), check=True,
    )  # fmt: skip


def test_trim_is_sample_exact(tmp_path):
    window = tmp_path / "-window.flac"  # a name starting with '-' is never taken as an option
    _encode(_clicks(20.0), window)
    out = tmp_path / "clip.flac"
    # the window starts 3 s into the source; take source [5.5, 15.5)
    res = trim(window, out, offset=3.0, start=5.5, end=15.5)
    clip, sr = sf.read(out, dtype="float32")
    assert sr == SR and len(clip) == 10 * SR
    assert not res.short and res.duration == pytest.approx(10.0)
    clicks = np.flatnonzero(clip > 0.5)
    # source clicks at 6, 7, ... s of the source, i.e. 0.5 s, 1.5 s ... into the clip
    assert clicks.tolist() == [int(round((k + 0.5) * SR)) for k in range(10)]


def test_short_segment_is_padded_and_flagged(tmp_path):
    window = tmp_path / "w.flac"
    _encode(_clicks(7.0), window)
    res = trim(window, tmp_path / "c.flac", offset=0.0, start=1.0, end=7.0)
    clip, _ = sf.read(tmp_path / "c.flac", dtype="float32")
    assert len(clip) == 10 * SR
    assert res.short and res.duration == pytest.approx(6.0)
    assert np.all(clip[6 * SR :] == 0)


@pytest.mark.parametrize("codec", ["aac", "libopus", "flac"])
def test_transcode_to_mono_flac(tmp_path, codec):
    t = np.arange(int(3 * 48000)) / 48000
    y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    ext = {"aac": "m4a", "libopus": "webm", "flac": "flac"}[codec]
    src = tmp_path / f"src.{ext}"
    _encode(y, src, codec=codec, sr=48000)
    seconds = transcode(src, tmp_path / "out.flac", sample_rate=SR)
    info = sf.info(tmp_path / "out.flac")
    assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
    assert seconds == pytest.approx(3.0, abs=0.05)


def test_decode_errors_name_the_file(tmp_path):
    bad = tmp_path / "page.m4a"
    bad.write_text("<html>not media</html>")
    with pytest.raises(AudioError, match=r"page.m4a: cannot decode audio"):
        decode(bad, sample_rate=SR)
    with pytest.raises(AudioError, match="no such file"):
        decode(tmp_path / "missing.wav", sample_rate=SR)
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_clip_pads(tmp_path):
    src = tmp_path / "a.flac"
    _encode(_clicks(4.0), src)
    y = load_clip(src, sample_rate=SR, clip_seconds=10.0)
    assert y.shape == (10 * SR,) and y.dtype == np.float32
    assert np.all(y[4 * SR :] == 0)
