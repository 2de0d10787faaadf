"""Synthetic clips and feature shards for the dataset/training/CLI tests (not a test module).

Positives of ``POS_MID`` are harmonic tones, negatives band-limited noise: separable from the
log-mel in one or two epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

POS_MID, NEG_MID = "/m/04rlf", "/m/07yv9"
SR = 22050


def synth_clip(positive: bool, seed: int, *, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    """A harmonic tone (positive) or a noise burst (negative), float32 mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if positive:
        f0 = rng.uniform(200, 500)
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
    else:
        y = rng.standard_normal(len(t))
    y = y * (0.1 + 0.05 * rng.random())
    return (y + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def ytid(split: str, i: int) -> str:
    return f"{split[0]}{i:010d}"


def write_split(
    folder: Path,
    split: str,
    *,
    n_pos: int,
    n_neg: int,
    n_failed: int = 0,
    seconds: float = 2.0,
    shard_size: int = 16,
    seed: int = 0,
) -> pd.DataFrame:
    """Write ``folder/shard-NNNN.parquet`` files of a split through features.write_shard."""
    from audiosetflow.audio.features import FeatureParams, compute, write_shard

    params = FeatureParams.from_config({}, sample_rate=SR)
    folder.mkdir(parents=True, exist_ok=True)
    rows, feats = [], []
    for i in range(n_pos + n_neg + n_failed):
        pos = i < n_pos
        failed = i >= n_pos + n_neg
        mids = [POS_MID] if pos else [NEG_MID]
        rows.append(
            {
                "ytid": ytid(split, i),
                "split": split,
                "start": 0.0,
                "end": seconds,
                "labels": mids,
                "label_names": ["Music" if pos else "Vehicle"],
                "status": "permanent" if failed else "ok",
                "reason": "download: gone" if failed else "",
                "short": False,
                "duration": float("nan") if failed else seconds,
            }
        )
        y = synth_clip(pos, seed * 100_003 + i, seconds=seconds)
        feats.append(None if failed else compute(y, params=params))
    meta = pd.DataFrame(rows)
    for n, lo in enumerate(range(0, len(meta), shard_size)):
        write_shard(
            folder / f"shard-{n:04d}.parquet",
            meta=meta.iloc[lo : lo + shard_size].reset_index(drop=True),
            features=feats[lo : lo + shard_size],
            params=params,
        )
    return meta
