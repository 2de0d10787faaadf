"""The offline demo corpus: a pure function of its spec, AudioSet-format metadata, and media
whose content matches the labels (events of the labelled kind inside the segment only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audiosetflow import demo
from audiosetflow import metadata as md
from audiosetflow.audio import codec as audio

SPEECH, MUSIC, VEHICLE = (demo.CLASSES[k][0] for k in ("speech", "music", "other"))
SR = demo.MEDIA_SR


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return demo.corpus(demo.DemoSpec(clips_per_class=40, seed=3))


def test_corpus_is_a_function_of_the_spec(corpus):
    pd.testing.assert_frame_equal(demo.corpus(demo.DemoSpec(clips_per_class=40, seed=3)), corpus)
    other = demo.corpus(demo.DemoSpec(clips_per_class=40, seed=4))
    assert not set(other["ytid"]) & set(corpus["ytid"])
    assert not np.array_equal(other["seed"], corpus["seed"])


def test_corpus_rows(corpus):
    assert len(corpus) == 120
    assert corpus["kind"].value_counts().to_dict() == {"speech": 40, "music": 40, "other": 40}
    assert corpus["ytid"].is_unique
    assert corpus["ytid"].str.fullmatch(r"[A-Za-z0-9_-]{11}").all()
    assert corpus["ytid"].str.startswith("-").any()
    assert set(corpus["split"]) == {"train", "eval"}
    seg = corpus["end"] - corpus["start"]
    full = np.isclose(seg, 10.0)
    assert (full | seg.between(5.0, 9.0)).all()
    assert (corpus["start"] >= 0).all() and (corpus["media_seconds"] >= corpus["end"] - 1e-9).all()
    # a short segment ends its video, as AudioSet's short ones do
    assert np.allclose(corpus.loc[~full, "media_seconds"], corpus.loc[~full, "end"])
    labels = corpus["labels"].str.split(",")
    for kind, want in (("music", [MUSIC]), ("other", [VEHICLE])):
        assert all(v == want for v in labels[corpus["kind"] == kind])
    speech = labels[corpus["kind"] == "speech"]
    assert all(v in ([SPEECH], [SPEECH, MUSIC]) for v in speech)
    assert any(v == [SPEECH, MUSIC] for v in speech)  # some speech over music


def test_write_metadata(tmp_path):
    spec = demo.DemoSpec(clips_per_class=5, seed=2)
    assert demo.write_metadata(tmp_path, spec)
    assert not demo.write_metadata(tmp_path, spec)  # already there for this spec
    c = demo.corpus(spec)
    known = [m for m, _, _ in demo.CLASSES.values()]
    for split, name in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        seg = md.read_segments(tmp_path / name, known_mids=known)
        want = c.loc[c["split"] == split]
        assert seg["ytid"].tolist() == want["ytid"].tolist()
        assert seg["labels"].tolist() == want["labels"].tolist()
        assert np.allclose(seg["start"], want["start"]) and np.allclose(seg["end"], want["end"])
    assert len((tmp_path / "class_labels_indices.csv").read_text().splitlines()) == 4
    assert demo.write_metadata(tmp_path, demo.DemoSpec(clips_per_class=6, seed=2))


def test_synthesis_is_deterministic(corpus):
    rows = [corpus.loc[corpus["kind"] == k].iloc[0] for k in ("speech", "music", "other")]
    rows.append(corpus.loc[corpus["end"] - corpus["start"] < 9.5].iloc[0])
    for row in rows:
        y = demo.synthesize(row)
        assert y.dtype == np.float32
        assert len(y) == round(row["media_seconds"] * SR)
        assert np.isfinite(y).all() and np.abs(y).max() <= 0.98 + 1e-6
        assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) > 1e-3  # not silent
        np.testing.assert_array_equal(demo.synthesize(row), y)
    other = dict(rows[0], seed=rows[0]["seed"] + 1)
    assert not np.array_equal(demo.synthesize(other)[:SR], demo.synthesize(rows[0])[:SR])


def test_events_match_labels(corpus):
    """Speech events iff the Speech label, music iff Music, vehicles iff the "other" kind; all
    inside the labelled segment, covering 15-50 % of it, events of one kind not overlapping."""
    max_len = {"speech": 2.5, "music": 3.0, "vehicle": 4.0, "distractor": 1.5}
    for _, row in corpus.iloc[::4].iterrows():
        _, ev = demo._scene(row, SR)
        kinds = set(ev["event"])
        labels = row["labels"].split(",")
        assert ("speech" in kinds) == (SPEECH in labels), row["ytid"]
        assert ("music" in kinds) == (MUSIC in labels), row["ytid"]
        assert ("vehicle" in kinds) == (row["kind"] == "other"), row["ytid"]
        assert (ev["start"] >= row["start"] - 1 / SR).all(), row["ytid"]
        assert (ev["end"] <= row["end"] + 1 / SR).all(), row["ytid"]
        seg = row["end"] - row["start"]
        for kind, grp in ev.groupby("event"):
            grp = grp.sort_values("start")
            assert (grp["start"].to_numpy()[1:] >= grp["end"].to_numpy()[:-1] - 1e-9).all()
            covered = (grp["end"] - grp["start"]).sum()
            if kind != "distractor":
                assert 0.15 * seg - 0.01 <= covered <= 0.5 * seg + max_len[kind] + 0.01, kind
            assert covered <= seg + 1e-6


def test_write_media(tmp_path):
    spec = demo.DemoSpec(clips_per_class=1, seed=9)
    paths = demo.write_media(tmp_path, spec, threads=2)
    c = demo.corpus(spec)
    assert [p.name for p in paths] == [f"{y}.m4a" for y in c["ytid"]]
    stamp = paths[0].stat().st_mtime_ns
    assert demo.write_media(tmp_path, spec) == paths
    assert paths[0].stat().st_mtime_ns == stamp  # existing media are kept
    y = audio.decode(paths[0], sample_rate=16000)
    assert abs(len(y) / 16000 - c["media_seconds"].iloc[0]) < 0.1
    assert demo.url_template(tmp_path).endswith("/{ytid}.m4a")
