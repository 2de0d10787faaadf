"""Local AudioSet mirrors as sources (issue 11): config checks, the index, the download stage
taking clips from tar, Parquet and folders with YouTube (a loopback server, real yt-dlp) as the
fallback, and clips equal to those of the same samples decoded directly."""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from faultserver import FaultServer, make_media
from mirrors import (
    corrupt_members,
    make_clips,
    make_ms_folder,
    make_panns_folder,
    make_parquet,
    make_tar,
    make_whole_folder,
    reference_clip,
    short_clip,
)

from audiosetflow.acquisition.download import NO_SOURCE, DownloadConfig, download_shard
from audiosetflow.acquisition.sources import (
    ClipError,
    build_index,
    check_audio,
    lookup,
    needs_youtube,
    parse_sources,
)
from audiosetflow.audio import features as ft
from audiosetflow.audio.transcode import run_transcode
from audiosetflow.audio.trim import run_trim
from audiosetflow.errors import InputError
from audiosetflow.shard import Layout, ShardTable

SR = 16_000  # the windows' rate in these tests (cheap)


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"kind": "tar", "paths": ["{tmp}/nothing*.tar"]}, "no file matches {tmp}/nothing*.tar"),
        ({"kind": "parquet", "paths": ["{tmp}/gone.parquet"]}, "no file matches"),
        ({"kind": "folder", "path": "{tmp}/absent"}, "is not a folder"),
        ({"kind": "folder", "path": "{tmp}", "pattern": "{name}.wav"}, "must hold {ytid} once"),
        ({"kind": "s3"}, "kind must be one of tar, parquet, folder, youtube"),
        ({"kind": "tar"}, "give the files as paths"),
    ],
)
def test_a_bad_source_is_one_line_naming_it(tmp_path, item, message):
    def fill(v):
        return v.replace("{tmp}", str(tmp_path))

    item = {k: fill(v) if isinstance(v, str) else [fill(p) for p in v] for k, v in item.items()}
    with pytest.raises(InputError) as exc:
        parse_sources([{"kind": "youtube"}, item])
    text = str(exc.value)
    assert "\n" not in text and text.startswith("config: sources[1]")
    assert fill(message) in text


def test_default_is_youtube_and_a_compressed_tar_is_refused(tmp_path):
    (src,) = parse_sources(None)
    assert src.kind == "youtube"
    gz = tmp_path / "bal_train00.tar.gz"
    with tarfile.open(gz, "w:gz"):
        pass
    sources = parse_sources([{"kind": "tar", "paths": [str(gz)]}])
    with pytest.raises(InputError, match="not a plain \\(uncompressed\\) tar"):
        build_index(sources, out=tmp_path / "index.parquet")


# --- index ----------------------------------------------------------------------------------------


def test_index_of_every_kind_is_cached_and_follows_a_changed_file(tmp_path):
    clips = make_clips(["-0RWZT-miFs", "--4gqARaEJE", "_0-2Kaf9LtM"], seconds=2.0)
    tar = tmp_path / "m" / "bal_train00.tar"
    make_tar(tar, dict(list(clips.items())[:2]))
    pq_file = tmp_path / "m" / "part-0.parquet"
    make_parquet(pq_file, clips, {y: ["/m/04rlf"] for y in clips}, row_group_size=2)
    panns = tmp_path / "panns"
    make_panns_folder(panns, {"_0-2Kaf9LtM": clips["_0-2Kaf9LtM"]})
    old = tmp_path / "old"
    make_ms_folder(old, {"0Ao6GJRiw6k": clips["_0-2Kaf9LtM"]}, {"0Ao6GJRiw6k": (30.0, 32.0)})
    cfg = [
        {"kind": "tar", "paths": [str(tmp_path / "m" / "*.tar")]},
        {"kind": "parquet", "paths": [str(pq_file)]},
        {"kind": "folder", "path": str(panns), "pattern": "Y{ytid}.wav", "cut": True},
        {"kind": "folder", "path": str(old), "pattern": "{ytid}_{start_ms}_{end_ms}.flac"},
        {"kind": "youtube"},
    ]
    sources = parse_sources(cfg)
    cache = tmp_path / "cache"
    index = build_index(sources, out=tmp_path / "index.parquet", cache_dir=cache)
    got = lookup(tmp_path / "index.parquet", [*clips, "0Ao6GJRiw6k", "nowhere0000"])
    assert "nowhere0000" not in got
    assert [e.origin for e in got["-0RWZT-miFs"]] == [
        "tar:bal_train00.tar",
        "parquet:part-0.parquet",
    ]
    assert [e.kind for e in got["_0-2Kaf9LtM"]] == ["parquet", "folder"]
    # the tar entry points at the member's bytes
    e = got["--4gqARaEJE"][0]
    with tarfile.open(tar) as t:
        m = t.getmember("audio/bal_train/--4gqARaEJE.flac")
    assert (e.offset, e.size) == (m.offset_data, m.size)
    pe = got["_0-2Kaf9LtM"][0]
    assert (pe.row_group, pe.row) == (1, 0)  # third row, row groups of 2
    (ms,) = got["0Ao6GJRiw6k"]
    assert (ms.start_ms, ms.end_ms, ms.cut) == (30_000, 32_000, -1)  # cut: auto by default
    assert len(index) == 7 and len(list(cache.glob("*.parquet"))) == 4

    # a second build reads every file's index from the cache; a changed tar is indexed again
    make_tar(tar, clips)  # now all three
    index2 = build_index(sources, out=tmp_path / "index.parquet", cache_dir=cache)
    assert len(index2) == 8 and len(list(cache.glob("*.parquet"))) == 5


def test_check_audio_tells_the_broken_copies_apart():
    bad = corrupt_members()
    reasons = {}
    for y, data in bad.items():
        with pytest.raises(ClipError) as exc:
            check_audio(data, name=y)
        reasons[y] = str(exc.value)
    assert reasons["-badtrunc00"].startswith(("truncated", "does not decode"))
    assert reasons["-badtext000"] == "not audio (no known audio format)"
    assert reasons["-badempty00"] == "empty file"


# --- the download stage -------------------------------------------------------------------------


def _manifest(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"ytid": [r[0] for r in rows], "split": "train", "shard": 0,
         "start": [r[1] for r in rows], "end": [r[2] for r in rows], "labels": "/m/04rlf"}
    )  # fmt: skip


def test_mirrors_first_youtube_for_the_rest_and_clips_equal_direct_decoding(tmp_path):
    """One shard with a YTID in each kind of mirror, broken members that fall back to the
    loopback YouTube, YTIDs only on the server and one nowhere: no mirror YTID reaches the
    server, every source is recorded, and each mirror clip (and its features) equals the clip
    of the same samples decoded directly."""
    tar_ids = ["-0RWZT-miFs", "--4gqARaEJE"]
    clips = make_clips(tar_ids, every_44k=2)  # one at 48 kHz, one at 44.1 kHz
    short = short_clip("-1nilez17Dg")  # 9.2 s for a 10-s segment
    bad = corrupt_members()  # truncated, text, empty: all on the server too
    written = make_tar(tmp_path / "m" / "bal_train00.tar", {**clips, **short}, raw=bad)
    pq_clip = make_clips(["_0-2Kaf9LtM"])
    written |= make_parquet(tmp_path / "m" / "p.parquet", pq_clip, {"_0-2Kaf9LtM": ["/m/04rlf"]})
    panns = make_clips(["0Ao6GJRiw6k"])
    written |= make_panns_folder(tmp_path / "panns", panns)
    ms = make_clips(["aB3_x-Yz9Qw"])
    written |= make_ms_folder(tmp_path / "old", ms, {"aB3_x-Yz9Qw": (30.0, 40.0)})
    whole = make_clips(["Zz9-a_B1c2D"], seconds=30.0)
    written |= make_whole_folder(tmp_path / "videos", whole)
    served = ["srvonly0001", *bad]
    media = tmp_path / "media"
    for y in served:
        make_media(media / f"{y}.m4a", 42.0, kind="noise")
    nowhere = "e404_gone01"  # the server answers 404
    mirror_ids = [*clips, *short, *pq_clip, *panns, *ms, *whole]
    rows = [(y, 30.0, 40.0) for y in [*mirror_ids, *served, nowhere]]
    rows = [(y, 5.0, 15.0) if y == "Zz9-a_B1c2D" else r for y, r in zip(
        [r[0] for r in rows], rows, strict=True)]  # fmt: skip
    sources = parse_sources([
        {"kind": "tar", "paths": [str(tmp_path / "m" / "*.tar")]},
        {"kind": "parquet", "paths": [str(tmp_path / "m" / "p.parquet")]},
        {"kind": "folder", "path": str(tmp_path / "panns"), "pattern": "Y{ytid}.wav", "cut": True},
        {"kind": "folder", "path": str(tmp_path / "old"),
         "pattern": "{ytid}_{start_ms}_{end_ms}.flac"},
        {"kind": "folder", "path": str(tmp_path / "videos"), "pattern": "{ytid}.{ext}"},
        {"kind": "youtube"},
    ])  # fmt: skip
    res = tmp_path / "results"
    index = build_index(sources, out=res / "sources" / "index.parquet")
    assert set(index["ytid"]) == {*mirror_ids, *bad}
    shard = Layout(res).shard("train", 0)
    log = logging.getLogger("test.sources")
    with FaultServer(media) as srv:
        cfg = DownloadConfig.from_config({"url_template": srv.url_template(), "retries": 0,
                                          "socket_timeout": 5.0, "margin": 1.0})  # fmt: skip
        table = download_shard(
            ShardTable.from_manifest(_manifest(rows)), shard=shard, cfg=cfg, log=log,
            sources=sources, index=res / "sources" / "index.parquet",
            out=shard.table("download"),
        )  # fmt: skip
        asked = {y for y, n in srv.requests.items() if n}
    assert asked == {*served, nowhere}, "a YTID a mirror has reached the server"
    df = table.df
    assert (df.loc[mirror_ids, "download_status"] == "ok").all()
    assert df.loc[tar_ids[0], "source"] == "tar:bal_train00.tar"
    assert df.loc["_0-2Kaf9LtM", "source"] == "parquet:p.parquet"
    assert df.loc["0Ao6GJRiw6k", "source"] == f"folder:{tmp_path / 'panns'}"
    assert df.loc["Zz9-a_B1c2D", "download_reason"].startswith("whole copy")  # cut: auto
    for y in bad:  # broken in the mirror, fetched from YouTube, the mirror's fault recorded
        assert df.loc[y, "download_status"] == "ok", df.loc[y, "download_reason"]
        assert df.loc[y, "source"] == "youtube"
        assert "local copy unusable: tar:bal_train00.tar:" in df.loc[y, "download_reason"]
    assert df.loc["srvonly0001", "source"] == "youtube"
    assert df.loc[nowhere, "download_status"] == "permanent"
    # tar and folder clips are read in place: nothing of theirs is in the download folder
    assert df.loc[tar_ids[0], "media"].startswith("tar:")
    assert not list(shard.download_dir.glob(f"{tar_ids[0]}.*[!t]"))  # only the .offset file

    run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                  sample_rate=SR)  # fmt: skip
    trimmed = run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                       clip_seconds=10.0, keep_intermediate=False)  # fmt: skip
    tdf = trimmed.df
    assert (tdf.loc[[*mirror_ids, *served], "trim_status"] == "ok").all()
    assert (
        bool(tdf.loc["-1nilez17Dg", "short"])
        and abs(tdf.loc["-1nilez17Dg", "duration"] - 9.2) < 1e-3
    )
    assert not tdf.loc[tar_ids, "short"].any()
    params = ft.FeatureParams.from_config({}, sample_rate=SR)
    for y in mirror_ids:
        got, _ = sf.read(str(shard.clip(y)), dtype="float32")
        w = written[y]
        offset = 0.0 if y == "Zz9-a_B1c2D" else 30.0
        start, end = (5.0, 15.0) if y == "Zz9-a_B1c2D" else (30.0, 40.0)
        want = reference_clip(w, tmp_path / "ref", sample_rate=SR, offset=offset, start=start,
                              end=end)  # fmt: skip
        np.testing.assert_array_equal(got, want, err_msg=y)
        a, b = ft.compute(got, params=params), ft.compute(want, params=params)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{y} {name}")

    # a second run with the same sources takes nothing again, from anywhere
    with FaultServer(media) as srv:
        cfg2 = DownloadConfig.from_config({"url_template": srv.url_template(), "retries": 0})
        again = download_shard(
            ShardTable.from_manifest(_manifest(rows)), shard=shard, cfg=cfg2, log=log,
            sources=sources, index=res / "sources" / "index.parquet",
        )  # fmt: skip
        assert not any(srv.requests.values())
    pd.testing.assert_series_equal(again.df["source"], df["source"])


def test_offline_sources_mark_what_no_source_has(tmp_path):
    clips = make_clips(["-0RWZT-miFs"])
    make_tar(tmp_path / "eval00.tar", clips, split="eval")
    sources = parse_sources([{"kind": "tar", "paths": [str(tmp_path / "eval00.tar")]}])
    res = tmp_path / "results"
    build_index(sources, out=res / "index.parquet")
    shard = Layout(res).shard("train", 0)
    rows = [("-0RWZT-miFs", 0.0, 10.0), ("missing0001", 0.0, 10.0)]
    table = download_shard(
        ShardTable.from_manifest(_manifest(rows)),
        shard=shard, cfg=DownloadConfig.from_config({}), sources=sources,
        index=res / "index.parquet",
    )  # fmt: skip
    assert table.df.loc["-0RWZT-miFs", "source"] == "tar:eval00.tar"
    assert table.df.loc["missing0001", "download_status"] == "permanent"
    assert table.df.loc["missing0001", "download_reason"] == NO_SOURCE


# --- the workflow -------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_takes_mirror_clips_and_a_new_source_only_what_is_missing(tmp_path):
    """Real Snakemake over a demo corpus served on loopback, with a tar mirror of half the
    train YTIDs: the mirror's YTIDs never reach the server, the ledger and sources.tsv say where
    each clip came from, a rerun does nothing, and a folder source added later (holding a YTID
    the server answers 404 for) takes exactly that YTID, with no request at all."""
    import subprocess
    import sys

    import yaml

    from audiosetflow import demo
    from audiosetflow import metadata as md

    repo = Path(__file__).resolve().parent.parent
    spec = demo.DemoSpec(clips_per_class=2, seed=11, eval_fraction=0.3)
    demo.write_metadata(tmp_path / "metadata", spec)
    demo.write_media(tmp_path / "media", spec, threads=2)
    corpus = demo.corpus(spec)
    gone = "e404_perm01"  # the server answers 404; the folder source added later has it
    csv = tmp_path / "metadata" / "balanced_train_segments.csv"
    extra = pd.DataFrame({"ytid": [gone], "start": 1.0, "end": 11.0, "labels": "/m/04rlf"})
    md.write_segments(csv, pd.concat([md.read_segments(csv), extra]))
    train = corpus[corpus["split"] == "train"]
    in_tar = list(train["ytid"][::2])
    seg = corpus.set_index("ytid")
    clips = {y: make_clips([y], seconds=seg.loc[y, "end"] - seg.loc[y, "start"])[y] for y in in_tar}
    make_tar(tmp_path / "mirror" / "bal_train00.tar", clips)

    def run(sources, *args, **pacing):
        cfg = {
            "metadata": {"dir": str(tmp_path / "metadata")},
            "labels": ["Music", "Speech"],
            "shard_size": 4,
            "sources": sources,
            "download": {"url_template": url, "retries": 0, "socket_timeout": 5.0, **pacing},
        }
        path = tmp_path / "test-config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
            "--directory", str(tmp_path), "--configfile", str(repo / "config.yaml"), str(path),
            "--cores", "2", "--keep-going", "results/reports/availability.tsv", *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout + proc.stderr

    tar_src = {"kind": "tar", "paths": [str(tmp_path / "mirror" / "*.tar")]}
    with FaultServer(tmp_path / "media") as srv:
        url = srv.url_template()
        first = run([tar_src, {"kind": "youtube"}])
        asked = {y for y, n in srv.requests.items() if n}
        assert asked and not asked & set(in_tar), f"mirror YTIDs requested: {asked & set(in_tar)}"
        led = pd.read_csv(tmp_path / "results/reports/download_ledger.tsv", sep="\t",
                          keep_default_na=False).set_index("ytid")  # fmt: skip
        in_tar = [y for y in in_tar if y in led.index]  # the selected ones
        assert len(in_tar) >= 2
        assert (led.loc[in_tar, "source"] == "tar:bal_train00.tar").all()
        others = [y for y in led.index if y not in in_tar and y != gone]
        assert (led.loc[others, "source"] == "youtube").all()
        assert led.loc[gone, "status"] == "permanent" and led.loc[gone, "source"] == ""
        by_src = pd.read_csv(tmp_path / "results/reports/sources.tsv", sep="\t")
        row = by_src[(by_src["split"] == "train") & (by_src["source"] == "tar:bal_train00.tar")]
        assert int(row["clips"].iloc[0]) == len(in_tar) == int(row["features"].iloc[0])
        feats = pd.read_parquet(tmp_path / "results/features/train").set_index("ytid")
        assert (feats.loc[in_tar, "status"] == "ok").all()

        # only a shard with a YTID the mirror lacks held a `youtube` unit (resources as the
        # job ran, evaluated with the index there)
        held = _youtube_units(first)
        need = {(s, int(n)) for s, n in led.loc[others + [gone], ["split", "shard"]].itertuples(
            index=False)}  # fmt: skip
        assert held and set(held) == {(s, int(n)) for s, n in led[["split", "shard"]].itertuples(
            index=False)}  # fmt: skip
        assert {k for k, v in held.items() if v} == need, (held, need)

        assert "Nothing to be done" in run([tar_src, {"kind": "youtube"}], "-n")

        # a folder source added later: only the YTID still missing is taken, from it
        make_panns_folder(tmp_path / "panns", make_clips([gone]))
        srv.reset_counts()
        panns = {"kind": "folder", "path": str(tmp_path / "panns"), "pattern": "Y{ytid}.wav"}
        run([tar_src, panns, {"kind": "youtube"}])
        assert not any(srv.requests.values()), dict(srv.requests)
        # settings that only pace YouTube requests rerun nothing
        out = run([tar_src, panns, {"kind": "youtube"}], "-n", max_per_hour=100, sleep_requests=1)
        assert "Nothing to be done" in out
    led2 = pd.read_csv(tmp_path / "results/reports/download_ledger.tsv", sep="\t",
                       keep_default_na=False).set_index("ytid")  # fmt: skip
    assert led2.loc[gone, "status"] == "ok"
    assert led2.loc[gone, "source"] == f"folder:{tmp_path / 'panns'}"
    same = led.index.drop(gone)
    pd.testing.assert_series_equal(led2.loc[same, "updated"], led.loc[same, "updated"])


def _youtube_units(out: str) -> dict[tuple[str, int], int]:
    """The `youtube` units of each download job in a Snakemake log: {(split, shard): n}."""
    held = {}
    for block in re.split(r"\n(?=\S*\s*(?:local)?rule \w+:)", out):
        if not re.search(r"(?:local)?rule download:", block):
            continue
        wc = re.search(r"wildcards: split=(\w+), shard=(\d+)", block)
        res = re.search(r"resources: .*?youtube=(\d+)", block)
        if wc and res:
            held[(wc.group(1), int(wc.group(2)))] = int(res.group(1))
    return held


def test_needs_youtube_reads_only_the_shard_ytids(tmp_path):
    clips = make_clips(["inmirror001", "inmirror002"])
    make_tar(tmp_path / "bal_train00.tar", clips)
    src = parse_sources([{"kind": "tar", "paths": [str(tmp_path / "*.tar")]}, {"kind": "youtube"}])
    index = tmp_path / "index.parquet"
    build_index(src, out=index)
    assert not needs_youtube(index, ["inmirror001", "inmirror002"])
    assert needs_youtube(index, ["inmirror001", "notthere001"])
    assert not needs_youtube(index, [])
    assert needs_youtube(tmp_path / "not-built-yet.parquet", ["inmirror001"])
    # given the keyed lookup (what a download job takes as input), the same answers
    lookup = index.with_suffix(".sqlite")
    assert lookup.exists()
    assert not needs_youtube(lookup, ["inmirror001", "inmirror002"])
    assert needs_youtube(lookup, ["inmirror001", "notthere001"])


def test_a_missing_source_stops_snakemake_before_any_job(tmp_path):
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "c.yaml"
    missing = tmp_path / "nowhere" / "bal_train*.tar"
    cfg.write_text(yaml.safe_dump({"sources": [{"kind": "tar", "paths": [str(missing)]}]}))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(repo / "config/demo.yaml"),
           str(cfg), "--cores", "1", "-n"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    line = f"config: sources[0] (tar): no file matches {missing}; fix the path in config.yaml"
    out = proc.stdout + proc.stderr
    assert line in out, out
    assert "Traceback" not in out and not (tmp_path / "results" / "shards").exists()


def test_youtube_added_later_fetches_what_no_source_had(tmp_path):
    """An offline run marks YTIDs no mirror has, and those whose copy is broken; with YouTube
    added to the sources the next run asks it for exactly those."""
    make_tar(tmp_path / "bal_train00.tar", make_clips(["-0RWZT-miFs"]), raw=corrupt_members())
    tar = {"kind": "tar", "paths": [str(tmp_path / "bal_train00.tar")]}
    res = tmp_path / "results"
    rows = [("-0RWZT-miFs", 30.0, 40.0), ("-badtext000", 30.0, 40.0), ("srvonly0001", 30.0, 40.0)]
    shard = Layout(res).shard("train", 0)
    offline = parse_sources([tar])
    build_index(offline, out=res / "index.parquet")
    first = download_shard(ShardTable.from_manifest(_manifest(rows)), shard=shard,
                           cfg=DownloadConfig.from_config({}), sources=offline,
                           index=res / "index.parquet")  # fmt: skip
    assert first.df["download_status"].tolist() == ["ok", "permanent", "permanent"]
    for y in ("-badtext000", "srvonly0001"):
        make_media(tmp_path / "media" / f"{y}.m4a", 42.0, kind="noise")
    with FaultServer(tmp_path / "media") as srv:
        cfg = DownloadConfig.from_config({"url_template": srv.url_template(), "retries": 0})
        second = download_shard(ShardTable.from_manifest(_manifest(rows)), shard=shard, cfg=cfg,
                                sources=parse_sources([tar, {"kind": "youtube"}]),
                                index=res / "index.parquet")  # fmt: skip
        asked = {y for y, n in srv.requests.items() if n}
    assert asked == {"-badtext000", "srvonly0001"}
    assert (second.df["download_status"] == "ok").all()
    assert second.df["source"].tolist() == ["tar:bal_train00.tar", "youtube", "youtube"]


def test_folder_of_whole_videos_skips_sidecars_and_reads_mp4_in_place(tmp_path):
    """yt-dlp's folders hold .json and .jpg beside the media; an M4A whose index comes last
    (ffmpeg's default) is read from the file, not a pipe."""
    folder = tmp_path / "videos"
    y = "aB3_x-Yz9Qw"
    make_media(folder / f"{y}.m4a", 14.0, kind="noise")
    import subprocess

    from audiosetflow.tools import ffmpeg_exe  # moov at the end: not streamable through a pipe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(folder / f"{y}.m4a"), "-c",
                    "copy", str(folder / "tail.m4a")], check=True)  # fmt: skip
    (folder / "tail.m4a").replace(folder / f"{y}.m4a")
    (folder / f"{y}.info.json").write_text("{}")
    (folder / f"{y}.json").write_text("{}")
    (folder / f"{y}.jpg").write_bytes(b"\xff\xd8\xff")
    sources = parse_sources([{"kind": "folder", "path": str(folder), "pattern": "{ytid}.{ext}"}])
    res = tmp_path / "results"
    index = build_index(sources, out=res / "index.parquet")
    assert index["ext"].tolist() == ["m4a"]
    table = download_shard(
        ShardTable.from_manifest(_manifest([(y, 2.0, 12.0)])), shard=Layout(res).shard("train", 0),
        cfg=DownloadConfig.from_config({}), sources=sources, index=res / "index.parquet",
    )  # fmt: skip
    assert table.df.loc[y, "download_status"] == "ok", table.df.loc[y, "download_reason"]
    assert table.df.loc[y, "download_reason"].startswith("whole copy, 14.0")


def test_a_tar_cut_off_keeps_the_members_before_the_cut(tmp_path, caplog):
    clips = make_clips(["-0RWZT-miFs", "--4gqARaEJE", "_0-2Kaf9LtM"], seconds=2.0)
    tar = tmp_path / "bal_train00.tar"
    make_tar(tar, clips)
    with tarfile.open(tar) as t:
        last = t.getmember("audio/bal_train/_0-2Kaf9LtM.flac")
    data = tar.read_bytes()
    tar.write_bytes(data[: last.offset + 100])  # inside the last member's header
    sources = parse_sources([{"kind": "tar", "paths": [str(tar)]}])
    with caplog.at_level(logging.WARNING):
        index = build_index(sources, out=tmp_path / "index.parquet")
    assert sorted(index["ytid"]) == ["--4gqARaEJE", "-0RWZT-miFs"]
    assert "does not end as a complete tar" in caplog.text
    # cut inside a member's data: the members before it are kept, that one is unusable
    tar.write_bytes(data[: last.offset_data + 1000])
    with caplog.at_level(logging.WARNING):
        index = build_index(sources, out=tmp_path / "index.parquet")
    assert len(index) >= 2
