"""Streaming reads of feature shards (learning/stream.py): order, coverage, row-group
skipping, statistics, and a bounded memory footprint."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from audiosetflow.audio.features import FeatureParams, load_split, load_summary, write_shard
from audiosetflow.errors import InputError
from audiosetflow.learning.inputs import channel_stats, stack_channels
from audiosetflow.learning.stream import (
    FeatureStream,
    index_clips,
    index_parts,
    part_streams,
    stream_stats,
)
from audiosetflow.learning.training import seed_columns

# small features: 16 mels, 8 MFCCs; frame-level matrices of (rows, T)
PARAMS = FeatureParams(sample_rate=22050, n_mels=16, n_mfcc=8)
ROWS = PARAMS.rows()


def _ytid(i: int) -> str:
    return f"c{i:010d}"


def _features(i: int, t: int) -> dict[str, np.ndarray]:
    """Features of clip ``i``: log-mel around -50 dB with clip-dependent values."""
    rng = np.random.default_rng(i)
    f = {k: rng.normal(size=(r, t)).astype(np.float32) for k, r in ROWS.items()}
    f["log_mel"] = (-50 + 10 * f["log_mel"] + 0.01 * i).astype(np.float32)
    f["spectral_centroid"] = (2000 + 300 * f["spectral_centroid"]).astype(np.float32)
    return f


def _write(
    folder,
    n: int,
    *,
    t: int = 12,
    shard_size: int = 40,
    row_group_size: int = 8,
    failed=frozenset(),
    order=None,
) -> list[str]:
    """Shards of clips 0..n-1 (``order``: the clips' order in the files); returns the
    YTIDs in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(range(n)) if order is None else list(order)
    for s, lo in enumerate(range(0, n, shard_size)):
        chunk = ids[lo : lo + shard_size]
        meta = pd.DataFrame(
            {
                "ytid": [_ytid(i) for i in chunk],
                "split": "train",
                "start": 0.0,
                "end": 10.0,
                "labels": [["/m/a"] if i % 2 else ["/m/b"] for i in chunk],
                "label_names": [["A"] if i % 2 else ["B"] for i in chunk],
                "status": ["permanent" if i in failed else "ok" for i in chunk],
                "reason": ["download: gone" if i in failed else "" for i in chunk],
                "short": False,
                "duration": 10.0,
            }
        )
        feats = [None if i in failed else _features(i, t) for i in chunk]
        write_shard(
            folder / f"shard-{s:04d}.parquet",
            meta=meta,
            features=feats,
            params=PARAMS,
            row_group_size=row_group_size,
        )
    return [_ytid(i) for i in ids]


def _reference(folder, ytids, extra=()):
    """The in-memory path: whole split loaded, rows picked, channels stacked."""
    lm, meta = load_split(folder)
    pos = pd.Index(meta["ytid"]).get_indexer(ytids)
    assert (pos >= 0).all()
    extras = [load_split(folder, feature=f)[0][pos] for f in extra]
    return stack_channels(lm[pos], extras)


def _epoch(stream, epoch=0, **kw):
    xs, ys, idx = [], [], []
    for b in stream.batches(epoch, **kw):
        xs.append(b.x)
        ys.append(b.y)
        idx.append(b.index)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(idx)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feat") / "train"
    order = np.random.default_rng(5).permutation(200)  # ytids not sorted in the files
    failed = {3, 77, 150}
    file_order = _write(folder, 200, order=order, failed=failed)
    return folder, file_order, failed


def test_shuffled_epochs_yield_every_wanted_clip_once(split):
    folder, _, failed = split
    rng = np.random.default_rng(0)
    wanted = [_ytid(i) for i in rng.choice(200, 90, replace=False) if i not in failed]
    y = (np.arange(len(wanted)) % 2).astype(np.float32)
    index = index_clips(folder, wanted)
    stream = FeatureStream(
        index,
        targets=y,
        extra_channels=["mfcc"],
        batch_size=7,
        shuffle=True,
        seed=3,
        buffer_size=20,
    )
    ref = _reference(folder, wanted, ["mfcc"])
    orders = []
    for epoch in range(3):
        x, yy, idx = _epoch(stream, epoch)
        assert sorted(idx) == list(range(len(wanted)))  # each wanted clip exactly once
        np.testing.assert_array_equal(x, ref[idx])  # the right clip, channels stacked
        np.testing.assert_array_equal(yy, y[idx])
        orders.append(idx)
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    assert not np.array_equal(orders[1], orders[2])
    again = stream.replace()  # a fresh stream, same seed: same orders
    np.testing.assert_array_equal(_epoch(again, 1)[2], orders[1])
    other = stream.replace(seed=4)
    assert not np.array_equal(_epoch(other, 1)[2], orders[1])
    assert all(len(b.x) == 7 for b in list(stream.batches(0))[:-1])


def test_unshuffled_order_is_file_order_and_aligns_with_the_part(split):
    folder, file_order, failed = split
    wanted = [_ytid(i) for i in (150, 9, 120, 9, 40, 199, 0)]  # 150 failed; 9 listed twice
    with pytest.raises(InputError, match=r"no clip with status ok for 1 YTIDs .*c0000000150"):
        index_clips(folder, wanted)
    wanted.remove(_ytid(150))
    stream = FeatureStream(index_clips(folder, wanted), batch_size=4)
    x, y, idx = _epoch(stream)
    assert np.isnan(y).all()  # no targets given
    assert len(idx) == len(wanted)  # a clip listed twice comes twice
    where = {yt: k for k, yt in enumerate(file_order)}
    rank = [where[wanted[i]] for i in idx]
    assert rank == sorted(rank)  # file order
    back = np.empty_like(x)
    back[idx] = x
    np.testing.assert_array_equal(back, _reference(folder, wanted))  # the part's order
    np.testing.assert_array_equal(_epoch(stream)[2], idx)  # deterministic
    np.testing.assert_array_equal(_epoch(stream.replace(shuffle=True), 5, shuffle=False)[2], idx)


def test_row_groups_without_wanted_clips_are_skipped(tmp_path):
    ids = _write(tmp_path / "sorted", 96, shard_size=48, row_group_size=8)  # 12 row groups
    wanted = ids[17:21]  # all in row group 2 of the first shard
    index = index_clips(tmp_path / "sorted", wanted)
    assert index.groups_total == 12
    assert index.groups_pruned == 11  # ytid statistics exclude the other row groups
    assert [(g.file, g.group) for g in index.groups] == [(0, 2)]
    stream = FeatureStream(index, shuffle=True)
    _epoch(stream)
    assert stream.groups_read == 1
    # files in another order: statistics no longer exclude them, the ytid pass does
    order = np.random.default_rng(1).permutation(96)
    ids = _write(tmp_path / "mixed", 96, shard_size=48, row_group_size=8, order=order)
    wanted = [ids[3], ids[60]]
    index = index_clips(tmp_path / "mixed", wanted)
    assert [(g.file, g.group) for g in index.groups] == [(0, 0), (1, 1)]
    stream = FeatureStream(index)
    assert sorted(_epoch(stream)[2]) == [0, 1] and stream.groups_read == 2


def test_streaming_stats_equal_in_memory_stats(split):
    folder, _, failed = split
    wanted = [_ytid(i) for i in range(0, 200, 3) if i not in failed]
    stream = FeatureStream(
        index_clips(folder, wanted), extra_channels=["spectral_centroid", "chroma"], batch_size=5
    )
    mean, std = stream.channel_stats()
    ref_mean, ref_std = channel_stats(_reference(folder, wanted, ["spectral_centroid", "chroma"]))
    assert mean.shape == ref_mean.shape == (3, 16, 1)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(std, ref_std, rtol=1e-6)
    # batches of any size merge to the same statistics
    x = _reference(folder, wanted)
    m2, s2 = stream_stats(x[i : i + 1] for i in range(len(x)))
    np.testing.assert_allclose(m2, channel_stats(x)[0], rtol=1e-6)
    np.testing.assert_allclose(s2, channel_stats(x)[1], rtol=1e-6)


def test_part_streams_two_splits_and_summary_columns(tmp_path):
    _write(tmp_path / "train", 30)
    ev = tmp_path / "eval"
    _write(ev, 10, order=range(100, 110))
    parts = {
        "train": pd.DataFrame(
            {"ytid": [_ytid(i) for i in (4, 2, 28)], "split": "train", "target": [1, 0, 1]}
        ),
        "test": pd.DataFrame(
            {
                "ytid": [_ytid(105), _ytid(7), _ytid(101)],
                "split": ["eval", "train", "eval"],
                "target": [0, 1, 1],
            }
        ),
    }
    streams = part_streams(parts, {"train": tmp_path / "train", "eval": ev})
    assert list(streams) == ["train", "test"]
    assert streams["test"].shape == (3, 1, 16, 12)
    x, y, idx = _epoch(streams["test"])
    np.testing.assert_array_equal(y, parts["test"]["target"].to_numpy(np.float32)[idx])
    np.testing.assert_array_equal(
        x[list(idx).index(1)], _reference(tmp_path / "train", [_ytid(7)])[0]
    )
    cols = seed_columns(load_summary(ev).columns)
    got = streams["test"].read_columns(cols)
    s = load_summary(ev).set_index("ytid")
    np.testing.assert_array_equal(got[0], s.loc[_ytid(105), cols].to_numpy(np.float32))
    with pytest.raises(InputError, match="clips of the eval split but there are no eval"):
        index_parts(parts, {"train": tmp_path / "train", "eval": None})


def test_memory_is_bounded_by_buffer_and_one_row_group(tmp_path):
    """Not timed: the reader's own bookkeeping and the numpy memory it allocates
    (tracemalloc) stay within the shuffle buffer + one row group + a batch, for 4x the
    clips as for 1x."""
    t, rg, buffer, batch = 200, 16, 24, 8
    peaks = {}
    for n in (150, 600):
        folder = tmp_path / f"n{n}"
        ids = _write(folder, n, t=t, shard_size=200, row_group_size=rg)
        stream = FeatureStream(
            index_clips(folder, ids), batch_size=batch, shuffle=True, buffer_size=buffer
        )
        clip = stream.clip_bytes
        tracemalloc.start()
        try:
            for b in stream.batches(0):
                del b
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert stream.peak_buffered == buffer
        assert stream.peak_group == rg
        # buffer + a row group (its columns, then stacked) + two batches, plus slack
        assert peaks[n] < (buffer + 3 * rg + 2 * batch) * clip + 512_000, (n, peaks[n])
        assert peaks[n] < n * clip / 2
    assert peaks[600] < 1.25 * peaks[150] + 100_000
