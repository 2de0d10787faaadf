"""The workflow's plan: which metadata files, labels, segments and shards a config means.

This is what ``workflow/rules/common.smk`` asks at parse time. It has no Snakemake in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import metadata as md
from .learning.labelsets import MultilabelSettings, label_counts, resolve_multilabel
from .ontology import Ontology, expand_labels, load_ontology
from .selection import assign_shards, label_quality_filter, select_segments, train_eval_overlap

__all__ = ["MetadataPaths", "Plan", "metadata_paths", "make_plan", "SPLITS"]

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


@dataclass
class Plan:
    """Labels, selected segments and shards for one config.

    Attributes
    ----------
    labels : list of Label
        Target labels that passed the quality filter.
    dropped : list of (Label, float)
        Target labels dropped by the quality filter, with their rated-true ratio.
    selection : DataFrame
        ``ytid, split, shard, start, end, labels`` for every selected segment.
    names : dict
        MID to display name for every class.
    messages : list of str
        Warnings for the user, one line each (e.g. YTIDs in both the train and the eval CSV).
    multilabel : list of Label
        Labels of the multi-label model (empty when ``multilabel.enabled`` is false); the
        training job leaves out those with too few clips with status ok.
    """

    labels: list[md.Label]
    dropped: list[tuple[md.Label, float]]
    selection: pd.DataFrame
    names: dict[str, str]
    messages: list[str] = field(default_factory=list)
    multilabel: list[md.Label] = field(default_factory=list)
    _by_shard: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict, repr=False)
    _shards: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_shard = {
            (str(s), int(n)): g for (s, n), g in self.selection.groupby(["split", "shard"])
        }

        self._shards = {s: sorted(n for t, n in self._by_shard if t == s) for s in SPLITS}

    @property
    def splits(self) -> list[str]:
        """Splits that have at least one selected segment, in ``SPLITS`` order."""
        return [s for s in SPLITS if self._shards[s]]

    def shards(self, split: str) -> list[int]:
        """Shard numbers of a split, ascending."""
        return list(self._shards.get(split, []))

    def shard_rows(self, split: str, shard: int) -> pd.DataFrame:
        """Segments of one shard (``ytid, split, shard, start, end, labels``)."""
        return self._by_shard[(split, int(shard))]

    def label(self, slug: str) -> md.Label:
        """The target label with this slug."""
        for lab in self.labels:
            if lab.slug == slug:
                return lab
        raise KeyError(slug)


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
    selection = assign_shards(selection, shard_size=int(config["shard_size"]))
    names = dict(zip(classes["mid"], classes["display_name"], strict=True))
    return Plan(
        labels=kept,
        dropped=dropped,
        selection=selection,
        names=names,
        messages=messages,
        multilabel=ml_labels,
    )


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
