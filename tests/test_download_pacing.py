"""YouTube before the rate limit hits: the per-slot fetch budget (``download.max_per_hour``),
yt-dlp's own sleeps, ``download.sections`` and stream-copied sections that stay sample-exact.

Downloads go through the real yt-dlp and ffmpeg against the loopback fault server
(tests/faultserver.py); the budget's clock and sleep are swapped for a clock that the waits
move forward, so an hour of pacing takes no time.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from faultserver import FaultServer, make_media

from audiosetflow.acquisition import download as dl
from audiosetflow.acquisition.budget import WINDOW, FetchBudget
from audiosetflow.acquisition.download import DownloadConfig, download_shard
from audiosetflow.acquisition.ytdlp import YtdlpFetcher
from audiosetflow.audio.codec import transcode, trim
from audiosetflow.shard import Layout, ShardTable
from audiosetflow.tools import ffmpeg_exe

START, END = 10.0, 20.0


class FakeClock:
    """Real time plus every wait slept so far: fetches take their real time, waits none."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def time(self) -> float:
        return time.time() + sum(self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept.append(float(seconds))


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(dl, "_clock", c.time)
    monkeypatch.setattr(dl, "_sleep", c.sleep)
    return c


def chirp(path: Path, seconds: float, sample_rate: int = 44100) -> Path:
    """A tonal sweep (unique alignment, and no noise substitution: AAC's PNS and Opus' noise
    folding decode noise from a generator whose state depends on what was decoded before, so
    no cut of a noise signal could decode to the same samples as the whole file)."""
    codec = ["-c:a", "libopus"] if path.suffix == ".webm" else ["-c:a", "aac"]
    extra = ["-cues_to_front", "1"] if path.suffix == ".webm" else ["-movflags", "+faststart"]
    expr = "0.3*sin(2*PI*(200*t+40*t*t))+0.2*sin(2*PI*(3000*t-20*t*t))"
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi",
        "-i", f"aevalsrc={expr}:s={sample_rate}:d={seconds}", *codec, "-b:a", "64k", *extra,
        str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    make_media(d / "default.m4a", 30.0, kind="noise")
    chirp(d / "chirp.m4a", 30.0)
    chirp(d / "chirp.webm", 30.0, sample_rate=48000)
    return d


@pytest.fixture
def server(media_dir):
    with FaultServer(media_dir) as srv:
        yield srv


def make_cfg(url_template: str, **kw) -> DownloadConfig:
    base = {"url_template": url_template, "retries": 0, "cooldown": 0.0, "socket_timeout": 5}
    return DownloadConfig.from_config({**base, **kw})


def manifest(ytids, shard=0, start=START, end=END) -> pd.DataFrame:
    return pd.DataFrame(
        {"ytid": list(ytids), "split": "train", "shard": shard, "start": start, "end": end,
         "labels": "/m/04rlf"}
    )  # fmt: skip


def run(root: Path, man: pd.DataFrame, cfg: DownloadConfig) -> pd.DataFrame:
    shard = Layout(root).shard("train", int(man["shard"].iloc[0]))
    return download_shard(ShardTable.from_manifest(man), shard=shard, cfg=cfg).ledger()


# --------------------------------------------------------------------------------------------
# the budget


def test_budget_spreads_fetches_over_the_hour(tmp_path):
    """3 an hour: fetches 4, 5, 6 wait for the first three to leave the window; a second job
    on the slot continues its history; a job running at the same time gets another slot."""
    now = [1_000_000.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    def budget() -> FetchBudget:
        return FetchBudget(tmp_path, per_hour=3, clock=lambda: now[0], sleep=sleep)

    b = budget()
    for _ in range(6):
        b.acquire()
        now[0] += 10.0  # each fetch takes 10 s
    # fetches at 0, 10, 20; the 4th (at 30) waits until 0 + 3600; the 5th and 6th (3610,
    # 3620) find 10 and 20 gone from the window
    assert waits == [3570.0]
    assert b.waits == [0.0, 0.0, 0.0, 3570.0, 0.0, 0.0]
    assert b.slot == 0
    saved = json.loads((tmp_path / "slot-0.json").read_text())["fetches"]
    assert [t - 1_000_000.0 for t in saved] == [3600.0, 3610.0, 3620.0]

    other = budget()  # a job running now, beside b: a slot of its own, an empty window
    assert other.claim() == 1
    assert other.acquire() == 0.0
    b.release()
    other.release()

    nxt = budget()  # the next job takes slot 0 and its history: it must wait
    now[0] += 100.0  # now 3730: the window holds 3600, 3610, 3620
    assert nxt.claim() == 0
    assert nxt.acquire() == pytest.approx(7200.0 - 3730.0)  # until 3600 leaves it
    assert waits[-1] == pytest.approx(3470.0)
    nxt.release()
    # an hour later the window is empty
    later = budget()
    now[0] += WINDOW
    assert later.acquire() == 0.0
    later.release()


def test_budget_across_download_jobs_with_real_fetches(tmp_path, server, clock, caplog):
    """max_per_hour = 2 through the stage: 5 YTIDs in two shards (two jobs, one after the
    other) are fetched 2 an hour; every YTID ends ok; the wait is logged with its reason."""
    cfg = make_cfg(server.url_template("m4a"), max_per_hour=2)
    root = tmp_path / "results"
    t0 = clock.time()
    with caplog.at_level(logging.INFO, logger="audiosetflow.download"):
        led1 = run(root, manifest(["ok_a", "ok_b", "ok_c"], shard=0), cfg)
        led2 = run(root, manifest(["ok_d", "ok_e"], shard=1), cfg)
    assert led1["status"].tolist() == ["ok"] * 3 and led2["status"].tolist() == ["ok"] * 2
    # fetch 3 waits for fetch 1 to leave the window, 4 for 2 (a few seconds: 2 and 3 are an
    # hour apart; none when fetch 3 took longer than the gap between 1 and 2), 5 for 3: fetch 5
    # comes two hours after fetch 1, not earlier, hardly later
    assert len(clock.slept) in (2, 3), clock.slept
    elapsed = clock.time() - t0 - sum(clock.slept)  # real seconds spent fetching
    assert WINDOW - elapsed <= clock.slept[0] <= WINDOW, clock.slept
    if len(clock.slept) == 3:
        assert clock.slept[1] <= elapsed, clock.slept
    assert WINDOW - elapsed <= clock.slept[-1] <= WINDOW, clock.slept
    assert 2 * WINDOW <= clock.time() - t0 <= 2 * WINDOW + elapsed
    assert server.requests["ok_e"] >= 1
    stamps = json.loads((root / "state" / "youtube" / "slot-0.json").read_text())["fetches"]
    assert len(stamps) == 2 and stamps[-1] - stamps[0] >= WINDOW - elapsed - 1
    msgs = [r.getMessage() for r in caplog.records if "youtube budget" in r.getMessage()]
    assert any("made 2 fetches in the last hour (max_per_hour 2): waiting" in m for m in msgs)
    assert [m for m in msgs if "slot 0 (" in m], msgs  # the job's claim is logged


def test_no_budget_by_default(tmp_path, server, clock):
    cfg = make_cfg(server.url_template("m4a"))
    assert cfg.max_per_hour == 0
    led = run(tmp_path / "results", manifest(["ok_a", "ok_b", "ok_c"]), cfg)
    assert led["status"].tolist() == ["ok"] * 3
    assert clock.slept == []
    assert not (tmp_path / "results" / "state").exists()
    assert make_cfg("x{ytid}", max_per_hour=None).max_per_hour is None  # null: no budget too
    with pytest.raises(ValueError):
        make_cfg("x{ytid}", sections="sometimes")


# --------------------------------------------------------------------------------------------
# yt-dlp's sleeps, sections


def test_ytdlp_sleep_options_reach_ytdlp(tmp_path, server, caplog):
    cfg = make_cfg(server.url_template("m4a"), sleep_requests=0.25, sleep_interval=0.4,
                   max_sleep_interval=0.6)  # fmt: skip
    shard = Layout(tmp_path).shard("train", 0)
    opts = YtdlpFetcher(cfg, shard, logging.getLogger("t")).options(tmp_path, None)
    assert (opts["sleep_interval_requests"], opts["sleep_interval"], opts["max_sleep_interval"]) \
        == (0.25, 0.4, 0.6)  # fmt: skip
    off = YtdlpFetcher(make_cfg(server.url_template("m4a")), shard, logging.getLogger("t"))
    assert not {"sleep_interval_requests", "sleep_interval"} & set(off.options(tmp_path, None))
    # yt-dlp itself sleeps a random [0.4, 0.6] s before the download (its own message)
    log = logging.getLogger("audiosetflow.test.sleeps")
    sleepy = make_cfg(server.url_template("m4a"), sleep_interval=0.4, max_sleep_interval=0.6)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        t = time.perf_counter()
        YtdlpFetcher(sleepy, shard, log).fetch("ok_s", START, END)
        took = time.perf_counter() - t
    said = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"\[download\] Sleeping (\d+\.\d+) seconds", r.getMessage()))
    ]
    assert len(said) == 1 and 0.4 <= said[0] <= 0.6, said
    assert took >= said[0]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=log.name):
        YtdlpFetcher(make_cfg(server.url_template("m4a")), shard, log).fetch("ok_f", START, END)
    assert not [r for r in caplog.records if "Sleeping" in r.getMessage()]
    with pytest.raises(ValueError, match="max_sleep_interval"):
        make_cfg("x{ytid}", sleep_interval=2.0, max_sleep_interval=1.0)


def test_sections_never_downloads_whole_files(tmp_path, server, media_dir):
    cfg = make_cfg(server.url_template("m4a"), sections="never")
    root = tmp_path / "results"
    led = run(root, manifest(["ok_n"]), cfg)
    assert led["status"].tolist() == ["ok"]
    shard = Layout(root).shard("train", 0)
    assert shard.offset("ok_n") == 0.0
    assert shard.media("ok_n").stat().st_size == (media_dir / "default.m4a").stat().st_size
    assert server.ranged["ok_n"] == 0  # no section: ffmpeg never asked for a byte range


def test_sections_always_does_not_fall_back(tmp_path, media_dir):
    url = (media_dir / "{ytid}.m4a").as_uri().replace("%7Bytid%7D", "{ytid}")
    (media_dir / "ok_file.m4a").write_bytes((media_dir / "default.m4a").read_bytes())
    led = run(tmp_path / "auto", manifest(["ok_file"]), make_cfg(url))
    assert led["status"].tolist() == ["ok"]  # auto: file URLs fall back to whole files
    led = run(tmp_path / "always", manifest(["ok_file"]), make_cfg(url, sections="always"))
    assert led["status"].tolist() == ["permanent"]
    assert "download.sections is 'always'" in led["reason"].iloc[0]


# --------------------------------------------------------------------------------------------
# stream-copied sections


def _clip_vs_whole(tmp_path, server, media_dir, ext, start, sr):
    """Fetch a section of chirp.{ext} as the stage does, transcode and trim it as the later
    stages do, and the same from the whole source; return (copied, clip, ref) as int16."""
    cfg = make_cfg(server.url_template(ext))
    shard = Layout(tmp_path / "results").shard("train", 0)
    shard.download_dir.mkdir(parents=True, exist_ok=True)
    fetcher = YtdlpFetcher(cfg, shard, logging.getLogger("t"))
    got = fetcher.fetch("chirp", start, start + 10.0)
    end = start + 10.0
    transcode(got.path, tmp_path / "win.wav", sample_rate=sr)
    trim(tmp_path / "win.wav", tmp_path / "clip.flac", offset=got.offset, start=start, end=end)
    transcode(media_dir / f"chirp.{ext}", tmp_path / "whole.wav", sample_rate=sr)
    trim(tmp_path / "whole.wav", tmp_path / "ref.flac", offset=0.0, start=start, end=end)
    clip, _ = sf.read(tmp_path / "clip.flac", dtype="int16")
    ref, _ = sf.read(tmp_path / "ref.flac", dtype="int16")
    return fetcher.copied, got.offset, clip.astype(np.int32), ref.astype(np.int32)


@pytest.mark.parametrize("start", [10.0, 10.013])
def test_copied_m4a_section_trims_to_the_same_samples(
    tmp_path, server, media_dir, start, ffmpeg_build
):
    """An M4A section is stream-copied (no re-encoding) and its trimmed clip holds the very
    samples cut from the whole file (within one 16-bit step), with each ffmpeg build, also
    for a cut between two AAC frames (10.013 s)."""
    copied, offset, clip, ref = _clip_vs_whole(tmp_path, server, media_dir, "m4a", start, 44100)
    assert copied
    assert offset == pytest.approx(start - 1.0, abs=1e-6)
    assert len(clip) == len(ref) == 441000
    assert np.abs(clip - ref).max() <= 1, np.abs(clip - ref).max()


def test_webm_section_is_reencoded_and_aligned(tmp_path, server, media_dir, ffmpeg_build):
    """WebM sections stay re-encoded (a copy would start at a cue point, seconds early, and
    decode differently: see ytdlp.COPY_EXACT); the clip lines up with the whole file's within
    WebM's 1-ms timestamp resolution."""
    sr = 48000
    copied, _, clip, ref = _clip_vs_whole(tmp_path, server, media_dir, "webm", START, sr)
    assert not copied
    pad = sr // 1000
    seg = clip[sr : 9 * sr].astype(np.float64)
    lags = range(-pad, pad + 1)
    err = [np.abs(ref[sr + k : 9 * sr + k] - seg).mean() for k in lags]
    lag = list(lags)[int(np.argmin(err))]
    assert abs(lag) <= pad
    assert min(err) < 0.05 * np.abs(ref).mean()  # the same signal (lossy re-encode)
