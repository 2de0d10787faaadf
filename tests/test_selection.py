"""Selection and sharding: balance, caps, determinism, stable shard assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audiosetflow import metadata as md
from audiosetflow.plan import make_plan, metadata_paths
from audiosetflow.selection import (
    assign_shards,
    jump_hash,
    label_quality_filter,
    select_segments,
    shard_count,
    train_eval_overlap,
    ytid_hash64,
)


def _segments(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    ytids = ["".join(rng.choice(alphabet, 11)) for _ in range(n)]
    labels = rng.choice(["/m/04rlf", "/m/09x0r", "/m/07yv9", "/m/04rlf,/m/09x0r"], n)
    return pd.DataFrame({"ytid": ytids, "start": 0.0, "end": 10.0, "labels": labels})


MUSIC = md.Label("/m/04rlf", "Music", 137, "music")
SPEECH = md.Label("/m/09x0r", "Speech", 0, "speech")


def test_selection_balance_and_determinism():
    seg = {"train": _segments(2000, 1), "eval": _segments(500, 2)}
    a = select_segments(seg, labels=[MUSIC], max_positives=100, seed=5)
    b = select_segments(seg, labels=[MUSIC], max_positives=100, seed=5)
    c = select_segments(seg, labels=[MUSIC], max_positives=100, seed=6)
    assert a.equals(b)
    assert not a.equals(c)
    for split in ("train", "eval"):
        part = a[a["split"] == split]
        pos = part["labels"].str.contains("/m/04rlf").sum()
        assert pos == 100
        assert len(part) - pos == 100  # one negative per positive


def test_selection_all_positives_without_cap():
    seg = {"train": _segments(300, 3)}
    sel = select_segments(seg, labels=[MUSIC, SPEECH], negatives_per_positive=0.0, seed=1)
    want = seg["train"]["labels"].str.contains("/m/04rlf|/m/09x0r")
    assert set(sel["ytid"]) == set(seg["train"].loc[want, "ytid"])


def test_jump_hash_moves_only_into_new_bucket():
    keys = ytid_hash64([f"{i:011d}" for i in range(20000)])
    for n in (1, 7, 40):
        a, b = jump_hash(keys, n), jump_hash(keys, n + 1)
        moved = a != b
        assert set(np.unique(b[moved])) <= {n}
        assert abs(moved.mean() - 1 / (n + 1)) < 0.02
        assert a.min() >= 0 and a.max() < n


def test_growing_selection_keeps_shards():
    seg = _segments(1000, 4)
    small = assign_shards(seg.iloc[:600].assign(split="train"), shard_size=100)
    big = assign_shards(seg.iloc[:640].assign(split="train"), shard_size=100)  # 6 -> 7 shards
    merged = small.merge(big, on="ytid", suffixes=("_a", "_b"))
    changed = merged["shard_a"] != merged["shard_b"]
    assert (merged.loc[changed, "shard_b"] == 6).all()
    assert changed.mean() < 0.25
    sizes = big.groupby("shard").size()
    assert sizes.min() > 50 and sizes.max() < 150


def test_max_shards_caps_the_shards_of_a_large_split():
    """Past shard_size x max_shards segments a split gets max_shards larger shards; a split
    under the cap is sharded as without it; growing past the cap moves no segment."""
    seg = _segments(1000, 4)
    train = seg.iloc[:900].assign(split="train")
    evals = seg.iloc[900:].assign(split="eval")  # 100 segments: 4 shards of 25, under the cap
    both = pd.concat([train, evals])
    capped = assign_shards(both, shard_size=25, max_shards=8)
    free = assign_shards(both, shard_size=25)
    sizes = capped[capped["split"] == "train"].groupby("shard").size()
    assert list(sizes.index) == list(range(8)) and sizes.min() > 80 and sizes.max() < 150
    assert free[free["split"] == "train"]["shard"].nunique() == 36
    pd.testing.assert_frame_equal(capped[capped["split"] == "eval"], free[free["split"] == "eval"])
    more = assign_shards(seg.iloc[:990].assign(split="train"), shard_size=25, max_shards=8)
    merged = capped[capped["split"] == "train"].merge(more, on="ytid", suffixes=("_a", "_b"))
    assert len(merged) == 900 and (merged["shard_a"] == merged["shard_b"]).all()
    assert shard_count(900, shard_size=25, max_shards=8) == 8
    assert shard_count(0, shard_size=25, max_shards=8) == 1
    assert shard_count(100, shard_size=25, max_shards=None) == 4
    with pytest.raises(ValueError, match="max_shards"):
        assign_shards(both, shard_size=25, max_shards=0)


def test_quality_filter():
    qa = pd.DataFrame({"mid": ["/m/04rlf", "/m/09x0r"], "ratio": [0.95, 0.5]})
    kept, dropped = label_quality_filter([MUSIC, SPEECH], qa=qa, min_ratio=0.8)
    assert kept == [MUSIC] and dropped == [(SPEECH, 0.5)]
    kept, dropped = label_quality_filter([MUSIC, SPEECH], qa=qa, min_ratio=0.0)
    assert kept == [MUSIC, SPEECH] and dropped == []


def _config(**over):
    cfg = {
        "metadata": {"dir": "", "train_segments": "", "eval_segments": "", "class_labels": "",
                     "ontology": "", "qa_counts": ""},
        "labels": ["Music", "Speech"],
        "label_quality": {"min_ratio": 0.8},
        "selection": {"max_positives": None, "negatives_per_positive": 1.0, "seed": 1},
        "shard_size": 250,
        "demo": {"enabled": False},
    }  # fmt: skip
    cfg.update(over)
    return cfg


def test_plan_on_real_metadata(real_metadata):
    cfg = _config()
    cfg["metadata"] = {
        "dir": str(real_metadata),
        "train_segments": "balanced_train_segments.csv",
        "eval_segments": "eval_segments.csv",
        "class_labels": "class_labels_indices.csv",
        "ontology": "ontology.json",
        "qa_counts": "",
    }
    plan = make_plan(cfg, metadata_paths(cfg))
    assert [lab.name for lab in plan.labels] == ["Music", "Speech"]
    sel = plan.selection
    assert set(sel["split"]) == {"train", "eval"}
    assert sel.groupby("split")["ytid"].apply(lambda s: s.is_unique).all()
    for split in ("train", "eval"):
        part = sel[sel["split"] == split]
        ratio = len(part) / 250
        assert len(plan.shards(split)) == int(np.ceil(ratio))
    assert plan.clips_per_shard("train") == -(-len(sel[sel["split"] == "train"]) // len(
        plan.shards("train")))  # fmt: skip
    # max_shards caps the shards of a split; its shards grow (the eval split's too here)
    capped = make_plan({**cfg, "max_shards": 4}, metadata_paths(cfg))
    for split in ("train", "eval"):
        n = int((sel["split"] == split).sum())
        assert capped.shards(split) == [0, 1, 2, 3]
        assert capped.clips_per_shard(split) == -(-n // 4)
        sizes = [capped.shard_size(split, k) for k in range(4)]
        assert sum(sizes) == n and min(sizes) > n / 4 * 0.8
    # every Music positive of the balanced set is selected
    bal = md.read_segments(real_metadata / "balanced_train_segments.csv")
    music = set(bal.loc[bal["labels"].str.contains("/m/04rlf"), "ytid"])
    assert music <= set(sel.loc[sel["split"] == "train", "ytid"])


def test_plan_drops_low_quality_label(data_dir, tmp_path):
    cfg = _config(labels=["Vehicle", "Music"])
    cfg["metadata"] = {
        "dir": str(data_dir),
        "train_segments": "segments_small.csv",
        "eval_segments": "",
        "class_labels": "class_labels_small.csv",
        "ontology": "",
        "qa_counts": "qa_true_counts_small.csv",
    }
    plan = make_plan(cfg, metadata_paths(cfg))
    assert [lab.name for lab in plan.labels] == ["Music"]
    assert [(lab.name, r) for lab, r in plan.dropped] == [("Vehicle", 0.7)]
    cfg["labels"] = ["Vehicle"]
    with pytest.raises(ValueError, match="every target label is below"):
        make_plan(cfg, metadata_paths(cfg))


@pytest.mark.parametrize(
    ("split", "hint"),
    [("train", "point metadata.train_segments at a CSV that lists segments"),
     ("eval", 'set metadata.eval_segments to "" to run without an eval split')],
)  # fmt: skip
def test_plan_segment_csv_without_segments(data_dir, tmp_path, split, hint):
    empty = tmp_path / f"{split}_segments.csv"
    empty.write_text(
        "# created\n# num_ytids=0\n# YTID, start_seconds, end_seconds, positive_labels\n"
    )
    cfg = _config(labels=["Music"])
    cfg["metadata"] = {
        "dir": str(data_dir),
        "train_segments": str(empty) if split == "train" else "segments_small.csv",
        "eval_segments": str(empty) if split == "eval" else "",
        "class_labels": "class_labels_small.csv",
        "ontology": "",
        "qa_counts": "",
    }
    with pytest.raises(md.MetadataError) as err:
        make_plan(cfg, metadata_paths(cfg))
    msg = str(err.value)
    assert msg.startswith(f"{empty}: no segments below the header; "), msg
    assert hint in msg and "\n" not in msg


def test_train_eval_overlap():
    train, ev = _segments(50, 7), _segments(20, 8)
    ev.loc[:4, "ytid"] = train["ytid"].iloc[10:15].to_numpy()
    dropped, n = train_eval_overlap(train, ev, mode="drop_from_train")
    assert n == 5 and len(dropped) == 45
    assert not dropped["ytid"].isin(ev["ytid"]).any()
    assert dropped.equals(train.drop(index=range(10, 15)).reset_index(drop=True))
    kept, n = train_eval_overlap(train, ev, mode="keep")
    assert n == 5 and kept.equals(train)
    with pytest.raises(ValueError, match="selection.train_eval_overlap is 'drop'"):
        train_eval_overlap(train, ev, mode="drop")


def _overlap_config(data_dir, train, evals, **selection):
    cfg = _config(labels=["Music"])
    cfg["selection"] = {**cfg["selection"], "negatives_per_positive": 0.0, **selection}
    cfg["metadata"] = {
        "dir": str(data_dir),
        "train_segments": str(train),
        "eval_segments": str(evals),
        "class_labels": "class_labels_small.csv",
        "ontology": "",
        "qa_counts": "",
    }
    return cfg


@pytest.mark.parametrize("mode", [None, "drop_from_train", "keep"])
def test_plan_train_eval_overlap(data_dir, tmp_path, mode):
    seg = md.read_segments(data_dir / "segments_small.csv")
    md.write_segments(tmp_path / "train.csv", seg)
    # two Music positives of train, and one segment of its own
    ev = seg[seg["ytid"].isin(["-0RWZT-miFs", "r2r2r2r2r2r"])]
    own = pd.DataFrame({"ytid": ["NEWNEWNEW00"], "start": [0.0], "end": [10.0],
                        "labels": ["/m/04rlf"]})  # fmt: skip
    md.write_segments(tmp_path / "eval.csv", pd.concat([ev, own], ignore_index=True))
    extra = {} if mode is None else {"train_eval_overlap": mode}
    cfg = _overlap_config(data_dir, tmp_path / "train.csv", tmp_path / "eval.csv", **extra)
    plan = make_plan(cfg, metadata_paths(cfg))
    train = set(plan.selection.loc[plan.selection["split"] == "train", "ytid"])
    evals = set(plan.selection.loc[plan.selection["split"] == "eval", "ytid"])
    assert evals == {"-0RWZT-miFs", "r2r2r2r2r2r", "NEWNEWNEW00"}
    if mode == "keep":
        assert train == {"--PJHxphWEs", "-0RWZT-miFs", "k0k0k0k0k0k", "r2r2r2r2r2r"}
        assert plan.messages == [
            "audiosetflow: 2 YTIDs are in both the train and the eval CSV: used for training "
            "and for evaluation (selection.train_eval_overlap: keep)"
        ]
    else:  # drop_from_train, also the default
        assert train == {"--PJHxphWEs", "k0k0k0k0k0k"}
        assert plan.messages == [
            "audiosetflow: 2 YTIDs are in both the train and the eval CSV: kept out of training "
            "(selection.train_eval_overlap: drop_from_train)"
        ]


def test_plan_without_overlap_has_no_message(data_dir, tmp_path):
    seg = md.read_segments(data_dir / "segments_small.csv")
    md.write_segments(tmp_path / "train.csv", seg.iloc[:5])
    md.write_segments(tmp_path / "eval.csv", seg.iloc[5:])
    cfg = _overlap_config(data_dir, tmp_path / "train.csv", tmp_path / "eval.csv")
    assert make_plan(cfg, metadata_paths(cfg)).messages == []


def test_plan_train_same_as_eval(data_dir, tmp_path):
    seg = md.read_segments(data_dir / "segments_small.csv")
    md.write_segments(tmp_path / "train.csv", seg)
    md.write_segments(tmp_path / "eval.csv", seg)
    cfg = _overlap_config(data_dir, tmp_path / "train.csv", tmp_path / "eval.csv")
    with pytest.raises(md.MetadataError, match=r"train.csv: every YTID is also in .*eval.csv"):
        make_plan(cfg, metadata_paths(cfg))
    cfg["selection"]["train_eval_overlap"] = "keep"
    plan = make_plan(cfg, metadata_paths(cfg))
    assert plan.messages == [
        "audiosetflow: 8 YTIDs are in both the train and the eval CSV: used for training "
        "and for evaluation (selection.train_eval_overlap: keep)"
    ]


def test_selection_does_not_depend_on_row_order():
    """The CSV rows in another order select the same segments (keyed-hash draws of YTIDs)."""
    seg = {"train": _segments(2000, 7), "eval": _segments(500, 8)}
    kw = dict(labels=[MUSIC], extra_labels=[SPEECH], max_positives=100, seed=5)
    a = select_segments(seg, **kw)
    shuffled = {
        k: v.sample(frac=1.0, random_state=1).reset_index(drop=True) for k, v in seg.items()
    }
    b = select_segments(shuffled, **kw)
    key = ["split", "ytid"]
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    )
    # a pool grown by other clips keeps most of the drawn ones (only those ranked out move)
    grown = {"train": pd.concat([seg["train"], _segments(200, 9)]), "eval": seg["eval"]}
    c = select_segments(grown, **kw)
    kept = set(a.loc[a["split"] == "train", "ytid"]) & set(c.loc[c["split"] == "train", "ytid"])
    assert len(kept) > 0.8 * (a["split"] == "train").sum()
