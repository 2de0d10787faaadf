"""Choosing the segments to process and splitting them into shards.

Selection, per split and target label: every positive segment (up to ``max_positives``, drawn
with a fixed seed), plus ``negatives_per_positive`` times as many negatives (segments without
that label), drawn with the same seed. The union over labels is processed. Each draw takes the
segments of lowest keyed-hash rank of their YTID (:mod:`audiosetflow.learning.draw`), so the
selection depends on the YTIDs, their labels and the seed, not on the order of the CSV rows.

A YTID listed in both the train and the eval CSV is, by default, taken out of train before the
selection (``selection.train_eval_overlap``), so that no clip is both trained and tested on.

Shards: a YTID's shard is given by *jump consistent hashing* (Lamping & Veach, 2014) of a
stable 64-bit hash of the YTID into ``ceil(n / shard_size)`` buckets. When the selection grows
and one more shard is needed, only about ``1 / n_shards`` of the YTIDs move, all of them into
the new shard; every other YTID keeps its shard, so finished shards stay finished.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .learning.draw import lowest_ranked, ytid_hash
from .metadata import Label
from .ontology import Ontology, expand_labels

__all__ = [
    "select_segments",
    "label_quality_filter",
    "train_eval_overlap",
    "assign_shards",
    "shard_count",
    "ytid_hash64",
    "jump_hash",
]

SELECTION_COLUMNS = ["ytid", "split", "shard", "start", "end", "labels"]
TRAIN_EVAL_OVERLAP = ("drop_from_train", "keep")


def label_quality_filter(
    labels: Sequence[Label], *, qa: pd.DataFrame | None, min_ratio: float
) -> tuple[list[Label], list[tuple[Label, float]]]:
    """Split ``labels`` into those whose rated-true ratio is at least ``min_ratio`` and those
    dropped (with their ratio). ``min_ratio <= 0`` or ``qa is None`` keeps all.

    A label missing from the quality file is kept (its quality is unknown, not bad).
    """
    if qa is None or min_ratio <= 0:
        return list(labels), []
    ratio = dict(zip(qa["mid"], qa["ratio"], strict=True))
    kept, dropped = [], []
    for lab in labels:
        r = ratio.get(lab.mid)
        if r is not None and not (r >= min_ratio):
            dropped.append((lab, float(r)))
        else:
            kept.append(lab)
    return kept, dropped


def train_eval_overlap(
    train: pd.DataFrame, eval_: pd.DataFrame, *, mode: str = "drop_from_train"
) -> tuple[pd.DataFrame, int]:
    """Handle the YTIDs that are in both the train and the eval segments.

    Parameters
    ----------
    train, eval_ : DataFrame
        Segments of the two splits, as from :func:`audiosetflow.metadata.read_segments`.
    mode : {"drop_from_train", "keep"}
        ``drop_from_train`` removes those YTIDs from ``train``; ``keep`` leaves it as it is.

    Returns
    -------
    (DataFrame, int)
        The train segments to select from, and how many YTIDs are in both splits.
    """
    if mode not in TRAIN_EVAL_OVERLAP:
        raise ValueError(
            f"config.yaml: selection.train_eval_overlap is {mode!r}; "
            f"use one of {', '.join(TRAIN_EVAL_OVERLAP)}"
        )
    both = train["ytid"].isin(eval_["ytid"]).to_numpy()
    n_both = int(both.sum())
    if n_both and mode == "drop_from_train":
        train = train.loc[~both].reset_index(drop=True)
    return train, n_both


class _Draws:
    """Keyed-hash draws among the rows of one split (the YTIDs' hashes computed once, at the
    first draw)."""

    def __init__(self, ytids: pd.Series, *, seed: int) -> None:
        self.ytids = ytids.astype(str).to_numpy()
        self.seed = seed
        self._hashes: np.ndarray | None = None

    def lowest(self, idx: np.ndarray, n: int, *, key: str) -> np.ndarray:
        """The ``n`` positions of ``idx`` whose YTIDs rank lowest in the draw ``key``."""
        if self._hashes is None:
            self._hashes = ytid_hash(self.ytids)
        drawn = lowest_ranked(self.ytids[idx], n, seed=self.seed, key=key, hashes=self._hashes[idx])
        return idx[drawn]


def select_segments(
    segments: Mapping[str, pd.DataFrame],
    *,
    labels: Sequence[Label],
    max_positives: int | None = None,
    negatives_per_positive: float = 1.0,
    seed: int = 0,
    extra_labels: Sequence[Label] = (),
    select_all: bool = False,
    ontology: Ontology | None = None,
) -> pd.DataFrame:
    """Select the segments to process.

    The union of: per label of ``labels``, its positives and the drawn negatives (what a
    binary model needs); per label of ``extra_labels`` its positives (the multi-label model:
    every clip is a negative of the other labels); every segment with ``select_all``.

    Parameters
    ----------
    segments : mapping of str to DataFrame
        Split name (``"train"``, ``"eval"``) to the frame from
        :func:`audiosetflow.metadata.read_segments`.
    labels : sequence of Label
        Target labels.
    max_positives : int, optional
        Cap on positives per label and split (``None``: all).
    negatives_per_positive : float
        Negatives drawn per positive, for balancing.
    seed : int
        Seed of every draw; the result is a pure function of the inputs. Which segments are
        drawn does not depend on the order of the rows (keyed-hash ranks of the YTIDs,
        :func:`~audiosetflow.learning.draw.lowest_ranked`).
    extra_labels : sequence of Label
        Labels whose positives (up to ``max_positives``) are selected without negatives.
    select_all : bool
        Select every segment of every split (``multilabel.labels: all``).
    ontology : Ontology, optional
        Expand each segment's labels by their ancestors before matching
        (``selection.expand_ontology``); the ``labels`` column keeps the MIDs as listed.

    Returns
    -------
    pandas.DataFrame
        Columns ``ytid, split, start, end, labels`` in file order within each split.
    """
    parts = []
    for split, df in segments.items():
        if df.empty:
            continue
        text = df["labels"].astype(str)
        if ontology is not None:
            text = text.map(lambda v: ",".join(expand_labels(v, ontology)))
        padded = "," + text + ","
        draws = _Draws(df["ytid"], seed=seed)
        keep = np.full(len(df), bool(select_all))
        binary = {lab.mid for lab in labels}
        extra = [lab for lab in extra_labels if lab.mid not in binary]
        for lab in [] if select_all else [*labels, *extra]:
            pos = padded.str.contains("," + lab.mid + ",", regex=False).to_numpy()
            pos_idx = np.flatnonzero(pos)
            key = f"{split}\x1f{lab.mid}"
            if max_positives is not None and len(pos_idx) > max_positives:
                pos_idx = draws.lowest(pos_idx, max_positives, key=key + "\x1fpos")
            if lab.mid not in binary:
                keep[pos_idx] = True
                continue
            neg_pool = np.flatnonzero(~pos)
            n_neg = min(len(neg_pool), int(round(len(pos_idx) * negatives_per_positive)))
            neg_idx = draws.lowest(neg_pool, n_neg, key=key + "\x1fneg") if n_neg else []
            keep[pos_idx] = True
            keep[neg_idx] = True
        sel = df.loc[keep, ["ytid", "start", "end", "labels"]].copy()
        sel.insert(1, "split", split)
        parts.append(sel)
    if not parts:
        return pd.DataFrame(columns=["ytid", "split", "start", "end", "labels"])
    return pd.concat(parts, ignore_index=True)


def ytid_hash64(ytids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of YTIDs (first 8 bytes of BLAKE2b), as ``uint64`` of shape (n,)."""
    out = np.empty(len(ytids), dtype=np.uint64)
    for i, y in enumerate(ytids):
        out[i] = int.from_bytes(hashlib.blake2b(y.encode(), digest_size=8).digest(), "little")
    return out


def jump_hash(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """Jump consistent hash of ``uint64`` keys into ``n_buckets`` buckets.

    Parameters
    ----------
    keys : ndarray of uint64, shape (n,)
    n_buckets : int

    Returns
    -------
    ndarray of int64, shape (n,)
        Bucket of each key, in ``[0, n_buckets)``. Growing ``n_buckets`` by one moves only
        the keys that land in the new bucket.
    """
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    key = keys.astype(np.uint64).copy()
    b = np.full(len(key), -1, dtype=np.int64)
    j = np.zeros(len(key), dtype=np.int64)
    active = j < n_buckets
    mult = np.uint64(2862933555777941757)
    with np.errstate(over="ignore"):
        while active.any():
            b[active] = j[active]
            key[active] = key[active] * mult + np.uint64(1)
            r = ((key[active] >> np.uint64(33)) + np.uint64(1)).astype(np.float64)
            j[active] = ((b[active] + 1).astype(np.float64) * (float(1 << 31) / r)).astype(np.int64)
            active = j < n_buckets
    return b


def shard_count(n: int, *, shard_size: int, max_shards: int | None = None) -> int:
    """Shards of a split of ``n`` segments: ``ceil(n / shard_size)``, at least 1 and at most
    ``max_shards`` (``None``: no cap), where larger shards then hold the segments."""
    count = max(1, math.ceil(n / shard_size))
    return count if max_shards is None else min(count, int(max_shards))


def assign_shards(
    selection: pd.DataFrame, *, shard_size: int, max_shards: int | None = None
) -> pd.DataFrame:
    """Add a ``shard`` column: per split, :func:`shard_count` shards by jump hashing.

    Parameters
    ----------
    selection : DataFrame
        The selected segments (``ytid, split, start, end, labels``).
    shard_size : int
        Segments per shard, >= 1.
    max_shards : int, optional
        At most this many shards per split (>= 1): a split of more than
        ``shard_size * max_shards`` segments gets ``max_shards`` larger shards, so that the
        number of Snakemake jobs, and the time Snakemake takes to plan them, stay bounded
        however large the metadata.

    Returns
    -------
    DataFrame
        A new frame sorted by split, shard and file order, with columns
        ``ytid, split, shard, start, end, labels``.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if max_shards is not None and max_shards < 1:
        raise ValueError("max_shards must be >= 1")
    out = selection.copy()
    out["shard"] = np.zeros(len(out), dtype=np.int64)
    for split, idx in out.groupby("split", sort=False).groups.items():
        n = len(idx)
        n_shards = shard_count(n, shard_size=shard_size, max_shards=max_shards)
        keys = ytid_hash64(out.loc[idx, "ytid"].tolist())
        out.loc[idx, "shard"] = jump_hash(keys, n_shards)
        del split
    out["_order"] = np.arange(len(out))
    out = out.sort_values(["split", "shard", "_order"], kind="stable").drop(columns="_order")
    return out[SELECTION_COLUMNS].reset_index(drop=True)
