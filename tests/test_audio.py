"""Transcode (one file, and batches) and exact trimming with real ffmpeg on generated media."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from audiosetflow.audio import codec as audio
from audiosetflow.audio import timing
from audiosetflow.audio.codec import AudioError, decode, load_clip, transcode, transcode_many, trim
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


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_trim_is_sample_exact(tmp_path, suffix):
    window = tmp_path / f"-window{suffix}"  # a name starting with '-' is never an option
    _encode(_clicks(20.0), window, codec="flac" if suffix == ".flac" else "pcm_s16le")
    out = tmp_path / "clip.flac"
    # the window starts 3 s into the source; take source [5.5, 15.5)
    res = trim(window, out, offset=3.0, start=5.5, end=15.5)
    clip, sr = sf.read(out, dtype="float32")
    assert sr == SR and len(clip) == 10 * SR
    assert not res.short and res.duration == pytest.approx(10.0)
    clicks = np.flatnonzero(clip > 0.5)
    # source clicks at 6, 7, ... s of the source, i.e. 0.5 s, 1.5 s ... into the clip
    assert clicks.tolist() == [int(round((k + 0.5) * SR)) for k in range(10)]


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_trim_copies_the_window_samples(tmp_path, suffix):
    """The clip holds the window's very integers, whatever the window's format."""
    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(13 * SR)).clip(-1, 1).astype(np.float32)
    window = tmp_path / f"w{suffix}"
    sf.write(window, y, SR, subtype="PCM_16")  # as transcode writes windows
    w, _ = sf.read(window, dtype="int16")
    res = trim(window, tmp_path / "c.flac", offset=0.5, start=1.25, end=11.25)
    clip, sr = sf.read(tmp_path / "c.flac", dtype="int16")
    info = sf.info(tmp_path / "c.flac")
    first = int(round(0.75 * SR))
    assert (sr, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "FLAC")
    assert np.array_equal(clip, w[first : first + 10 * SR]) and not res.short
    # a segment running past the window: the rest is zeros
    res = trim(window, tmp_path / "d.flac", offset=0.0, start=8.0, end=18.0)
    clip, _ = sf.read(tmp_path / "d.flac", dtype="int16")
    assert res.short and res.duration == pytest.approx(5.0)
    assert np.array_equal(clip[: 5 * SR], w[8 * SR :]) and not clip[5 * SR :].any()


def test_trim_of_a_stereo_window_averages_channels(tmp_path):
    y = np.stack([_clicks(12.0), np.zeros(12 * SR, dtype=np.float32)], axis=1)
    window = tmp_path / "st.wav"
    sf.write(window, y, SR, subtype="FLOAT")
    trim(window, tmp_path / "c.flac", offset=0.0, start=1.0, end=11.0)
    clip, _ = sf.read(tmp_path / "c.flac", dtype="float32")
    assert np.flatnonzero(clip > 0.2).tolist() == [k * SR for k in range(10)]


def test_short_segment_is_padded_and_flagged(tmp_path):
    window = tmp_path / "w.flac"
    _encode(_clicks(7.0), window)
    res = trim(window, tmp_path / "c.flac", offset=0.0, start=1.0, end=7.0)
    clip, _ = sf.read(tmp_path / "c.flac", dtype="float32")
    assert len(clip) == 10 * SR
    assert res.short and res.duration == pytest.approx(6.0)
    assert np.all(clip[6 * SR :] == 0)


@pytest.mark.parametrize("codec", ["aac", "libopus", "flac"])
def test_transcode_to_mono_flac(tmp_path, codec, ffmpeg_build):
    t = np.arange(int(3 * 48000)) / 48000
    y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    ext = {"aac": "m4a", "libopus": "webm", "flac": "flac"}[codec]
    src = tmp_path / f"src.{ext}"
    _encode(y, src, codec=codec, sr=48000)
    seconds = transcode(src, tmp_path / "out.flac", sample_rate=SR)
    info = sf.info(tmp_path / "out.flac")
    assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
    assert seconds == pytest.approx(3.0, abs=0.05)


# source codec by suffix: the one ffmpeg encodes a cut with by default (as yt-dlp cuts: the
# section in the source's container; for YouTube's WebM/Opus and M4A/AAC that is the source's
# codec, which is what section_start assumes)
_CUT_CODECS = {"webm": ("libopus", 48000), "m4a": ("aac", 44100), "mp3": ("libmp3lame", 44100),
               "ogg": ("libvorbis", 44100), "opus": ("libopus", 48000),
               "mka": ("libvorbis", 48000)}  # fmt: skip


@pytest.mark.parametrize("ext", sorted(_CUT_CODECS))
def test_section_start_locates_ffmpeg_cuts(tmp_path, ext, ffmpeg_build):
    """A section cut as yt-dlp cuts it (``ffmpeg -ss T -i SRC OUT``, re-encoded) starts where
    section_start says: to the sample where the container's timestamps are in samples, within
    Matroska's 1-ms resolution for WebM/MKA (on which Debian's ffmpeg 5.1 lands 7 ms early)."""
    codec, rate = _CUT_CODECS[ext]
    src, cut = tmp_path / f"src.{ext}", tmp_path / f"cut.{ext}"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         f"anoisesrc=color=white:sample_rate={rate}:duration=14:amplitude=0.3:seed=3",
         "-c:a", codec, str(src)], check=True,
    )  # fmt: skip
    requested = 7.0
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-ss", str(requested), "-t", "4", "-i", str(src), str(cut)],
        check=True,
    )
    offset = timing.section_start(cut, requested)
    sr, pad = 16000, 400
    full, sec = decode(src, sample_rate=sr), decode(cut, sample_rate=sr)[sr : 3 * sr]
    first = int(round((offset + 1) * sr))
    corr = np.correlate(full[first - pad : first + 2 * sr + pad], sec, mode="valid")
    lag = int(np.argmax(corr)) - pad
    assert corr.max() > 0.5 * float(np.dot(sec, sec))
    assert abs(lag) <= (sr // 1000 if ext in ("webm", "mka") else 0), (offset, lag)
    assert timing.section_start(cut, 0.0) == 0.0  # no -ss at all: the source's start


def test_seek_bias_of_a_file_that_is_not_media(tmp_path):
    bad = tmp_path / "page.webm"
    bad.write_text("<html>not media</html>")
    with pytest.raises(RuntimeError, match="no audio frame"):
        timing.seek_bias(bad)
    assert timing.section_start(bad, 9.0) == 9.0  # unmeasurable: the requested time


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


# --- transcode_many ---------------------------------------------------------------------------

_EXT = {"aac": "m4a", "libopus": "webm", "flac": "flac", "libmp3lame": "mp3"}


def _media(folder, name: str, codec: str, seed: int, seconds: float = 2.5, channels: int = 2):
    """A short noisy tone at 48 kHz (44.1 kHz for mp3), ``channels`` channels."""
    sr = 44100 if codec == "libmp3lame" else 48000
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.stack(
        [0.3 * np.sin(2 * np.pi * (300 + 150 * c + 40 * seed) * t) for c in range(channels)], 1
    )
    y = (y + 0.02 * rng.standard_normal(y.shape)).astype(np.float32)
    path = folder / f"{name}.{_EXT[codec]}"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", str(channels),
         "-i", "-", "-c:a", codec, str(path)],
        input=y.tobytes(), check=True,
    )  # fmt: skip
    return path


@pytest.fixture(params=["one-graph", "graph-per-input", "plain-inputs"])
def route(request, monkeypatch, ffmpeg_build):
    """Every way of batching: all inputs decoded by one libavfilter graph (the default where the
    ffmpeg supports it), a graph per input (very long paths), plain ``-i`` inputs (an ffmpeg
    without the lavfi device, amovie or aresample's ``ochl``); with every ffmpeg build."""
    if request.param == "plain-inputs":
        monkeypatch.setattr(audio, "_lavfi_route_ok", lambda ffmpeg: False)
    else:
        assert audio._lavfi_route_ok(ffmpeg_exe()), "this ffmpeg should support the amovie route"
    if request.param == "graph-per-input":
        monkeypatch.setattr(audio, "_MAX_GRAPH_CHARS", 0)
    return request.param


def _no_temporaries(folder) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name]


def _no_fallback(monkeypatch):
    """Make the one-file-per-process fallback of transcode_many fail the test."""

    def fail(*args):
        raise AssertionError(f"a batch fell back to one process per file: {args}")

    monkeypatch.setattr(audio, "_transcode_or_error", fail)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
@pytest.mark.parametrize("batch", [1, 3, 20])
def test_batch_equals_per_file_transcode(tmp_path, monkeypatch, route, suffix, batch):
    src = [
        _media(tmp_path, f"m{k}", codec, seed=k, channels=1 + k % 2)
        for k, codec in enumerate(["aac", "libopus", "flac", "libmp3lame", "libopus"])
    ]
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _no_fallback(m)
        pairs = [(s, out / f"{s.stem}{suffix}") for s in src]
        got = transcode_many(pairs, sample_rate=SR, batch=batch)
    for s, seconds in zip(src, got, strict=True):
        assert isinstance(seconds, float)
        ref = tmp_path / "ref" / f"{s.stem}.flac"
        assert seconds == transcode(s, ref, sample_rate=SR)
        y, sr = sf.read(out / f"{s.stem}{suffix}", dtype="int16")
        info = sf.info(out / f"{s.stem}{suffix}")
        assert (sr, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert np.array_equal(y, sf.read(ref, dtype="int16")[0])
        assert len(y) / SR == seconds
    assert _no_temporaries(tmp_path)


def _truncated(folder, good):
    bad = folder / "truncated.webm"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


def _damaged_payload(folder, good):
    """The second half of the AAC frames overwritten with noise (the container intact):
    decoding errors after a good start."""
    data = bytearray(good.read_bytes())
    lo, hi = data.find(b"mdat") + 64, data.find(b"moov") - 64
    if hi <= lo:  # moov first
        lo, hi = data.find(b"mdat") + 64, len(data) - 64
    lo = (lo + hi) // 2
    rng = np.random.default_rng(3)
    pos = rng.integers(lo, hi, size=(hi - lo) // 3)
    data_arr = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    data_arr[pos] = rng.integers(0, 256, size=len(pos), dtype=np.uint8)
    bad = folder / "damaged.m4a"
    bad.write_bytes(data_arr.tobytes())
    return bad


@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("damage", [_truncated, _damaged_payload], ids=["truncated", "payload"])
def test_damaged_media_give_what_per_file_transcode_gives(tmp_path, route, damage, where):
    """Whatever ffmpeg makes of a damaged file alone (an error, or the decodable part), a batch
    holding it gives exactly that, and the other files of the batch are unaffected."""
    good = [_media(tmp_path, f"g{k}", c, seed=k) for k, c in enumerate(["libopus", "aac"])]
    bad = damage(tmp_path, good[0] if damage is _truncated else good[1])
    srcs = list(good)
    srcs.insert(where, bad)
    got = transcode_many(
        [(s, tmp_path / "out" / f"{s.stem}.wav") for s in srcs], sample_rate=SR, batch=5
    )
    for s, res in zip(srcs, got, strict=True):
        try:
            ref = transcode(s, tmp_path / "ref" / f"{s.stem}.wav", sample_rate=SR)
        except AudioError as exc:
            ref = exc
        if isinstance(ref, AudioError):
            assert isinstance(res, AudioError) and str(res) == str(ref)
            assert not (tmp_path / "out" / f"{s.stem}.wav").exists()
        else:
            assert res == ref
            y = sf.read(tmp_path / "out" / f"{s.stem}.wav", dtype="int16")[0]
            assert np.array_equal(y, sf.read(tmp_path / "ref" / f"{s.stem}.wav", dtype="int16")[0])
    assert all(isinstance(r, float) for s, r in zip(srcs, got, strict=True) if s != bad)
    assert _no_temporaries(tmp_path)


def test_bad_files_fail_alone_with_their_own_reason(tmp_path, route):
    good = [_media(tmp_path, f"g{k}", c, seed=k) for k, c in enumerate(["libopus", "aac", "flac"])]
    corrupt = tmp_path / "page.m4a"
    corrupt.write_text("<html>not media</html>")
    missing = tmp_path / "missing.webm"
    out = tmp_path / "out"
    (out / "page.wav").parent.mkdir()
    (out / "page.wav").write_bytes(b"an earlier file stays untouched")
    srcs = [good[0], corrupt, good[1], missing, good[2]]
    got = transcode_many([(s, out / f"{s.stem}.wav") for s in srcs], sample_rate=SR, batch=10)
    assert [type(r) for r in got] == [float, AudioError, float, AudioError, float]
    assert str(got[1]).startswith(f"{corrupt}: cannot decode audio: ")
    assert str(got[3]).startswith(f"{missing}: cannot decode audio: ")
    for k in (1, 3):  # the very error of a one-file transcode
        with pytest.raises(AudioError) as exc:
            transcode(srcs[k], tmp_path / "ref" / f"{srcs[k].stem}.wav", sample_rate=SR)
        assert str(got[k]) == str(exc.value)
    assert (out / "page.wav").read_bytes() == b"an earlier file stays untouched"
    assert not (out / "missing.wav").exists()
    for s, seconds in zip(srcs, got, strict=True):
        if isinstance(seconds, float):
            assert sf.info(out / f"{s.stem}.wav").frames == round(seconds * SR)
    assert _no_temporaries(tmp_path)


@pytest.mark.parametrize("where", [0, 6, 12])
def test_a_bad_file_halves_its_batch(tmp_path, monkeypatch, where):
    """One bad file in a batch of 13: the batch is halved down to the bad file (a handful of
    ffmpeg processes, not one per file), and every result is a one-file transcode's."""
    good = [_media(tmp_path, f"g{k}", "flac", seed=k, seconds=0.5) for k in range(12)]
    bad = tmp_path / "page.flac"
    bad.write_text("<html>not media</html>")
    srcs = list(good)
    srcs.insert(where, bad)
    batches, singles = [], []
    batch_fn, single_fn = audio._transcode_batch, audio._transcode_or_error
    monkeypatch.setattr(audio, "_transcode_batch", lambda p, sr: batches.append(len(p)) or
                        batch_fn(p, sr))  # fmt: skip
    monkeypatch.setattr(audio, "_transcode_or_error", lambda s, d, sr: singles.append(s.name) or
                        single_fn(s, d, sr))  # fmt: skip
    out = tmp_path / "out"
    got = transcode_many([(s, out / f"{s.stem}.wav") for s in srcs], sample_rate=SR, batch=13)
    assert [isinstance(r, AudioError) for r in got] == [s == bad for s in srcs]
    with pytest.raises(AudioError) as exc:
        transcode(bad, tmp_path / "ref" / "page.wav", sample_rate=SR)
    assert str(got[where]) == str(exc.value)
    assert batches[0] == 13 and len(batches) + len(singles) <= 10  # not 1 + 13
    assert "page.flac" in singles and len(singles) <= 2
    for s, seconds in zip(srcs, got, strict=True):
        if s != bad:
            assert seconds == transcode(s, tmp_path / "ref" / f"{s.stem}.wav", sample_rate=SR)
            y = sf.read(out / f"{s.stem}.wav", dtype="int16")[0]
            assert np.array_equal(y, sf.read(tmp_path / "ref" / f"{s.stem}.wav", dtype="int16")[0])
    assert _no_temporaries(tmp_path)


@pytest.mark.parametrize(
    "name",
    ["-i", "-y x", "-a 'b,[c]:d;e\\f%g", "ünï cödé"],
    ids=["dash", "dash-space", "quote", "unicode"],
)
def test_batch_names_are_never_options(tmp_path, monkeypatch, route, name):
    """Relative names starting with '-', and characters that ffmpeg's filter-graph syntax
    gives a meaning to, are taken as plain file names."""
    src = _media(tmp_path, name, "libopus", seed=1)
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        _no_fallback(m)
        got = transcode_many(
            [(src.name, f"{name}.wav"), (src.name, f"-{name}.flac")], sample_rate=SR, batch=4
        )
    ref = tmp_path / "ref.wav"
    transcode(src, ref, sample_rate=SR)
    want = sf.read(ref, dtype="int16")[0]
    for out in (f"{name}.wav", f"-{name}.flac"):
        assert np.array_equal(sf.read(tmp_path / out, dtype="int16")[0], want)
    assert all(isinstance(r, float) for r in got)


def test_transcode_many_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="flac or .wav"):
        transcode_many([(tmp_path / "a.webm", tmp_path / "a.mp3")], sample_rate=SR)
    with pytest.raises(ValueError, match="batch"):
        transcode_many([], sample_rate=SR, batch=0)
    assert transcode_many([], sample_rate=SR) == []


_KILLED_RUN = """
import sys
from pathlib import Path
from audiosetflow.audio.codec import transcode_many
src, out = Path(sys.argv[1]), Path(sys.argv[2])
print("start", flush=True)
transcode_many([(src, out / f"{k:03d}.wav") for k in range(400)], sample_rate=22050, batch=4)
"""


def test_kill_9_leaves_nothing_half_written(tmp_path):
    """A batch killed at any moment leaves complete files or temporaries, never a partial file
    under a final name; a rerun completes the rest."""
    src = _media(tmp_path, "src", "libopus", seed=2, seconds=6.0)
    ref = tmp_path / "ref.wav"
    transcode(src, ref, sample_rate=SR)
    want = sf.read(ref, dtype="int16")[0]
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(src), str(out)],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"start"
    deadline = time.monotonic() + 60
    while len(list(out.glob("[0-9]*.wav"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # python and its ffmpeg child
    proc.wait()
    finished = sorted(out.glob("[0-9]*.wav"))
    assert 8 <= len(finished) < 400
    for f in finished:
        assert np.array_equal(sf.read(f, dtype="int16")[0], want), f
    todo = [k for k in range(400) if not (out / f"{k:03d}.wav").exists()][:12]
    got = transcode_many([(src, out / f"{k:03d}.wav") for k in todo], sample_rate=SR, batch=4)
    assert all(isinstance(r, float) for r in got)


def test_route_check_is_remembered_per_ffmpeg_binary(tmp_path, monkeypatch):
    """A passed check of the amovie route is remembered for the same binary (no ffmpeg run by
    the next process), and checked again for another binary or a changed one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checks = []
    check = audio._check_lavfi_route
    monkeypatch.setattr(audio, "_check_lavfi_route", lambda: checks.append(1) or check())
    exe = ffmpeg_exe()
    assert audio._lavfi_route_ok.__wrapped__(exe) and len(checks) == 1
    (memo,) = (tmp_path / "cache" / "audiosetflow").iterdir()
    assert memo == audio._route_memo(exe) and memo.read_text() == "ok\n"
    assert audio._lavfi_route_ok.__wrapped__(exe) and len(checks) == 1  # remembered
    link = tmp_path / "bin" / "ffmpeg"
    link.parent.mkdir()
    link.symlink_to(exe)
    assert audio._route_memo(str(link)) == memo  # the same binary by another name
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert audio._route_memo(exe) != memo  # other libraries
    monkeypatch.delenv("LD_LIBRARY_PATH")
    copy = tmp_path / "ffmpeg-copy"
    copy.write_bytes(b"#!/bin/sh\nexit 1\n")
    copy.chmod(0o755)
    assert audio._route_memo(str(copy)) not in (None, memo)
    monkeypatch.setattr(audio, "_check_lavfi_route", lambda: checks.append(1) or False)
    assert not audio._lavfi_route_ok.__wrapped__(str(copy)) and len(checks) == 2
    assert not audio._route_memo(str(copy)).exists()  # a failed check is not remembered
    assert audio._route_memo(str(tmp_path / "none")) is None
    monkeypatch.setattr(audio, "_check_lavfi_route", lambda: checks.append(1) or check())
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-folder")  # not writable: checked
    assert audio._lavfi_route_ok.__wrapped__(exe) and len(checks) == 3
