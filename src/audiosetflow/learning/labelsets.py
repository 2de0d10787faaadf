"""The multi-label model's settings and label set (no torch: the plan uses this at parse time).

``multilabel.labels`` is one of:

* a list of display names or MIDs (:func:`audiosetflow.metadata.resolve_labels`);
* ``"all"``: every class with at least ``min_positives`` positives in the train split;
* ``{top: N}``: the ``N`` classes with the most positives in the train split.

:func:`label_counts` counts positives per class (the clips' labels expanded by the ontology
when ``selection.expand_ontology`` is on) and :func:`resolve_multilabel` turns the setting
into :class:`~audiosetflow.metadata.Label` s, most frequent first for ``all`` and ``top``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import pandas as pd

from ..config import section
from ..metadata import Label, label_slug, resolve_labels

__all__ = [
    "SAMPLERS",
    "SpecAugmentSettings",
    "ModelSettings",
    "TeacherSettings",
    "MultilabelSettings",
    "label_counts",
    "resolve_multilabel",
]

SAMPLERS = ("balanced", "random")


@dataclass(frozen=True)
class SpecAugmentSettings:
    """SpecAugment masks of a training clip (``multilabel.specaugment``).

    Attributes
    ----------
    time_masks, freq_masks : int
        Masks per clip along time (frames) and frequency (mel bands), >= 0.
    time_width, freq_width : int
        Largest width of a mask; each mask's width is drawn from ``[0, width]``.
    """

    time_masks: int = 2
    time_width: int = 40
    freq_masks: int = 2
    freq_width: int = 16

    @property
    def active(self) -> bool:
        """Whether any mask can be non-empty."""
        return (self.time_masks > 0 and self.time_width > 0) or (
            self.freq_masks > 0 and self.freq_width > 0
        )


@dataclass(frozen=True)
class ModelSettings:
    """The ``model:`` section: the CNN architecture of the per-label and multi-label models.

    Attributes
    ----------
    arch : {"small", "cnn14"}
        The small CNN (``training.width`` / ``multilabel.width``) or PANNs' CNN14
        (:class:`~.models.Cnn14`).
    cnn14_width : int
        Channels of CNN14's first block: 64 is PANNs' CNN14; smaller for CPU tests.
    init : str or None
        A PANNs CNN14 checkpoint (``Cnn14_mAP=0.431.pth`` layout) the multi-label model starts
        from (:func:`~.pretrained.init_from_panns`); ``arch`` must be ``cnn14``.
    init_head : {"map", "replace"}
        ``map``: the checkpoint's outputs of the selected labels' MIDs; ``replace``: a fresh
        output layer.
    freeze_trunk : bool
        With ``init``: train the output layer only.
    """

    arch: str = "small"
    cnn14_width: int = 64
    init: str | None = None
    init_head: str = "map"
    freeze_trunk: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ("small", "cnn14"):
            raise ValueError(f"model.arch is {self.arch!r}; use small or cnn14")
        if self.init_head not in ("map", "replace"):
            raise ValueError(f"model.init_head is {self.init_head!r}; use map or replace")
        if self.init and self.arch != "cnn14":
            raise ValueError("model.init loads a CNN14 checkpoint: set model.arch: cnn14")
        if self.freeze_trunk and not self.init:
            raise ValueError("model.freeze_trunk needs model.init (a pretrained trunk)")
        if self.cnn14_width < 1:
            raise ValueError("model.cnn14_width must be >= 1")

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> ModelSettings:
        """Build from ``config['model']`` (missing keys from the schema)."""
        return section(cls, cfg, "model")


@dataclass(frozen=True)
class TeacherSettings:
    """``multilabel.teacher``: distillation from stored teacher predictions.

    Attributes
    ----------
    path : str or None
        Parquet (``ytid`` and a list column ``logits`` or ``probabilities``, or one column per
        MID), NumPy ``.npy`` (n_clips x 527, AudioSet class order) with ``index`` (one YTID a
        line) or HDF5 (:func:`~.teacher.read_teacher`); None: no distillation.
    index : str or None
        The YTIDs of a ``.npy`` file's rows (default: ``<path without .npy>.ytids.txt``).
    outputs : {"logits", "probabilities"}
        What the file holds.
    weight : float
        Share of the teacher's soft targets in the loss, in [0, 1].
    temperature : float
        Sigmoid temperature of both student and teacher logits in the soft term, > 0.
    """

    path: str | None = None
    index: str | None = None
    outputs: str = "logits"
    weight: float = 0.5
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.outputs not in ("logits", "probabilities"):
            raise ValueError("multilabel.teacher.outputs: logits or probabilities")
        if not 0 <= self.weight <= 1 or self.temperature <= 0:
            raise ValueError("multilabel.teacher: weight in [0, 1] and temperature > 0")


@dataclass(frozen=True)
class MultilabelSettings:
    """The ``multilabel:`` section of the configuration.

    Attributes
    ----------
    enabled : bool
        Train and report the multi-label model.
    labels : str, list of str or dict
        ``"all"``, a list of names or MIDs, or ``{"top": N}``.
    min_positives : int
        Least positives with status ok in the train split a label needs, >= 1.
    sampler : {"balanced", "random"}
        How training batches are drawn (:func:`~.multilabel.balanced_positions`).
    mixup : float
        Mixup's Beta alpha, 0: off.
    specaugment : SpecAugmentSettings
        Masks of training clips.
    width : int
        Channels of the CNN's first block.
    epochs : int or None
        Most epochs of the multi-label model, >= 1; ``None``: ``training.epochs``.
    weight_decay : float or None
        Adam's weight decay; ``None``: ``training.weight_decay``.
    dropout : float
        Dropout before the output layer.
    norm_clips : int
        Train clips (a seeded sample) the input normalisation is computed from.
    teacher : TeacherSettings
        Distillation from a teacher's stored predictions (off without ``path``).
    val_max_clips : int or None
        Most validation clips scored each epoch for early stopping (a fixed seeded sample
        of a larger val part); ``None`` or 0: all. Thresholds and test metrics use all.

    See Also
    --------
    audiosetflow.config.section : how the defaults come from the schema.
    """

    enabled: bool = True
    labels: Any = "all"
    min_positives: int = 20
    sampler: str = "balanced"
    mixup: float = 0.0
    specaugment: SpecAugmentSettings = field(default_factory=SpecAugmentSettings)
    width: int = 16
    epochs: int | None = None
    weight_decay: float | None = None
    dropout: float = 0.3
    norm_clips: int = 2000
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    val_max_clips: int | None = 10000

    def __post_init__(self) -> None:
        if self.epochs is not None and int(self.epochs) < 1:
            raise ValueError(f"multilabel.epochs must be >= 1 or null, not {self.epochs}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"multilabel.sampler is {self.sampler!r}; use one of {SAMPLERS}")
        if self.mixup < 0 or self.min_positives < 1 or self.width < 1:
            raise ValueError("multilabel: mixup >= 0, min_positives >= 1 and width >= 1")

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> MultilabelSettings:
        """Build from ``config['multilabel']`` (missing keys from the schema)."""
        return section(cls, cfg, "multilabel")

    @property
    def kind(self) -> str:
        """``"all"``, ``"top"`` or ``"list"``."""
        if isinstance(self.labels, str):
            if self.labels != "all":
                raise ValueError(
                    f"multilabel.labels: {self.labels!r} is not 'all', a list or {{top: N}}"
                )
            return "all"
        if isinstance(self.labels, Mapping):
            return "top"
        return "list"


def label_counts(labels: Iterable[Iterable[str] | str | None]) -> pd.Series:
    """Positives per MID over clips, most frequent first (ties by MID).

    Parameters
    ----------
    labels : iterable
        Each clip's MIDs (a comma-separated string or a list; already expanded by the
        ontology where wanted). A MID listed twice for a clip counts once.

    Returns
    -------
    Series of int
        Indexed by MID.
    """
    # one pass in plain Python: a set per clip (a MID once per clip), counted in one Counter
    # (2 million clips in seconds; pandas' groupby-unique took minutes)
    counter = Counter(
        chain.from_iterable(
            {m for m in (v.split(",") if isinstance(v, str) else v) if m and isinstance(m, str)}
            for v in labels
            if v is not None
        )
    )
    if not counter:
        return pd.Series(dtype="int64")
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.Series([n for _, n in ranked], index=[m for m, _ in ranked], dtype="int64")


def resolve_multilabel(
    settings: MultilabelSettings,
    *,
    counts: pd.Series,
    class_labels: pd.DataFrame,
) -> list[Label]:
    """The multi-label model's labels.

    Parameters
    ----------
    settings : MultilabelSettings
    counts : Series of int
        Positives per MID in the train split (:func:`label_counts`).
    class_labels : DataFrame
        ``index, mid, display_name`` (:func:`audiosetflow.metadata.read_class_labels`).

    Returns
    -------
    list of Label
        A list: in the order given. ``all``: every class with at least ``min_positives``
        positives; ``top``: the ``N`` most frequent (fewer when fewer classes have a
        positive); both most frequent first.

    Raises
    ------
    ValueError
        For an unknown label of a list (naming it), or ``{top: N}`` with ``N < 1``.
    """
    kind = settings.kind
    if kind == "list":
        return resolve_labels(
            list(settings.labels),
            class_labels=class_labels,
            source="config.yaml: multilabel.labels",
        )
    known = dict(
        zip(
            class_labels["mid"],
            zip(class_labels["index"], class_labels["display_name"], strict=True),
            strict=True,
        )
    )
    ranked: Sequence[str] = [m for m in counts.index if m in known and counts[m] > 0]
    if kind == "top":
        n = int(settings.labels.get("top", 0))
        if n < 1:
            raise ValueError("config.yaml: multilabel.labels: {top: N} needs N >= 1")
        ranked = ranked[:n]
    else:
        ranked = [m for m in ranked if counts[m] >= settings.min_positives]
    out, slugs = [], set()
    for m in ranked:
        idx, name = known[m]
        slug = label_slug(name)
        if slug in slugs:  # two classes with one slug (never in AudioSet): keep the first
            continue
        slugs.add(slug)
        out.append(Label(mid=m, name=name, index=int(idx), slug=slug))
    return out
