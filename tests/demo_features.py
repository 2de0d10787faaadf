"""Feature shards of the offline demo corpus, computed in process (not a test module).

The workflow gets the same clips by serving the demo media through yt-dlp, decoding and
trimming them with ffmpeg; here each clip's segment is taken straight from
:func:`audiosetflow.demo.synthesize` (short segments zero-padded to the clip length), which
is what that path decodes up to the codec's loss, and in a fraction of the time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audiosetflow import demo

CLIP_SECONDS = 10.0


def write_demo_features(
    folder: Path, spec: demo.DemoSpec, *, shard_size: int = 40
) -> dict[str, Path]:
    """Write ``folder/{train,eval}/shard-NNNN.parquet`` for every clip of the demo corpus.

    Parameters
    ----------
    folder : Path
        Where the two splits' shard folders go.
    spec : audiosetflow.demo.DemoSpec
        The corpus.
    shard_size : int
        Clips per shard.

    Returns
    -------
    dict of str to Path
        The shard folder of each split (``train``, ``eval``).
    """
    from audiosetflow.audio.features import FeatureParams, compute, write_shard

    sr = demo.MEDIA_SR
    params = FeatureParams.from_config({}, sample_rate=sr)
    names = {mid: name for mid, name, _ in demo.CLASSES.values()}
    corpus = demo.corpus(spec)
    out = {}
    for split in ("train", "eval"):
        part = corpus[corpus["split"] == split].reset_index(drop=True)
        rows, feats = [], []
        for _, r in part.iterrows():
            y = demo.synthesize(r, sample_rate=sr)
            seg = y[int(round(r["start"] * sr)) : int(round(r["end"] * sr))]
            n = int(CLIP_SECONDS * sr)
            seg = np.pad(seg, (0, max(0, n - len(seg))))[:n]
            mids = r["labels"].split(",")
            rows.append(
                {
                    "ytid": r["ytid"],
                    "split": split,
                    "start": float(r["start"]),
                    "end": float(r["end"]),
                    "labels": mids,
                    "label_names": [names[m] for m in mids],
                    "status": "ok",
                    "reason": "",
                    "short": bool(r["end"] - r["start"] < CLIP_SECONDS - 1e-6),
                    "duration": float(r["end"] - r["start"]),
                }
            )
            feats.append(compute(seg, params=params))
        meta = pd.DataFrame(rows)
        out[split] = folder / split
        out[split].mkdir(parents=True, exist_ok=True)
        for k, lo in enumerate(range(0, len(meta), shard_size)):
            write_shard(
                out[split] / f"shard-{k:04d}.parquet",
                meta=meta.iloc[lo : lo + shard_size].reset_index(drop=True),
                features=feats[lo : lo + shard_size],
                params=params,
            )
    return out
