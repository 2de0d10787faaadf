"""The mirror fixtures of tests/mirrors.py are what issue 11 describes (fast, no workflow)."""

from __future__ import annotations

import io
import tarfile

import mirrors as m
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

SEG = {y: (30.0 + k, 40.0 + k) for k, y in enumerate(m.YTIDS)}


@pytest.fixture(scope="module")
def clips():
    return m.make_clips(m.YTIDS[:5], seconds=2.0, every_44k=5)


def test_signals_are_deterministic_distinct_and_dash_ids():
    a, b = m.signal("-0RWZT-miFs", seconds=0.5), m.signal("-0RWZT-miFs", seconds=0.5)
    assert np.array_equal(a, b) and a.dtype == np.float32 and len(a) == 24_000
    assert not np.allclose(a, m.signal("--4gqARaEJE", seconds=0.5))
    assert 0.05 < np.abs(a).max() <= 0.95
    assert m.signal("x", seconds=0.1, channels=2).shape == (4800, 2)
    assert sum(y.startswith("-") for y in m.YTIDS) >= 3
    assert all(len(y) == 11 for y in m.YTIDS) and all(len(y) == 11 for y in m.corrupt_members())


def test_make_clips_44k_share(clips):
    assert [sr for _, sr in clips.values()] == [48_000] * 4 + [44_100]
    assert len(clips[m.YTIDS[4]][0]) == 88_200


def test_tar_members_offsets_and_samples(tmp_path, clips):
    bad = m.corrupt_members()
    path = tmp_path / "bal_train00.tar"
    written = m.make_tar(path, clips, raw=bad)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [t.name for t in members]
    assert names == [f"audio/bal_train/{y}.flac" for y in [*clips, *bad]]
    raw = path.read_bytes()
    for t in members:
        ytid = t.name.rsplit("/", 1)[1][: -len(".flac")]
        data = raw[t.offset_data : t.offset_data + t.size]  # seek straight to the member
        if ytid in bad:
            assert data == bad[ytid]
            continue
        w = written[ytid]
        assert w.name == t.name and w.subtype == "PCM_24"
        info = sf.info(io.BytesIO(data))
        assert (info.format, info.subtype, info.samplerate) == ("FLAC", "PCM_24", w.sample_rate)
        y, _ = sf.read(io.BytesIO(data), dtype="float32")
        assert np.array_equal(y, w.samples)
        # the expected samples are the generated ones to 24-bit precision
        assert np.abs(w.samples - clips[ytid][0]).max() <= 2**-23
    assert m.make_tar(tmp_path / "eval00.tar", clips, split="eval")[m.YTIDS[0]].name == (
        f"audio/eval/{m.YTIDS[0]}.flac"
    )


def test_corrupt_members_do_not_decode():
    bad = m.corrupt_members()
    trunc, text, empty = bad["-badtrunc00"], bad["-badtext000"], bad["-badempty00"]
    assert empty == b"" and b"unavailable" in text
    assert trunc.startswith(b"fLaC")
    whole = len(m.flac_bytes(m.signal("-badtrunc00"), 48_000))
    assert len(trunc) == whole // 2
    with pytest.raises(sf.LibsndfileError):
        sf.read(io.BytesIO(text))
    with pytest.raises(sf.LibsndfileError):
        sf.read(io.BytesIO(empty))


def test_short_clip():
    ((y, sr),) = m.short_clip("-shortclip0").values()
    assert sr == 48_000 and len(y) / sr == pytest.approx(9.2)


def test_parquet_schema_and_row_groups(tmp_path, clips):
    labels = {y: ["/m/09x0r", "/m/04rlf"] if k % 2 else ["/m/0jbk"] for k, y in enumerate(clips)}
    bad = {"-badempty00": b""}
    path = tmp_path / "bal_train.parquet"
    written = m.make_parquet(path, clips, labels, raw=bad, row_group_size=2)
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 3 and f.metadata.num_rows == 6
    schema = f.schema_arrow
    assert schema.field("video_id").type == pa.string()
    assert schema.field("audio").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("labels").type == pa.list_(pa.string())
    assert schema.field("human_labels").type == pa.list_(pa.string())
    rg = f.read_row_group(1).to_pylist()  # read by row group
    assert [r["video_id"] for r in rg] == list(clips)[2:4]
    row = rg[1]
    assert row["labels"] == ["/m/09x0r", "/m/04rlf"] and row["human_labels"] == ["Speech", "Music"]
    assert row["audio"]["path"] == f"audio/bal_train/{row['video_id']}.flac"
    y, sr = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    assert np.array_equal(y, written[row["video_id"]].samples) and sr == 48_000
    last = f.read_row_group(2).to_pylist()[-1]
    assert last["video_id"] == "-badempty00" and last["audio"]["bytes"] == b""
    assert last["labels"] == []


def test_panns_folder_is_32k_16bit(tmp_path, clips):
    written = m.make_panns_folder(tmp_path / "panns", clips)
    assert sorted(p.name for p in (tmp_path / "panns").iterdir()) == sorted(
        f"Y{y}.wav" for y in clips
    )
    for w in written.values():
        info = sf.info(str(tmp_path / "panns" / w.name))
        assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 32_000)
        assert info.frames == 64_000  # 2 s, whatever the clip's own rate
        y, _ = sf.read(str(tmp_path / "panns" / w.name), dtype="float32")
        assert np.array_equal(y, w.samples)


def test_ms_and_whole_folders(tmp_path, clips):
    ms = m.make_ms_folder(tmp_path / "old", clips, SEG)
    names = sorted(p.name for p in (tmp_path / "old").iterdir())
    assert names == sorted(m.ms_name(y, *SEG[y]) for y in clips)
    assert ms[m.YTIDS[1]].name == f"{m.YTIDS[1]}_31000_41000.flac"
    long = m.make_clips(m.YTIDS[:2], seconds=12.0, sample_rate=16_000)
    whole = m.make_whole_folder(tmp_path / "whole", long)
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == sorted(
        f"{y}.flac" for y in long
    )
    assert whole[m.YTIDS[0]].seconds == pytest.approx(12.0)
    assert sf.info(str(tmp_path / "whole" / whole[m.YTIDS[0]].name)).subtype == "PCM_16"


def test_reference_clip_is_the_segment(tmp_path):
    clips = m.make_clips(m.YTIDS[:1], seconds=1.0)
    (w,) = m.make_tar(tmp_path / "a.tar", clips).values()
    ref = m.reference_clip(w, tmp_path / "ref", sample_rate=22050, start=5.0, end=6.0,
                           offset=5.0, clip_seconds=1.0)  # fmt: skip
    assert ref.dtype == np.float32 and len(ref) == 22050
    # a faithful (band-limited) copy of the expected samples: same energy, same peak
    assert np.sqrt(np.mean(ref**2)) == pytest.approx(np.sqrt(np.mean(w.samples**2)), rel=0.1)
