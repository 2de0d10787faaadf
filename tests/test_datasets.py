"""Balanced per-label datasets: balance, determinism, stratification, eval vs holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audiosetflow.learning import datasets as ds

MID = "/m/04rlf"


def _meta(split: str, n_pos: int, n_neg: int, n_failed: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(n_pos + n_neg + n_failed):
        labels = [MID, "/m/09x0r"] if i < n_pos else ["/m/07yv9"]
        status = "ok" if i < n_pos + n_neg else "trim: failed: short"
        rows.append(
            {"ytid": f"{split[0]}{i:010d}", "split": split, "labels": labels, "status": status}
        )
    return pd.DataFrame(rows)


def _make(seed=1, eval_meta=True, **kw):
    train = _meta("train", 40, 100, 10)
    ev = _meta("eval", 12, 30) if eval_meta else None
    return ds.make_label_dataset(
        train, ev, mid=MID, val_fraction=kw.get("val", 0.25), test_fraction=0.2, seed=seed
    )


def test_balance_equal_counts_status_ok_only():
    meta = _meta("train", 40, 100, 10)
    out = ds.balance(meta, mid=MID, rng=np.random.default_rng(0))
    assert list(out.columns) == ["ytid", "split", "target"]
    assert out["target"].sum() == 40 and (out["target"] == 0).sum() == 40
    ok = set(meta.loc[meta["status"] == "ok", "ytid"])
    assert set(out["ytid"]) <= ok
    assert out["ytid"].is_monotonic_increasing and out["ytid"].is_unique


def test_balance_draws_positives_down_when_few_negatives():
    out = ds.balance(_meta("train", 30, 10), mid=MID, rng=np.random.default_rng(0))
    assert out["target"].sum() == 10 and len(out) == 20


def test_balance_accepts_comma_separated_labels():
    meta = _meta("train", 5, 8)
    meta["labels"] = meta["labels"].map(",".join)
    assert ds.balance(meta, mid=MID, rng=np.random.default_rng(0))["target"].sum() == 5


def test_parts_disjoint_stratified_and_test_from_eval():
    parts = _make()
    tr, va, te = parts["train"], parts["val"], parts["test"]
    assert not set(tr["ytid"]) & set(va["ytid"])
    assert (te["split"] == "eval").all() and (tr["split"] == "train").all()
    assert len(tr) + len(va) == 80
    assert va["target"].sum() == 10 and (va["target"] == 0).sum() == 10  # 25 % of each class
    assert te["target"].sum() == 12 and len(te) == 24
    assert te.attrs["test_source"] == "eval"


def test_holdout_when_no_eval_split():
    parts = _make(eval_meta=False)
    tr, va, te = parts["train"], parts["val"], parts["test"]
    assert te.attrs["test_source"] == "train holdout"
    assert (te["split"] == "train").all()
    assert te["target"].sum() == 8 and (te["target"] == 0).sum() == 8  # 20 % of 40 per class
    assert len(set(tr["ytid"]) | set(va["ytid"]) | set(te["ytid"])) == 80
    assert len(tr) + len(va) + len(te) == 80


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = _make(seed=5), _make(seed=5), _make(seed=6)
    for p in ds.PARTS:
        pd.testing.assert_frame_equal(a[p], b[p])
    assert set(a["val"]["ytid"]) != set(c["val"]["ytid"])


def test_no_positive_raises():
    with pytest.raises(ValueError, match="no training clip"):
        ds.make_label_dataset(
            _meta("train", 0, 10), None, mid=MID, val_fraction=0.2, test_fraction=0.2, seed=0
        )


def test_write_read_roundtrip(tmp_path):
    parts = _make(eval_meta=False)
    ds.write_dataset(tmp_path / "music", parts)
    back = ds.read_dataset(tmp_path / "music")
    for p in ds.PARTS:
        pd.testing.assert_frame_equal(back[p], parts[p][ds.DATASET_COLUMNS])
    assert back["test"].attrs["test_source"] == "train holdout"
    # a YTID starting with '-' stays a string
    assert back["train"]["ytid"].map(type).eq(str).all()


def test_run_dataset_from_feature_shards(tmp_path):
    from synth_features import write_split

    write_split(tmp_path / "features/train", "train", n_pos=6, n_neg=10, n_failed=2, seconds=1.0)
    out = tmp_path / "datasets/music"
    parts = ds.run_dataset(
        train_features=tmp_path / "features/train",
        eval_features=tmp_path / "features/eval",
        out_dir=out,
        mid="/m/04rlf",
        val_fraction=0.25,
        test_fraction=0.34,
        seed=3,
    )
    assert sorted(p.name for p in out.iterdir()) == ["test.tsv", "train.tsv", "val.tsv"]
    assert parts["test"].attrs["test_source"] == "train holdout"
    total = sum(len(p) for p in parts.values())
    assert total == 12 and sum(int(p["target"].sum()) for p in parts.values()) == 6
