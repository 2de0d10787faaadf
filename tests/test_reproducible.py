"""Results depend on the inputs and the seed only: the real demo workflow run twice on the same
corpus, once with many small shards on 2 cores and once with few large shards on 1 core, gives
byte-identical datasets, the same per-clip features and the same multi-label parts (and, once
training is bit-reproducible, the same metrics and model weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LABELS = ("music", "speech")
PARTS = ("train", "val", "test")

pytestmark = pytest.mark.slow

#: The two runs differ only in these (the corpus, config and seed are the same): 10 demo clips
#: a class (22 train and 8 eval clips) in shards of 8 (3 train shards) or of 40 (one).
RUNS = {
    "small_shards": {"shard_size": 8, "cores": 2},
    "large_shards": {"shard_size": 40, "cores": 1},
}

DATASETS = [f"results/datasets/{lab}/{p}.tsv" for lab in LABELS for p in PARTS]
TRAINED = [
    *(f"results/metrics/{lab}.json" for lab in LABELS),
    *(f"results/models/{lab}.pt" for lab in LABELS),
    "results/metrics/multilabel.json",
    "results/models/multilabel.pt",
]


def _snakemake(root: Path, demo_dir: Path, run: dict, targets: list[str]) -> None:
    cfg = root / "repro.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                # one corpus for both runs (its media are generated once)
                "demo": {"clips_per_class": 10, "dir": str(demo_dir)},
                "shard_size": run["shard_size"],
                "download": {"cooldown": 0.0},
                "training": {"epochs": 1, "patience": 1},
                "multilabel": {"min_positives": 5, "epochs": 1},
            }
        )
    )
    cmd = [
        sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(root), "--cores", str(run["cores"]), "--configfile",
        str(REPO / "config.yaml"), str(REPO / "config/demo.yaml"), str(cfg),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed in {root}:\n{proc.stderr[-5000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Both runs, up to the datasets (and the feature shards they are made from)."""
    base = tmp_path_factory.mktemp("repro")
    out = {}
    for name, run in RUNS.items():
        root = base / name
        root.mkdir()
        _snakemake(root, base / "demo", run, DATASETS)
        out[name] = root
    return out


def _shards(root: Path, split: str) -> list[Path]:
    return sorted((root / "results/features" / split).glob("shard-*.parquet"))


def test_the_runs_really_differ_in_shards(runs):
    a, b = (len(_shards(runs[n], "train")) for n in RUNS)
    assert a > b >= 1, (a, b)


def test_datasets_are_byte_identical(runs):
    a, b = runs.values()
    for rel in DATASETS:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # and they hold the natural-prevalence eval split with its balanced subset marked
    test = pd.read_csv(a / "results/datasets/music/test.tsv", sep="\t", dtype={"ytid": str})
    assert list(test.columns) == ["ytid", "split", "target", "balanced"]
    assert (test["split"] == "eval").all() and test["balanced"].sum() < len(test)
    bal = test.loc[test["balanced"] == 1, "target"]
    assert bal.sum() == (bal == 0).sum() > 0


def _features(root: Path, split: str) -> pd.DataFrame:
    table = pads.dataset(_shards(root, split), format="parquet").to_table()
    return table.to_pandas().sort_values("ytid", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_features_of_every_clip_are_identical(runs, split):
    a, b = (_features(r, split) for r in runs.values())
    assert a["ytid"].tolist() == b["ytid"].tolist() and len(a) > 0
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        for x, y in zip(a[col], b[col], strict=True):
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=col)
            else:
                assert x == y or (x != x and y != y), (col, x, y)


def test_multilabel_parts_are_identical(runs):
    from audiosetflow.learning.multilabel import clip_table, split_parts

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    demo = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    parts = []
    for root in runs.values():
        tables = {s: clip_table(_shards(root, s)) for s in ("train", "eval")}
        parts.append(
            split_parts(
                tables["train"], tables["eval"],
                val_fraction=cfg["training"]["val_fraction"],
                test_fraction=cfg["training"]["test_fraction"],
                seed=demo["selection"]["seed"],
            )
        )  # fmt: skip
    for p in PARTS:
        pd.testing.assert_frame_equal(parts[0][p], parts[1][p])
        assert len(parts[0][p]) > 0


def _without_timings(obj):
    """A metrics JSON without the wall-clock entries (seconds spent, clips per second), which
    no run repeats."""
    if isinstance(obj, dict):
        return {
            k: _without_timings(v)
            for k, v in obj.items()
            if not (
                k in ("seconds", "time", "elapsed")
                or k.endswith(("_seconds", "_per_s", "_per_cpu_s"))
            )
        }
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def trained(runs) -> dict[str, Path]:
    """Both runs, further to the binary and multi-label models and their metrics."""
    for name, root in runs.items():
        _snakemake(root, root.parent / "demo", RUNS[name], TRAINED)
    return runs


def test_both_runs_train_every_model(trained):
    """The training runs themselves succeed (a failing run is a failure, not the expected one
    of the comparison below)."""
    for root in trained.values():
        for rel in TRAINED:
            assert (root / rel).stat().st_size > 0, rel


@pytest.mark.xfail(reason="trainer bit-reproducibility lands with the learning core", strict=False)
def test_metrics_and_model_weights_are_identical(trained):
    import torch

    a, b = trained.values()
    differ = []
    for rel in (t for t in TRAINED if t.endswith(".json")):
        ma, mb = (_without_timings(json.loads((r / rel).read_text())) for r in (a, b))
        for m in (ma, mb):  # the thread count follows --cores; it is not a result
            m.get("settings", {}).pop("threads", None)
        if ma != mb:
            differ.append(rel)
    for rel in (t for t in TRAINED if t.endswith(".pt")):
        sa, sb = (torch.load(r / rel, map_location="cpu", weights_only=False) for r in (a, b))
        assert sa["state_dict"].keys() == sb["state_dict"].keys(), rel
        bad = [k for k, v in sa["state_dict"].items() if not torch.equal(v, sb["state_dict"][k])]
        if bad:
            differ.append(f"{rel} ({len(bad)} of {len(sa['state_dict'])} tensors)")
    assert not differ, f"differ between the runs: {', '.join(differ)}"
