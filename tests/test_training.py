"""Training loop, early stopping, checkpoints, metrics, plots and one label end to end."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from trainutil import fit_prebuilt as fit_torch

from audiosetflow.learning import evaluation as ev
from audiosetflow.learning import metrics as mt
from audiosetflow.learning.checkpoint import load_checkpoint, save_checkpoint
from audiosetflow.learning.inputs import channel_stats
from audiosetflow.learning.models import AudioCNN, DenseNet
from audiosetflow.learning.trainer import FitSettings, predict_arrays
from audiosetflow.learning.training import TrainSettings, fit_logreg

predict_scores = predict_arrays


def _separable(n: int, seed: int, frames: int = 24):
    """Class 1 has a bright band at rows 10-14; class 0 at rows 2-6; plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(0, 1, size=(n, 1, 32, frames)).astype(np.float32)
    for i, t in enumerate(y):
        lo = 10 if t else 2
        X[i, 0, lo : lo + 5] += 3.0
    return X, y.astype(np.float32)


def test_cnn_learns_separable_problem(caplog):
    Xtr, ytr = _separable(64, 0)
    Xva, yva = _separable(32, 1)
    Xte, yte = _separable(32, 2)
    m = AudioCNN(32, 1, width=8)
    m.set_normalization(*channel_stats(Xtr))
    with caplog.at_level(logging.INFO, logger="audiosetflow"):
        res = fit_torch(
            m,
            Xtr,
            ytr,
            Xva,
            yva,
            epochs=8,
            patience=3,
            batch_size=16,
            learning_rate=3e-3,
            seed=0,
            name="toy",
        )
    assert 1 <= res.best_epoch <= len(res.history) <= 8
    assert sum(h["best"] for h in res.history) == 1
    assert any("toy epoch 1/8" in r.getMessage() for r in caplog.records)
    p = predict_scores(m, Xte)
    metrics = mt.binary_metrics(yte, p, threshold=0.5)
    assert metrics["roc_auc"] > 0.95


def test_training_is_deterministic():
    Xtr, ytr = _separable(32, 0, frames=12)
    Xva, yva = _separable(16, 1, frames=12)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = AudioCNN(32, 1, width=4)
        fit_torch(
            m, Xtr, ytr, Xva, yva, epochs=2, patience=2, batch_size=8, learning_rate=1e-3, seed=7
        )
        outs.append(predict_scores(m, Xva))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5)


def test_early_stopping_restores_best_epoch():
    # labels are noise: validation loss stops improving quickly
    rng = np.random.default_rng(0)
    Xtr = rng.normal(size=(64, 5)).astype(np.float32)
    ytr = rng.integers(0, 2, 64).astype(np.float32)
    Xva = rng.normal(size=(64, 5)).astype(np.float32)
    yva = rng.integers(0, 2, 64).astype(np.float32)
    m = DenseNet(5, hidden=(128, 128), dropout=0.0)
    res = fit_torch(
        m, Xtr, ytr, Xva, yva, epochs=200, patience=3, batch_size=8, learning_rate=1e-2, seed=0
    )
    assert len(res.history) < 200
    assert len(res.history) - res.best_epoch == 3
    best = min(h["val_loss"] for h in res.history)
    loss = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(predict_scores(m, Xva)), torch.from_numpy(yva)
    ).item()
    assert loss == pytest.approx(best, rel=1e-4)


@pytest.mark.parametrize("min_epochs", [0, 12, 25])
def test_early_stopping_waits_for_min_epochs(min_epochs):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 64, 5)).astype(np.float32)
    y = rng.integers(0, 2, (4, 64)).astype(np.float32)  # noise: nothing to learn
    kw = dict(epochs=40, patience=2, min_epochs=min_epochs, batch_size=8, learning_rate=1e-2)
    res = fit_torch(DenseNet(5, hidden=(64,), dropout=0.0), X[0], y[0], X[1], y[1], **kw)
    n = len(res.history)
    assert n >= min_epochs and n < 40
    assert n - res.best_epoch >= 2  # stopped for lack of improvement, not by the epoch limit
    if min_epochs == 25:
        assert res.best_epoch < n - 2  # it would have stopped earlier without min_epochs


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = AudioCNN(16, 2, width=4)
    m.set_normalization(np.full((2, 16, 1), 1.5), np.full((2, 16, 1), 2.0))
    path = tmp_path / "models" / "music.pt"
    fp = {"sample_rate": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 16}
    save_checkpoint(
        path,
        model=m,
        labels=[{"slug": "music", "name": "Music", "mid": "/m/04rlf"}],
        feature_params=fp,
        sample_rate=16000,
        clip_seconds=10.0,
        extra_channels=["zcr"],
        thresholds=[0.37],
    )
    ck = load_checkpoint(path)
    assert ck.label == {"slug": "music", "name": "Music", "mid": "/m/04rlf"}
    assert ck.feature_params == fp and ck.sample_rate == 16000 and ck.clip_seconds == 10.0
    assert ck.extra_channels == ["zcr"] and ck.threshold == pytest.approx(0.37)
    raw = torch.load(path, weights_only=True)
    assert torch.allclose(raw["state_dict"]["mean"], torch.full((2, 16, 1), 1.5))
    assert json.loads(raw["header"])["normalization"]["mean"][1][3] == [1.5]
    x = np.random.default_rng(0).normal(size=(3, 2, 16, 20)).astype(np.float32)
    np.testing.assert_allclose(ck.predict(x), predict_scores(m, x), rtol=1e-6)
    feats = {"log_mel": x[0, 0], "zcr": x[0, 1, :1]}
    assert ck.input_from_features(feats).shape == (2, 16, 20)
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_binary_metrics_known_values():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.3, 0.8, 0.7, 0.4, 0.9])
    m = mt.binary_metrics(y, s, threshold=0.5)
    assert m["confusion"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    # pairs (pos > neg): 0.8,0.7,0.9 beat all 4 negatives; 0.4 beats 0.1,0.2,0.3 -> 15/16
    assert m["roc_auc"] == pytest.approx(15 / 16)
    # AP: ranks 0.9(P) 0.8(P) 0.7(P) 0.6(N) 0.4(P): (1 + 1 + 1 + 4/5) / 4
    assert m["average_precision"] == pytest.approx(0.95)
    want = -np.mean(np.where(y == 1, np.log(s), np.log(1 - s)))
    assert m["log_loss"] == pytest.approx(want)
    one = mt.binary_metrics(np.ones(3), np.array([0.2, 0.6, 0.9]), threshold=0.5)
    assert np.isnan(one["roc_auc"]) and one["confusion"] == [[0, 0], [1, 2]]
    assert json.loads(mt.to_json(one))["roc_auc"] is None


def test_choose_threshold_maximises_f1():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.05, 0.1, 0.3, 0.25, 0.8, 0.9])
    thr = mt.decision_threshold(y, s, rule="balanced")
    # best: positive from 0.25 up (all positives, one false positive: F1 = 6/7); the threshold
    # is midway between 0.25 and the next lower score 0.1
    assert thr == pytest.approx(0.175)
    assert mt.binary_metrics(y, s, threshold=thr)["f1"] == pytest.approx(6 / 7)
    assert mt.decision_threshold(np.zeros(4), np.random.default_rng(0).random(4)) == 0.5


def test_logreg_baseline():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)) * [1, 100, 1, 1, 1] + [0, 1e4, 0, 0, 0]
    y = (X[:, 1] > 1e4).astype(int)
    clf = fit_logreg(X[:100], y[:100])
    assert (
        mt.binary_metrics(y[100:], clf.predict_proba(X[100:])[:, 1], threshold=0.5)["accuracy"]
        > 0.9
    )


def test_plots_written(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    scores = {"cnn": y * 0.6 + rng.random(40) * 0.5, "dense": rng.random(40)}
    ev.plot_roc_pr(y, scores, tmp_path / "p/roc_pr.png", title="t")
    ev.plot_confusion({"cnn": [[10, 2], [3, 9]], "dense": [[5, 5], [5, 5]]}, tmp_path / "c.png")
    hist = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "val_auc": 0.5 + e / 20,
            "best": e == 3,
        }
        for e in range(1, 5)
    ]
    ev.plot_training_curves({"cnn": hist, "dense": hist}, tmp_path / "t.png")
    for p in ("p/roc_pr.png", "c.png", "t.png"):
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob(".*tmp*"))


def test_train_settings_from_config():
    s = TrainSettings.from_config({"epochs": 3, "extra_channels": ["zcr"], "gpus": 1}, seed=9)
    assert s.epochs == 3 and s.extra_channels == ("zcr",) and s.seed == 9


def test_run_train_end_to_end(tmp_path, monkeypatch):
    from synth_features import POS_MID, write_split

    from audiosetflow.audio import features as ft
    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.learning.datasets import run_dataset
    from audiosetflow.learning.training import (
        LabelRef,
        TrainJob,
        TrainOutputs,
        TrainResult,
        run_train,
    )

    write_split(tmp_path / "f/train", "train", n_pos=20, n_neg=20, seconds=2.0, seed=1)
    write_split(tmp_path / "f/eval", "eval", n_pos=8, n_neg=8, seconds=2.0, seed=2)
    run_dataset(
        train_features=tmp_path / "f/train",
        eval_features=tmp_path / "f/eval",
        out_dir=tmp_path / "d",
        mid=POS_MID,
        val_fraction=0.25,
        test_fraction=0.2,
        seed=1,
    )
    plots = {k: tmp_path / f"plots/{k}.png" for k in ("roc_pr", "confusion", "curves")}

    def whole_split(*a, **k):
        raise AssertionError("training read a split whole")

    for fn in ("load_split", "load_summary", "load_meta"):  # the CNN streams from the shards
        monkeypatch.setattr(ft, fn, whole_split)
    cfg = {
        "epochs": 6,
        "patience": 3,
        "batch_size": 16,
        "learning_rate": 0.002,
        "threads": 2,
        "extra_channels": ["spectral_centroid"],
        "device": "cpu",
    }
    job = TrainJob(
        label=LabelRef(slug="music", name="Music", mid=POS_MID),
        dataset=tmp_path / "d",
        train_features=tmp_path / "f/train",
        eval_features=tmp_path / "f/eval",
        params=FeatureParams.from_config({}, sample_rate=22050),
        outputs=TrainOutputs(
            model=tmp_path / "m/music.pt",
            metrics=tmp_path / "metrics/music.json",
            scores=tmp_path / "metrics/music_scores.tsv",
            **plots,
        ),
        clip_seconds=2.0,
    )
    res = run_train(job, TrainSettings.from_config(cfg, seed=1))
    assert isinstance(res, TrainResult)
    assert list(res.models) == ["cnn", "dense", "logreg"]
    assert set(res.best_epochs) == {"cnn", "dense"}
    assert 1 <= res.best_epochs["cnn"] <= res.models["cnn"].epochs_run <= 6
    assert res.models["logreg"].best_epoch is None
    m = res.metrics()
    assert list(m) == ["label", "name", "mid", "dataset", "settings", "models", "provenance"]
    assert m["dataset"] == {
        "n_train": 30, "n_val": 10, "n_test": 16, "n_test_pos": 8, "test_source": "eval",
        "train_prevalence": 0.5,  # 20 of the train split's 40 clips: what the threshold aims at
    }  # fmt: skip
    prov = m["provenance"]
    assert prov["seeds"] == [1] and prov["device"] == "cpu" and len(prov["data_hash"]) == 64
    assert prov["packages"]["torch"].startswith("2.13") and prov["version"]
    assert m["settings"]["device"] == "cpu" and m["settings"]["seed"] == 1
    assert list(m["models"]["cnn"]["fit"]) == ["best_epoch", "epochs_run", "seconds"]
    assert list(m["models"]["logreg"]["fit"]) == ["seconds"]
    assert m["models"]["cnn"]["test"]["roc_auc"] > 0.9
    on_disk = json.loads((tmp_path / "metrics/music.json").read_text())
    assert on_disk["models"]["cnn"]["test"] == m["models"]["cnn"]["test"]
    assert on_disk["dataset"] == m["dataset"] and on_disk["settings"] == m["settings"]
    ck = load_checkpoint(tmp_path / "m/music.pt")
    assert ck.extra_channels == ["spectral_centroid"] and ck.clip_seconds == 2.0
    assert ck.threshold == res.models["cnn"].threshold == m["models"]["cnn"]["val"]["threshold"]
    assert ck.feature_params["sample_rate"] == 22050
    assert ck.label == {"slug": "music", "name": "Music", "mid": POS_MID}
    assert ck.provenance["data_hash"] == prov["data_hash"]
    assert all(p.stat().st_size > 1000 for p in plots.values())
    # per-clip test scores: the test part in order, one column per model, matching the metrics
    sc = pd.read_csv(tmp_path / "metrics/music_scores.tsv", sep="\t", dtype={"ytid": str})
    assert list(sc.columns) == ["ytid", "split", "start", "end", "target", "cnn", "dense", "logreg"]
    test = pd.read_csv(tmp_path / "d/test.tsv", sep="\t", dtype={"ytid": str})
    assert sc["ytid"].tolist() == test["ytid"].tolist() and (sc["split"] == "eval").all()
    assert sc["target"].tolist() == test["target"].tolist()
    assert ((sc["end"] - sc["start"]) > 0).all() and sc[["cnn", "dense", "logreg"]].le(
        1
    ).all().all()
    for kind in ("cnn", "dense", "logreg"):
        again = mt.binary_metrics(sc["target"], sc[kind], threshold=res.models[kind].threshold)
        assert again["confusion"] == m["models"][kind]["test"]["confusion"]
        assert again["roc_auc"] == pytest.approx(m["models"][kind]["test"]["roc_auc"], abs=1e-5)
    summary = ev.summarize_metrics([tmp_path / "metrics/music.json"], tmp_path / "summary.tsv")
    back = pd.read_csv(tmp_path / "summary.tsv", sep="\t")
    assert list(back["model"]) == ["cnn", "dense", "logreg"] == list(summary["model"])
    assert back.loc[0, "roc_auc"] == pytest.approx(m["models"]["cnn"]["test"]["roc_auc"], abs=1e-4)
    for i, kind in enumerate(("cnn", "dense", "logreg")):  # F1 at the val threshold vs best F1
        t = m["models"][kind]["test"]
        best, thr = mt.best_f1(sc["target"], sc[kind])
        assert t["best_f1"] == pytest.approx(best, abs=1e-4)
        assert t["best_f1"] >= t["f1_at_threshold"]
        assert t["f1_at_threshold"] == t["f1"] and t["threshold"] == res.models[kind].threshold
        row = back.iloc[i]
        assert row["f1_at_threshold"] == pytest.approx(t["f1"], abs=1e-4)
        assert row["best_f1"] == pytest.approx(t["best_f1"], abs=1e-4)
        assert row["best_f1_threshold"] == pytest.approx(thr, abs=1e-3)


def test_scores_table_columns_and_length_check():
    from audiosetflow.learning.training import SCORES_COLUMNS, scores_table

    part = pd.DataFrame(
        {"ytid": ["a", "b"], "split": ["eval"] * 2, "target": [1, 0], "start": [0.0, 5.5],
         "end": [10.0, 15.5]}
    )  # fmt: skip
    out = scores_table(part, {"cnn": np.array([0.91234567, 0.1]), "logreg": [0.4, 0.6]})
    assert list(out.columns) == [*SCORES_COLUMNS, "cnn", "logreg"]
    assert out["cnn"].tolist() == [0.912346, 0.1] and out["start"].tolist() == [0.0, 5.5]
    with pytest.raises(ValueError, match="scores of dense: 1 values for 2 clips"):
        scores_table(part, {"dense": [0.5]})


def test_seed_columns_default_and_other_params():
    from audiosetflow.audio.features import SUMMARY_FEATURES, FeatureParams, summary_columns
    from audiosetflow.learning.training import seed_columns

    assert seed_columns(summary_columns(FeatureParams())) == list(SUMMARY_FEATURES)
    cols = seed_columns(summary_columns(FeatureParams(n_mfcc=13, n_mels=64)))
    assert len(cols) == 13 + 1 + 1 + 12 + 1
    assert not any("std" in c or c.startswith("log_mel") for c in cols)


def _job(tmp_path, train_features, eval_features=None):
    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.learning.training import LabelRef, TrainJob, TrainOutputs

    names = ("model", "metrics", "roc_pr", "confusion", "curves")
    return TrainJob(
        label=LabelRef(slug="music", name="Music", mid="/m/04rlf"),
        dataset=tmp_path / "d",
        train_features=train_features,
        eval_features=eval_features,
        params=FeatureParams.from_config({}, sample_rate=22050),
        outputs=TrainOutputs(**{k: tmp_path / "out" / k for k in names}),
    )


def _write_parts(folder, **parts):
    from audiosetflow.learning.datasets import write_dataset

    frames = {
        p: pd.DataFrame(rows, columns=["ytid", "split", "target"]) for p, rows in parts.items()
    }
    write_dataset(folder, frames)


def _train_error(job, caplog) -> str:
    from audiosetflow.learning.training import run_train
    from audiosetflow.smk import stage_job

    settings = TrainSettings.from_config({"epochs": 1, "device": "cpu"}, seed=0)
    log = logging.getLogger("audiosetflow.training")
    with caplog.at_level(logging.INFO, logger="audiosetflow"):
        with pytest.raises(SystemExit) as info, stage_job("train", log):
            run_train(job, settings, threads=1, logger=log)
    assert info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("train: label Music: ")
    assert not (job.outputs.metrics.parent).exists()  # nothing written
    return errors[0]


def test_run_train_empty_part_fails_with_one_line(tmp_path, caplog):
    both = [("a", "train", 1), ("b", "train", 0)]
    _write_parts(tmp_path / "d", train=both, val=[], test=[("c", "eval", 1), ("d", "eval", 0)])
    msg = _train_error(_job(tmp_path, tmp_path / "no-features"), caplog)
    assert "the val part of the dataset has no clip (clips: train 2, val 0, test 2):" in msg
    assert "rebuild the dataset (snakemake --forcerun dataset)" in msg


def test_run_train_one_class_train_part_fails_with_one_line(tmp_path, caplog):
    pos = [("a", "train", 1), ("b", "train", 1)]
    _write_parts(tmp_path / "d", train=pos, val=[("c", "train", 1), ("e", "train", 0)], test=pos)
    msg = _train_error(_job(tmp_path, tmp_path / "no-features"), caplog)
    assert "the train part of the dataset has no negative clip" in msg
    assert "train: 2 positive, 0 negative" in msg
    assert "rebuild the dataset" in msg


def test_run_train_stale_dataset_fails_with_one_line(tmp_path, caplog):
    from synth_features import write_split, ytid

    write_split(tmp_path / "f/train", "train", n_pos=3, n_neg=3, seconds=0.5)
    rows = [(ytid("train", i), "train", int(i < 3)) for i in range(6)]
    gone = [("Xgone000001", "train", 1), ("Xgone000002", "train", 0)]
    _write_parts(tmp_path / "d", train=rows[1:5] + gone, val=[rows[0], rows[5]], test=rows[:2])
    msg = _train_error(_job(tmp_path, tmp_path / "f/train"), caplog)
    assert "the train features have no clip with status ok for 2 YTIDs of the dataset" in msg
    assert "Xgone000001, Xgone000002" in msg and "the dataset is stale, rebuild it" in msg


def test_run_train_eval_clips_without_eval_features(tmp_path, caplog):
    both = [("a", "train", 1), ("b", "train", 0)]
    _write_parts(tmp_path / "d", train=both, val=both, test=[("c", "eval", 1), ("d", "eval", 0)])
    msg = _train_error(_job(tmp_path, tmp_path / "f/train", eval_features=None), caplog)
    assert "clips of the eval split but the job has no eval features" in msg
    assert "rebuild the dataset" in msg


def test_streamed_cnn_matches_the_in_memory_path(tmp_path):
    """fit_batches on a FeatureStream trains from every train clip each epoch; predict_stream
    returns the scores in the part's order, equal to predict_scores on the whole array."""
    from synth_features import write_split

    from audiosetflow.audio.features import load_split
    from audiosetflow.learning.inputs import stack_channels
    from audiosetflow.learning.stream import FeatureStream, index_clips
    from audiosetflow.learning.trainer import fit, score

    meta = write_split(tmp_path / "f", "train", n_pos=12, n_neg=12, seconds=0.5, shard_size=10)
    rng = np.random.default_rng(0)
    part = meta.iloc[rng.permutation(len(meta))].reset_index(drop=True)
    y = np.array([labels == ["/m/04rlf"] for labels in part["labels"]], dtype=np.float32)
    stream = FeatureStream(
        index_clips(tmp_path / "f", part["ytid"]),
        targets=y,
        extra_channels=["zcr"],
        batch_size=5,
        shuffle=True,
        seed=2,
        buffer_size=8,
    )
    lm, m = load_split(tmp_path / "f")
    pos = pd.Index(m["ytid"]).get_indexer(part["ytid"])
    X = stack_channels(lm[pos], [load_split(tmp_path / "f", feature="zcr")[0][pos]])
    mean, std = stream.channel_stats()
    np.testing.assert_allclose(mean, channel_stats(X)[0], rtol=1e-6)
    np.testing.assert_allclose(std, channel_stats(X)[1], rtol=1e-6)
    cnn, res = fit(
        lambda: AudioCNN(X.shape[2], X.shape[1], width=4).set_normalization(mean, std),
        stream, stream.replace(shuffle=False),
        settings=FitSettings(epochs=3, patience=3, learning_rate=3e-3),
    )  # fmt: skip
    assert len(res.history) == 3 and 1 <= res.best_epoch <= 3
    assert stream.peak_buffered == 8 and stream.peak_group <= 10
    s, _ = score(cnn, stream.replace(batch_size=7).batches(shuffle=False), n=len(stream))
    np.testing.assert_allclose(s[:, 0], predict_scores(cnn, X), rtol=1e-5, atol=1e-6)


def test_best_f1_beats_a_threshold_that_does_not_transfer():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.05, 0.1, 0.3, 0.25, 0.8, 0.9])
    f1, thr = mt.best_f1(y, s)
    assert f1 == pytest.approx(6 / 7) and thr == pytest.approx(0.175)
    assert mt.decision_threshold(y, s, rule="balanced") == thr
    # a threshold from elsewhere (0.85) keeps one positive: F1 0.5, best F1 still 6/7
    m = mt.binary_metrics(y, s, threshold=0.85)
    assert m["f1_at_threshold"] == m["f1"] == pytest.approx(0.5)
    assert m["best_f1"] == pytest.approx(6 / 7) and m["best_f1_threshold"] == pytest.approx(thr)
    assert np.isnan(mt.best_f1(np.zeros(3), np.array([0.2, 0.6, 0.9]))[1])


def test_dense_ensemble_members_train_apart_and_average():
    torch.manual_seed(0)
    m = DenseNet(4, hidden=(8,), dropout=0.0, members=3)
    x = torch.randn(5, 4)
    m.train()
    z = m(x)
    assert z.shape == (3, 5) and not torch.allclose(z[0], z[1])  # independent starts
    m.eval()
    want = torch.logit(torch.sigmoid(z.detach().double()).mean(dim=0)).float()
    assert m(x).shape == (5,) and torch.allclose(m(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="members"):
        DenseNet(4, members=0)


def test_train_prevalence_counts_each_ok_clip_once(tmp_path):
    """The label's share of the split's clips with status ok: failed rows left out, a clip
    listed in two shards counted once (it was None for every label while the shards' labels
    were compared as the text of a list)."""
    from synth_features import NEG_MID, POS_MID, write_split

    from audiosetflow.learning.training import train_prevalence

    write_split(tmp_path / "a", "train", n_pos=5, n_neg=15, n_failed=4, seconds=0.3, shard_size=7)
    write_split(tmp_path / "b", "train", n_pos=3, n_neg=0, seconds=0.3)  # 3 clips again
    files = sorted((tmp_path / "a").glob("*.parquet")) + sorted((tmp_path / "b").glob("*.parquet"))
    assert train_prevalence(files, POS_MID) == pytest.approx(5 / 20)
    assert train_prevalence(tmp_path / "a", NEG_MID) == pytest.approx(15 / 20)
    assert train_prevalence(files, "/m/nothing") is None
    assert train_prevalence(files, "") is None
