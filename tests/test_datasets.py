"""Balanced per-label datasets: balance, determinism, stratification, eval vs holdout."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from audiosetflow.errors import InputError
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
    out = ds.balance(meta, mid=MID, seed=0, key="k")
    assert list(out.columns) == ["ytid", "split", "target", "balanced"]
    assert (out["balanced"] == 1).all()
    assert out["target"].sum() == 40 and (out["target"] == 0).sum() == 40
    ok = set(meta.loc[meta["status"] == "ok", "ytid"])
    assert set(out["ytid"]) <= ok
    assert out["ytid"].is_monotonic_increasing and out["ytid"].is_unique


def test_balance_draws_positives_down_when_few_negatives():
    out = ds.balance(_meta("train", 30, 10), mid=MID, seed=0, key="k")
    assert out["target"].sum() == 10 and len(out) == 20


def test_balance_accepts_comma_separated_labels():
    meta = _meta("train", 5, 8)
    meta["labels"] = meta["labels"].map(",".join)
    assert ds.balance(meta, mid=MID, seed=0, key="k")["target"].sum() == 5


def test_parts_disjoint_stratified_and_test_from_eval():
    parts = _make()
    tr, va, te = parts["train"], parts["val"], parts["test"]
    assert not set(tr["ytid"]) & set(va["ytid"])
    assert (te["split"] == "eval").all() and (tr["split"] == "train").all()
    assert len(tr) + len(va) == 80
    assert va["target"].sum() == 10 and (va["target"] == 0).sum() == 10  # 25 % of each class
    # the test part is the whole eval split at its natural prevalence (12 of 42)...
    assert te["target"].sum() == 12 and len(te) == 42
    assert set(te["ytid"]) == {f"e{i:010d}" for i in range(42)}
    # ...and its balanced rows a 1:1 draw of it; train and val are balanced throughout
    bal = te.loc[te["balanced"] == 1]
    assert bal["target"].sum() == 12 and len(bal) == 24
    assert (tr["balanced"] == 1).all() and (va["balanced"] == 1).all()
    assert te.attrs["test_source"] == "eval"


def test_holdout_when_no_eval_split():
    parts = _make(eval_meta=False)
    tr, va, te = parts["train"], parts["val"], parts["test"]
    assert te.attrs["test_source"] == "train holdout"
    assert (te["split"] == "train").all()
    assert te["target"].sum() == 8 and (te["target"] == 0).sum() == 8  # 20 % of 40 per class
    assert len(set(tr["ytid"]) | set(va["ytid"]) | set(te["ytid"])) == 80
    assert len(tr) + len(va) + len(te) == 80
    assert all((p["balanced"] == 1).all() for p in (tr, va, te))


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = _make(seed=5), _make(seed=5), _make(seed=6)
    for p in ds.PARTS:
        pd.testing.assert_frame_equal(a[p], b[p])
    assert set(a["val"]["ytid"]) != set(c["val"]["ytid"])


def _input_error(train, ev=None, *, val=0.25, test=0.2, name="Music") -> str:
    """The one-line InputError of make_label_dataset (label ``name``)."""
    with pytest.raises(InputError) as info:
        ds.make_label_dataset(
            train, ev, mid=MID, val_fraction=val, test_fraction=test, seed=0, name=name
        )
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"label {name or MID}: ")
    return msg


def test_no_positive_raises():
    msg = _input_error(_meta("train", 0, 10))
    assert "no training clip with status ok has this label" in msg
    assert "no clip of train has it; 10 other clips with status ok" in msg
    assert "check the label (labels in config)" in msg and "metadata.train_segments" in msg
    # still a ValueError for callers that catch those
    with pytest.raises(ValueError, match="no training clip"):
        ds.make_label_dataset(
            _meta("train", 0, 10), None, mid=MID, val_fraction=0.2, test_fraction=0.2, seed=0
        )


def test_positives_that_all_failed_raise_with_download_hint():
    meta = _meta("train", 3, 6)
    meta.loc[:2, "status"] = "permanent"
    msg = _input_error(meta)
    assert "no training clip with status ok has this label" in msg
    assert "3 clips of train have it, none with status ok; 6 other clips do" in msg
    assert "download_ledger.tsv" in msg


def test_label_named_by_mid_without_name():
    msg = _input_error(_meta("train", 0, 4), name="")
    assert msg.startswith(f"label {MID}: ")


def test_no_negative_raises():
    msg = _input_error(_meta("train", 5, 0))
    assert "no training clip with status ok lacks this label" in msg
    assert "5 clips with status ok in train, all positive" in msg
    assert "selection.negatives_per_positive" in msg


def test_val_part_empty_with_eval_split():
    # 1 positive + 1 negative: nothing to take a val part from
    msg = _input_error(_meta("train", 1, 3), _meta("eval", 2, 2))
    assert "the val part has no clip" in msg
    assert "4 clips with status ok in train: 1 positive, 3 negative" in msg
    assert "1 positive + 1 negative after balancing:" in msg
    assert "raise selection.max_positives or add clips with the label" in msg
    assert "eval_segments" not in msg  # the test part already comes from eval


def test_val_part_empty_after_test_holdout():
    msg = _input_error(_meta("train", 2, 2))
    assert "the val part has no clip" in msg
    assert "1 positive + 1 negative after balancing and the test holdout" in msg
    assert "raise selection.max_positives" in msg and "metadata.eval_segments" in msg


def test_test_part_empty_without_eval_split():
    msg = _input_error(_meta("train", 1, 1))
    assert "the test part has no clip" in msg
    assert "2 clips with status ok in train: 1 positive, 1 negative" in msg
    assert "raise selection.max_positives" in msg and "metadata.eval_segments" in msg


@pytest.mark.parametrize(("part", "kw"), [("val", {"val": 0.0}), ("test", {"test": 0.0})])
def test_zero_fraction_names_the_setting(part, kw):
    msg = _input_error(_meta("train", 10, 10), **kw)
    assert f"the {part} part has no clip (training.{part}_fraction is 0)" in msg
    assert f"set training.{part}_fraction above 0" in msg


def test_eval_split_without_negatives_falls_back_to_holdout(caplog):
    with caplog.at_level("WARNING", logger="audiosetflow.datasets"):
        parts = ds.make_label_dataset(
            _meta("train", 10, 10), _meta("eval", 4, 0), mid=MID, val_fraction=0.2,
            test_fraction=0.2, seed=0,
        )  # fmt: skip
    assert parts["test"].attrs["test_source"] == "train holdout"
    assert "eval split has no negative clip with status ok" in caplog.text


def test_check_dataset():
    parts = _make()
    ds.check_dataset(parts, label="Music")  # a made dataset passes
    bad = {**parts, "val": parts["val"].iloc[:0]}
    with pytest.raises(InputError) as info:
        ds.check_dataset(bad, label="Music")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("label Music: the val part of the dataset has no")
    assert "rebuild the dataset" in msg
    one_class = {**parts, "train": parts["train"].loc[parts["train"]["target"] == 1]}
    with pytest.raises(InputError, match="label Music: the train part .* no negative clip"):
        ds.check_dataset(one_class, label="Music")
    pos_test = {**parts, "test": parts["test"].loc[parts["test"]["target"] == 1]}
    ds.check_dataset(pos_test, label="Music")  # the test part needs clips, not both classes


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


def test_run_dataset_tiny_corpus_fails_with_one_line_in_the_job_log(tmp_path, caplog):
    from synth_features import write_split

    from audiosetflow.smk import stage_job

    write_split(tmp_path / "features/train", "train", n_pos=1, n_neg=2, seconds=0.5)
    out = tmp_path / "datasets/music"
    log = logging.getLogger("audiosetflow.datasets")
    with caplog.at_level(logging.INFO, logger="audiosetflow"):
        with pytest.raises(SystemExit) as info, stage_job("dataset", log):
            ds.run_dataset(
                train_features=sorted((tmp_path / "features/train").glob("shard-*.parquet")),
                eval_features=None,
                out_dir=out,
                mid="/m/04rlf",
                name="Music",
                val_fraction=0.25,
                test_fraction=0.2,
                seed=3,
            )
    assert info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("dataset: label Music: the test part has no clip")
    assert "raise selection.max_positives" in errors[0]
    assert not out.exists()


def _shuffled(meta: pd.DataFrame, seed: int) -> pd.DataFrame:
    return meta.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("with_eval", [True, False])
def test_parts_do_not_depend_on_row_order(with_eval):
    """The same clips read in another order (other shards, other cores) give the same parts:
    every draw is a keyed hash of the YTID, not a position."""
    train, ev = _meta("train", 40, 100, 10), _meta("eval", 30, 12)  # eval: positives drawn down
    kw = dict(mid=MID, val_fraction=0.25, test_fraction=0.2, seed=3)
    a = ds.make_label_dataset(train, ev if with_eval else None, **kw)
    for s in (1, 2, 3):
        b = ds.make_label_dataset(
            _shuffled(train, s), _shuffled(ev, s + 10) if with_eval else None, **kw
        )
        for p in ds.PARTS:
            pd.testing.assert_frame_equal(a[p], b[p])
    # two "shards" concatenated either way round
    half = len(train) // 2
    c = ds.make_label_dataset(
        pd.concat([train.iloc[half:], train.iloc[:half]]), ev if with_eval else None, **kw
    )
    for p in ds.PARTS:
        pd.testing.assert_frame_equal(a[p], c[p])


def test_balance_and_holdout_do_not_depend_on_row_order():
    meta = _meta("train", 40, 100, 10)
    a = ds.balance(meta, mid=MID, seed=9, key="x")
    b = ds.balance(_shuffled(meta, 4), mid=MID, seed=9, key="x")
    pd.testing.assert_frame_equal(a, b)
    rest_a, held_a = ds.stratified_split(a, fraction=0.3, seed=9, key="y")
    rest_b, held_b = ds.stratified_split(_shuffled(a, 5), fraction=0.3, seed=9, key="y")
    assert set(held_a["ytid"]) == set(held_b["ytid"])
    assert set(rest_a["ytid"]) == set(rest_b["ytid"])
    # fractions per class: round(0.3 * 40) = 12 of each
    assert held_a["target"].sum() == 12 and (held_a["target"] == 0).sum() == 12
    # other seed or other key: another draw
    assert set(ds.balance(meta, mid=MID, seed=10, key="x")["ytid"]) != set(a["ytid"])
    assert set(ds.balance(meta, mid=MID, seed=9, key="z")["ytid"]) != set(a["ytid"])


def test_duplicate_rows_of_a_ytid_keep_the_same_clip_in_any_order():
    meta = _meta("train", 10, 20)
    dup = meta.iloc[[3, 15]].assign(status="trim: failed: short")  # a second, failed row
    a = ds.balance(pd.concat([meta, dup]), mid=MID, seed=1, key="k")
    b = ds.balance(pd.concat([dup, meta]), mid=MID, seed=1, key="k")
    pd.testing.assert_frame_equal(a, b)
    assert a["ytid"].is_unique and a["target"].sum() == 10


def test_different_seeds_draw_different_parts_of_the_right_size():
    train, ev = _meta("train", 40, 100), _meta("eval", 12, 30)
    kw = dict(mid=MID, val_fraction=0.25, test_fraction=0.2)
    a = ds.make_label_dataset(train, ev, seed=1, **kw)
    b = ds.make_label_dataset(train, ev, seed=2, **kw)
    for parts in (a, b):
        assert len(parts["train"]) == 60 and len(parts["val"]) == 20
        assert parts["val"]["target"].sum() == 10
        assert len(parts["test"]) == 42 and parts["test"]["balanced"].sum() == 24
    # train negatives, val clips and the balanced eval negatives differ between the seeds
    assert set(a["train"]["ytid"]) != set(b["train"]["ytid"])
    assert set(a["val"]["ytid"]) != set(b["val"]["ytid"])
    bal = lambda p: set(p["test"].loc[p["test"]["balanced"] == 1, "ytid"])  # noqa: E731
    assert bal(a) != bal(b)
    # the test part itself is the whole eval split, whatever the seed
    assert set(a["test"]["ytid"]) == set(b["test"]["ytid"])


def test_natural_test_with_more_positives_than_negatives():
    parts = ds.make_label_dataset(
        _meta("train", 10, 20), _meta("eval", 30, 12), mid=MID, val_fraction=0.2,
        test_fraction=0.2, seed=0,
    )  # fmt: skip
    te = parts["test"]
    assert len(te) == 42 and te["target"].sum() == 30
    bal = te.loc[te["balanced"] == 1]
    assert bal["target"].sum() == 12 and (bal["target"] == 0).sum() == 12  # positives drawn down


def test_write_read_roundtrip_with_eval_and_old_three_column_files(tmp_path):
    parts = _make()
    ds.write_dataset(tmp_path / "music", parts)
    header = (tmp_path / "music/test.tsv").read_text().splitlines()[0]
    assert header.split("\t") == ["ytid", "split", "target", "balanced"]
    back = ds.read_dataset(tmp_path / "music")
    for p in ds.PARTS:
        pd.testing.assert_frame_equal(back[p], parts[p])
    assert back["test"].attrs["test_source"] == "eval"
    # a dataset written before the balanced column: read as balanced throughout
    old = tmp_path / "old"
    old.mkdir()
    for p in ds.PARTS:
        parts[p][["ytid", "split", "target"]].to_csv(old / f"{p}.tsv", sep="\t", index=False)
    back = ds.read_dataset(old)
    for p in ds.PARTS:
        assert list(back[p].columns) == ds.DATASET_COLUMNS
        assert (back[p]["balanced"] == 1).all()
        assert back[p]["ytid"].tolist() == parts[p]["ytid"].tolist()
    # frames without the column (callers that build parts by hand) are written as balanced
    ds.write_dataset(tmp_path / "plain", {p: parts[p][["ytid", "split", "target"]]
                                          for p in ds.PARTS})  # fmt: skip
    assert (ds.read_dataset(tmp_path / "plain")["test"]["balanced"] == 1).all()
