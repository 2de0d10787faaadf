"""Balanced per-label training sets: which clips train, validate and test one label's models.

For a target label (a MID):

* the training pool is every training-split clip with status ``ok``: its positives plus an
  equal number of negatives drawn (seeded) from the other clips;
* validation is carved from that pool (``val_fraction``, stratified by target, seeded);
* the test set is the eval split, balanced the same way; when there is no eval split (or it
  has no positive of the label) a stratified ``test_fraction`` of the training pool is held
  out instead.

Each part is written as ``{out_dir}/{part}.tsv`` with columns ``ytid, split, target`` so that
every result can be traced back to its clips.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import read_tsv, write_tsv

__all__ = [
    "PARTS",
    "DATASET_COLUMNS",
    "balance",
    "stratified_split",
    "make_label_dataset",
    "write_dataset",
    "read_dataset",
    "features_present",
    "run_dataset",
]

log = logging.getLogger("audiosetflow.datasets")

PARTS = ("train", "val", "test")
DATASET_COLUMNS = ["ytid", "split", "target"]


def _rng(seed: int, *parts: str) -> np.random.Generator:
    """Generator seeded from the global seed and strings (e.g. the MID and a purpose)."""
    return np.random.default_rng([int(seed), *(zlib.crc32(p.encode()) for p in parts)])


def _has_label(labels, mid: str) -> bool:
    if labels is None:
        return False
    if isinstance(labels, str):
        return mid in labels.split(",")
    return mid in list(labels)


def balance(meta: pd.DataFrame, *, mid: str, rng: np.random.Generator) -> pd.DataFrame:
    """Positives of ``mid`` and an equal number of negatives drawn from the other clips.

    Only rows with ``status == "ok"`` are used. If there are fewer negatives than positives,
    positives are drawn down to the number of negatives.

    Returns
    -------
    DataFrame
        ``ytid, split, target`` sorted by ``ytid``.
    """
    ok = meta.loc[meta["status"] == "ok"].drop_duplicates("ytid")
    target = np.array([_has_label(v, mid) for v in ok["labels"]], dtype=bool)
    pos, neg = ok.loc[target], ok.loc[~target]
    n = min(len(pos), len(neg))
    if n < len(pos):
        log.warning(
            "%s: only %d negatives for %d positives: positives drawn down to %d",
            mid,
            len(neg),
            len(pos),
            n,
        )
    pick_pos = np.sort(rng.choice(len(pos), size=n, replace=False)) if n < len(pos) else None
    pos = pos.iloc[pick_pos] if pick_pos is not None else pos
    neg = neg.iloc[np.sort(rng.choice(len(neg), size=n, replace=False))]
    out = pd.concat([pos.assign(target=1), neg.assign(target=0)])
    out = out[["ytid", "split", "target"]].astype({"ytid": str, "split": str, "target": int})
    return out.sort_values("ytid", kind="stable").reset_index(drop=True)


def stratified_split(
    df: pd.DataFrame, *, fraction: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (rest, held out) with ``fraction`` of each ``target`` class held out.

    Each class with at least 2 rows gives at least one held-out row when ``fraction > 0``.
    """
    held = np.zeros(len(df), dtype=bool)
    if fraction > 0:
        for cls in (0, 1):
            idx = np.flatnonzero(df["target"].to_numpy() == cls)
            if len(idx) < 2:
                continue
            k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
            held[rng.choice(idx, size=k, replace=False)] = True
    return df.loc[~held].reset_index(drop=True), df.loc[held].reset_index(drop=True)


def make_label_dataset(
    train_meta: pd.DataFrame,
    eval_meta: pd.DataFrame | None,
    *,
    mid: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Balanced train / val / test parts of one label.

    Parameters
    ----------
    train_meta, eval_meta : DataFrame
        Clip metadata of the training and eval splits (``ytid, split, labels, status``);
        ``eval_meta`` None or empty: the test set is held out from the training pool.
    mid : str
        Target label MID.
    val_fraction, test_fraction : float
        Fractions of the (balanced) training pool used for validation / as the held-out test
        set (the latter only without eval split).
    seed : int
        Seed of every draw (combined with ``mid``, so labels draw independently).

    Returns
    -------
    dict
        ``{"train": df, "val": df, "test": df}`` with columns ``ytid, split, target``; the
        ``attrs["test_source"]`` of the test frame is ``"eval"`` or ``"train holdout"``.
    """
    pool = balance(train_meta, mid=mid, rng=_rng(seed, mid, "train"))
    if pool["target"].sum() == 0:
        raise ValueError(f"label {mid}: no training clip with status ok has this label")
    test = None
    if eval_meta is not None and len(eval_meta):
        test = balance(eval_meta, mid=mid, rng=_rng(seed, mid, "eval"))
        if test["target"].sum() == 0:
            log.warning("%s: eval split has no positive clip: holding out part of train", mid)
            test = None
    source = "eval"
    if test is None:
        source = "train holdout"
        pool, test = stratified_split(pool, fraction=test_fraction, rng=_rng(seed, mid, "test"))
    train, val = stratified_split(pool, fraction=val_fraction, rng=_rng(seed, mid, "val"))
    parts = {"train": train, "val": val, "test": test}
    for df in parts.values():
        df.attrs["test_source"] = source
    return parts


def write_dataset(out_dir: str | Path, parts: dict[str, pd.DataFrame]) -> None:
    """Write each part as ``{out_dir}/{part}.tsv`` (atomically)."""
    for part in PARTS:
        write_tsv(Path(out_dir) / f"{part}.tsv", parts[part][DATASET_COLUMNS])


def read_dataset(
    paths: str | Path | dict[str, str | Path],
) -> dict[str, pd.DataFrame]:
    """Read the parts written by :func:`write_dataset`: a folder, or ``{part: path}``.

    ``attrs["test_source"]`` is set on every part from the test set's ``split`` column.
    """
    if not isinstance(paths, dict):
        paths = {p: Path(paths) / f"{p}.tsv" for p in PARTS}
    parts = {p: read_tsv(paths[p]).astype({"target": int}) for p in PARTS}
    source = "eval" if (parts["test"]["split"] == "eval").all() else "train holdout"
    for df in parts.values():
        df.attrs["test_source"] = source
    return parts


def features_present(features: str | Path | Sequence[str | Path] | None) -> bool:
    """Whether a features folder (or a list of shard files) holds at least one Parquet shard."""
    if features is None:
        return False
    if isinstance(features, (str, Path)):
        d = Path(features)
        return d.is_dir() and any(d.glob("shard-*.parquet"))
    return any(Path(p).exists() for p in features)


def run_dataset(
    *,
    train_features: str | Path,
    eval_features: str | Path | None,
    out_dir: str | Path,
    mid: str,
    name: str = "",
    val_fraction: float,
    test_fraction: float,
    seed: int,
    use_eval: bool = True,
    logger: logging.Logger | None = None,
) -> dict[str, pd.DataFrame]:
    """Build and write one label's dataset from the feature folders.

    Parameters
    ----------
    train_features, eval_features : path
        ``results/features/train`` and ``results/features/eval`` (the latter may be missing
        or empty: no eval split).
    use_eval : bool
        False: ignore the eval split even if present (test set held out from train).
    """
    from ..audio.features import load_summary

    logger = logger or log
    train_meta = load_summary(train_features)
    eval_meta = None
    if use_eval and features_present(eval_features):
        eval_meta = load_summary(eval_features)
    parts = make_label_dataset(
        train_meta,
        eval_meta,
        mid=mid,
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
        seed=int(seed),
    )
    write_dataset(out_dir, parts)
    for part, df in parts.items():
        logger.info(
            "%s %s: %d clips (%d positive, %d negative)",
            name or mid,
            part,
            len(df),
            int(df["target"].sum()),
            int((df["target"] == 0).sum()),
        )
    logger.info("%s: test set from %s", name or mid, parts["test"].attrs["test_source"])
    return parts
