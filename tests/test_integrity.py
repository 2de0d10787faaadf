"""Features shards checked against their shard's record before use (issue "Safe to share, safe
on bad input"): a truncated shard, one rewritten with half its rows and one changed in place
stop every reader with one line; the workflow's parse-time check sets the first two aside; the
status counts their clips as not done. Real Parquet files written by the features stage's own
writer; the real-Snakemake runs are in test_workflow.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from synth_features import write_split

from audiosetflow.audio.features import load_split, load_summary, shard_files
from audiosetflow.integrity import (
    DamagedShardError,
    check_shards,
    mark_damaged,
    problem,
    set_aside_damaged,
)
from audiosetflow.learning.multilabel import clip_table
from audiosetflow.learning.stream import index_parts
from audiosetflow.reporting.status import status
from audiosetflow.shard import Layout, ShardTable, Status


def _results(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Two sealed train shards of 8 clips, with their shard records."""
    folder = tmp_path / "results" / "features" / "train"
    meta = write_split(folder, "train", n_pos=8, n_neg=8, shard_size=8)
    files = sorted(folder.glob("shard-*.parquet"))
    for f in files:
        shard = Layout.locate(f)
        rows = pq.read_table(f, columns=["ytid", "start", "end"]).to_pandas()
        man = rows.assign(split="train", shard=shard.shard, labels="/m/04rlf")
        table = ShardTable.from_manifest(man)
        for y in table.ytids:
            for st in ("download", "transcode", "trim", "features"):
                table.set(st, y, Status.OK)
        table.save(shard, shard.table("features"))
    assert len(meta) == 16 and len(files) == 2
    return folder, files


def _half(path: Path) -> None:
    t = pq.read_table(path)
    pq.write_table(t.slice(0, t.num_rows // 2), path)


def test_the_features_stage_seals_each_shard_beside_its_record(tmp_path):
    _, files = _results(tmp_path)
    seal = json.loads(Layout.locate(files[0]).seal.read_text())
    assert seal["file"] == "shard-0000.parquet" and seal["rows"] == 8
    assert seal["bytes"] == files[0].stat().st_size
    assert set(seal) == {"file", "rows", "bytes", "sha256"}
    assert problem(files[0]) is None
    check_shards(files)  # sound: nothing raised


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        ("truncate", "not a readable Parquet file"),
        ("half", "4 rows, the shard record says 8"),
        ("flip", "its SHA-256 differs from the shard record's"),
    ],
)
def test_every_reader_stops_at_a_damaged_shard_with_one_line(tmp_path, damage, what):
    folder, files = _results(tmp_path)
    bad = files[1]
    if damage == "truncate":
        os.truncate(bad, bad.stat().st_size // 2)
    elif damage == "half":
        _half(bad)
    else:  # one byte changed in the middle, size and modification time kept
        st = bad.stat()
        data = bytearray(bad.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
        os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    readers = {
        "load_summary": lambda: load_summary(folder),
        "load_split": lambda: load_split(files),
        "shard_files": lambda: shard_files(folder),
        "index_parts (training)": lambda: index_parts(
            {"train": pd.DataFrame({"ytid": ["t0000000000"], "split": ["train"]})},
            {"train": folder},
        ),
        "clip_table (multi-label)": lambda: clip_table(folder),
    }
    for name, read in readers.items():
        with pytest.raises(DamagedShardError) as exc:
            read()
        text = str(exc.value)
        assert "\n" not in text, name
        assert text.startswith(f"{bad}: {what}"), (name, text)
        assert text.endswith("the features shard is damaged; delete it and rerun (the features "
                             "rule rebuilds it)")  # fmt: skip


def test_parse_time_check_sets_aside_a_cut_or_shrunk_shard_and_status_is_not_all_done(tmp_path):
    _, files = _results(tmp_path)
    res = tmp_path / "results"
    done = status(res).set_index("stage").loc["features"]
    assert (done["done"], done["failed"]) == (16, 0)
    _half(files[0])
    os.truncate(files[1], 100)
    # status: the clips of both shards are no longer done
    st = status(res).set_index("stage").loc["features"]
    assert (st["done"], st["transient"]) == (0, 16), st.to_dict()
    assert "features shard damaged (4 rows, the shard record says 8): rerun" in st["reasons"]
    lines = set_aside_damaged(files)
    assert len(lines) == 2 and all("\n" not in ln for ln in lines)
    assert lines[0] == (
        f"{files[0]}: 4 rows, the shard record says 8: the features shard is "
        "damaged; moved to shard-0000.parquet.damaged, this run rebuilds it"
    )
    assert not files[0].exists() and files[0].with_name("shard-0000.parquet.damaged").exists()
    assert not files[1].exists()
    # a shard of the layout with a record but no seal is checked by its rows against the record
    shard = Layout.locate(files[0])
    shard.seal.unlink()
    table = ShardTable.read_record(shard)
    pq.write_table(pq.read_table(files[0].with_name("shard-0000.parquet.damaged")), files[0])
    assert problem(files[0]) == "4 rows, the shard record says 8"
    assert (
        mark_damaged(table, shard)
        == "features shard damaged (4 rows, the shard record says 8): rerun"
    )
    assert (table.status("features") == "transient").all()
    assert set_aside_damaged([files[0]]) == []  # without a seal nothing is moved at parse time


def test_shards_outside_the_results_layout_are_not_checked(tmp_path):
    folder = tmp_path / "elsewhere"
    write_split(folder, "train", n_pos=2, n_neg=2, shard_size=4)
    (f,) = folder.glob("shard-*.parquet")
    _half(f)
    assert problem(f) is None
    assert len(load_summary(folder)) == 2
    assert isinstance(load_summary(folder), pd.DataFrame)
