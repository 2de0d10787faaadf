"""The per-shard stage runners on real media: transcode, trim, features, aggregate, and the
shard table and retry token they share; faults of the machine on a real full file system."""

from __future__ import annotations

import contextlib
import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from audiosetflow.acquisition.download import DownloadConfig
from audiosetflow.audio.codec import transcode
from audiosetflow.audio.features import FeatureParams, load_summary, run_features
from audiosetflow.audio.transcode import run_transcode
from audiosetflow.audio.trim import run_trim
from audiosetflow.errors import MachineError, machine_error
from audiosetflow.reporting.aggregate import aggregate, availability
from audiosetflow.shard import Layout, ShardLayout, ShardTable, Status
from audiosetflow.smk import manifest_from_param, manifest_param, next_retry_token, stage_job
from audiosetflow.tools import ffmpeg_exe

SR = 22050
PARAMS = FeatureParams(sample_rate=SR, n_mels=32, n_fft=1024, hop_length=512)


def _media(path: Path, *, seconds: float, seed: int, codec: str = "libopus") -> Path:
    rng = np.random.default_rng(seed)
    y = (0.2 * rng.standard_normal(int(seconds * 48000))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "f32le", "-ar", "48000", "-ac", "1", "-i", "-",
         "-c:a", codec, str(path)],
        input=y.tobytes(), check=True,
    )  # fmt: skip
    return path


def _shard(tmp_path: Path, ytids, *, ok=None, start=1.0, end=11.0):
    """A shard whose download stage is done: media for the ``ok`` YTIDs (all by default)."""
    shard = Layout(tmp_path / "results").shard("train", 0)
    man = pd.DataFrame(
        {"ytid": ytids, "split": "train", "shard": 0, "start": start, "end": end, "labels": "/m/x"}
    )
    table = ShardTable.from_manifest(man)
    for k, y in enumerate(ok if ok is not None else ytids):
        _media(shard.media_name(y, "webm"), seconds=end + 1.0, seed=k)
        table.set("download", y, Status.OK)
    table.save(shard, shard.table("download"))
    return shard, table


def _run_all(shard: ShardLayout, **kw):  # noqa: F821 - the name is only documentation
    run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                  sample_rate=SR, batch=2)  # fmt: skip
    run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"), clip_seconds=10.0)
    return _features(shard, **kw)


def _features(shard, **kw):
    kw = {"params": PARAMS, "names": {}, **kw}
    return run_features(
        shard.table("trim"), shard=shard, out=shard.parquet, out_table=shard.table("features"), **kw
    )


# --- the shard table --------------------------------------------------------------------------


def test_table_round_trip_and_restore(tmp_path):
    man = manifest_from_param("-aaaaaaaaaa,1.000,11.000,/m/a,/m/b;bbbbbbbbbbb,0.000,9.500,",
                              split="eval", shard=3)  # fmt: skip
    assert manifest_param(man) == "-aaaaaaaaaa,1.000,11.000,/m/a,/m/b;bbbbbbbbbbb,0.000,9.500,"
    t = ShardTable.from_manifest(man)
    assert set(t.status("download")) == {"pending"}
    t.set("download", "-aaaaaaaaaa", Status.PERMANENT, "HTTP 404", attempts=2, runs=1)
    t.set("trim", "bbbbbbbbbbb", Status.OK, duration=9.5, short=True)
    t.write(tmp_path / "t.tsv")
    back = ShardTable.read(tmp_path / "t.tsv")
    pd.testing.assert_frame_equal(back.df, t.df)
    assert back.row("-aaaaaaaaaa")["labels"] == "/m/a,/m/b"
    # restore copies one stage's columns for the YTIDs whose segment did not change
    new = ShardTable.from_manifest(man.assign(start=[1.0, 2.0]))
    assert new.restore("download", back) == ["-aaaaaaaaaa"]
    assert new.row("-aaaaaaaaaa")["attempts"] == 2 and new.status("trim").eq("pending").all()
    with pytest.raises(KeyError, match="no column"):
        t.set("transcode", "bbbbbbbbbbb", Status.OK, duration=1.0)
    (tmp_path / "bad.tsv").write_text("ytid\tdownload_status\nx\tfailed\n")
    with pytest.raises(ValueError, match="bad.tsv: not a shard table"):
        ShardTable.read(tmp_path / "bad.tsv")


def test_retry_token(tmp_path):
    cfg = DownloadConfig.from_config({})
    man = manifest_from_param("a,0,10,;b,0,10,;c,0,10,", split="train", shard=0)
    t = ShardTable.from_manifest(man)
    for y, st in zip("abc", (Status.OK, Status.PERMANENT, Status.AUTH), strict=True):
        t.set("download", y, st)
    # nothing left to retry: the token stays, so a rerun after a complete run does nothing
    assert next_retry_token(t, current="tok", cfg=cfg) == "tok"
    # auth and permanent rows are tried by a job once cookies / retry_permanent are set (the
    # changed setting reruns every job once), but they do not make every rerun run it again
    for extra in ({"cookies": "/c.txt"}, {"retry_permanent": True}):
        assert next_retry_token(t, current="tok", cfg=DownloadConfig.from_config(extra)) == "tok"
    t.set("download", "a", Status.TRANSIENT, "HTTP 503", attempts=1, runs=1)
    tok1 = next_retry_token(t, current="tok", cfg=cfg)
    t.set("download", "a", Status.TRANSIENT, "HTTP 503", attempts=2, runs=2)
    tok2 = next_retry_token(t, current=tok1, cfg=cfg)
    assert tok1.startswith("retry-1-") and tok2 != tok1  # every attempt gives a new token
    # a YTID that stays transient stops making reruns run the shard after max_runs runs
    t.set("download", "a", Status.TRANSIENT, "HTTP 503", attempts=5, runs=5)
    assert next_retry_token(t, current="tok", cfg=cfg) == "tok"
    unlimited = DownloadConfig.from_config({"max_runs": 0})
    assert next_retry_token(t, current="tok", cfg=unlimited).startswith("retry-1-")


# --- transcode, trim, features ------------------------------------------------------------------


def test_stages_batch_reuse_and_report_per_ytid(tmp_path):
    ytids = [f"yt{k:09d}" for k in range(7)]
    shard, _ = _shard(tmp_path, ytids, ok=ytids[:5])
    t = ShardTable.read(shard.table("download"))
    (shard.download_dir / f"{ytids[5]}.m4a").write_text("<html>not media</html>")
    t.set("download", ytids[5], Status.OK)
    t.set("download", ytids[6], Status.OK)  # its media are gone
    t.save(shard, shard.table("download"))
    # ytids[1]: a window of an earlier version (FLAC) already exists
    legacy = shard.pcm_dir / f"{ytids[1]}.flac"
    transcode(shard.media(ytids[1]), legacy, sample_rate=SR)
    before = sf.read(legacy, dtype="int16")[0]

    tr = run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                       sample_rate=SR, batch=2).stage_frame("transcode")  # fmt: skip
    assert tr["ytid"].tolist() == ytids
    assert tr["status"].tolist() == ["ok"] * 5 + ["permanent", "transient"]
    assert tr["reason"].tolist()[:5] == ["", "reused", "", "", ""]
    assert tr["reason"][5].startswith("cannot decode audio: ")
    assert tr["reason"][6] == "media missing (rerun: --forcerun download)"
    for y in (ytids[0], ytids[2]):
        ref = tmp_path / "ref" / f"{y}.flac"
        transcode(shard.media(y), ref, sample_rate=SR)
        got = sf.read(shard.window(y), dtype="int16")[0]
        assert np.array_equal(got, sf.read(ref, dtype="int16")[0])
    assert ShardTable.read(shard.record).df.equals(ShardTable.read(shard.table("transcode")).df)

    tm = run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                  clip_seconds=10.0).stage_frame("trim")  # fmt: skip
    assert tm["status"].tolist() == ["ok"] * 5 + ["pending"] * 2
    assert not tm["short"].any() and np.allclose(tm["duration"][:5], 10.0)
    assert not list(shard.pcm_dir.iterdir())  # windows deleted once cut
    clip = sf.read(shard.clip(ytids[1]), dtype="int16")[0]
    assert np.array_equal(clip, before[SR : 11 * SR])  # offset 0: [1, 11) s of the window

    ft = _features(shard, names={"/m/x": "X"})
    assert ft.status("features").tolist() == ["ok"] * 5 + ["pending"] * 2
    meta = pq.read_table(shard.parquet, columns=["ytid", "status", "reason", "label_names"])
    meta = meta.to_pandas()
    assert meta["status"].tolist() == ["ok"] * 5 + ["permanent", "transient"]
    assert meta["reason"][5].startswith("transcode: cannot decode audio")
    assert meta["label_names"][0].tolist() == ["X"]
    assert len(load_summary([shard.parquet])) == 5

    # a rerun reuses everything: no window is made again (the clips exist)
    tr2 = run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                        sample_rate=SR).stage_frame("transcode")  # fmt: skip
    assert tr2["reason"].tolist()[:5] == ["reused"] * 5 and not list(shard.pcm_dir.iterdir())
    tm2 = run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                   clip_seconds=10.0).stage_frame("trim")  # fmt: skip
    assert tm2["reason"].tolist()[:5] == ["reused"] * 5


def test_another_sample_rate_makes_windows_and_clips_again(tmp_path):
    shard, _ = _shard(tmp_path, ["srchange001", "srchange002"])
    _run_all(shard)
    assert sf.info(str(shard.clip("srchange001"))).samplerate == SR
    tr = run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                       sample_rate=16000).stage_frame("transcode")  # fmt: skip
    assert tr["reason"].tolist() == ["", ""]  # not reused: made for 22050 Hz
    tm = run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                  clip_seconds=10.0).stage_frame("trim")  # fmt: skip
    assert tm["reason"].tolist() == ["", ""]
    assert sf.info(str(shard.clip("srchange001"))).samplerate == 16000
    # and the same again is reused
    tr = run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                       sample_rate=16000).stage_frame("transcode")  # fmt: skip
    assert tr["reason"].tolist() == ["reused", "reused"]


def test_short_segment_is_padded_and_flagged(tmp_path):
    shard, _ = _shard(tmp_path, ["shortclip01"], start=0.0, end=7.5)
    t = _run_all(shard)
    row = t.row("shortclip01")
    assert row["trim_status"] == "ok" and row["short"] and row["duration"] == pytest.approx(7.5)
    assert sf.info(str(shard.clip("shortclip01"))).frames == 10 * SR


def _trimmed_copies(tmp_path: Path, n: int) -> ShardLayout:
    """A shard of ``n`` YTIDs whose trim is done: one real clip, its FLAC copied n times."""
    shard, _ = _shard(tmp_path, ["memclip0000"])
    one = _run_all(shard)
    ytids = [f"memclip{k:04d}" for k in range(n)]
    table = ShardTable(one.df.iloc[[0] * n].assign(ytid=ytids).reset_index(drop=True))
    clip, duration = shard.clip("memclip0000"), shard.clip("memclip0000").with_suffix(".duration")
    for y in ytids[1:]:
        shard.clip(y).write_bytes(clip.read_bytes())
        shard.clip(y).with_suffix(".duration").write_bytes(duration.read_bytes())
    for y in ytids:
        table.set("features", y, Status.PENDING)
    table.save(shard, shard.table("trim"))
    return shard


def test_features_stage_memory_does_not_grow_with_the_shard(tmp_path):
    """The features stage holds one row group of features (64 clips), not the shard's: its
    peak allocation for 384 clips is within 7 MB of that for 64 (holding every clip's
    features, as it once did, added 181 MB)."""
    import tracemalloc

    params = FeatureParams(sample_rate=SR)  # full size: ~0.25 MB of features a clip
    peaks = {}
    for n in (64, 384):
        shard = _trimmed_copies(tmp_path / str(n), n)
        tracemalloc.start()
        try:
            t = _features(shard, params=params)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(t.passed("features")) == n
        rows = pq.ParquetFile(shard.parquet).metadata
        assert rows.num_rows == n
        assert [rows.row_group(i).num_rows for i in range(rows.num_row_groups)] == [64] * (n // 64)
    one_clip = 128 * 431 * 4  # the log-mel of one clip alone
    grown = {k: f"{v / 1e6:.1f} MB" for k, v in peaks.items()}
    assert peaks[384] < peaks[64] + 32 * one_clip, grown


_KILLED_TRANSCODE = """
import sys
from audiosetflow.audio.transcode import run_transcode
from audiosetflow.shard import Layout
shard = Layout(sys.argv[1]).shard("train", 0)
print("start", flush=True)
run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
              sample_rate=22050, batch=4)
"""


def test_kill_9_mid_transcode_then_rerun_cleans_up(tmp_path):
    """A transcode killed mid-batch leaves temporaries (never a final name); the next run of
    the shard removes them and finishes every window."""
    import os
    import signal
    import time

    ytids = [f"kill{k:07d}" for k in range(48)]
    shard, _ = _shard(tmp_path, ytids[:1])
    one = shard.media(ytids[0])
    t = ShardTable.read(shard.table("download"))
    t = ShardTable.from_manifest(t.df.iloc[[0] * 48].assign(ytid=ytids))
    for y in ytids:
        (shard.download_dir / f"{y}.webm").write_bytes(one.read_bytes())
        t.set("download", y, Status.OK)
    t.save(shard, shard.table("download"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_TRANSCODE, str(tmp_path / "results")],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == b"start"
    # Freeze the process group, look, and kill only while temporaries and finished windows
    # are both there: a frozen group renames nothing between the look and the kill.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGSTOP)
        entries = list(shard.pcm_dir.glob(".*.tmp*")) if shard.pcm_dir.exists() else []
        if entries and list(shard.pcm_dir.glob("kill*.wav")):
            break
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # python and its ffmpeg child, mid-batch
    proc.wait()
    left = list(shard.pcm_dir.glob(".*.tmp*"))
    assert left, "the kill should leave temporaries behind"
    assert shard.running("transcode").exists()
    done = run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                         sample_rate=SR)  # fmt: skip
    assert done.passed("transcode") == ytids
    assert not [p for p in shard.pcm_dir.iterdir() if p.name.startswith(".")]
    assert not shard.running("transcode").exists()


# --- faults of the machine ----------------------------------------------------------------------


@contextlib.contextmanager
def _small_fs(path: Path, size: str):
    """A real tmpfs of ``size`` mounted at ``path`` (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def full_disk(path: Path, free_kib: int):
    """A real file system at ``path`` with only ``free_kib`` KiB free: a 32 MiB tmpfs and a
    filler file. Yields the function that frees the space (deletes the filler), as a user
    would: what was written stays."""
    with _small_fs(path, "32m") as fs:
        filler = fs / ".filler"
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (32 * 1024 - free_kib) * 1024)
        yield lambda: filler.unlink()


def test_machine_errors_are_recognised():
    assert machine_error(OSError(errno.ENOSPC, "No space left on device")).code == "ENOSPC"
    assert machine_error(OSError(errno.EROFS, "Read-only file system")).code == "EROFS"
    err = RuntimeError("x.wav: cannot decode audio: Error writing trailer: No space left on device")
    assert machine_error(err).code == "ENOSPC"
    # ffmpeg answers corrupt input with these errnos' words too: the clip's fault, not ours
    for text in ("Error while decoding stream #0:0: Operation not permitted",
                 "Error while decoding stream #0:0: Cannot allocate memory",
                 "x.m4a: Input/output error"):  # fmt: skip
        assert machine_error(RuntimeError(f"cannot decode audio: {text}")) is None
    assert machine_error(RuntimeError("cannot decode audio: Invalid data found")) is None
    assert machine_error(FileNotFoundError(errno.ENOENT, "No such file")) is None


@pytest.mark.parametrize("stage", ["transcode", "trim", "features"])
def test_full_disk_is_transient_and_a_rerun_redoes_it(tmp_path, stage, caplog):
    """A full disk during a stage is no failure of the clips: the stage stops with one line,
    keeps what it finished, and the rerun after freeing space finishes every clip."""
    ytids = [f"full{k:07d}" for k in range(6)]
    shard, _ = _shard(tmp_path, ytids)
    target = {"transcode": shard.pcm_dir, "trim": shard.clips_dir,
              "features": shard.parquet.parent}[stage]  # fmt: skip
    free_kib = {"transcode": 1200, "trim": 600, "features": 16}[stage]
    if stage != "transcode":
        run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                      sample_rate=SR)  # fmt: skip
    if stage == "features":
        run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"), clip_seconds=10.0)
    with full_disk(target, free_kib) as free_space:
        with pytest.raises(MachineError) as info:
            if stage == "transcode":
                _run_all(shard)
            elif stage == "trim":
                run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                         clip_seconds=10.0)  # fmt: skip
            else:
                _features(shard)
        assert info.value.code == "ENOSPC"
        line = info.value.line(stage)
        assert "\n" not in line and "free disk space and rerun" in line
        assert not shard.table(stage).exists()  # the job failed: Snakemake will run it again
        rec = ShardTable.read(shard.record)
        assert not rec.is_(stage, Status.PERMANENT).any()  # never a fault of the clip
        # stage_job turns it into one line and exit status 1, no traceback
        log = __import__("logging").getLogger("audiosetflow.test")
        with caplog.at_level("ERROR", logger="audiosetflow.test"):
            with pytest.raises(SystemExit) as ex, stage_job(stage, log):
                raise info.value
        assert ex.value.code == 1 and caplog.records[-1].getMessage() == line
        # the user frees space (what was written stays): a plain rerun finishes all
        free_space()
        t = _run_all(shard)
        assert t.passed("features") == ytids
        assert len(load_summary([shard.parquet])) == 6


def test_full_log_file_is_one_line_not_a_traceback(tmp_path):
    """The log handler of a job on a full disk says so once, in one line."""
    script = (
        "import sys\nfrom audiosetflow.logutil import setup_logging\n"
        "log = setup_logging(sys.argv[1], name='audiosetflow.x')\n"
        "for i in range(50): log.info('line %d %s', i, 'x' * 200)\n"
    )
    with _small_fs(tmp_path / "logs", "4k") as d:
        proc = subprocess.run([sys.executable, "-c", script, str(d / "job.log")],
                              capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0
    assert "--- Logging error ---" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("cannot write the log") == 1


# --- aggregate ----------------------------------------------------------------------------------


def test_availability_and_ledger(tmp_path):
    ytids = [f"agg{k:08d}" for k in range(4)]
    shard, _ = _shard(tmp_path, ytids, ok=ytids[:3])
    t = ShardTable.read(shard.table("download"))
    t.set("download", ytids[3], Status.PERMANENT, "HTTP 404: gone", attempts=1, runs=1)
    t.save(shard, shard.table("download"))
    (shard.download_dir / f"{ytids[2]}.webm").write_bytes(b"broken")
    _run_all(shard)
    outs = {"availability_out": tmp_path / "av.tsv", "ledger_out": tmp_path / "led.tsv",
            "failures_out": tmp_path / "fail.tsv"}  # fmt: skip
    av = aggregate(tables=[shard.table("features")], features=[shard.parquet], **outs)
    got = av.set_index("stage")[["entered", "done", "failed"]].to_dict("index")
    assert got == {
        "selected": {"entered": 4, "done": 4, "failed": 0},
        "download": {"entered": 4, "done": 3, "failed": 1},
        "transcode": {"entered": 3, "done": 2, "failed": 1},
        "trim": {"entered": 2, "done": 2, "failed": 0},
        "features": {"entered": 2, "done": 2, "failed": 0},
    }
    reasons = av.set_index("stage")["reasons"]
    assert reasons["download"] == "permanent: HTTP 404: gone x1"
    assert reasons["transcode"].startswith("permanent: cannot decode audio")
    led = pd.read_csv(tmp_path / "led.tsv", sep="\t")
    assert list(led.columns) == ["ytid", "split", "shard", "status", "reason", "attempts",
                                 "runs", "bytes", "updated", "source"]  # fmt: skip
    assert led["status"].tolist() == ["ok", "ok", "ok", "permanent"]
    assert availability([]).empty
    fails = pd.read_csv(tmp_path / "fail.tsv", sep="\t")
    assert list(fails.columns) == ["split", "stage", "status", "reason", "count"]
    assert fails[["stage", "status", "count"]].values.tolist() == [
        ["download", "permanent", 1], ["transcode", "permanent", 1]
    ]  # fmt: skip
    assert fails.loc[0, "reason"] == "HTTP 404: gone"


def test_failures_count_one_reason_for_many_ytids(tmp_path):
    from audiosetflow.reporting.aggregate import failures

    ytids = [f"fail{k:07d}" for k in range(5)]
    shard, _ = _shard(tmp_path, ytids, ok=ytids[:1])
    t = ShardTable.read(shard.table("download"))
    for y in ytids[1:4]:
        t.set("download", y, Status.PERMANENT, f"[generic] {y}: no such file media/{y}.m4a")
    t.set("download", ytids[4], Status.TRANSIENT, "HTTP 503")
    got = failures([t])  # the download stage's table: the OK YTID is pending at transcode
    assert got[["stage", "status", "reason", "count"]].values.tolist() == [
        ["download", "permanent", "[generic] {ytid}: no such file media/{ytid}.m4a", 3],
        ["download", "transient", "HTTP 503", 1],
        ["transcode", "pending", "", 1],
    ]
    av = availability([t]).set_index("stage")
    assert av.loc["download", "reasons"].startswith("permanent: [generic] {ytid}: no such")
    assert failures([]).empty


def test_layout_locates_the_shard_of_its_files(tmp_path):
    layout = Layout(tmp_path / "res")
    shard = layout.shard("eval", 12)
    for p in (shard.table("trim"), shard.record, shard.token, shard.parquet):
        assert Layout.locate(p) == shard
    assert str(shard.table("download")).endswith("res/shards/eval/shard-0012/download.tsv")
    for bad in (tmp_path / "x.tsv", tmp_path / "shards/eval/x/trim.tsv", layout.clip("eval", "y")):
        with pytest.raises(ValueError, match="not a file of a shard"):
            Layout.locate(bad)
