"""A few summary features of a label's clips, positives against negatives (a report figure)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path

__all__ = [
    "class_feature_columns",
    "class_feature_frame",
    "plot_class_features",
    "run_class_features",
]

log = logging.getLogger("audiosetflow.classes")


def class_feature_columns(columns: Sequence[str]) -> list[tuple[str, str]]:
    """The summary columns the figure shows, with their axis titles: the spectral centroid's
    mean and standard deviation over frames, the roll-off's and the zero-crossing rate's mean,
    the mean of MFCC c1 and the standard deviation of c0 (how much the loudness varies), those
    of them that ``columns`` has."""
    cols = list(columns)

    def coefficient(prefix: str, k: int) -> str | None:
        hits = [c for c in cols if c.startswith(prefix) and c[len(prefix) :].isdigit()]
        return next((c for c in hits if int(c[len(prefix) :]) == k), None)

    c1, c0_std = coefficient("mfcc_mean_", 1), coefficient("mfcc_std_", 0)
    wanted = [
        ("spectral_centroid_mean", "spectral centroid, mean (Hz)"),
        ("spectral_centroid_std", "spectral centroid, std over frames (Hz)"),
        ("rolloff_mean", "85 % roll-off, mean (Hz)"),
        ("zcr_mean", "zero-crossing rate, mean"),
    ]
    if c1:
        wanted.append((c1, "MFCC c1, mean"))
    if c0_std:
        wanted.append((c0_std, "MFCC c0 (log energy), std over frames"))
    return [(c, t) for c, t in wanted if c in cols]


def class_feature_frame(summary: pd.DataFrame, parts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The summary features of every clip of a label's dataset, with its ``target`` and
    ``part``.

    Parameters
    ----------
    summary : DataFrame
        :func:`audiosetflow.audio.features.load_summary` of the feature shards (``ytid``,
        ``split`` and the summary columns).
    parts : mapping of str to DataFrame
        The dataset parts (``ytid, split, target``).

    Returns
    -------
    DataFrame
        One row per clip of the dataset found in ``summary``: ``part``, ``target`` and the
        columns of ``summary``.
    """
    rows = [df.assign(part=p)[["ytid", "split", "target", "part"]] for p, df in parts.items()]
    ds = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if ds.empty:
        return ds
    ds["ytid"] = ds["ytid"].astype(str)
    ds["split"] = ds["split"].astype(str)
    s = summary.assign(ytid=summary["ytid"].astype(str), split=summary["split"].astype(str))
    s = s.drop_duplicates(["ytid", "split"])
    return ds.merge(s, on=["ytid", "split"], how="inner")


def plot_class_features(
    frame: pd.DataFrame, path: str | Path, *, label: str, bins: int = 24
) -> list[str]:
    """Histograms of a few summary features (:func:`class_feature_columns`), the label's
    positives against its negatives, over every part of its dataset. Saved atomically as PNG.

    Parameters
    ----------
    frame : DataFrame
        :func:`class_feature_frame`.
    path : path
        The PNG to write.
    label : str
        The label's display name (legend and title).
    bins : int
        Histogram bins per panel (shared by both classes).

    Returns
    -------
    list of str
        The columns drawn.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    # names from metadata are text: "$" starts no TeX (a bad formula would fail the figure)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    feats = class_feature_columns(frame.columns)
    ncols = 3
    nrows = max(1, -(-len(feats) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 3.1 * nrows), squeeze=False)
    target = frame["target"].astype(int) if "target" in frame else pd.Series(dtype=int)
    for ax, (col, title) in zip(axes.flat, feats, strict=False):
        vals = frame[col].to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        edges = np.histogram_bin_edges(finite, bins=bins) if len(finite) else bins
        for cls, name, color in ((1, label, "#d1495b"), (0, f"not {label}", "#3b7dd8")):
            v = vals[(target == cls).to_numpy()]
            v = v[np.isfinite(v)]
            if len(v):
                ax.hist(v, bins=edges, alpha=0.45, color=color, label=f"{name} (n={len(v)})")
                ax.axvline(np.median(v), color=color, lw=1.2, ls="--")
        ax.set_xlabel(title)
        ax.set_ylabel("clips")
        ax.grid(alpha=0.25)
    for ax in list(axes.flat)[len(feats) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(
        f"{label}: summary features of its dataset's clips (train, val and test), "
        f"positives against negatives; dashed lines: medians",
        x=0.01,
        ha="left",
    )
    if handles:
        fig.legend(
            handles, labels, loc="upper left", ncols=2, frameon=False,
            bbox_to_anchor=(0.005, 0.955),
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.92 if nrows > 1 else 0.84))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return [c for c, _ in feats]


def run_class_features(
    *,
    dataset: Mapping[str, str | Path],
    features: Sequence[str | Path],
    label: str,
    out: str | Path,
    logger: logging.Logger | None = None,
) -> list[str]:
    """Read a label's dataset and the summary features it shows of its clips (only those
    columns are read); draw :func:`plot_class_features`.

    Parameters
    ----------
    dataset : mapping of str to path
        The label's ``{part: train/val/test.tsv}``.
    features : sequence of path
        Feature shards of every split.
    label : str
        The label's display name.
    out : path
        The PNG.
    logger : logging.Logger, optional
    """
    import pyarrow.dataset as pds

    from ..learning.datasets import read_dataset

    parts = read_dataset(dict(dataset))
    # only the columns drawn, of the clips that have features: cheap on any number of shards
    dset = pds.dataset([str(f) for f in features], format="parquet")
    cols = [c for c, _ in class_feature_columns(dset.schema.names)]
    summary = dset.to_table(
        columns=["ytid", "split", *cols], filter=pds.field("status") == "ok"
    ).to_pandas()
    frame = class_feature_frame(summary, parts)
    cols = plot_class_features(frame, out, label=label)
    (logger or log).info("%s: %d clips, features %s", label, len(frame), ", ".join(cols))
    return cols
