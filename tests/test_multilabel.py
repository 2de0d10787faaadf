"""The multi-label model: metrics against sklearn, the balanced sampler, the ontology expansion,
training from streamed shards, the checkpoint and the predict CLI on real audio files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audiosetflow.learning import metrics as mt
from audiosetflow.learning import multilabel as ML
from audiosetflow.learning import trainer as TR
from audiosetflow.learning.labelsets import (
    MultilabelSettings,
    SpecAugmentSettings,
    label_counts,
    resolve_multilabel,
)
from audiosetflow.ontology import Ontology, expand_labels, load_ontology, ontology_gain

SR = 22050
MUSIC, SPEECH, VEHICLE = "/m/04rlf", "/m/09x0r", "/m/07yv9"
LABELS = [
    {"mid": MUSIC, "name": "Music", "slug": "music"},
    {"mid": SPEECH, "name": "Speech", "slug": "speech"},
    {"mid": VEHICLE, "name": "Vehicle", "slug": "vehicle"},
]


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_equal_sklearn_on_toy_data():
    from scipy.stats import norm
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    Y = rng.random((200, 4)) < [0.5, 0.2, 0.05, 0.3]
    S = np.clip(0.3 * Y + 0.7 * rng.random(Y.shape), 0, 1)
    S[:, 3] = rng.random(200)  # one label at chance
    labs = [{"mid": f"/m/{j}", "name": f"L{j}"} for j in range(4)]
    m = mt.multilabel_metrics(Y, S, labels=labs, thresholds=[0.5] * 4)
    assert m["mAP"] == pytest.approx(average_precision_score(Y, S, average="macro"))
    assert m["mean_auc"] == pytest.approx(roc_auc_score(Y, S, average="macro"))
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(m["mean_auc"]))
    assert 0.4 < m["per_label"][3]["auc"] < 0.6 and m["per_label"][0]["auc"] > 0.7
    for j, p in enumerate(m["per_label"]):
        assert p["n_pos"] == int(Y[:, j].sum())
        assert p["ap"] == pytest.approx(average_precision_score(Y[:, j], S[:, j]))
        assert p["f1_at_threshold"] == pytest.approx(f1_score(Y[:, j], S[:, j] >= 0.5))
        y = Y[:, j]
        brute = max(2 * (y & (S[:, j] >= t)).sum() / ((S[:, j] >= t).sum() + y.sum())
                    for t in np.unique(S[:, j]))  # fmt: skip
        assert p["best_f1"] == pytest.approx(brute)
        assert f1_score(Y[:, j], S[:, j] >= p["best_threshold"]) == pytest.approx(brute)
        assert p["best_f1"] >= p["f1_at_threshold"]


def test_metrics_skip_labels_without_positives():
    Y = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    S = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2]])
    m = mt.multilabel_metrics(Y, S, labels=[{"mid": "a", "name": "a"}, {"mid": "b", "name": "b"}])
    assert m["mAP"] == 1.0 and m["n_labels_scored"] == 1
    assert math.isnan(m["per_label"][1]["ap"]) and math.isnan(m["per_label"][1]["auc"])
    assert mt.d_prime(1.0) == pytest.approx(math.sqrt(2) * 4.753424, rel=1e-4)  # clipped AUC
    assert mt.d_prime(0.5) == 0.0


# --- balanced sampler --------------------------------------------------------------------------


def test_balanced_sampler_draws_labels_equally_often():
    # three disjoint labels with 600, 60 and 6 clips, and 200 clips with no label
    sizes = [600, 60, 6]
    Y = np.zeros((sum(sizes) + 200, 3), dtype=bool)
    lo = 0
    for j, n in enumerate(sizes):
        Y[lo : lo + n, j] = True
        lo += n
    rng = np.random.default_rng(1)
    pos = ML.balanced_positions(Y, n=4000, rng=rng)
    freq = Y[pos].sum(axis=0) / len(pos)
    none = (~Y[pos].any(axis=1)).mean()
    assert np.allclose(freq, 0.25, atol=0.002) and abs(none - 0.25) < 0.002
    # a rare label repeats its clips, a frequent one uses most of them
    assert len(np.unique(pos[Y[pos, 2]])) == 6
    assert len(np.unique(pos[Y[pos, 0]])) > 550
    # the random sampler would show the labels at their own frequencies
    assert (Y.sum(axis=0) / len(Y))[2] < 0.01
    again = ML.balanced_positions(Y, n=4000, rng=np.random.default_rng(1))
    assert np.array_equal(pos, again)
    from scipy.sparse import csr_matrix  # the train part's targets are sparse: the same draws

    sparse = ML.balanced_positions(csr_matrix(Y), n=4000, rng=np.random.default_rng(1))
    assert np.array_equal(pos, sparse)


def test_balanced_sampler_with_overlapping_labels():
    rng = np.random.default_rng(2)
    Y = rng.random((1000, 5)) < [0.6, 0.3, 0.1, 0.03, 0.01]
    pos = ML.balanced_positions(Y, n=5000, rng=rng)
    f_bal = Y[pos].mean(axis=0)
    f_rand = Y.mean(axis=0)
    assert f_bal.max() / f_bal.min() < f_rand.max() / f_rand.min() / 8
    assert f_bal.min() > 0.15


# --- ontology ----------------------------------------------------------------------------------


def _toy_ontology() -> Ontology:
    return Ontology(
        {
            "music": {"child_ids": ["instrument", "genre"]},
            "instrument": {"child_ids": ["guitar", "bell"]},
            "guitar": {"child_ids": []},
            "genre": {"child_ids": ["rock"]},
            "rock": {},
            "bicycle": {"child_ids": ["bell"]},
            "bell": {},
            "speech": {},
        }
    )


def test_ontology_ancestors_and_expansion_counts():
    onto = _toy_ontology()
    assert onto.ancestors("guitar") == {"instrument", "music"}
    assert onto.ancestors("bell") == {"instrument", "music", "bicycle"}  # two parents
    assert onto.descendants("music") == {"instrument", "genre", "guitar", "bell", "rock"}
    assert expand_labels("guitar,speech", onto) == ["guitar", "speech", "instrument", "music"]
    assert expand_labels(["speech"], None) == ["speech"]
    clips = [["guitar"], ["music"], ["rock", "speech"], ["bell"], ["speech"], ["music", "guitar"]]
    gain = ontology_gain(clips, ["music", "instrument", "speech", "bicycle"], onto)
    assert gain["n_pos_direct"].tolist() == [2, 0, 2, 0]
    assert gain["n_pos_expanded"].tolist() == [5, 3, 2, 1]
    assert gain["gained"].tolist() == [3, 3, 0, 1]
    Y = ML.label_matrix(clips, ["music", "speech"], ontology=onto)
    assert Y[:, 0].sum() == 5 and Y[:, 1].sum() == 2
    assert ML.label_matrix(clips, ["music", "speech"])[:, 0].sum() == 2
    sp = ML.label_matrix(clips, ["music", "speech"], ontology=onto, sparse=True)
    assert np.array_equal(sp.toarray(), Y)


def test_ontology_expansion_on_real_metadata(real_metadata):
    from audiosetflow import metadata as md

    onto = load_ontology(real_metadata / "ontology.json")
    guitar, music = "/m/0342h", "/m/04rlf"
    assert music in onto.ancestors(guitar)
    seg = md.read_segments(real_metadata / "balanced_train_segments.csv")
    gain = ontology_gain(seg["labels"].tolist(), [music], onto)
    assert gain["gained"].iloc[0] > 100  # many instrument or genre clips lack Music itself
    counts = label_counts(seg["labels"].tolist())
    classes = md.read_class_labels(real_metadata / "class_labels_indices.csv")
    top = resolve_multilabel(
        MultilabelSettings(labels={"top": 3}), counts=counts, class_labels=classes
    )
    assert [lab.name for lab in top] == ["Music", "Speech", "Vehicle"]
    every = resolve_multilabel(MultilabelSettings(min_positives=59), counts=counts,
                               class_labels=classes)  # fmt: skip
    assert len(every) == int((counts >= 59).sum()) and 400 < len(every) <= 527


# --- synthetic multi-label shards --------------------------------------------------------------


def _clip(mids: list[str], seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.003 * rng.standard_normal(len(t))
    if MUSIC in mids:
        f0 = rng.uniform(300, 500)
        y += sum(0.08 * np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 4))
    if SPEECH in mids:  # bursts of high band noise at a syllable rate
        env = (np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)) > 0.3).astype(float)
        hi = np.diff(rng.standard_normal(len(t) + 1))
        y += 0.08 * env * hi
    if VEHICLE in mids:  # a low rumble
        lo = np.convolve(rng.standard_normal(len(t)), np.ones(40) / 40, mode="same")
        y += 0.6 * lo
    return y.astype(np.float32)


def _mids(i: int) -> list[str]:
    return [
        [MUSIC],
        [SPEECH],
        [VEHICLE],
        [MUSIC, SPEECH],
        [SPEECH, VEHICLE],
        [MUSIC, VEHICLE],
        [],
    ][i % 7]


def write_multilabel_split(
    folder: Path, split: str, n: int, *, seconds: float = 2.0, seed: int = 0
) -> pd.DataFrame:
    from audiosetflow.audio.features import FeatureParams, compute, write_shard

    params = FeatureParams.from_config({}, sample_rate=SR)
    folder.mkdir(parents=True, exist_ok=True)
    rows, feats = [], []
    for i in range(n):
        mids = _mids(i)
        rows.append({"ytid": f"{split[0]}{i:010d}", "split": split, "start": 0.0,
                     "end": seconds, "labels": mids, "label_names": mids, "status": "ok",
                     "reason": "", "short": False, "duration": seconds})  # fmt: skip
        feats.append(compute(_clip(mids, seed * 7919 + i, seconds), params=params))
    meta = pd.DataFrame(rows)
    for k, lo in enumerate(range(0, n, 32)):
        part = meta.iloc[lo : lo + 32].reset_index(drop=True)
        write_shard(folder / f"shard-{k:04d}.parquet", meta=part, features=feats[lo : lo + 32],
                    params=params, row_group_size=8)  # fmt: skip
    return meta


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mlshards")
    write_multilabel_split(root / "train", "train", 140, seed=1)
    write_multilabel_split(root / "eval", "eval", 42, seed=2)
    return root


def test_resample_index_streams_the_drawn_clips(shards):
    from audiosetflow.learning.stream import FeatureStream, index_clips

    files = sorted((shards / "train").glob("shard-*.parquet"))
    idx = index_clips(files, [f"t{i:010d}" for i in range(40)])
    base = {
        idx.ytids[i]: x
        for b in FeatureStream(idx).batches()
        for i, x in zip(b.index, b.x, strict=True)
    }
    positions = np.array([5, 5, 39, 0, 17, 5])
    sub = ML.resample_index(idx, positions)
    assert sub.ytids == tuple(idx.ytids[p] for p in positions)
    got = {}
    for b in FeatureStream(sub, batch_size=4, shuffle=True, seed=3).batches(0):
        for i, x in zip(b.index, b.x, strict=True):
            got.setdefault(int(i), x)
            assert np.array_equal(x, base[sub.ytids[i]])
    assert sorted(got) == list(range(len(positions)))


def test_spec_augment_masks_training_inputs_only_where_drawn():
    import torch

    x = torch.ones(4, 1, 64, 100)
    g = torch.Generator().manual_seed(0)
    s = SpecAugmentSettings(time_masks=2, time_width=10, freq_masks=1, freq_width=8)
    y = TR.spec_augment(x, s, fill=0.0, generator=g)
    assert torch.equal(x, torch.ones_like(x))  # input unchanged
    masked = (y == 0).float().mean().item()
    assert 0 < masked < 0.5
    cols = (y == 0).all(dim=2).squeeze(1)  # whole frames masked
    assert cols.sum(dim=1).max() <= 20
    off = TR.spec_augment(x, SpecAugmentSettings(0, 0, 0, 0), generator=g)
    assert torch.equal(off, x)
    xm, ym = TR.mixup(x, torch.eye(4), alpha=0.4, rng=np.random.default_rng(0))
    assert torch.allclose(ym.sum(dim=1), torch.ones(4)) and ym.max() < 1.0


def _job(shards: Path, out: Path, labels=LABELS) -> ML.MultilabelJob:
    from audiosetflow.audio.features import FeatureParams

    o = ML.MultilabelOutputs(
        model=str(out / "multilabel.pt"), metrics=str(out / "multilabel.json"),
        table=str(out / "multilabel.tsv"), scores=str(out / "multilabel_scores.tsv"),
        ap_plot=str(out / "ap.png"), history_plot=str(out / "history.png"),
    )  # fmt: skip
    return ML.MultilabelJob(
        labels=[dict(lab) for lab in labels],
        train_features=sorted((shards / "train").glob("*.parquet")),
        eval_features=sorted((shards / "eval").glob("*.parquet")),
        params=FeatureParams.from_config({}, sample_rate=SR),
        outputs=o,
        clip_seconds=2.0,
        compare_mids=[MUSIC],
    )


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> Path:
    from audiosetflow.learning.training import TrainSettings

    out = tmp_path_factory.mktemp("mlout")
    settings = TrainSettings(epochs=6, patience=3, min_epochs=3, batch_size=16, threads=2,
                             device="cpu", seed=5)  # fmt: skip
    # val_max_clips below the val part's 28 clips: early stopping watches a sample of 20
    ml = MultilabelSettings(min_positives=5, width=8, mixup=0.2, val_max_clips=20,
                            specaugment=SpecAugmentSettings(1, 8, 1, 8))  # fmt: skip
    ML.run_multilabel(_job(shards, out), settings, ml, threads=2, buffer_size=64)
    return out


def test_training_learns_and_writes_everything(trained):
    m = json.loads((trained / "multilabel.json").read_text())
    # each label is on 3 of 7 clips: a chance ranking has AP about 0.43
    assert m["mAP"] > 0.75 and m["val_mAP"] > 0.75
    assert m["mean_auc"] > 0.8 and m["d_prime"] > 1.0
    assert m["n_labels"] == 3 and m["test_source"] == "eval" and m["n_test"] == 42
    assert m["n_train"] + m["n_val"] == 140
    # validated each epoch on a sample of 20; the thresholds come from every val clip
    assert m["n_val"] == 28 and m["n_val_monitored"] == 20
    assert sum(p["n_pos_val"] for p in m["per_label"]) == sum(
        len(_mids(int(y[1:]))) for y in _val_ytids(trained)
    )
    assert [p["name"] for p in m["per_label"]] == ["Music", "Speech", "Vehicle"]
    for p in m["per_label"]:
        assert set(p) >= {"mid", "name", "ap", "auc", "n_pos", "f1_at_threshold", "best_f1",
                          "threshold"}  # fmt: skip
        assert p["n_pos"] == 18 and 0 < p["threshold"] < 1  # 3 of every 7 of 42 clips
        assert p["best_f1"] >= p["f1_at_threshold"]
    assert len(m["history"]) >= 3 and sum(h["best"] for h in m["history"]) == 1
    assert all(h["clips_per_s"] > 0 for h in m["history"])
    tsv = pd.read_csv(trained / "multilabel.tsv", sep="\t")
    assert list(tsv["mid"]) == [MUSIC, SPEECH, VEHICLE] and "ap" in tsv.columns
    sc = pd.read_csv(trained / "multilabel_scores.tsv", sep="\t")
    assert len(sc) == 42 and {MUSIC, SPEECH, VEHICLE, f"target:{SPEECH}"} <= set(sc.columns)
    for png in ("ap.png", "history.png"):
        assert (trained / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = ML.load_multilabel(trained / "multilabel.pt")
    assert [lab["mid"] for lab in ck.labels] == [MUSIC, SPEECH, VEHICLE]
    assert ck.thresholds.shape == (3,) and ck.clip_seconds == 2.0
    assert ck.info["mAP"] == pytest.approx(m["mAP"])
    from audiosetflow.modelinfo import checkpoint_info, format_info

    info = checkpoint_info(trained / "multilabel.pt")
    assert info["kind"] == "multilabel" and [lab["name"] for lab in info["labels"]] == [
        "Music", "Speech", "Vehicle"]  # fmt: skip
    assert info["labels"][0]["threshold"] == pytest.approx(ck.thresholds[0])
    text = format_info(info)
    assert "labels        3: Music, Speech, Vehicle" in text and f"mAP {m['mAP']:.4g}" in text


def _val_ytids(trained: Path) -> list[str]:
    """The val part of the trained fixture (split_parts with the fixture's seed)."""
    tab = pd.DataFrame({"ytid": [f"t{i:010d}" for i in range(140)]})
    tab["labels"] = [",".join(_mids(i)) for i in range(140)]
    ev = pd.DataFrame({"ytid": ["e0"], "labels": [""]})
    return ML.split_parts(tab, ev, val_fraction=0.2, test_fraction=0.2, seed=5)["val"][
        "ytid"
    ].tolist()


def test_val_sample_is_fixed_seeded_and_independent_of_row_order(shards):
    ytids = [f"v{i:010d}" for i in range(500)]
    a = ML.val_sample(ytids, 100, seed=3)
    assert len(a) == 100 and (np.diff(a) > 0).all()
    assert np.array_equal(a, ML.val_sample(ytids, 100, seed=3))
    assert not np.array_equal(a, ML.val_sample(ytids, 100, seed=4))
    perm = np.random.default_rng(0).permutation(500)
    b = ML.val_sample([ytids[i] for i in perm], 100, seed=3)
    assert {ytids[i] for i in a} == {ytids[perm[i]] for i in b}
    assert ML.val_sample(ytids, 500, seed=3) is None and ML.val_sample(ytids, None, seed=3) is None
    assert ML.val_sample(ytids, 0, seed=3) is None
    # the sample's batches: every drawn clip once, index = its place in the sample
    from audiosetflow.learning.pack import pack, pack_folder
    from audiosetflow.learning.stream import FeatureStream, index_clips

    meta = pd.read_parquet(shards / "train", columns=["ytid", "split"]).iloc[:40]
    idx = index_clips(sorted((shards / "train").glob("*.parquet")), meta["ytid"].tolist())
    Y = np.eye(40, 3, dtype=bool)
    with pack_folder(shards / "x.pt") as folder:
        packed = pack(FeatureStream(idx), folder, name="val")
        part = ML._Part(idx, Y, meta)
        pos = np.array([1, 2, 7, 30], dtype=np.int64)
        seen = [
            (p, y)
            for _, yb, pb in ML._Sample(part, packed, pos, batch_size=3).batches()
            for p, y in zip(pb, yb, strict=True)
        ]
    assert sorted(int(p) for p, _ in seen) == [0, 1, 2, 3]
    for p, y in seen:
        assert np.array_equal(y, Y[pos[int(p)]].astype(np.float32))


def test_min_positives_leaves_labels_out(shards, tmp_path):
    from audiosetflow.errors import InputError
    from audiosetflow.learning.training import TrainSettings

    with pytest.raises(InputError, match="no label has 500 or more"):
        ML.run_multilabel(_job(shards, tmp_path), TrainSettings(epochs=1, device="cpu"),
                          MultilabelSettings(min_positives=500))  # fmt: skip


def test_compare_table_puts_the_models_side_by_side(trained, tmp_path):
    sc = pd.read_csv(trained / "multilabel_scores.tsv", sep="\t")
    y = sc[f"target:{MUSIC}"].to_numpy()
    binary = pd.DataFrame({"ytid": sc["ytid"], "split": "eval", "start": 0.0, "end": 2.0,
                           "target": y, "cnn": y * 0.6 + 0.2, "logreg": 0.5})  # fmt: skip
    binary.to_csv(tmp_path / "music_scores.tsv", sep="\t", index=False)
    t = ML.compare_table(sc, [{"slug": "music", "mid": MUSIC, "name": "Music",
                               "scores": str(tmp_path / "music_scores.tsv")}])  # fmt: skip
    row = t.iloc[0]
    assert row["n_clips"] == 42 and row["ap_cnn"] == 1.0
    assert row["ap_logreg"] == pytest.approx(y.mean())
    assert row["ap_multilabel"] > 0.6


# --- predict -----------------------------------------------------------------------------------


def _wav(path: Path, y: np.ndarray) -> None:
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiosetflow", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_window_starts():
    assert ML.window_starts(3.0, window=10, hop=5) == [0.0]
    assert ML.window_starts(20.0, window=10, hop=5) == [0.0, 5.0, 10.0]
    assert ML.window_starts(23.0, window=10, hop=10) == [0.0, 10.0, 13.0]


def test_predict_cli_uses_the_multilabel_model(trained, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    # 5 s: music for the first 2 s, then a vehicle; a second file of speech only
    _wav(media / "a.wav", np.concatenate([_clip([MUSIC], 1, 2.0), _clip([VEHICLE], 2, 3.0)]))
    _wav(media / "b.wav", _clip([SPEECH], 3, 2.0))
    models = str(trained)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    r = _cli("predict", "--models", models, "--top-k", "2", "--hop", "1", str(media),
             str(tmp_path / "bad.wav"))  # fmt: skip
    # a bad file: an error line, the others still predicted, exit status 1
    assert r.returncode == 1 and "bad.wav" in r.stderr and "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split("\t") == ["file", "window", "start", "end", "rank", "label", "mid",
                                    "probability", "predicted"]  # fmt: skip
    rows = [ln.split("\t") for ln in lines[1:]]
    assert len(rows) == 4 and all(row[1] == "all" for row in rows)
    a = [row for row in rows if row[0].endswith("a.wav")]
    assert {row[5] for row in a} == {"Music", "Vehicle"} and a[0][3] == "5"
    b = [row for row in rows if row[0].endswith("b.wav")]
    assert b[0][5] == "Speech" and float(b[0][7]) >= float(b[1][7])
    # per window, JSON, mean pooling
    r = _cli("predict", "--model", str(trained / "multilabel.pt"), "--models", str(tmp_path),
             "--hop", "1", "--per-window", "--pool", "mean", "--format", "json",
             str(media / "a.wav"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    f = doc["files"][0]
    assert doc["pool"] == "mean" and f["n_windows"] == 4 and len(f["labels"]) == 3
    assert [w["start"] for w in f["windows"]] == [0.0, 1.0, 2.0, 3.0]
    first, last = f["windows"][0]["labels"][0], f["windows"][-1]["labels"][0]
    assert first["label"] == "Music" and last["label"] == "Vehicle"
    # the file's mean-pooled score is the mean of its windows'
    music = [next(x["probability"] for x in w["labels"] if x["label"] == "Music")
             for w in f["windows"]]  # fmt: skip
    pooled = next(x["probability"] for x in f["labels"] if x["label"] == "Music")
    assert pooled == pytest.approx(np.mean(music), abs=1e-6)


def test_binary_dataset_expands_labels_by_the_ontology(shards, tmp_path, caplog):
    import logging

    from audiosetflow.learning.datasets import run_dataset

    # a made-up hierarchy: Vehicle under Music, so a Vehicle-only clip becomes a Music positive
    onto = tmp_path / "ontology.json"
    onto.write_text(json.dumps([{"id": MUSIC, "child_ids": [VEHICLE]}, {"id": VEHICLE},
                                {"id": SPEECH}]))  # fmt: skip
    kw = dict(train_features=shards / "train", eval_features=shards / "eval", mid=MUSIC,
              val_fraction=0.2, test_fraction=0.2, seed=1)  # fmt: skip
    plain = run_dataset(out_dir=tmp_path / "plain", **kw)
    caplog.set_level(logging.INFO, logger="audiosetflow.datasets")
    expanded = run_dataset(out_dir=tmp_path / "exp", ontology=onto, **kw)
    vehicle_only = {f"t{i:010d}" for i in range(140) if _mids(i) == [VEHICLE]}
    pos = lambda parts: {y for p in parts.values() for y in p.loc[p["target"] == 1, "ytid"]}  # noqa: E731
    assert not pos(plain) & vehicle_only and pos(expanded) & vehicle_only
    # train: Music on 3 of 7 clips (60), Music or Vehicle on 5 of 7 (100): 40 gained
    assert "train: 40 positives gained by the ontology (60 listed" in caplog.text


def test_plan_selects_the_union_of_binary_and_multilabel_needs(real_metadata):
    from audiosetflow import metadata as md
    from audiosetflow.plan import make_plan, metadata_paths

    def plan(**ml):
        cfg = {
            "metadata": {"dir": str(real_metadata), "train_segments": "balanced_train_segments.csv",
                         "eval_segments": "eval_segments.csv", "class_labels":
                         "class_labels_indices.csv", "ontology": "ontology.json", "qa_counts": ""},
            "labels": ["Speech"], "label_quality": {"min_ratio": 0.0},
            "selection": {"max_positives": 50, "negatives_per_positive": 1.0, "seed": 1},
            "shard_size": 250, "multilabel": ml,
        }  # fmt: skip
        p = make_plan(cfg, metadata_paths(cfg))
        return p, {(s, y) for s, y in zip(p.selection["split"], p.selection["ytid"], strict=True)}

    off, binary = plan(enabled=False)
    assert off.multilabel == [] and len(binary) == 4 * 50  # 50 + 50 per split
    guitar, with_guitar = plan(labels=["Guitar"])
    assert [lab.name for lab in guitar.multilabel] == ["Guitar"]
    seg = md.read_segments(real_metadata / "eval_segments.csv")
    mid = guitar.multilabel[0].mid
    g_eval = set(seg.loc[("," + seg["labels"] + ",").str.contains(f",{mid},"), "ytid"])
    assert binary < with_guitar  # up to max_positives Guitar positives per split join
    assert len(g_eval) > 50 and len({("eval", y) for y in g_eval} & with_guitar) >= 50
    every, all_clips = plan()
    assert len(every.multilabel) > 400
    assert {y for s, y in all_clips if s == "eval"} == set(seg["ytid"])


def test_score_table_is_written_a_block_at_a_time(tmp_path):
    """The eval score matrix (multilabel_scores.tsv) is written in blocks of clips: the file
    is the one the whole table gives, and its peak allocation is that of a block, not of the
    split (4,000 clips x 527 labels took about 100 MB as one table)."""
    import tracemalloc

    from audiosetflow.io import write_tsv, write_tsv_parts
    from audiosetflow.learning.multilabel import _Part, _score_rows

    rng = np.random.default_rng(3)
    labels = [{"mid": f"/m/{j:03d}", "name": f"l{j}"} for j in range(527)]

    def part(n):
        table = pd.DataFrame({"ytid": [f"y{i:010d}" for i in range(n)], "split": "eval",
                              "start": 0.0, "end": 10.0})  # fmt: skip
        return _Part(index=None, Y=rng.random((n, 527)) < 0.05, table=table), rng.random(
            (n, 527)
        ).astype(np.float32)

    test, scores = part(300)
    whole = pd.concat([test.table.reset_index(drop=True), pd.DataFrame(
        {k: v for j, lab in enumerate(labels) for k, v in (
            (lab["mid"], np.round(scores[:, j].astype(float), 6)),
            (f"target:{lab['mid']}", test.Y[:, j].astype(int)))})], axis=1)  # fmt: skip
    write_tsv(tmp_path / "whole.tsv", whole)
    write_tsv_parts(tmp_path / "blocks.tsv", _score_rows(test, scores, labels, rows=64))
    assert (tmp_path / "blocks.tsv").read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    empty, none = part(0)
    write_tsv_parts(tmp_path / "empty.tsv", _score_rows(empty, none, labels))
    assert (tmp_path / "empty.tsv").read_text().count("\n") == 1  # the header alone

    peaks = {}
    for n in (1024, 4096):
        test, scores = part(n)
        tracemalloc.start()
        write_tsv_parts(tmp_path / f"{n}.tsv", _score_rows(test, scores, labels))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[4096] < peaks[1024] * 1.5, peaks
