"""The workflow's plan: which metadata files, labels, segments and shards a config means.

This is what ``workflow/rules/common.smk`` asks at parse time. It has no Snakemake in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import metadata as md
from .learning.labelsets import MultilabelSettings, label_counts, resolve_multilabel
from .ontology import Ontology, expand_labels, load_ontology
from .selection import assign_shards, label_quality_filter, select_segments, train_eval_overlap

__all__ = ["MetadataPaths", "Plan", "metadata_paths", "make_plan", "stored_plan", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
DEFAULT_METADATA_DIR = "resources/metadata"


@dataclass(frozen=True)
class MetadataPaths:
    """Where each metadata file is read from, and which of them are to be fetched."""

    train_segments: Path
    eval_segments: Path | None
    class_labels: Path
    ontology: Path
    qa_counts: Path | None
    fetchable: bool  # files under resources/metadata/ that a rule may download

    def all(self) -> list[Path]:
        """Every metadata file the workflow reads."""
        return [
            p
            for p in (
                self.train_segments,
                self.eval_segments,
                self.class_labels,
                self.ontology,
                self.qa_counts,
            )
            if p is not None
        ]

    def missing(self) -> list[Path]:
        """The files that do not exist yet."""
        return [p for p in self.all() if not p.exists()]


def metadata_paths(config: dict) -> MetadataPaths:
    """Resolve ``config['metadata']`` into file paths.

    A file name is looked up inside ``metadata.dir`` (or ``resources/metadata`` when ``dir`` is
    empty, where the ``fetch_metadata`` rule downloads what is missing); a name containing a
    ``/`` is taken as a path as it is. In demo mode the generated demo metadata is used.
    """
    m = config["metadata"]
    if config.get("demo", {}).get("enabled"):
        base = Path(config["demo"].get("dir", "results/demo")) / "metadata"
        fetchable = False
    elif m.get("dir"):
        base = Path(m["dir"])
        fetchable = False
    else:
        base = Path(DEFAULT_METADATA_DIR)
        fetchable = True

    def p(name: str) -> Path | None:
        if not name:
            return None
        return Path(name) if "/" in name else base / name

    return MetadataPaths(
        train_segments=p(m["train_segments"]),
        eval_segments=p(m.get("eval_segments", "")),
        class_labels=p(m["class_labels"]),
        ontology=p(m["ontology"]),
        qa_counts=p(m.get("qa_counts", "")),
        fetchable=fetchable,
    )


class Plan:
    """Labels, selected segments and shards for one config.

    Made by :func:`make_plan` (the selection in memory) or read back from the store by
    :func:`audiosetflow.planstore.load` (the selection stays in a memory-mapped Arrow file
    until it is asked for; a job reads only its shard's rows).

    Attributes
    ----------
    labels : list of Label
        Target labels that passed the quality filter.
    dropped : list of (Label, float)
        Target labels dropped by the quality filter, with their rated-true ratio.
    selection : DataFrame
        ``ytid, split, shard, start, end, labels`` for every selected segment, sorted by split
        and shard (read on first use from a stored plan).
    names : dict
        MID to display name for every class.
    messages : list of str
        Warnings for the user, one line each (e.g. YTIDs in both the train and the eval CSV).
    multilabel : list of Label
        Labels of the multi-label model (empty when ``multilabel.enabled`` is false); the
        training job leaves out those with too few clips with status ok.
    """

    def __init__(
        self,
        *,
        labels: list[md.Label],
        dropped: list[tuple[md.Label, float]],
        selection: pd.DataFrame | None,
        names: dict[str, str],
        messages: list[str] | None = None,
        multilabel: list[md.Label] | None = None,
        ranges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
        store: Path | None = None,
    ) -> None:
        self.labels = list(labels)
        self.dropped = list(dropped)
        self.names = names
        self.messages = list(messages or [])
        self.multilabel = list(multilabel or [])
        self._store = store
        self._table = None
        if selection is not None:
            selection = _sorted_by_shard(selection)
            ranges = _shard_ranges(selection)
        elif ranges is None or store is None:
            raise ValueError("Plan: give the selection, or the ranges and the stored selection")
        self._selection = selection
        self._ranges = ranges
        self._where = {
            (s, int(n)): (int(a), int(b))
            for s, (ns, starts, stops) in ranges.items()
            for n, a, b in zip(ns, starts, stops, strict=True)
        }

    def __repr__(self) -> str:
        return (
            f"Plan({len(self.labels)} labels, {len(self._where)} shards, "
            f"{len(self.multilabel)} multi-label labels)"
        )

    @property
    def selection(self) -> pd.DataFrame:
        """Every selected segment (``ytid, split, shard, start, end, labels``)."""
        if self._selection is None:
            self._selection = _frame(self._arrow())
        return self._selection

    def _arrow(self):
        if self._table is None:
            from .planstore import open_table

            self._table = open_table(self._store)
        return self._table

    @property
    def splits(self) -> list[str]:
        """Splits that have at least one selected segment, in ``SPLITS`` order."""
        return [s for s in SPLITS if s in self._ranges and len(self._ranges[s][0])]

    def shards(self, split: str) -> list[int]:
        """Shard numbers of a split, ascending."""
        if split not in self._ranges:
            return []
        return [int(n) for n in self._ranges[split][0]]

    def shard_ranges(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per split: the shard numbers and each shard's ``[start, stop)`` row range in the
        selection."""
        return dict(self._ranges)

    def clips_per_shard(self, split: str) -> int:
        """Segments per shard of a split, on average (rounded up; 0 for an empty split):
        ``shard_size``, or more where ``max_shards`` caps the split's shards."""
        if split not in self._ranges or not len(self._ranges[split][0]):
            return 0
        _, starts, stops = self._ranges[split]
        return -(-int((stops - starts).sum()) // len(starts))

    def shard_size(self, split: str, shard: int) -> int:
        """Segments of one shard."""
        a, b = self._where[(split, int(shard))]
        return b - a

    def shard_rows(self, split: str, shard: int) -> pd.DataFrame:
        """Segments of one shard (``ytid, split, shard, start, end, labels``)."""
        a, b = self._where[(split, int(shard))]
        if self._selection is not None:
            return self._selection.iloc[a:b]
        return _frame(self._arrow().slice(a, b - a))

    def shard_ytids(self, split: str, shard: int) -> list[str]:
        """The YTIDs of one shard, in the shard's order."""
        a, b = self._where[(split, int(shard))]
        if self._selection is not None:
            return self._selection["ytid"].iloc[a:b].astype(str).tolist()
        return self._arrow().column("ytid").slice(a, b - a).to_pylist()

    def manifest(self, split: str, shard: int) -> str:
        """One shard's segments as one compact string ``ytid,start,end,labels;...`` (the
        download rule's parameter, :func:`audiosetflow.smk.manifest_param`)."""
        a, b = self._where[(split, int(shard))]
        if self._selection is not None:
            sel = self._selection.iloc[a:b]
            cols = [sel[c].tolist() for c in ("ytid", "start", "end", "labels")]
        else:
            part = self._arrow().slice(a, b - a)
            cols = [part.column(c).to_pylist() for c in ("ytid", "start", "end", "labels")]
        return ";".join(f"{y},{st:.3f},{e:.3f},{lab}" for y, st, e, lab in zip(*cols, strict=True))

    def label(self, slug: str) -> md.Label:
        """The target label with this slug."""
        for lab in self.labels:
            if lab.slug == slug:
                return lab
        raise KeyError(slug)


def _frame(table) -> pd.DataFrame:
    """A stored selection's rows as the frame :func:`make_plan` gives (text as ``object``)."""
    df = table.to_pandas()
    for c in ("ytid", "split", "labels"):
        df[c] = df[c].astype(object)
    return df


def _sorted_by_shard(selection: pd.DataFrame) -> pd.DataFrame:
    """The selection sorted by split and shard (file order kept within a shard)."""
    split = selection["split"].astype(str).to_numpy()
    shard = selection["shard"].to_numpy(np.int64)
    if (
        len(split) < 2
        or not (
            (split[1:] > split[:-1]) | ((split[1:] == split[:-1]) & (shard[1:] >= shard[:-1]))
        ).all()
    ):
        selection = selection.sort_values(["split", "shard"], kind="stable")
    return selection.reset_index(drop=True)


def _shard_ranges(selection: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    split = selection["split"].astype(str).to_numpy()
    shard = selection["shard"].to_numpy(np.int64)
    n = len(split)
    if n == 0:
        return {}
    cut = np.flatnonzero((split[1:] != split[:-1]) | (shard[1:] != shard[:-1])) + 1
    starts = np.r_[0, cut].astype(np.int64)
    stops = np.r_[cut, n].astype(np.int64)
    out = {}
    for s in dict.fromkeys(split[starts]):
        m = split[starts] == s
        out[str(s)] = (shard[starts[m]], starts[m], stops[m])
    return out


_NO_SEGMENTS_HINT = {
    "train": "point metadata.train_segments at a CSV that lists segments",
    "eval": 'add segments to it, or set metadata.eval_segments to "" to run without an eval '
    "split (a held-out part of train is used)",
}


def _read_split(path: Path, split: str, mids: set[str]) -> pd.DataFrame:
    """The segments of one split; a CSV with a header but no segments is an error."""
    segments = md.read_segments(path, known_mids=mids)
    if segments.empty:
        raise md.MetadataError(
            path, None, f"no segments below the header; {_NO_SEGMENTS_HINT[split]}"
        )
    return segments


def make_plan(config: dict, paths: MetadataPaths) -> Plan:
    """Read the metadata named by ``paths`` and compute labels, selection and shards.

    Raises
    ------
    audiosetflow.metadata.MetadataError
        For malformed metadata (file and line in the message), or a segment CSV without
        segments.
    ValueError
        For a config that names unknown labels or leaves no label after the quality filter.
    """
    classes = md.read_class_labels(paths.class_labels)
    mids = set(classes["mid"])
    labels = md.resolve_labels(config["labels"], class_labels=classes)
    qa = (
        md.read_qa_counts(paths.qa_counts, class_labels=classes)
        if paths.qa_counts is not None
        else None
    )
    kept, dropped = label_quality_filter(
        labels, qa=qa, min_ratio=float(config["label_quality"]["min_ratio"])
    )
    if not kept:
        lst = ", ".join(f"{lab.name} ({r:.2f})" for lab, r in dropped)
        raise ValueError(
            f"config.yaml: every target label is below label_quality.min_ratio="
            f"{config['label_quality']['min_ratio']}: {lst}; lower it or pick other labels"
        )
    segments = {"train": _read_split(paths.train_segments, "train", mids)}
    if paths.eval_segments is not None:
        segments["eval"] = _read_split(paths.eval_segments, "eval", mids)
    sel_cfg = config["selection"]
    messages = []
    if "eval" in segments:
        mode = sel_cfg.get("train_eval_overlap", "drop_from_train")
        segments["train"], n_both = train_eval_overlap(
            segments["train"], segments["eval"], mode=mode
        )
        if n_both:
            what = {
                "drop_from_train": "kept out of training",
                "keep": "used for training and for evaluation",
            }[mode]
            messages.append(
                f"audiosetflow: {n_both} {'YTID is' if n_both == 1 else 'YTIDs are'} in both the "
                f"train and the eval CSV: {what} (selection.train_eval_overlap: {mode})"
            )
        if segments["train"].empty:  # every train YTID was also an eval one
            raise md.MetadataError(
                paths.train_segments,
                None,
                f"every YTID is also in {paths.eval_segments}, so none is left for training; "
                "point metadata.train_segments and metadata.eval_segments at different files, "
                "or set selection.train_eval_overlap to keep",
            )
    ontology = None
    if sel_cfg.get("expand_ontology"):
        ontology = load_ontology(paths.ontology)
    ml = MultilabelSettings.from_config(config.get("multilabel"))
    ml_labels: list[md.Label] = []
    if ml.enabled:
        ml_labels = _multilabel_labels(ml, segments["train"], classes, ontology)
    selection = select_segments(
        segments,
        labels=kept,
        max_positives=sel_cfg.get("max_positives"),
        negatives_per_positive=float(sel_cfg["negatives_per_positive"]),
        seed=int(sel_cfg["seed"]),
        extra_labels=ml_labels,
        select_all=bool(ml_labels) and ml.kind == "all",
        ontology=ontology,
    )
    cap = config.get("max_shards")
    selection = assign_shards(
        selection,
        shard_size=int(config["shard_size"]),
        max_shards=None if cap is None else int(cap),
    )
    names = dict(zip(classes["mid"], classes["display_name"], strict=True))
    return Plan(
        labels=kept,
        dropped=dropped,
        selection=selection,
        names=names,
        messages=messages,
        multilabel=ml_labels,
    )


def stored_plan(config: dict, paths: MetadataPaths, folder: str | Path) -> Plan:
    """The plan of :func:`make_plan`, read from the store in ``folder`` when it holds one for
    this config and these metadata files, else made and stored there
    (:mod:`audiosetflow.planstore`).

    Raises
    ------
    audiosetflow.metadata.MetadataError, ValueError
        As :func:`make_plan`.
    """
    from .planstore import load_or_make

    plan, stored = load_or_make(config, paths, folder)
    log.debug("plan %s from %s", "read" if stored else "made and stored", folder)
    return plan


def _multilabel_labels(
    ml: MultilabelSettings,
    train: pd.DataFrame,
    classes: pd.DataFrame,
    ontology: Ontology | None,
) -> list[md.Label]:
    """The multi-label model's labels from the train segments (counted after the ontology
    expansion, when on)."""
    if ml.kind == "list":
        return resolve_multilabel(ml, counts=pd.Series(dtype="int64"), class_labels=classes)
    labels = train["labels"].astype(str)
    if ontology is not None:
        labels = labels.map(lambda v: expand_labels(v, ontology))
    return resolve_multilabel(ml, counts=label_counts(labels), class_labels=classes)
