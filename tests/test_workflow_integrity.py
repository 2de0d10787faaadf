"""Damaged features shards in real Snakemake runs (issue "Safe to share, safe on bad input"): a
shard cut off and one rewritten with half its rows are rebuilt by a plain rerun (nothing
downloaded again, nothing else lost, the same datasets); one changed in place stops the
dataset jobs with one line naming it, and doing what the line says mends it. Between the
damage and the rerun ``audiosetflow status`` does not count their clips as done."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from faultserver import FaultServer
from test_workflow import _config, _corpus, _snakemake

from audiosetflow.shard import Layout

pytestmark = pytest.mark.slow

TARGET = "results/datasets/music/train.tsv"


def _targets(root: Path) -> list[str]:
    """A label's dataset and, as rule all lists them, every features shard: Snakemake makes a
    missing file that is only an input of finished jobs again only when it is a target."""
    plan = pd.read_csv(root / "results/reports/download_ledger.tsv", sep="\t")
    pairs = zip(plan["split"], plan["shard"], strict=True)
    return [TARGET, *sorted({f"results/features/{s}/shard-{n:04d}.parquet" for s, n in pairs})]


def _status(root: Path) -> pd.DataFrame:
    proc = subprocess.run(
        [sys.executable, "-m", "audiosetflow", "status", "--results", "results", "--format", "tsv"],
        capture_output=True, text=True, cwd=root, check=True,
    )  # fmt: skip
    return pd.read_csv(io.StringIO(proc.stdout), sep="\t").set_index(["split", "stage"])


def _record_rows(root: Path, split: str, shard: str) -> int:
    return len(pd.read_csv(root / f"results/shards/{split}/shard-{shard}/table.tsv", sep="\t"))


def test_damaged_shards_are_rebuilt_or_stop_the_run_in_one_line(tmp_path):
    _corpus(tmp_path, per_class=4, faulty=False)
    feats = tmp_path / "results/features/train"
    with FaultServer(tmp_path / "media") as srv:
        cfg = _config(tmp_path, srv.url_template(), shard_size=2)
        _snakemake(tmp_path, cfg, TARGET)
        dataset = (tmp_path / TARGET).read_text()
        shards = sorted(feats.glob("shard-*.parquet"))
        assert len(shards) >= 3
        before = {p: p.stat().st_mtime_ns for p in shards[2:]}
        clips = {p: p.stat().st_mtime_ns for p in (tmp_path / "results/audio/clips").rglob("*")}
        assert _status(tmp_path).loc[("train", "features"), "failed"] == 0

        # one shard rewritten with half its rows, one cut off
        t = pq.read_table(shards[0])
        pq.write_table(t.slice(0, t.num_rows // 2), shards[0])
        os.truncate(shards[1], shards[1].stat().st_size // 2)
        st = _status(tmp_path).loc[("train", "features")]
        assert st["transient"] == _record_rows(tmp_path, "train", "0000") + _record_rows(
            tmp_path, "train", "0001"
        ), st.to_dict()
        assert "features shard damaged" in st["reasons"]

        srv.requests.clear()
        proc = _snakemake(tmp_path, cfg, *_targets(tmp_path))  # a plain rerun
        out = proc.stdout + proc.stderr
        assert not any(srv.requests.values()), "a rebuilt shard downloaded again"
    for p, n in ((shards[0], "0000"), (shards[1], "0001")):
        assert f"audiosetflow: {p.relative_to(tmp_path)}: " in out or f"{p}: " in out
        assert f"moved to {p.name}.damaged, this run rebuilds it" in out
        assert pq.ParquetFile(p).metadata.num_rows == _record_rows(tmp_path, "train", n)
    assert "Traceback" not in out
    assert {p: p.stat().st_mtime_ns for p in shards[2:]} == before, "a sound shard was rebuilt"
    assert all(p.exists() for p in clips), "a clip was lost"
    assert (tmp_path / TARGET).read_text() == dataset
    assert _status(tmp_path).loc[("train", "features"), "failed"] == 0

    # a byte changed in place (size and time kept): the dataset jobs stop with one line
    bad = shards[2]
    stat = bad.stat()
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    os.utime(bad, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with FaultServer(tmp_path / "media") as srv:
        proc = _snakemake(tmp_path, cfg, TARGET, "--forcerun", "dataset", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        line = (
            f"{bad.relative_to(tmp_path)}: its SHA-256 differs from the shard record's (the file "
            "was changed): the features shard is damaged; delete it and rerun (the features "
            "rule rebuilds it)"
        )
        log = (tmp_path / "results/logs/datasets/music.log").read_text()
        assert line in log, log[-2000:]
        assert "Traceback" not in log
        bad.unlink()  # as the line says
        _snakemake(tmp_path, cfg, *_targets(tmp_path))
        assert not any(srv.requests.values())
    assert (tmp_path / TARGET).read_text() == dataset
    seal = json.loads(Layout.locate(bad).seal.read_text())
    assert seal["rows"] == pq.ParquetFile(bad).metadata.num_rows
