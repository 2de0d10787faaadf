"""Download stage against a loopback fault server: failure classes, retries, ledger, resume.

Every download goes through the real yt-dlp (generic extractor) and ffmpeg; the server
(tests/faultserver.py) picks a behaviour from the first token of the YTID (see its docstring).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from faultserver import FaultServer, closed_port, make_media
from ffmpeg_builds import clear_ffmpeg_caches, ffmpeg_builds, use_ffmpeg
from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError

from audiosetflow.acquisition import download as dl
from audiosetflow.acquisition.classify import MediaCheckError, classify, classify_error
from audiosetflow.acquisition.download import NOT_ATTEMPTED, DownloadConfig, download_shard
from audiosetflow.acquisition.ytdlp import YtdlpFetcher, decoded_duration
from audiosetflow.audio.codec import decode
from audiosetflow.shard import LEDGER_COLUMNS, Layout, ShardTable

REPO = Path(__file__).resolve().parent.parent
SOURCE_SECONDS = 30.0
START, END = 10.0, 20.0


# --------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    make_media(d / "default.m4a", SOURCE_SECONDS, kind="noise")  # noise: alignment is unique
    make_media(d / "default.webm", SOURCE_SECONDS, kind="noise")
    # sources shorter than the segment [10, 20): ends inside it, ends before it
    for name in ("ok_short", "ok_short1", "ok_short2"):
        make_media(d / f"{name}.m4a", 15.0)
    for name in ("ok_tiny", "ok_tiny1", "ok_tiny2"):
        make_media(d / f"{name}.m4a", 4.0)
    return d


@pytest.fixture
def server(media_dir):
    with FaultServer(media_dir, stall=4.0) as srv:
        yield srv


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Record the stage's waits instead of sleeping."""
    rec: list[float] = []
    monkeypatch.setattr(dl, "_sleep", rec.append)
    return rec


def make_cfg(url_template: str, **kw) -> DownloadConfig:
    base = {
        "url_template": url_template,
        "retries": 0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "cooldown": 0.0,
        "socket_timeout": 1.5,
        "margin": 1.0,
    }
    base.update(kw)
    return DownloadConfig.from_config(base)


def manifest(ytids, start=START, end=END, split="train", shard=0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ytid": list(ytids),
            "split": split,
            "shard": shard,
            "start": float(start),
            "end": float(end),
            "labels": "/m/04rlf",
        }
    )


def shard_of(tmp_path, split="train", shard=0):
    return Layout(tmp_path / "results").shard(split, shard)


def out(tmp_path, split="train") -> Path:
    """The media folder of the shards of ``run``."""
    return shard_of(tmp_path, split).download_dir


def record(tmp_path, split="train", shard=0) -> pd.DataFrame:
    """The ledger view of the shard's record (what survives a rerun)."""
    return ShardTable.read(shard_of(tmp_path, split, shard).record).ledger()


def media_path(folder: Path, ytid: str) -> Path | None:
    """The finished media of ``ytid`` in a media folder ``.../audio/download/{split}``."""
    return Layout(folder.parents[2]).shard(folder.name, 0).media(ytid)


def run(tmp_path, man, cfg, **kw) -> pd.DataFrame:
    """Download a shard; return its ledger (the download columns of the shard table)."""
    split, n = str(man["split"].iloc[0]), int(man["shard"].iloc[0])
    table = download_shard(
        ShardTable.from_manifest(man), shard=shard_of(tmp_path, split, n), cfg=cfg, **kw
    )
    return table.ledger()


def by_ytid(df: pd.DataFrame) -> dict[str, dict]:
    return {r["ytid"]: r for r in df.to_dict("records")}


# --------------------------------------------------------------------------------------------
# configuration


def test_config_defaults_match_config_yaml():
    section = yaml.safe_load((REPO / "config.yaml").read_text())["download"]
    cfg = DownloadConfig.from_config(section)
    assert cfg == DownloadConfig()  # the dataclass defaults are the documented defaults
    assert set(section) <= set(DownloadConfig.__dataclass_fields__)


def test_config_parsing_and_validation():
    cfg = DownloadConfig.from_config(
        {"url_template": "http://h/{ytid}", "retries": "2", "cookies": None, "ytdlp_options": None}
    )
    assert cfg.retries == 2 and cfg.cookies == "" and dict(cfg.ytdlp_options) == {}
    with pytest.raises(ValueError, match="ytid"):
        DownloadConfig.from_config({"url_template": "http://h/x"})
    c = DownloadConfig(backoff_initial=1.0, backoff_max=5.0)
    assert [c.backoff(k) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert c.backoff(0, retry_after=3.0) == 3.0  # Retry-After honoured
    assert c.backoff(0, retry_after=60.0) == 5.0  # ... within backoff_max


def test_ytdlp_options_pass_through(tmp_path):
    cfg = make_cfg(
        "http://127.0.0.1:1/{ytid}",
        cookies="/x/cookies.txt",
        proxy="socks5://127.0.0.1:1080",
        js_runtimes={"deno": {}},
        ytdlp_options={"format_sort": ["abr"], "socket_timeout": 7},
    )
    opts = YtdlpFetcher(cfg, shard_of(tmp_path), dl.log_default).options(tmp_path, None)
    assert opts["cookiefile"] == "/x/cookies.txt"
    assert opts["proxy"] == "socks5://127.0.0.1:1080"
    assert opts["js_runtimes"] == {"deno": {}}
    assert opts["format_sort"] == ["abr"] and opts["socket_timeout"] == 7  # merged last
    assert Path(opts["ffmpeg_location"]).is_dir()


# --------------------------------------------------------------------------------------------
# classification of yt-dlp's exceptions (as yt-dlp raises them)


def _ydl_error(msg: str, cause: BaseException | None = None, expected=True) -> DownloadError:
    """A DownloadError the way YoutubeDL raises it: wrapping an ExtractorError in exc_info."""
    try:
        try:
            raise ExtractorError(msg, cause=cause, expected=expected)
        except ExtractorError as ee:
            raise DownloadError("ERROR: " + str(ee), sys.exc_info()) from None
    except DownloadError as de:
        return de


def _http(status: int, headers=None) -> HTTPError:
    return HTTPError(Response(io.BytesIO(b""), "https://x/y", headers or {}, status=status))


@pytest.mark.parametrize(
    "msg, status, needle",
    [
        ("[youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser "
         "or --cookies for the authentication.", "auth", "download.cookies"),
        ("[youtube] abc: Sign in to confirm your age. This video may be inappropriate for some "
         "users.", "auth", "download.cookies"),
        ("[youtube] abc: Join this channel to get access to members-only content like this "
         "video, and other exclusive perks.", "auth", "cookies"),
        ("[youtube] abc: Private video. Sign in if you've been granted access to this video",
         "permanent", "private"),
        ("[youtube] abc: Video unavailable. This video is no longer available because the "
         "YouTube account associated with this video has been terminated.", "permanent",
         "terminated"),
        ("[youtube] abc: Video unavailable. This video contains content from SME, who has "
         "blocked it on copyright grounds", "permanent", "copyright"),
        ("[youtube] abc: The uploader has not made this video available in your country",
         "permanent", "geo"),
        ("[youtube] abc: This video has been removed for violating YouTube's Terms of Service",
         "permanent", "removed"),
        ("[youtube] abc: Video unavailable", "permanent", "unavailable"),
        ("[youtube] abc: This content isn't available, try again later.", "transient",
         "rate limited"),
        ("[youtube] abc: Some strange new error", "transient", "unrecognised"),
    ],
)  # fmt: skip
def test_classify_messages(msg, status, needle):
    st, reason = classify_error(_ydl_error(msg))
    assert st == status
    assert needle.lower() in reason.lower()
    assert "\n" not in reason


@pytest.mark.parametrize(
    "code, status, rate",
    [(404, "permanent", False), (410, "permanent", False), (403, "transient", False),
     (500, "transient", False), (503, "transient", False), (429, "transient", True),
     (401, "auth", False)],
)  # fmt: skip
def test_classify_http_status_from_chain(code, status, rate):
    # The message says nothing: the status comes from the HTTPError in the chain.
    exc = _ydl_error("Unable to download webpage", cause=_http(code, {"Retry-After": "7"}))
    f = classify(exc)
    assert (f.status, f.rate_limited) == (status, rate)
    if status == "transient":
        assert f.retry_after == 7.0


def test_classify_exception_types():
    assert classify_error(TimeoutError("read timed out"))[0] == "transient"
    assert classify_error(ConnectionRefusedError(111, "Connection refused"))[0] == "transient"
    err = _ydl_error("Unable to download webpage", cause=TransportError(cause=TimeoutError()))
    assert classify_error(err)[0] == "transient"
    assert classify_error(MediaCheckError("decoded 2.5 s, expected 12 s"))[0] == "transient"
    assert classify_error(MediaCheckError("no audio", status="permanent"))[0] == "permanent"
    assert classify_error(RuntimeError("boom")) == ("transient", "unrecognised error: boom")
    st, reason = classify_error(_ydl_error("x", cause=_http(500), expected=False))
    assert st == "transient" and "please report" not in reason


# --------------------------------------------------------------------------------------------
# single downloads


def test_section_download_ok(tmp_path, server, ffmpeg_build):
    cfg = make_cfg(server.url_template())
    led = run(tmp_path, manifest(["ok_a", "-dash_first"]), cfg)
    assert list(led.columns) == list(LEDGER_COLUMNS)
    assert led["status"].tolist() == ["ok", "ok"]
    pd.testing.assert_frame_equal(record(tmp_path), led, check_dtype=False)
    for y in ("ok_a", "-dash_first"):
        f = media_path(out(tmp_path), y)
        assert f is not None and f.name == f"{y}.m4a"
        # [start - margin, end + margin] of the source, and its offset next to it
        assert decoded_duration(f) == pytest.approx(12.0, abs=0.1)
        assert float((out(tmp_path) / f"{y}.offset").read_text()) == pytest.approx(9.0)
        assert by_ytid(led)[y]["bytes"] == f.stat().st_size
    # the media came as ranged requests (sections), not as one full download
    assert server.ranged["ok_a"] >= 1
    assert not [p for p in (out(tmp_path)).iterdir() if p.name.startswith(".")]


def test_cookies_file_is_never_written_and_its_path_is_never_told(tmp_path, server, sleeps):
    """yt-dlp writes its cookie jar back to its cookiefile on close: it gets a private copy,
    so the user's file is never rewritten (parallel jobs once raced on it and one read it
    half-written) and a reason quoting the cookiefile names no path of the user's."""
    secret = tmp_path / "secret" / "cookies-s3cretPart.txt"
    secret.parent.mkdir()
    text = "# Netscape HTTP Cookie File\n.127.0.0.1\tTRUE\t/\tFALSE\t2147483647\tSID\tv1\n"
    secret.write_text(text)
    os.utime(secret, ns=(1, 1))
    cfg = make_cfg(server.url_template(), retries=0, cookies=str(secret))
    led = by_ytid(run(tmp_path / "a", manifest(["ok_a", "e401_b"]), cfg))
    assert led["ok_a"]["status"] == "ok" and led["e401_b"]["status"] == "auth"
    assert secret.read_text() == text and secret.stat().st_mtime_ns == 1
    assert not list((tmp_path / "a").rglob("cookies*"))  # the copy went with its attempt
    # a cookies file yt-dlp cannot read: its reason names the private copy, not the file
    secret.write_text("not a cookies file\n")
    led = by_ytid(run(tmp_path / "b", manifest(["ok_a"]), cfg))
    assert led["ok_a"]["status"] != "ok" and "Netscape" in led["ok_a"]["reason"]
    assert "s3cretPart" not in led["ok_a"]["reason"]
    assert "s3cretPart" not in "".join(p.read_text() for p in (tmp_path / "b").rglob("*.tsv"))
    # one that cannot even be copied (a folder) goes to yt-dlp as it is: its path is redacted
    folder = tmp_path / "secret" / "cookies-s3cretPart.d"
    folder.mkdir()
    cfg = make_cfg(server.url_template(), retries=0, cookies=str(folder))
    led = by_ytid(run(tmp_path / "c", manifest(["ok_a"]), cfg))
    assert led["ok_a"]["status"] != "ok"
    assert "s3cretPart" not in led["ok_a"]["reason"] and "[redacted]" in led["ok_a"]["reason"]
    assert "s3cretPart" not in "".join(p.read_text() for p in (tmp_path / "c").rglob("*.tsv"))


def _section_lag(tmp_path, server, media_dir, ext: str, sr: int = 16000) -> tuple[float, int]:
    """Download a section of default.{ext}; return its offset and how many samples (at ``sr``)
    its content lies after the place the offset says (0: sample i of the section is sample
    round(offset * sr) + i of the source)."""
    led = run(tmp_path, manifest(["ok_al"]), make_cfg(server.url_template(ext)))
    assert led["status"].tolist() == ["ok"]
    f = media_path(out(tmp_path), "ok_al")
    offset = float((out(tmp_path) / "ok_al.offset").read_text())
    pad = 800
    src = decode(media_dir / f"default.{ext}", sample_rate=sr)
    sec = decode(f, sample_rate=sr)[2 * sr : 8 * sr]
    first = int(round((offset + 2) * sr))
    ref = src[first - pad : first + 6 * sr + pad]
    corr = np.correlate(ref, sec, mode="valid")
    assert corr.max() > 0.9 * float(np.dot(sec, sec))
    return offset, int(np.argmax(corr)) - pad


@pytest.mark.parametrize("ext", ["m4a", "webm"])
def test_section_is_aligned_with_its_offset(tmp_path, server, media_dir, ext, ffmpeg_build):
    """Sample i of the section is sample offset*sr + i of the source, with every ffmpeg build:
    exactly for MP4 (timestamps in samples), within WebM's timestamp resolution (1 ms) for
    WebM, whose cuts no build places more exactly (see audio/timing.py)."""
    sr = 16000
    _, lag = _section_lag(tmp_path, server, media_dir, ext, sr)
    tolerance = 0 if ext == "m4a" else sr // 1000
    assert abs(lag) <= tolerance, f"section is {lag} samples off its offset"


def test_webm_sections_of_both_ffmpeg_builds_agree(tmp_path, server, media_dir, monkeypatch):
    """The system's ffmpeg (e.g. Debian's 5.1, whose cuts of Opus/WebM land 7 ms early) and
    imageio-ffmpeg's give sections whose offsets describe them equally well, to the sample."""
    builds = {name: exe for name, (exe, _) in ffmpeg_builds().items() if exe}
    if len(builds) < 2:
        pytest.skip("needs both ffmpeg builds: " + "; ".join(
            f"{n}: {why}" for n, (exe, why) in ffmpeg_builds().items() if not exe))  # fmt: skip
    sr = 48000
    got = {}
    for name, exe in builds.items():
        with monkeypatch.context() as m:
            use_ffmpeg(m, exe)
            got[name] = _section_lag(tmp_path / name, server, media_dir, "webm", sr)
        clear_ffmpeg_caches()
    (off_s, lag_s), (off_i, lag_i) = got["system"], got["imageio"]
    assert lag_s == lag_i, got  # the same samples where the offsets say, whichever build
    assert abs(lag_s) <= sr // 1000, got
    assert abs(off_s - 9.0) <= 0.01 and abs(off_i - 9.0) <= 0.01, got


def test_webm_section_and_margin_clamped_at_zero(tmp_path, server, ffmpeg_build):
    cfg = make_cfg(server.url_template("webm"))
    led = run(tmp_path, manifest(["ok_w"], start=0.5, end=10.5), cfg)
    assert led["status"].tolist() == ["ok"], led.to_string()
    f = media_path(out(tmp_path), "ok_w")
    assert f.suffix == ".webm"
    assert float((out(tmp_path) / "ok_w.offset").read_text()) == 0.0
    assert decoded_duration(f) == pytest.approx(11.5, abs=0.1)


def test_failure_classes_end_to_end(tmp_path, server, sleeps, ffmpeg_build):
    cases = {
        "e404_a": ("permanent", "404"),
        "e410_a": ("permanent", "410"),
        "e403_a": ("transient", "403"),
        "e500_a": ("transient", "500"),
        "e503_a": ("transient", "503"),
        "trunc_a": ("transient", "truncated"),
        "cut9_a": ("transient", "truncated"),
        "stall_a": ("transient", "timeout"),
        "refused_a": ("transient", "refused"),
        "reset_a": ("transient", "reset"),
        "html_a": ("transient", "not media"),
        "fake_a": ("transient", "not media"),
        "ok_tiny": ("permanent", "source shorter than segment"),
        "ok_short": ("ok", "short source"),
    }
    t0 = time.monotonic()
    led = run(tmp_path, manifest(cases), make_cfg(server.url_template(), retries=0))
    rows = by_ytid(led)
    for y, (status, needle) in cases.items():
        assert rows[y]["status"] == status, (y, rows[y]["reason"])
        assert needle in rows[y]["reason"].lower(), (y, rows[y]["reason"])
        assert rows[y]["attempts"] == 1
        if status != "ok":
            assert media_path(out(tmp_path), y) is None
    assert time.monotonic() - t0 < 60
    # the short source was fetched to its end: [9, 15) of a 15-s source
    short = media_path(out(tmp_path), "ok_short")
    assert decoded_duration(short) == pytest.approx(6.0, abs=0.1)


def test_connection_refused_url(tmp_path, sleeps):
    cfg = make_cfg(f"http://127.0.0.1:{closed_port()}/{{ytid}}.m4a", retries=1)
    led = run(tmp_path, manifest(["ok_x"]), cfg)
    row = by_ytid(led)["ok_x"]
    assert (row["status"], row["attempts"]) == ("transient", 2)
    assert "refused" in row["reason"].lower()
    assert sleeps == [0.01]


def test_transient_retried_with_backoff_heals_in_one_job(tmp_path, server, sleeps):
    # 503 (Retry-After: 0) for the first 2 requests, then the media
    cfg = make_cfg(server.url_template(), retries=3, backoff_initial=0.01, backoff_max=0.015)
    led = run(tmp_path, manifest(["flaky2_a"]), cfg)
    row = by_ytid(led)["flaky2_a"]
    assert (row["status"], row["attempts"]) == ("ok", 3)
    assert sleeps == [0.01, 0.015]  # backoff_initial * 2**k, capped at backoff_max
    assert media_path(out(tmp_path), "flaky2_a") is not None


def test_truncated_section_is_detected_and_retried(tmp_path, server, sleeps, ffmpeg_build):
    # the first ranged response is cut: yt-dlp/ffmpeg succeed with a short or broken file
    led = run(tmp_path, manifest(["cut1_a"]), make_cfg(server.url_template(), retries=2))
    row = by_ytid(led)["cut1_a"]
    assert (row["status"], row["attempts"]) == ("ok", 2)
    assert decoded_duration(media_path(out(tmp_path), "cut1_a")) == pytest.approx(12, abs=0.1)


def test_permanent_not_retried_in_job(tmp_path, server, sleeps):
    led = run(tmp_path, manifest(["e404_a"]), make_cfg(server.url_template(), retries=3))
    assert by_ytid(led)["e404_a"]["attempts"] == 1
    assert server.requests["e404_a"] == 1 and sleeps == []


def test_rate_limit_cools_down_and_stops_shard(tmp_path, server, sleeps, caplog):
    cfg = make_cfg(server.url_template(), retries=3, cooldown=123.0, sleep_between=0.001)
    ytids = ["ok_a", "e429_a", "ok_b", "ok_c"]
    with caplog.at_level("INFO", logger="audiosetflow.download"):
        led = run(tmp_path, manifest(ytids), cfg)
    rows = by_ytid(led)
    assert rows["ok_a"]["status"] == "ok"
    assert rows["e429_a"]["status"] == "transient"
    assert "rate limited" in rows["e429_a"]["reason"]
    assert rows["e429_a"]["attempts"] == 1  # no in-job retry on rate limiting
    for y in ("ok_b", "ok_c"):
        assert (rows[y]["status"], rows[y]["reason"]) == ("transient", NOT_ATTEMPTED)
        assert rows[y]["attempts"] == 0
        assert server.requests[y] == 0
    assert sleeps == [0.001, 123.0]  # sleep_between, then the cool-down
    assert "cooling down" in caplog.text
    assert rows["e429_a"]["runs"] == 1 and rows["ok_b"]["runs"] == 0
    # A YTID that keeps answering 429 does not starve the shard: the next run tries it last,
    # after the others (not the finished one); still limited, it stops there again.
    server.reset_counts()
    led2 = by_ytid(run(tmp_path, manifest(ytids), cfg))
    assert list(dict.fromkeys(r[0] for r in server.log)) == ["ok_b", "ok_c", "e429_a"]
    assert led2["ok_b"]["status"] == led2["ok_c"]["status"] == "ok"
    assert led2["e429_a"]["status"] == "transient" and led2["e429_a"]["attempts"] == 2
    assert [led2[y]["runs"] for y in ytids] == [1, 2, 1, 1]  # runs in which each was tried
    server.reset_counts()
    led3 = by_ytid(run(tmp_path, manifest(ytids), cfg))
    assert dict(server.requests) == {"e429_a": 1}
    assert [led3[y]["runs"] for y in ytids] == [1, 3, 1, 1]
    assert server.requests["ok_a"] == 0


def test_progress_lines(tmp_path, server, caplog):
    with caplog.at_level("INFO", logger="audiosetflow.download"):
        run(tmp_path, manifest(["ok_a", "e404_b"], split="eval", shard=3), make_cfg(
            server.url_template()))  # fmt: skip
    assert "[shard eval/0003] 1/2 ok=1 permanent=0 auth=0 transient=0 pending=1" in caplog.text
    assert "[shard eval/0003] 2/2 ok=1 permanent=1 auth=0 transient=0 pending=0" in caplog.text


def test_ledger_written_after_every_ytid(tmp_path, server, monkeypatch):
    seen: list[list[str]] = []
    real = dl._download_one

    def spy(*a, **k):
        seen.append(record(tmp_path)["status"].tolist())
        return real(*a, **k)

    monkeypatch.setattr(dl, "_download_one", spy)
    run(tmp_path, manifest(["ok_a", "e404_b", "ok_c"]), make_cfg(server.url_template()))
    assert seen == [
        ["pending", "pending", "pending"],
        ["ok", "pending", "pending"],
        ["ok", "permanent", "pending"],
    ]


# --------------------------------------------------------------------------------------------
# reruns and resume


def test_rerun_retries_only_transient(tmp_path, server, sleeps):
    ytids = ["ok_a", "e404_b", "flaky1_c", "ok_short1", "ok_tiny1"]
    cfg = make_cfg(server.url_template(), retries=0)
    first = by_ytid(run(tmp_path, manifest(ytids), cfg))
    assert {y: r["status"] for y, r in first.items()} == {
        "ok_a": "ok", "e404_b": "permanent", "flaky1_c": "transient", "ok_short1": "ok",
        "ok_tiny1": "permanent",
    }  # fmt: skip
    mtime = media_path(out(tmp_path), "ok_a").stat().st_mtime_ns
    server.reset_counts()
    second = by_ytid(run(tmp_path, manifest(ytids), cfg))
    assert dict(server.requests) == {"flaky1_c": server.requests["flaky1_c"]}
    assert second["flaky1_c"]["status"] == "ok" and second["flaky1_c"]["attempts"] == 2
    assert second["e404_b"] == first["e404_b"]  # untouched, same timestamp
    assert second["ok_a"]["reason"] == first["ok_a"]["reason"]
    assert second["ok_short1"]["reason"].startswith("short source")
    assert media_path(out(tmp_path), "ok_a").stat().st_mtime_ns == mtime
    # retry_permanent: permanent rows are tried again (and stay permanent)
    server.reset_counts()
    cfg_p = make_cfg(server.url_template(), retry_permanent=True)
    third = by_ytid(run(tmp_path, manifest(ytids), cfg_p))
    assert set(server.requests) == {"e404_b", "ok_tiny1"}
    assert third["e404_b"]["attempts"] == 2 and third["e404_b"]["status"] == "permanent"


def test_auth_rows_retried_once_cookies_are_set(tmp_path, server, sleeps):
    ytids = ["ok_a", "e401_b", "e404_c"]
    cfg = make_cfg(server.url_template(), retries=0)
    first = by_ytid(run(tmp_path, manifest(ytids), cfg))
    assert first["e401_b"]["status"] == "auth" and "download.cookies" in first["e401_b"]["reason"]
    server.reset_counts()
    run(tmp_path, manifest(ytids), cfg)  # without cookies: not tried again
    assert dict(server.requests) == {}
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    third = by_ytid(run(tmp_path, manifest(ytids), make_cfg(server.url_template(), retries=0,
                                                             cookies=str(cookies))))  # fmt: skip
    assert set(server.requests) == {"e401_b"}  # the permanent one stays untouched
    assert third["e401_b"]["attempts"] == 2 and third["e401_b"]["status"] == "auth"
    assert third["e404_c"] == first["e404_c"]


def test_finished_media_never_downloaded_again(tmp_path, server):
    d = out(tmp_path)
    d.mkdir(parents=True)
    (d / "ok_a.m4a").write_bytes(b"finished earlier")  # e.g. killed before the ledger write
    (d / ".dl-ok_b.999").mkdir()  # stale temp folder of a killed run
    (d / ".dl-ok_b.999" / "media.m4a").write_bytes(b"partial")
    (d / ".ok_b.offset.x1y2.tmp.offset").write_text("9.0")
    marker = shard_of(tmp_path).running("download")  # the killed run's marker
    marker.parent.mkdir(parents=True)
    marker.touch()
    led = by_ytid(run(tmp_path, manifest(["ok_a", "ok_b"]), make_cfg(server.url_template())))
    assert led["ok_a"]["status"] == "ok" and server.requests["ok_a"] == 0
    assert led["ok_b"]["status"] == "ok"
    assert not (d / ".dl-ok_b.999").exists() and not marker.exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_ok_row_with_missing_file_is_downloaded_again(tmp_path, server):
    cfg = make_cfg(server.url_template())
    run(tmp_path, manifest(["ok_a"]), cfg)
    media_path(out(tmp_path), "ok_a").unlink()
    server.reset_counts()
    led = by_ytid(run(tmp_path, manifest(["ok_a"]), cfg))
    assert led["ok_a"]["status"] == "ok" and led["ok_a"]["attempts"] == 2
    assert server.requests["ok_a"] >= 1


def test_media_path_ignores_temporary_and_sidecar_files(tmp_path):
    d = out(tmp_path)
    assert media_path(d, "x") is None
    d.mkdir(parents=True)
    for name in (".x.m4a.tmp", "x.offset", "x.m4a.part", "x.part", "xy.m4a", ".dl-x.1"):
        (d / name).write_text("")
    assert media_path(d, "x") is None
    (d / "x.webm").write_text("")
    assert media_path(d, "x") == d / "x.webm"


def test_file_urls_fall_back_to_full_download(tmp_path, media_dir, caplog):
    src = tmp_path / "src"
    make_media(src / "-local1.m4a", 20.0)
    make_media(src / "local2.m4a", 20.0)
    cfg = make_cfg(src.absolute().as_uri() + "/{ytid}.m4a")
    with caplog.at_level("INFO", logger="audiosetflow.download"):
        led = by_ytid(run(tmp_path, manifest(["-local1", "local2", "gone"]), cfg))
    assert "cannot be cut" in caplog.text
    for y in ("-local1", "local2"):
        assert led[y]["status"] == "ok", led[y]["reason"]
        f = media_path(out(tmp_path), y)
        assert decoded_duration(f) == pytest.approx(20.0, abs=0.1)  # the whole source
        assert float((out(tmp_path) / f"{y}.offset").read_text()) == 0.0
    assert led["gone"]["status"] == "permanent"
    # a full download of a source shorter than the segment: short clip / nothing of it
    make_media(src / "shortf.m4a", 14.0)
    make_media(src / "tinyf.m4a", 4.0)
    led = by_ytid(run(tmp_path, manifest(["shortf", "tinyf"]), cfg))
    assert led["shortf"]["status"] == "ok" and "short source" in led["shortf"]["reason"]
    assert led["tinyf"]["status"] == "permanent"


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from audiosetflow.acquisition.download import DownloadConfig, download_shard
    from audiosetflow.shard import Layout, ShardTable
    url, root = sys.argv[1:3]
    ytids = [f"slow_{i:02d}" for i in range(12)]
    man = pd.DataFrame({"ytid": ytids, "split": "train", "shard": 0, "start": 10.0,
                        "end": 20.0, "labels": ""})
    cfg = DownloadConfig.from_config({"url_template": url, "socket_timeout": 5, "retries": 0})
    download_shard(ShardTable.from_manifest(man), shard=Layout(root).shard("train", 0), cfg=cfg)
    """
)


@pytest.mark.slow
def test_kill_9_then_resume_loses_nothing(tmp_path, server):
    d, ledger = out(tmp_path), shard_of(tmp_path).record
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, server.url_template(), str(tmp_path / "results")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ledger.exists() and (record(tmp_path)["status"] == "ok").sum() >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the subprocess made no progress")
        # kill it in the middle of a download (a slow_ request in flight)
        n = len(server.log)
        while len(server.log) == n and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert [p for p in d.iterdir() if p.name.startswith(".dl-")]  # killed mid-download
    before = record(tmp_path)  # a complete, parseable table
    assert list(before.columns) == list(LEDGER_COLUMNS) and len(before) == 12
    done = set(before.loc[before["status"] == "ok", "ytid"])
    assert 3 <= len(done) < 12
    # every finished media decodes to the full window; nothing partial has a final name
    finished = {y for y in before["ytid"] if media_path(d, y) is not None}
    assert done <= finished and len(finished - done) <= 1
    for y in finished:
        assert decoded_duration(media_path(d, y)) == pytest.approx(12.0, abs=0.1)
    server.reset_counts()
    cfg = make_cfg(server.url_template(), socket_timeout=5)
    man = manifest([f"slow_{i:02d}" for i in range(12)])
    after = run(tmp_path, man, cfg)
    assert (after["status"] == "ok").all(), after.to_string()
    assert not set(server.requests) & finished  # finished ones were not fetched again
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_mixed_run(tmp_path, server, sleeps):
    faulty = [
        "e404_m1", "e404_m2", "e410_m3", "e403_m4", "e500_m5", "flaky1_m6", "flaky1_m7",
        "trunc_m8", "cut1_m9", "stall_m10", "refused_m11", "reset_m12", "html_m13",
        "fake_m14", "ok_tiny2", "ok_short2",
    ]  # fmt: skip
    expected = {
        "e404": "permanent", "e410": "permanent", "e403": "transient", "e500": "transient",
        "flaky1": "transient", "trunc": "transient", "cut1": "transient", "stall": "transient",
        "refused": "transient", "reset": "transient", "html": "transient", "fake": "transient",
        "ok": "ok",
    }  # fmt: skip
    good = [f"ok_{i:02d}" for i in range(44)]
    ytids = good[:20] + faulty[:8] + good[20:] + faulty[8:]
    assert len(ytids) == 60
    cfg = make_cfg(server.url_template(), retries=0)
    first = by_ytid(run(tmp_path, manifest(ytids), cfg))
    for y, row in first.items():
        want = expected[y.split("_")[0]]
        if y == "ok_tiny2":
            want = "permanent"
        assert row["status"] == want, (y, row["reason"])
    assert first["ok_short2"]["reason"].startswith("short source")
    ok_files = {y: media_path(out(tmp_path), y).stat().st_mtime_ns for y in good}

    server.reset_counts()
    second = by_ytid(run(tmp_path, manifest(ytids), cfg))
    transient = {y for y, r in first.items() if r["status"] == "transient"}
    assert set(server.requests) == transient  # nothing else was requested
    for y in ("flaky1_m6", "flaky1_m7", "cut1_m9"):  # healed on the server side
        assert second[y]["status"] == "ok" and second[y]["attempts"] == 2
    for y in transient - {"flaky1_m6", "flaky1_m7", "cut1_m9"}:
        assert second[y]["status"] == "transient"
    for y, r in first.items():
        if r["status"] != "transient":
            assert second[y] == r
    assert {y: media_path(out(tmp_path), y).stat().st_mtime_ns for y in good} == ok_files


def test_media_lookup_by_name_never_lists_the_folder(tmp_path, monkeypatch) -> None:
    import os

    d = out(tmp_path)
    d.mkdir(parents=True)
    for name in ("-aaaaaaaaaa.webm", "-aaaaaaaaaa.offset", "bbbbbbbbbbb.weird",
                 "ccccccccccc.m4a.part", ".dl-ccccccccccc.m4a", "ddddddddddd.m4a",
                 "ddddddddddd.opus"):  # fmt: skip
        (d / name).write_bytes(b"x")
    os.utime(d / "ddddddddddd.m4a", (1, 1))  # older: the .opus wins
    want = ["-aaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd", "eeeeeeeeeee"]
    expected = {"-aaaaaaaaaa": d / "-aaaaaaaaaa.webm", "ddddddddddd": d / "ddddddddddd.opus"}

    def no_listing(*a, **k):
        raise AssertionError("a folder of millions of media files must not be listed")

    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    shard = shard_of(tmp_path)
    assert shard.media_index(want) == expected
    # an unusual extension is found by the name the download stage recorded
    names = {"bbbbbbbbbbb": "bbbbbbbbbbb.weird", "ddddddddddd": ".hidden"}
    assert shard.media_index(want, names) == {**expected, "bbbbbbbbbbb": d / "bbbbbbbbbbb.weird"}
    none = dict.fromkeys(("bbbbbbbbbbb", "ccccccccccc", "eeeeeeeeeee"))
    assert {y: media_path(d, y) for y in want} == {**expected, **none}
    assert shard_of(tmp_path / "missing").media_index(want) == {}


def test_changed_segment_is_fetched_again(tmp_path, server):
    cfg = make_cfg(server.url_template())
    run(tmp_path, manifest(["ok_seg"], start=10.0, end=20.0), cfg)
    assert float((out(tmp_path) / "ok_seg.offset").read_text()) == pytest.approx(9.0)
    server.reset_counts()
    led = by_ytid(run(tmp_path, manifest(["ok_seg"], start=14.0, end=24.0), cfg))
    assert led["ok_seg"]["status"] == "ok" and server.requests["ok_seg"] >= 1
    assert float((out(tmp_path) / "ok_seg.offset").read_text()) == pytest.approx(13.0, abs=0.01)
