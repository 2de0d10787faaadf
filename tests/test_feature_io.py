"""Parquet shards of features: write_shard, load_split, load_summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from audiosetflow.audio.features import (
    FRAME_FEATURES,
    SCHEMA_VERSION,
    SUMMARY_FEATURES,
    FeatureParams,
    compute,
    load_split,
    load_summary,
    read_params,
    summarize,
    summary_columns,
    write_shard,
)

SR = 22050
PARAMS = FeatureParams(sample_rate=SR)


def _clip(i: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * SR)) / SR
    return (
        0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(len(t))
    ).astype(np.float32)


def _shard(n: int, failed: set[int] = frozenset(), prefix: str = "a", split: str = "train"):
    rows, feats = [], []
    for i in range(n):
        bad = i in failed
        rows.append(
            {
                "ytid": f"{prefix}{i:010d}",
                "split": split,
                "start": 30.0 + i,
                "end": 40.0 + i,
                "labels": ["/m/04rlf", "/m/09x0r"] if i % 2 else ["/m/07yv9"],
                "label_names": ["Music", "Speech"] if i % 2 else ["Vehicle"],
                "status": "permanent" if bad else "ok",
                "reason": "download: Video unavailable" if bad else "",
                "short": i == 1,
                "duration": float("nan") if bad else 10.0 - (i == 1),
            }
        )
        feats.append(None if bad else compute(_clip(i), params=PARAMS))
    return pd.DataFrame(rows), feats


def test_roundtrip_frames_summary_and_metadata(tmp_path) -> None:
    meta, feats = _shard(6, failed={2, 4})
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    ok = [i for i in range(6) if feats[i] is not None]
    for name in FRAME_FEATURES:
        X, m = load_split(tmp_path, feature=name)
        assert X.dtype == np.float32 and X.flags.c_contiguous
        assert X.shape == (4, *feats[0][name].shape)
        for row, i in enumerate(ok):
            np.testing.assert_array_equal(X[row], feats[i][name])
        assert m["ytid"].tolist() == meta["ytid"].iloc[ok].tolist()
    X, m = load_split(tmp_path)  # log_mel by default
    assert X.shape == (4, 128, 1 + SR // 512)
    assert m["labels"].iloc[1] == ["/m/04rlf", "/m/09x0r"]
    assert m["label_names"].iloc[0] == ["Vehicle"]
    assert m["short"].tolist() == [False, True, False, False]
    assert (m["sample_rate"] == SR).all() and (m["n_frames"] == 1 + SR // 512).all()
    assert m["start"].tolist() == [30.0, 31.0, 33.0, 35.0]

    s = load_summary(tmp_path)
    assert s["ytid"].tolist() == m["ytid"].tolist()
    cols = summary_columns(PARAMS)
    assert set(SUMMARY_FEATURES) <= set(s.columns) and set(cols) <= set(s.columns)
    for row, i in enumerate(ok):
        np.testing.assert_allclose(s[cols].iloc[row].to_numpy(), summarize(feats[i], params=PARAMS))
    np.testing.assert_allclose(s["mfcc_mean_03"].iloc[0], feats[0]["mfcc"][3].mean(), rtol=1e-6)
    np.testing.assert_allclose(s["zcr_std"].iloc[2], feats[3]["zcr"].std(), rtol=1e-6)


def test_failed_rows_are_kept_with_null_features(tmp_path) -> None:
    meta, feats = _shard(5, failed={0, 3})
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    s = load_summary(tmp_path, status=None)
    assert len(s) == 5
    assert s["status"].tolist()[0] == "permanent"
    assert s["reason"].tolist()[:2] == ["download: Video unavailable", ""]
    assert s.loc[[0, 3], SUMMARY_FEATURES].isna().all().all()
    assert s.loc[[1, 2, 4], SUMMARY_FEATURES].notna().all().all()
    X, m = load_split(tmp_path, feature="mfcc", status=None)
    assert X.shape[0] == 5 and np.isnan(X[[0, 3]]).all() and np.isfinite(X[[1, 2, 4]]).all()
    t = pq.read_table(tmp_path / "shard-0000.parquet")
    assert t.column("log_mel").null_count == 2 and t.column("n_frames").null_count == 2
    only_failed = load_summary(tmp_path, status="permanent")
    assert only_failed["ytid"].tolist() == [meta["ytid"][0], meta["ytid"][3]]


def test_file_schema_and_key_value_metadata(tmp_path) -> None:
    meta, feats = _shard(3)
    path = tmp_path / "shard-0007.parquet"
    write_shard(path, meta=meta, features=feats, params=PARAMS)
    f = pq.ParquetFile(path)
    schema = f.schema_arrow
    assert str(schema.field("log_mel").type) == "list<element: float>"
    assert str(schema.field("labels").type) == "list<element: string>"
    assert str(schema.field("mfcc_mean_00").type) == "double"
    kv = {k.decode(): v.decode() for k, v in schema.metadata.items() if b"audiosetflow" in k}
    assert int(kv["audiosetflow.schema_version"]) == SCHEMA_VERSION
    assert json.loads(kv["audiosetflow.feature_params"])["n_mels"] == 128
    assert json.loads(kv["audiosetflow.frame_features"])["chroma"]["rows"] == 12
    assert json.loads(kv["audiosetflow.summary_features"]) == SUMMARY_FEATURES
    assert read_params(path) == (SCHEMA_VERSION, PARAMS)
    md = f.metadata.row_group(0).column(schema.get_field_index("ytid"))
    assert md.compression == "ZSTD"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_empty_shard_has_full_schema(tmp_path) -> None:
    meta = pd.DataFrame(
        columns=["ytid", "split", "start", "end", "labels", "label_names", "status", "reason",
                 "short", "duration"]
    )  # fmt: skip
    path = tmp_path / "shard-0000.parquet"
    write_shard(path, meta=meta, features=[], params=PARAMS)
    t = pq.read_table(path)
    assert t.num_rows == 0
    assert {"ytid", "log_mel", "rolloff", *SUMMARY_FEATURES} <= set(t.column_names)
    X, m = load_split(tmp_path)
    assert X.shape == (0, 128, 0) and len(m) == 0 and "ytid" in m.columns
    assert len(load_summary(tmp_path)) == 0
    # an empty shard next to a full one changes nothing
    meta2, feats2 = _shard(2, prefix="b")
    write_shard(tmp_path / "shard-0001.parquet", meta=meta2, features=feats2, params=PARAMS)
    X, m = load_split(tmp_path, feature="zcr")
    assert X.shape == (2, 1, 1 + SR // 512) and m["ytid"].str.startswith("b").all()


def test_several_shards_in_name_order(tmp_path) -> None:
    for n, prefix in ((2, "c"), (0, "a"), (1, "b")):
        meta, feats = _shard(2, prefix=prefix)
        write_shard(tmp_path / f"shard-{n:04d}.parquet", meta=meta, features=feats, params=PARAMS)
    (tmp_path / "notes.parquet").write_bytes(b"not a shard")  # ignored: not shard-*.parquet
    X, m = load_split(tmp_path, feature="chroma")
    assert [y[0] for y in m["ytid"]] == ["a", "a", "b", "b", "c", "c"]
    assert X.shape == (6, 12, 1 + SR // 512)
    assert load_summary(tmp_path)["ytid"].tolist() == m["ytid"].tolist()


def test_duckdb_reads_the_shards(tmp_path) -> None:
    import duckdb

    meta, feats = _shard(4, failed={1})
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    q = f"""select status, count(*) n, avg(zcr_mean) z, max(len(log_mel)) l
            from read_parquet('{tmp_path}/shard-*.parquet') group by status order by n"""
    rows = duckdb.sql(q).fetchall()
    assert rows[0][:2] == ("permanent", 1) and rows[0][2] is None
    assert rows[1][:2] == ("ok", 3) and rows[1][3] == 128 * (1 + SR // 512)


def test_mixed_parameters_are_refused(tmp_path) -> None:
    meta, feats = _shard(1)
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    other = FeatureParams(sample_rate=SR, n_mels=64)
    meta2, _ = _shard(1, prefix="b")
    f2 = [compute(_clip(0), params=other)]
    write_shard(tmp_path / "shard-0001.parquet", meta=meta2, features=f2, params=other)
    with pytest.raises(ValueError, match="different feature parameters"):
        load_split(tmp_path)
    with pytest.raises(ValueError, match="different feature parameters"):
        load_summary(tmp_path)


def test_bad_input_leaves_no_file(tmp_path) -> None:
    meta, feats = _shard(2)
    path = tmp_path / "shard-0000.parquet"
    with pytest.raises(ValueError, match="feature dicts"):
        write_shard(path, meta=meta, features=feats[:1], params=PARAMS)
    bad = dict(feats[1], mfcc=feats[1]["mfcc"][:5])
    with pytest.raises(ValueError, match="mfcc has shape"):
        write_shard(path, meta=meta, features=[feats[0], bad], params=PARAMS)
    with pytest.raises(ValueError, match="lacks columns"):
        write_shard(path, meta=meta.drop(columns=["short"]), features=feats, params=PARAMS)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replace(tmp_path) -> None:
    path = tmp_path / "shard-0000.parquet"
    meta, feats = _shard(3)
    write_shard(path, meta=meta, features=feats, params=PARAMS)
    write_shard(path, meta=meta.iloc[:1], features=feats[:1], params=PARAMS)
    assert pq.read_metadata(path).num_rows == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_missing_folder_and_unknown_feature(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no shard"):
        load_summary(tmp_path)
    meta, feats = _shard(1)
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    with pytest.raises(ValueError, match="unknown feature"):
        load_split(tmp_path, feature="spectral_flux")


def test_labels_given_as_comma_separated_strings(tmp_path) -> None:
    meta, feats = _shard(2)
    meta["labels"] = ["/m/a,/m/b", "/m/c"]
    meta["label_names"] = [["A", "B"], ["C"]]
    write_shard(tmp_path / "shard-0000.parquet", meta=meta, features=feats, params=PARAMS)
    _, m = load_split(tmp_path, feature="rolloff")
    assert m["labels"].tolist() == [["/m/a", "/m/b"], ["/m/c"]]


@pytest.mark.parametrize("case", ["uniform", "lengths_change_after_the_first_group", "none_ok"])
def test_shard_writer_a_row_group_at_a_time_writes_the_same_file(tmp_path, case) -> None:
    """ShardWriter fed one row group at a time (the features stage) writes the very bytes
    write_shard writes from all rows at once, also when the clips' lengths change after the
    first row group (the schema then records no n_frames) and when no clip has features."""
    import hashlib

    from audiosetflow.audio.features import ShardWriter

    n = 70
    failed = set(range(n)) if case == "none_ok" else {2, 65}
    meta, feats = _shard(n, failed)
    if case == "lengths_change_after_the_first_group":
        feats[66] = compute(_clip(66, seconds=1.5), params=PARAMS)
    whole, grouped = tmp_path / "whole.parquet", tmp_path / "grouped.parquet"
    write_shard(whole, meta=meta, features=feats, params=PARAMS, row_group_size=16)
    with ShardWriter(grouped, params=PARAMS, row_group_size=16) as writer:
        for i in range(0, n, 16):
            writer.add(
                meta=meta.iloc[i : i + 16].reset_index(drop=True), features=feats[i : i + 16]
            )
    assert (
        hashlib.sha256(grouped.read_bytes()).digest() == hashlib.sha256(whole.read_bytes()).digest()
    )
    shape = json.loads(pq.read_schema(grouped).metadata[b"audiosetflow.frontend"])["log_mel_shape"]
    n_frames = {f["log_mel"].shape[1] for f in feats if f is not None}
    assert shape[1] == (n_frames.pop() if len(n_frames) == 1 else None)
    assert pq.ParquetFile(grouped).metadata.num_row_groups == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_shard_writer_leaves_nothing_when_the_block_fails(tmp_path) -> None:
    from audiosetflow.audio.features import ShardWriter

    meta, feats = _shard(20)
    out = tmp_path / "shard.parquet"
    with pytest.raises(RuntimeError, match="stop"), ShardWriter(out, params=PARAMS) as writer:
        writer.add(meta=meta, features=feats)
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
