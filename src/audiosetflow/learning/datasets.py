"""Balanced per-label training sets: which clips train, validate and test one label's models.

For a target label (a MID):

* the training pool is every training-split clip with status ``ok``: its positives plus an
  equal number of negatives drawn (seeded) from the other clips;
* validation is carved from that pool (``val_fraction``, stratified by target, seeded);
* the test set is every clip of the eval split with status ``ok``, at its natural prevalence
  (all positives and all negatives); the rows of a 1:1 balanced draw of it are marked
  ``balanced = 1``. When there is no eval split (or it has no positive or no negative of the
  label) a stratified ``test_fraction`` of the training pool is held out instead.

Every draw is a keyed hash of the YTID and the seed (:mod:`.draw`): a part depends on which
clips there are, never on the order their rows were read in (shards, cores, job order).

Each part is written as ``{out_dir}/{part}.tsv`` with columns ``ytid, split, target,
balanced`` so that every result can be traced back to its clips. ``balanced`` is 1 for a row
of the balanced draw: every row of train and val (and of a test part held out of train),
the 1:1 subset of an eval test part.

A part that would be empty (a tiny corpus, a fraction of 0) is an
:class:`~audiosetflow.errors.InputError` whose one line names the label, says how many clips
there were and what to change: each part needs at least one positive and one negative.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import read_tsv, write_tsv
from .draw import held_out, lowest_ranked

__all__ = [
    "PARTS",
    "DATASET_COLUMNS",
    "balance",
    "stratified_split",
    "natural_test",
    "make_label_dataset",
    "write_dataset",
    "read_dataset",
    "check_dataset",
    "features_present",
    "run_dataset",
]

log = logging.getLogger("audiosetflow.datasets")

PARTS = ("train", "val", "test")
DATASET_COLUMNS = ["ytid", "split", "target", "balanced"]


def _key(mid: str, purpose: str) -> str:
    """The draw key of a label's draw (:func:`~.draw.hash_rank`)."""
    return f"{mid}\x1f{purpose}"


def _has_label(labels, mid: str) -> bool:
    if labels is None:
        return False
    if isinstance(labels, str):
        return mid in labels.split(",")
    return mid in list(labels)


def _labels_text(labels) -> str:
    if labels is None:
        return ""
    return labels if isinstance(labels, str) else ",".join(map(str, labels))


def _ok_clips(meta: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ``ok``, one per YTID, sorted by YTID.

    Of several rows of one YTID the one with the smallest labels text is kept, so that the
    result does not depend on the order of the rows."""
    ok = meta.loc[meta["status"] == "ok"]
    ok = ok.assign(_labels=[_labels_text(v) for v in ok["labels"]], _ytid=ok["ytid"].astype(str))
    ok = ok.sort_values(["_ytid", "_labels"], kind="stable").drop_duplicates("_ytid")
    return ok.drop(columns=["_labels", "_ytid"]).reset_index(drop=True)


def _as_part(df: pd.DataFrame, *, balanced) -> pd.DataFrame:
    out = df.assign(balanced=balanced)[DATASET_COLUMNS]
    out = out.astype({"ytid": str, "split": str, "target": int, "balanced": int})
    return out.sort_values("ytid", kind="stable").reset_index(drop=True)


def balance(meta: pd.DataFrame, *, mid: str, seed: int, key: str) -> pd.DataFrame:
    """Positives of ``mid`` and an equal number of negatives drawn from the other clips.

    Only rows with ``status == "ok"`` are used (one per YTID). If there are fewer negatives
    than positives, positives are drawn down to the number of negatives. The negatives (and
    positives) drawn are those of lowest rank (:func:`~.draw.lowest_ranked` with ``seed`` and
    ``key``): the result is the same for any order of the rows of ``meta``.

    Parameters
    ----------
    meta : DataFrame
        ``ytid, split, labels, status`` per clip.
    mid : str
        The label.
    seed : int
        Seed of the draw.
    key : str
        Names the draw (e.g. the label and the split), see :func:`~.draw.hash_rank`.

    Returns
    -------
    DataFrame
        ``ytid, split, target, balanced`` (``balanced`` 1) sorted by ``ytid``.
    """
    ok = _ok_clips(meta)
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
    pos = pos.loc[lowest_ranked(pos["ytid"], n, seed=seed, key=key)]
    neg = neg.loc[lowest_ranked(neg["ytid"], n, seed=seed, key=key)]
    out = pd.concat([pos.assign(target=1), neg.assign(target=0)])
    return _as_part(out, balanced=1)


def natural_test(meta: pd.DataFrame, *, mid: str, seed: int, key: str) -> pd.DataFrame:
    """Every clip of ``meta`` with status ``ok`` (one per YTID), positives and negatives of
    ``mid`` at their natural prevalence; ``balanced`` marks the rows of :func:`balance`'s 1:1
    draw of the same clips (same ``seed`` and ``key``).

    Returns
    -------
    DataFrame
        ``ytid, split, target, balanced`` sorted by ``ytid``.
    """
    ok = _ok_clips(meta)
    target = np.array([_has_label(v, mid) for v in ok["labels"]], dtype=int)
    drawn = set(balance(meta, mid=mid, seed=seed, key=key)["ytid"])
    balanced = np.array([y in drawn for y in ok["ytid"].astype(str)], dtype=int)
    return _as_part(ok.assign(target=target), balanced=balanced)


def stratified_split(
    df: pd.DataFrame, *, fraction: float, seed: int, key: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (rest, held out) with ``fraction`` of each ``target`` class held out.

    Each class with at least 2 rows gives at least one held-out row (and keeps one) when
    ``fraction > 0``; the held-out rows of a class are those of lowest rank
    (:func:`~.draw.held_out`), so the split does not depend on the order of the rows. Both
    parts keep the order of ``df``.
    """
    held = held_out(df["ytid"], df["target"], fraction=fraction, seed=seed, key=key)
    return df.loc[~held].reset_index(drop=True), df.loc[held].reset_index(drop=True)


def _ok_counts(meta: pd.DataFrame, mid: str) -> tuple[int, int, int]:
    """Clips with status ok (as :func:`balance` counts them): positives and negatives; and the
    clips with the label whatever their status."""
    ok = _ok_clips(meta)
    n_pos = sum(_has_label(v, mid) for v in ok["labels"])
    pairs = zip(meta["ytid"], meta["labels"], strict=True)
    n_any = len({str(y) for y, v in pairs if _has_label(v, mid)})
    return int(n_pos), len(ok) - int(n_pos), int(n_any)


def _counted(n_pos: int, n_neg: int, split: str = "train") -> str:
    return f"{n_pos + n_neg} clips with status ok in {split}: {n_pos} positive, {n_neg} negative"


_MORE_CLIPS = "raise selection.max_positives or add clips with the label"
_EVAL_SPLIT = (
    "add an eval split (metadata.eval_segments) so that the test part is not taken from train"
)


def _no_positive(tag: str, n_pos_any: int, n_neg: int) -> InputError:
    if n_pos_any:
        why = f"{n_pos_any} clips of train have it, none with status ok; {n_neg} other clips do"
        hint = f"see why they failed (results/reports/download_ledger.tsv), then {_MORE_CLIPS}"
    else:
        why = f"no clip of train has it; {n_neg} other clips with status ok"
        hint = (
            "check the label (labels in config) and the training segments it is selected "
            "from (metadata.train_segments)"
        )
    return InputError(f"{tag}: no training clip with status ok has this label ({why}): {hint}")


def _empty_part(
    tag: str,
    part: str,
    *,
    counts: str,
    pool: int,
    fraction: float,
    key: str,
    holdout: bool,
) -> InputError:
    """The val or test part ended up empty: say why (a fraction of 0, too few clips)."""
    if fraction <= 0:
        why = f"training.{key} is {fraction:g}"
        hint = f"set training.{key} above 0"
        if part == "test":
            hint += f" or {_EVAL_SPLIT}"
    else:
        left = f"{pool} positive + {pool} negative after balancing"
        if part == "val" and holdout:
            left += " and the test holdout"
        why = f"{counts}; {left}: taking a {part} part needs at least 2 of each"
        hint = _MORE_CLIPS
        if holdout:
            hint += f", or {_EVAL_SPLIT}"
    return InputError(f"{tag}: the {part} part has no clip ({why}): {hint}")


def make_label_dataset(
    train_meta: pd.DataFrame,
    eval_meta: pd.DataFrame | None,
    *,
    mid: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    name: str = "",
) -> dict[str, pd.DataFrame]:
    """Balanced train and val parts of one label, and its test part.

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
        Seed of every draw (combined with ``mid``, so labels draw independently). Every draw
        is a keyed hash of the YTIDs (:mod:`.draw`): the parts are the same for any order of
        the rows of ``train_meta`` and ``eval_meta``.
    name : str
        Display name of the label, for messages (default: the MID).

    Returns
    -------
    dict
        ``{"train": df, "val": df, "test": df}`` with columns ``ytid, split, target,
        balanced``, each sorted by YTID. With an eval split, test is every eval clip with
        status ok (natural prevalence), ``balanced`` 1 on a 1:1 draw of it; train, val and a
        test part held out of train are balanced (``balanced`` 1 on every row). The
        ``attrs["test_source"]`` of every part is ``"eval"`` or ``"train holdout"``.

    Raises
    ------
    audiosetflow.errors.InputError
        If a part would have no clip: no training clip with status ok has the label, or none
        lacks it, or there are too few clips (or a fraction of 0) for a val or test part. The
        message is one line naming the label, the counts and what to change.
    """
    tag = f"label {name or mid}"
    n_pos, n_neg, n_pos_any = _ok_counts(train_meta, mid)
    if n_pos == 0:
        raise _no_positive(tag, n_pos_any, n_neg)
    if n_neg == 0:
        raise InputError(
            f"{tag}: no training clip with status ok lacks this label ({n_pos} clips with "
            "status ok in train, all positive; the models need negatives): raise "
            "selection.negatives_per_positive or add clips without the label"
        )
    pool = balance(train_meta, mid=mid, seed=seed, key=_key(mid, "train"))
    test = None
    if eval_meta is not None and len(eval_meta):
        e_pos, e_neg, _ = _ok_counts(eval_meta, mid)
        if e_pos and e_neg:
            test = natural_test(eval_meta, mid=mid, seed=seed, key=_key(mid, "eval"))
        else:
            log.warning(
                "%s: eval split has no %s clip with status ok (%s): holding out part of train",
                name or mid,
                "positive" if e_pos == 0 else "negative",
                _counted(e_pos, e_neg, "eval"),
            )
    source = "eval"
    if test is None:
        source = "train holdout"
        pool, test = stratified_split(
            pool, fraction=test_fraction, seed=seed, key=_key(mid, "test")
        )
        if test.empty:
            raise _empty_part(
                tag,
                "test",
                counts=_counted(n_pos, n_neg),
                pool=len(pool) // 2,
                fraction=test_fraction,
                key="test_fraction",
                holdout=True,
            )
    train, val = stratified_split(pool, fraction=val_fraction, seed=seed, key=_key(mid, "val"))
    if val.empty:
        raise _empty_part(
            tag,
            "val",
            counts=_counted(n_pos, n_neg),
            pool=len(pool) // 2,
            fraction=val_fraction,
            key="val_fraction",
            holdout=source != "eval",
        )
    parts = {"train": train, "val": val, "test": test}
    for df in parts.values():
        df.attrs["test_source"] = source
    return parts


def _with_balanced(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``balanced`` column: 1 on every row when it has none."""
    if "balanced" in df.columns:
        return df.astype({"balanced": int})
    return df.assign(balanced=1)


def write_dataset(out_dir: str | Path, parts: dict[str, pd.DataFrame]) -> None:
    """Write each part as ``{out_dir}/{part}.tsv`` (atomically): :data:`DATASET_COLUMNS`;
    a part without a ``balanced`` column is written with 1 on every row."""
    for part in PARTS:
        write_tsv(Path(out_dir) / f"{part}.tsv", _with_balanced(parts[part])[DATASET_COLUMNS])


def read_dataset(
    paths: str | Path | dict[str, str | Path],
) -> dict[str, pd.DataFrame]:
    """Read the parts written by :func:`write_dataset`: a folder, or ``{part: path}``.

    ``attrs["test_source"]`` is set on every part from the test set's ``split`` column. A
    part written before the ``balanced`` column existed (``ytid, split, target``) was a
    balanced draw: it is read with ``balanced`` 1 on every row.
    """
    if not isinstance(paths, dict):
        paths = {p: Path(paths) / f"{p}.tsv" for p in PARTS}
    parts = {
        p: _with_balanced(read_tsv(paths[p]).astype({"target": int}))[DATASET_COLUMNS]
        for p in PARTS
    }
    source = "eval" if (parts["test"]["split"] == "eval").all() else "train holdout"
    for df in parts.values():
        df.attrs["test_source"] = source
    return parts


#: Parts whose clips must include both classes: train (to fit the models) and val (to stop
#: early and choose the decision threshold). The test part needs clips, not both classes.
_BOTH_CLASSES = ("train", "val")


def check_dataset(parts: dict[str, pd.DataFrame], *, label: str) -> None:
    """Check that dataset parts read back from disk can train and test a model.

    Every part must have a clip; train and val a positive and a negative too.
    :func:`make_label_dataset` never writes other parts: one that does not pass comes from an
    older version or was edited by hand.

    Parameters
    ----------
    parts : dict of str to DataFrame
        :func:`read_dataset`'s parts.
    label : str
        The label's display name, for the message.

    Raises
    ------
    audiosetflow.errors.InputError
        One line naming the label, the part, the clip counts, and to rebuild the dataset.
    """
    counts = ", ".join(f"{p} {len(parts[p])}" for p in PARTS)
    for part in PARTS:
        y = parts[part]["target"].to_numpy()
        n_pos = int((y == 1).sum())
        missing = _missing(len(y), n_pos, both=part in _BOTH_CLASSES)
        if missing:
            detail = f"; {part}: {n_pos} positive, {len(y) - n_pos} negative" if len(y) else ""
            raise InputError(
                f"label {label}: the {part} part of the dataset has {missing} (clips: {counts}"
                f"{detail}): rebuild the dataset (snakemake --forcerun dataset), whose rule says "
                "what to change"
            )


def _missing(n: int, n_pos: int, *, both: bool) -> str:
    if n == 0:
        return "no clip"
    if both and n_pos == 0:
        return "no positive clip"
    if both and n_pos == n:
        return "no negative clip"
    return ""


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
    train_features: str | Path | Sequence[str | Path],
    eval_features: str | Path | Sequence[str | Path] | None,
    out_dir: str | Path,
    mid: str,
    name: str = "",
    val_fraction: float,
    test_fraction: float,
    seed: int,
    use_eval: bool = True,
    ontology: str | Path | None = None,
    logger: logging.Logger | None = None,
) -> dict[str, pd.DataFrame]:
    """Build and write one label's balanced train and val parts and its test part from
    feature shards.

    Only clips with status ``ok`` are used. The training pool is the label's positives in
    the train split plus as many negatives; val is a stratified ``val_fraction`` of it; the
    test part is every clip of the eval split (natural prevalence; ``balanced`` marks a 1:1
    draw of it) or, without one (or without a positive or a negative in it), a stratified
    ``test_fraction`` held out of the pool first (:func:`make_label_dataset`). The parts
    depend on the clips and the seed only, not on how the clips are spread over shards.

    Parameters
    ----------
    train_features : str, Path or sequence of path
        The train split's feature shards (the files, or their folder such as
        ``results/features/train``); only their metadata columns are read.
    eval_features : str, Path, sequence of path or None
        The eval split's feature shards; None, an empty list or shards that do not exist:
        no eval split.
    out_dir : str or Path
        Folder of ``train.tsv``, ``val.tsv`` and ``test.tsv`` (``results/datasets/{label}``).
    mid : str
        The label's MID (``/m/04rlf``).
    name : str
        The label's display name, for log lines and messages (default: ``mid``).
    val_fraction : float
        Fraction of each class of the training pool held out for validation, in (0, 1)
        (``training.val_fraction``); at least one clip of each class.
    test_fraction : float
        Without an eval split: the fraction of each class held out as the test part, in
        (0, 1) (``training.test_fraction``).
    seed : int
        Seed of every draw (``selection.seed``), combined with ``mid``.
    use_eval : bool
        False: ignore the eval split even if present (test part held out of train).
    ontology : str or Path, optional
        ``ontology.json`` (``selection.expand_ontology``): a clip labelled with a descendant
        of ``mid`` is a positive too; one log line gives how many positives that gained.
    logger : logging.Logger, optional
        One line per part with its clip counts, one with the test part's source.

    Returns
    -------
    dict of str to DataFrame
        ``{"train", "val", "test"}``, each with columns ``ytid`` (str), ``split``
        (``"train"`` or ``"eval"``), ``target`` (int, 1: the clip has the label),
        ``balanced`` (int, 1: the clip is in the 1:1 balanced draw), sorted by YTID;
        ``attrs["test_source"]`` is ``"eval"`` or ``"train holdout"``. The same tables are
        written to ``out_dir``.

    Raises
    ------
    audiosetflow.errors.InputError
        If a part would have no clip (no positive or no negative with status ok in train,
        too few clips for a val or test part, a fraction of 0); one line naming the label
        and what to change. Nothing is written then.
    FileNotFoundError
        If ``train_features`` holds no shard.

    See Also
    --------
    make_label_dataset : the same on metadata tables, without files.
    read_dataset : read the parts back.
    audiosetflow.learning.training.run_train : the next stage.
    """
    from ..audio.features import load_meta

    logger = logger or log
    train_meta, _ = load_meta(train_features)  # the labels: no feature is read
    eval_meta = None
    if use_eval and features_present(eval_features):
        eval_meta, _ = load_meta(eval_features)
    if ontology is not None:
        from ..ontology import expand_labels, load_ontology, ontology_gain

        onto = load_ontology(ontology)
        for split, meta in (("train", train_meta), ("eval", eval_meta)):
            if meta is None:
                continue
            gain = ontology_gain(meta["labels"].tolist(), [mid], onto)
            logger.info(
                "%s %s: %d positives gained by the ontology (%d listed with the label itself)",
                name or mid,
                split,
                int(gain["gained"].iloc[0]),
                int(gain["n_pos_direct"].iloc[0]),
            )
            meta["labels"] = [expand_labels(v, onto) for v in meta["labels"]]
    parts = make_label_dataset(
        train_meta,
        eval_meta,
        mid=mid,
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
        seed=int(seed),
        name=name,
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
