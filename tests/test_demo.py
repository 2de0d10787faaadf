"""The offline demo corpus: a pure function of its spec, AudioSet-format metadata (eight real
AudioSet labels, multi-label clips, an ontology with Guitar under Music), and media whose
content matches the labels (events of each labelled sound inside the segment only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from audiosetflow import demo
from audiosetflow import metadata as md
from audiosetflow.audio import codec as audio

SPEECH, MUSIC, GUITAR = (demo.CLASSES[k][0] for k in ("speech", "music", "guitar"))
SOUNDS = {demo.CLASSES[k][0] for k in ("vehicle", "dog", "bird", "rain", "siren")}
SR = demo.MEDIA_SR
REPO = Path(__file__).resolve().parent.parent


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
    assert labels.apply(lambda v: len(set(v)) == len(v)).all()
    # the main labels, then at most one everyday sound
    speech = labels[corpus["kind"] == "speech"]
    assert all(v[0] == SPEECH and set(v[1:]) <= {MUSIC} | SOUNDS for v in speech)
    assert any(v[:2] == [SPEECH, MUSIC] for v in speech)  # some speech over music
    music = labels[corpus["kind"] == "music"]
    mains = music.apply(lambda v: ",".join(m for m in v if m not in SOUNDS))
    assert set(mains) == {MUSIC, f"{MUSIC},{GUITAR}", GUITAR}  # a few labelled only Guitar
    assert 0 < (mains == GUITAR).sum() < (mains == f"{MUSIC},{GUITAR}").sum()
    other = labels[corpus["kind"] == "other"]
    assert all(set(v) <= SOUNDS and 1 <= len(v) <= 2 for v in other)
    # every sound is the main label of a fifth of the other clips
    assert other.str[0].value_counts().to_dict() == {m: 8 for m in SOUNDS}
    for kind in ("speech", "music", "other"):  # some clips of every kind with a second sound
        assert labels[corpus["kind"] == kind].apply(lambda v: bool(set(v[1:]) & SOUNDS)).any()
    # the split is stratified: a quarter of every kind in eval, within a clip
    for kind in ("speech", "music", "other"):
        assert abs((corpus.loc[corpus["kind"] == kind, "split"] == "eval").sum() - 10) <= 1


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
    classes = md.read_class_labels(tmp_path / "class_labels_indices.csv")
    assert sorted(classes["mid"]) == sorted(known) and len(known) == 8
    onto = md.read_ontology(tmp_path / "ontology.json")
    assert set(known) < set(onto)
    for entry in onto.values():  # every child is an entry, with one parent
        assert set(entry["child_ids"]) <= set(onto)
    parents = {c: p for p, e in onto.items() for c in e["child_ids"]}
    assert len(parents) == sum(len(e["child_ids"]) for e in onto.values())
    chain, m = [], GUITAR
    while m in parents:
        m = parents[m]
        chain.append(onto[m]["name"])
    assert chain == ["Plucked string instrument", "Musical instrument", "Music"]
    assert MUSIC not in parents and SPEECH in parents
    assert json.loads((tmp_path / "spec.json").read_text())["clips_per_class"] == 5
    assert demo.write_metadata(tmp_path, demo.DemoSpec(clips_per_class=6, seed=2))


def test_synthesis_is_deterministic(corpus):
    rows = [corpus.loc[corpus["kind"] == k].iloc[0] for k in ("speech", "music", "other")]
    rows.append(corpus.loc[corpus["labels"].str.contains(GUITAR)].iloc[0])
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
    """Events of each sound iff its label (guitar passages for Music and Guitar), distractors
    in every "other" clip; all inside the labelled segment, covering 15-50 % of it, events of
    one kind not overlapping."""
    max_len = {k: hi for k, (_, _, hi) in demo._GENERATORS.items()} | {"distractor": 1.5}
    for _, row in corpus.iloc[::4].iterrows():
        _, ev = demo._scene(row, SR)
        kinds = set(ev["event"])
        labels = row["labels"].split(",")
        want = {k for k, (m, _, _) in demo.CLASSES.items() if m in labels}
        if "guitar" in want:
            want.discard("music")
        assert kinds - {"distractor"} == want, row["ytid"]
        assert ("distractor" in kinds) >= (row["kind"] == "other"), row["ytid"]
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


def test_demo_corpus_supports_multilabel_metrics():
    """The corpus of config/demo.yaml: at least five labels with real AudioSet MIDs and names,
    a good share of clips with more than one label, and at least 10 positives of every label
    in each of train and eval, so per-label AP (and their mean, mAP) means something."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    c = demo.corpus(demo.DemoSpec.from_config(cfg["demo"]))
    labels = c["labels"].str.split(",")
    used = {m for v in labels for m in v}
    assert used == {m for m, _, _ in demo.CLASSES.values()} and len(used) >= 5
    assert 0.25 <= (labels.str.len() > 1).mean() <= 0.75
    for m, name, _ in demo.CLASSES.values():
        has = labels.apply(lambda v, m=m: m in v)
        for split in ("train", "eval"):
            assert (has & (c["split"] == split)).sum() >= 10, (name, split)


def test_demo_labels_and_ontology_are_audiosets(real_metadata, tmp_path):
    """Every demo label is a real AudioSet class (MID, display name and index), and every
    parent-child link of the demo's ontology.json is one of AudioSet's, names included."""
    real = md.read_class_labels(real_metadata / "class_labels_indices.csv")
    real = {
        m: (n, int(i)) for i, m, n in real[["index", "mid", "display_name"]].itertuples(index=False)
    }
    for mid, name, index in demo.CLASSES.values():
        assert real[mid] == (name, index), mid
    real_onto = md.read_ontology(real_metadata / "ontology.json")
    demo.write_metadata(tmp_path, demo.DemoSpec(clips_per_class=2))
    onto = md.read_ontology(tmp_path / "ontology.json")
    for mid, entry in onto.items():
        assert entry["name"] == real_onto[mid]["name"], mid
        assert set(entry["child_ids"]) <= set(real_onto[mid]["child_ids"]), mid
