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
