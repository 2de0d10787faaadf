"""Example-clip figures: which clips are chosen, and the folder of PNGs written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiosetflow.audio.features import FeatureParams, compute, write_shard
from audiosetflow.reporting.examples import choose_examples, plot_examples
from audiosetflow.shard import Layout

SR = 22050
PARAMS = FeatureParams(sample_rate=SR)
MUSIC, SPEECH, VEHICLE = "/m/04rlf", "/m/09x0r", "/m/07yv9"
NAMES = {MUSIC: "Music", SPEECH: "Speech", VEHICLE: "Vehicle"}


def _meta(rows):
    return pd.DataFrame(rows, columns=["ytid", "split", "labels"])


@pytest.mark.parametrize(
    ("example_clips", "n_examples", "expected"),
    [
        ((), 1, [("-aaaaaaaaaa", "eval"), ("Bbbbbbbbbbb", "train")]),
        ((), 2, [("-aaaaaaaaaa", "eval"), ("Ccccccccccc", "train"), ("Bbbbbbbbbbb", "train")]),
        ((), 0, []),
        (("Ccccccccccc", "missing0000", "Ccccccccccc"), 3, [("Ccccccccccc", "train")]),
    ],
)
def test_choose_examples(example_clips, n_examples, expected) -> None:
    meta = _meta(
        [
            ("Ccccccccccc", "train", [MUSIC]),
            ("Bbbbbbbbbbb", "train", [SPEECH, VEHICLE]),
            ("-aaaaaaaaaa", "eval", [MUSIC]),
            ("Ddddddddddd", "train", [VEHICLE]),
        ]
    )
    got = choose_examples(
        meta,
        labels={MUSIC: "Music", SPEECH: "Speech"},
        example_clips=example_clips,
        n_examples=n_examples,
    )
    assert got == expected


def test_plot_examples_writes_one_png_per_clip_and_replaces_the_folder(tmp_path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    clips = {
        "Aaaaaaaaaaa": 0.3 * np.sin(2 * np.pi * 440 * t),
        "Bbbbbbbbbbb": 0.1 * rng.standard_normal(len(t)),
        "Ccccccccccc": np.zeros(len(t)),  # silence must not break the figure
    }
    labels = {"Aaaaaaaaaaa": [MUSIC], "Bbbbbbbbbbb": [SPEECH], "Ccccccccccc": [VEHICLE]}
    Layout(tmp_path).audio_dir("clips", "train").mkdir(parents=True)
    rows, feats = [], []
    for ytid, y in clips.items():
        y = y.astype(np.float32)
        sf.write(Layout(tmp_path).clip("train", ytid), y, SR, subtype="PCM_16")
        rows.append(
            {
                "ytid": ytid,
                "split": "train",
                "start": 0.0,
                "end": 2.0,
                "labels": labels[ytid],
                "label_names": [NAMES[m] for m in labels[ytid]],
                "status": "ok",
                "reason": "",
                "short": False,
                "duration": 2.0,
            }
        )
        feats.append(compute(y, params=PARAMS))
    feats_dir = tmp_path / "features" / "train"
    feats_dir.mkdir(parents=True)
    write_shard(feats_dir / "shard-0000.parquet", meta=pd.DataFrame(rows), features=feats,
                params=PARAMS)  # fmt: skip
    out = tmp_path / "plots" / "examples"
    out.mkdir(parents=True)
    (out / "stale.png").write_bytes(b"old")

    written = plot_examples(
        features=[feats_dir / "shard-0000.parquet"],
        layout=Layout(tmp_path),
        out_dir=out,
        labels={MUSIC: "Music", SPEECH: "Speech", VEHICLE: "Vehicle"},
        names=NAMES,
        n_examples=1,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "Aaaaaaaaaaa.png",
        "Bbbbbbbbbbb.png",
        "Ccccccccccc.png",
    ]
    assert written == [out / "Aaaaaaaaaaa.png", out / "Bbbbbbbbbbb.png", out / "Ccccccccccc.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    # nothing temporary left next to it
    assert [p.name for p in out.parent.iterdir()] == ["examples"]
