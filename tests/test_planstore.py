"""The plan computed once and read back (audiosetflow.planstore): same plan, cheap reads,
replanned when the config or a metadata file changes, safe when processes start at once."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil

import pandas as pd
import pytest

from audiosetflow import metadata as md
from audiosetflow import planstore
from audiosetflow.plan import make_plan, metadata_paths, stored_plan
from audiosetflow.smk import manifest_param


def _config(data_dir, train):
    return {
        "metadata": {"dir": str(data_dir), "train_segments": str(train), "eval_segments": "",
                     "class_labels": "class_labels_small.csv", "ontology": "",
                     "qa_counts": ""},
        "labels": ["Music"],
        "label_quality": {"min_ratio": 0.0},
        "selection": {"max_positives": None, "negatives_per_positive": 1.0, "seed": 1},
        "shard_size": 3,
        "demo": {"enabled": False},
        "training": {"epochs": 5},
    }  # fmt: skip


@pytest.fixture
def setup(data_dir, tmp_path):
    train = tmp_path / "train.csv"
    shutil.copy(data_dir / "segments_small.csv", train)
    cfg = _config(data_dir, train)
    return cfg, train, tmp_path / "results" / "plan"


def _same(a, b):
    assert [lab.slug for lab in a.labels] == [lab.slug for lab in b.labels]
    assert a.dropped == b.dropped and a.names == b.names and a.messages == b.messages
    assert a.multilabel == b.multilabel and a.splits == b.splits
    for s in a.splits:
        assert a.shards(s) == b.shards(s)
        for n in a.shards(s):
            pd.testing.assert_frame_equal(
                a.shard_rows(s, n).reset_index(drop=True),
                b.shard_rows(s, n).reset_index(drop=True),
                check_dtype=False,  # text as object or as pandas' string dtype
            )
            assert a.manifest(s, n) == b.manifest(s, n) == manifest_param(a.shard_rows(s, n))
            assert a.shard_ytids(s, n) == b.shard_rows(s, n)["ytid"].tolist()
    pd.testing.assert_frame_equal(a.selection, b.selection, check_dtype=False)


def test_stored_plan_equals_made_plan_and_is_read_back(setup):
    cfg, train, folder = setup
    made = make_plan(cfg, metadata_paths(cfg))
    first = stored_plan(cfg, metadata_paths(cfg), folder)
    heads = sorted(folder.glob("plan-*.json"))
    assert len(heads) == 1 and heads[0].with_suffix(".arrow").exists()
    _same(made, first)
    key = heads[0].stem.removeprefix("plan-")
    loaded, stored = planstore.load_or_make(cfg, metadata_paths(cfg), folder)
    assert stored and loaded._selection is None  # read back, the selection not yet loaded
    _same(made, loaded)
    # a key that is not stored: None; a plan with a missing Arrow file is not complete
    assert planstore.load(folder, "0" * 24) is None
    (folder / f"plan-{key}.arrow").unlink()
    assert planstore.load(folder, key) is None


def test_only_plan_keys_and_metadata_content_replan(setup):
    cfg, train, folder = setup
    paths = metadata_paths(cfg)
    key = planstore.plan_key(cfg, paths.all(), folder)
    # a key the plan does not read: same key
    cfg2 = {**cfg, "training": {"epochs": 99}}
    assert planstore.plan_key(cfg2, paths.all(), folder) == key
    # a key it reads: another key
    cfg3 = {**cfg, "shard_size": 4}
    assert planstore.plan_key(cfg3, paths.all(), folder) != key
    cfg4 = {**cfg, "multilabel": {"enabled": True, "labels": "all", "width": 8}}
    cfg5 = {**cfg, "multilabel": {"enabled": True, "labels": "all", "width": 64}}
    assert planstore.plan_key(cfg4, paths.all(), folder) == planstore.plan_key(
        cfg5, paths.all(), folder
    )
    # the same bytes touched (new mtime): same key, hashed again once
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert planstore.plan_key(cfg, paths.all(), folder) == key
    memo = json.loads((folder / "files.json").read_text())
    assert memo[str(train.resolve())]["stat"][1] == st.st_mtime_ns + 10**9
    # other content of the same size: another key
    text = train.read_text()
    seg = md.read_segments(train)
    assert "/m/04rlf" in text
    train.write_text(text.replace("/m/04rlf", "/m/09x0r", 1))
    assert train.stat().st_size == st.st_size
    new_key = planstore.plan_key(cfg, paths.all(), folder)
    assert new_key != key
    plan = stored_plan(cfg, paths, folder)
    assert len(plan.selection) != 0 and len(seg) == len(md.read_segments(train))


def test_replanned_plan_follows_the_metadata(setup):
    cfg, train, folder = setup
    before = stored_plan(cfg, metadata_paths(cfg), folder)
    seg = md.read_segments(train)
    md.write_segments(train, seg.iloc[: len(seg) // 2])
    after = stored_plan(cfg, metadata_paths(cfg), folder)
    assert set(after.selection["ytid"]) < set(before.selection["ytid"])
    assert set(after.selection["ytid"]) == set(
        make_plan(cfg, metadata_paths(cfg)).selection["ytid"]
    )


def _worker(args):
    cfg, folder = args
    plan = stored_plan(cfg, metadata_paths(cfg), folder)
    return sorted(plan.selection["ytid"])


def test_processes_starting_at_once_agree(setup):
    cfg, train, folder = setup
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        results = pool.map(_worker, [(cfg, folder)] * 8)
    assert all(r == results[0] for r in results) and results[0]
    assert len(list(folder.glob("plan-*.json"))) == 1
    assert not list(folder.glob(".*.tmp"))  # no temporary file left behind
