"""Issue 21's keyed mirror index and issue 19's ``audio.keep_clips: false``: clips read in
place from a tar mirror are not stored again, and everything that reads a clip (features made
again, the report's players, ``predict``) reads its segment from the mirror."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from mirrors import make_clips, make_tar

from audiosetflow.acquisition.sources import (
    build_index,
    lookup,
    lookup_path,
    parse_sources,
)

REPO = Path(__file__).resolve().parent.parent


def test_keyed_lookup_equals_the_parquet_scan_and_a_stale_table_is_not_used(tmp_path):
    ids = ["-0RWZT-miFs", "--4gqARaEJE", "_0-2Kaf9LtM", "-1nilez17Dg"]
    clips = make_clips(ids, seconds=1.0)
    make_tar(tmp_path / "m" / "bal_train00.tar", dict(list(clips.items())[:3]))
    make_tar(tmp_path / "m" / "eval00.tar", dict(list(clips.items())[2:]), split="eval")
    sources = parse_sources([{"kind": "tar", "paths": [str(tmp_path / "m" / "*.tar")]}])
    index = build_index(sources, out=tmp_path / "index.parquet")
    table = lookup_path(tmp_path / "index.parquet")
    assert table.exists()
    want = [*ids, "nowhere0000"]
    keyed = lookup(table, want)
    assert keyed == lookup(index, want)  # the DataFrame: the rows as built
    assert keyed == lookup(tmp_path / "index.parquet", want)  # through the table beside it
    assert "nowhere0000" not in keyed and len(keyed["_0-2Kaf9LtM"]) == 1  # first file wins
    assert keyed["_0-2Kaf9LtM"][0].origin == "tar:bal_train00.tar"
    # a Parquet index newer than the table beside it (written by something else) is read
    # itself: the table is never taken for an index it was not made from
    os.utime(table, ns=(1, 1))
    df = index[index["ytid"] != "-1nilez17Dg"]
    df.to_parquet(tmp_path / "index.parquet", index=False)
    assert "-1nilez17Dg" not in lookup(tmp_path / "index.parquet", want)
    assert "-1nilez17Dg" in lookup(table, want)


def test_keep_clips_false_reads_clips_from_the_mirror(tmp_path):
    """Real Snakemake, a tar mirror of every selected clip and no YouTube, keep_clips false:
    no clip FLAC stays, the features are there, and the same features come from the clip
    read in place; a forced rerun of the features reads the mirror and gives the same rows;
    the report's player and ``predict``'s file discovery read the clips in place."""
    import yaml

    from audiosetflow import demo
    from audiosetflow.audio import features as ft
    from audiosetflow.audio.inplace import clip_file, read_segment, source_record
    from audiosetflow.cli import _expand
    from audiosetflow.reporting.errors import _player

    spec = demo.DemoSpec(clips_per_class=2, seed=5, eval_fraction=0.3)
    demo.write_metadata(tmp_path / "metadata", spec)
    corpus = demo.corpus(spec)
    for split, tar in (("train", "bal_train00.tar"), ("eval", "eval00.tar")):
        part = corpus[corpus["split"] == split]
        clips = {
            r.ytid: make_clips([r.ytid], seconds=r.end - r.start)[r.ytid] for r in part.itertuples()
        }
        make_tar(tmp_path / "mirror" / tar, clips)
    cfg = {
        "metadata": {"dir": str(tmp_path / "metadata")},
        "labels": ["Music", "Speech"],
        "shard_size": 4,
        "sources": [{"kind": "tar", "paths": [str(tmp_path / "mirror" / "*.tar")]}],
        "audio": {"keep_clips": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))

    def run(*args):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"),
               str(tmp_path / "c.yaml"), "--cores", "2", "results/reports/availability.tsv",
               *args]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stdout + proc.stderr

    run()
    res = tmp_path / "results"
    feats = pd.read_parquet(res / "features" / "train")
    ok = feats[feats["status"] == "ok"]
    assert len(ok) >= 4
    clips_dir = res / "audio" / "clips" / "train"
    assert not list(clips_dir.glob("*.flac")), "a clip was kept"
    assert sorted(p.stem for p in clips_dir.glob("*.source")) == sorted(ok["ytid"])

    X, meta = ft.load_split(res / "features" / "train", feature="mfcc")
    _, params = ft.load_meta(res / "features" / "train")
    for i in (0, len(meta) - 1):
        clip = clips_dir / f"{meta['ytid'].iloc[i]}.flac"
        y, sr = read_segment(clip)
        assert sr == params.sample_rate and len(y) == round(10.0 * sr)
        np.testing.assert_array_equal(ft.compute(y, params=params)["mfcc"], X[i])

    # features made again read the clips from the mirror: the same rows
    run("--forcerun", "features")
    again = pd.read_parquet(res / "features" / "train")
    pd.testing.assert_frame_equal(again, feats)
    assert not list(clips_dir.glob("*.flac"))
    assert "Nothing to be done" in run("-n")

    # the report's player and predict's inputs
    clip = clips_dir / f"{ok['ytid'].iloc[0]}.flac"
    assert "<audio" in _player(clip)
    files, errors = _expand([str(clips_dir), str(clip)])
    assert not errors and str(clip) in files and len(files) == len(ok) + 1
    with clip_file(clip) as path:
        assert path != clip and path.stat().st_size > 1000
    assert not path.exists()  # the temporary copy is gone afterwards
    # the export reads it in place too: its bytes, `audiosetflow clip` and a lhotse recording
    # (a command source) give the clip's samples
    import io

    import soundfile as sf
    from lhotse import Recording

    from audiosetflow.export.audio import clip_flac_bytes
    from audiosetflow.export.formats import lhotse_records

    y, sr = read_segment(clip)
    data = clip_flac_bytes(root=res, split="train", ytid=clip.stem)
    np.testing.assert_array_equal(sf.read(io.BytesIO(data), dtype="float32")[0], y)
    out = subprocess.run([sys.executable, "-m", "audiosetflow", "clip", str(clip)],
                         capture_output=True, check=True, timeout=120).stdout  # fmt: skip
    np.testing.assert_array_equal(sf.read(io.BytesIO(out), dtype="float32")[0], y)

    class _Clip:  # the fields lhotse_records reads
        ytid, split, start, end, source = clip.stem, "train", 0.0, 10.0, "tar"
        indices, mids, names = (0,), ("/m/04rlf",), ("Music",)
        audio = type("A", (), {"sample_rate": sr, "frames": len(y), "duration": len(y) / sr})

    rec = lhotse_records(_Clip, root=res)["recordings"]
    assert rec["sources"][0]["type"] == "command"
    loaded = Recording.from_dict(rec).load_audio()
    np.testing.assert_allclose(loaded[0], y, atol=1e-6)

    # a mirror that is gone: one line naming the clip and what to do
    (tmp_path / "mirror" / "bal_train00.tar").rename(tmp_path / "moved.tar")
    try:
        read_segment(clip)
    except Exception as exc:  # noqa: BLE001 - its message is what is checked
        assert str(clip) in str(exc) and "--forcerun download" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("read_segment read a clip whose mirror is gone")
    assert source_record(clip).exists()


def _in_place_shard(root: Path, media: dict[str, Path], *, start: float, end: float):
    """A shard whose download stage found every YTID in place in a folder mirror."""
    from audiosetflow.shard import Layout, ShardTable, Status

    shard = Layout(root).shard("train", 0)
    man = pd.DataFrame({"ytid": list(media), "split": "train", "shard": 0, "start": start,
                        "end": end, "labels": "/m/x"})  # fmt: skip
    table = ShardTable.from_manifest(man)
    for y, path in media.items():
        table.set("download", y, Status.OK, media=f"file:{path}")
    table.save(shard, shard.table("download"))
    return shard


def test_decode_once_gives_the_features_of_the_kept_clips(tmp_path):
    """keep_clips false: the trim stage writes no FLAC (only the .duration and .source
    records) and keeps the window; the features stage cuts each clip from it in memory, then
    deletes it. The shard is the same, byte for byte, as with keep_clips true; a rerun of the
    features (windows gone) reads the mirror and writes it again the same; keep_intermediate
    keeps the windows."""
    from audiosetflow.audio.features import FeatureParams, run_features
    from audiosetflow.audio.transcode import run_transcode
    from audiosetflow.audio.trim import run_trim

    ids = ["-inplace0001", "_inplace0002", "inplace00003"]
    media = {}
    import soundfile as sf

    for y, (samples, sr) in make_clips(ids, seconds=8.0).items():  # short: padded and flagged
        media[y] = tmp_path / "mirror" / f"{y}.flac"
        media[y].parent.mkdir(exist_ok=True)
        sf.write(str(media[y]), samples, sr)
    params = FeatureParams(sample_rate=16000, n_mels=40, n_fft=512, hop_length=256)

    def run(name: str, keep_clips: bool, keep_intermediate: bool = False):
        shard = _in_place_shard(tmp_path / name, media, start=0.0, end=10.0)
        run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                      sample_rate=16000)  # fmt: skip
        trimmed = run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"),
                           clip_seconds=10.0, keep_clips=keep_clips,
                           keep_intermediate=keep_intermediate)  # fmt: skip
        windows = sorted(p.name for p in shard.pcm_dir.iterdir())
        flacs = sorted(p.name for p in shard.clips_dir.glob("*.flac"))
        run_features(shard.table("trim"), shard=shard, out=shard.parquet,
                     out_table=shard.table("features"), params=params, names={},
                     keep_clips=keep_clips, keep_intermediate=keep_intermediate)  # fmt: skip
        return shard, trimmed, windows, flacs

    kept, kept_trim, kept_windows, kept_flacs = run("kept", True)
    once, once_trim, once_windows, once_flacs = run("once", False)
    assert kept_flacs == [f"{y}.flac" for y in sorted(ids)] and kept_windows == []
    assert once_flacs == [] and once_windows == [f"{y}.wav" for y in sorted(ids)]
    for col in ("trim_status", "duration", "short"):
        assert once_trim.df[col].tolist() == kept_trim.df[col].tolist(), col
    assert once_trim.df["short"].all() and once_trim.passed("trim") == sorted(ids)
    assert once.parquet.read_bytes() == kept.parquet.read_bytes()
    assert list(once.pcm_dir.iterdir()) == []  # the windows went with the features
    assert sorted(p.name for p in once.clips_dir.iterdir()) == sorted(
        f"{y}{s}" for y in ids for s in (".duration", ".source")
    )
    # the features again, with no window left: cut from the mirror, the same file
    before = once.parquet.read_bytes()
    once.parquet.unlink()
    run_features(once.table("trim"), shard=once, out=once.parquet,
                 out_table=once.table("features"), params=params, names={},
                 keep_clips=False)  # fmt: skip
    assert once.parquet.read_bytes() == before
    # keep_intermediate: the windows stay
    inter, *_ = run("inter", False, keep_intermediate=True)
    assert sorted(p.name for p in inter.pcm_dir.iterdir()) == [f"{y}.wav" for y in sorted(ids)]
    assert inter.parquet.read_bytes() == before
