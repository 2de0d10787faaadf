"""Metric tables and plots of the per-label models (the metrics themselves: :mod:`~.metrics`).

Plots use matplotlib's Agg backend and are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, write_tsv

__all__ = [
    "summarize_metrics",
    "plot_roc_pr",
    "plot_confusion",
    "plot_training_curves",
    "plot_summary",
    "confusion_rates",
    "SUMMARY_COLUMNS",
]

SUMMARY_COLUMNS = [
    "label",
    "name",
    "mid",
    "model",
    "roc_auc",
    "average_precision",
    "f1",
    "accuracy",
    "precision",
    "recall",
    "log_loss",
    "threshold",
    "f1_at_threshold",
    "best_f1",
    "best_f1_threshold",
    "n_test",
    "n_test_pos",
    "test_source",
    "test_prevalence",
    "ap_balanced",
    "ap_seeds_std",
]
MODEL_TITLES = {"cnn": "CNN (log-mel)", "dense": "Dense (seed)", "logreg": "Logistic regression"}


def summarize_metrics(metrics_files: Sequence[str | Path], out: str | Path | None = None):
    """Table of test metrics, one row per (label, model), from per-label metrics JSON files.

    Writes it as TSV to ``out`` when given. Returns the DataFrame (columns
    :data:`SUMMARY_COLUMNS`): ``f1_at_threshold`` is the test F1 at the threshold chosen on
    validation (``threshold``, the one stored and used by ``audiosetflow predict``),
    ``best_f1`` the highest test F1 of any threshold (at ``best_f1_threshold``); a gap
    between them means the threshold does not transfer to the test clips. The test clips are
    every clip of the eval split at its natural prevalence (``test_prevalence``);
    ``ap_balanced`` is the AP on their 1:1 balanced subset (not comparable with the field's
    figures) and ``ap_seeds_std`` the standard deviation of the AP over ``training.seeds``.
    """
    rows = []
    for path in metrics_files:
        m = json.loads(Path(path).read_text(encoding="utf-8"))
        for model, res in m["models"].items():
            t = res["test"]
            rows.append(
                {
                    "label": m["label"],
                    "name": m["name"],
                    "mid": m["mid"],
                    "model": model,
                    "roc_auc": t["roc_auc"],
                    "average_precision": t["average_precision"],
                    "f1": t["f1"],
                    "accuracy": t["accuracy"],
                    "precision": t["precision"],
                    "recall": t["recall"],
                    "log_loss": t.get("log_loss"),
                    "threshold": t["threshold"],
                    "f1_at_threshold": t.get("f1_at_threshold", t["f1"]),
                    "best_f1": t.get("best_f1"),
                    "best_f1_threshold": t.get("best_f1_threshold"),
                    "n_test": t["n"],
                    "n_test_pos": t["n_pos"],
                    "test_source": m["dataset"]["test_source"],
                    "test_prevalence": t.get("prevalence"),
                    "ap_balanced": (res.get("test_balanced") or {}).get("average_precision"),
                    "ap_seeds_std": (
                        (res.get("over_seeds") or {}).get("average_precision") or {}
                    ).get("std"),
                }
            )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    if out is not None:
        write_tsv(out, df.round(4))
    return df


# --- plots ---------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def plot_roc_pr(
    y_true: np.ndarray, scores: Mapping[str, np.ndarray], out: str | Path, *, title: str = ""
) -> None:
    """ROC (left) and precision-recall (right) curves of every model on one figure.

    ``scores`` maps a model name (``cnn``, ``dense``, ``logreg`` or any) to its test scores.
    """
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    plt = _plt()
    y = np.asarray(y_true).astype(int)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4))
    both = 0 < y.sum() < len(y)
    for name, s in scores.items():
        lab = MODEL_TITLES.get(name, name)
        if not both:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax1.plot(fpr, tpr, label=f"{lab} (AUC {roc_auc_score(y, s):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        ax2.step(rec, prec, where="post", label=f"{lab} (AP {average_precision_score(y, s):.3f})")
    ax1.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax1.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    base = y.mean() if len(y) else 0.0
    ax2.axhline(base, color="grey", lw=0.8, ls="--")
    ax2.set(
        xlabel="Recall", ylabel="Precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01)
    )
    for ax in (ax1, ax2):
        if both:
            ax.legend(loc="lower right" if ax is ax1 else "lower left", fontsize=8)
        else:
            ax.text(0.5, 0.5, "test set has one class only", ha="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    _save(fig, out)


def confusion_rates(cm: Sequence[Sequence[int]]) -> np.ndarray:
    """Row-normalised confusion matrix: each cell's share of its true class
    (``[[TNR, FPR], [FNR, TPR]]``); a row without clips is all NaN."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.nan)


def plot_confusion(
    confusions: Mapping[str, Sequence[Sequence[int]]], out: str | Path, *, title: str = ""
) -> None:
    """One confusion matrix panel per model (``[[tn, fp], [fn, tp]]``): each cell shows its
    count and its rate within the true class (row), and is shaded by that rate."""
    plt = _plt()
    n = max(len(confusions), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    names = {(0, 0): "TN", (0, 1): "FP", (1, 0): "FN", (1, 1): "TP"}
    for ax, (name, cm) in zip(axes[0], confusions.items(), strict=False):
        cm = np.asarray(cm)
        rates = confusion_rates(cm)
        ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                r = rates[i, j]
                dark = np.isfinite(r) and r > 0.5
                rate = "n/a" if not np.isfinite(r) else f"{100 * r:.0f} %"
                ax.text(
                    j,
                    i,
                    f"{names[(i, j)]} {int(cm[i, j])}\n{rate}",
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                )
        ax.set_xticks([0, 1], ["neg", "pos"])
        ax.set_yticks([0, 1], ["neg", "pos"])
        ax.set(xlabel="Predicted", title=MODEL_TITLES.get(name, name))
    axes[0][0].set_ylabel("True")
    fig.text(
        0.5,
        -0.02,
        "count and share of the true class (row): TN/FP rates of negatives, FN/TP of positives",
        ha="center",
        fontsize=8,
        color="0.3",
    )
    if title:
        fig.suptitle(title)
    _save(fig, out)


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping]], out: str | Path, *, title: str = ""
) -> None:
    """Training and validation loss (left) and validation ROC-AUC (right) per epoch.

    ``histories`` maps a model name to its per-epoch records with keys ``epoch``,
    ``train_loss``, ``val_loss``, ``val_auc`` (and optionally ``best``: the chosen epoch).
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        c = colors[k % len(colors)]
        h = pd.DataFrame(list(hist))
        lab = MODEL_TITLES.get(name, name)
        ax1.plot(h["epoch"], h["train_loss"], color=c, ls="--", label=f"{lab} train")
        ax1.plot(h["epoch"], h["val_loss"], color=c, label=f"{lab} validation")
        ax2.plot(h["epoch"], h["val_auc"].astype(float), color=c, label=lab)
        if "best" in h and h["best"].any():
            best = int(h.loc[h["best"].astype(bool), "epoch"].iloc[-1])
            ax1.axvline(best, color=c, lw=0.8, ls=":")
    ax1.set(xlabel="Epoch", ylabel="Binary cross-entropy", title="Loss")
    ax2.set(xlabel="Epoch", ylabel="ROC-AUC", title="Validation ROC-AUC")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, out)


def plot_summary(summary: pd.DataFrame, out: str | Path) -> None:
    """Grouped bars of test ROC-AUC and average precision per label and model, each bar
    labelled with its value; one legend for both panels, below them."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    titles = {"roc_auc": "ROC-AUC", "average_precision": "average precision (AP)"}
    for ax, metric in zip(axes, ("roc_auc", "average_precision"), strict=True):
        if len(summary):
            wide = summary.pivot_table(index="name", columns="model", values=metric, sort=False)
            order = [m for m in MODEL_TITLES if m in wide.columns]
            wide = wide[order + [m for m in wide.columns if m not in order]]
            wide = wide.rename(columns=lambda m: MODEL_TITLES.get(m, m))
            wide.plot.bar(ax=ax, rot=0, ylim=(0, 1.12), legend=False, width=0.8)
            for cont in ax.containers:
                ax.bar_label(cont, fmt="%.2f", fontsize=7, padding=1)
        ax.set_title(f"Test {titles[metric]}")
        ax.set_xlabel("label")
        ax.set_ylabel(titles[metric])
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncols=len(labels), frameon=False,
            bbox_to_anchor=(0.5, -0.01),
        )  # fmt: skip
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _save(fig, out)


def score_matrix(
    binary: Sequence[tuple[str, str | Path]], multilabel: str | Path | None = None
) -> pd.DataFrame:
    """One table of every test clip's score of every label by every model.

    Parameters
    ----------
    binary : sequence of (str, path)
        Per label, its MID and its per-clip test scores (:func:`~.training.scores_table`:
        ``ytid, split, start, end, target`` and one column per model).
    multilabel : path, optional
        The multi-label model's test scores (``ytid, split, start, end``, then per label
        ``{mid}`` and ``target:{mid}``).

    Returns
    -------
    DataFrame
        One row per clip (``ytid, split, start, end``, sorted by ``ytid``), then
        ``target:{mid}`` (0/1, the label's truth) and ``score:{model}:{mid}`` (a probability;
        empty where a model did not score that clip). Where the multi-label model's truth
        of a label differs from the binary dataset's on a clip both scored (another
        ontology expansion), it is kept apart as ``target:multilabel:{mid}``.
    """
    from ..io import read_tsv

    keys = ["ytid", "split", "start", "end"]
    cols: dict[str, pd.Series] = {}
    index: pd.DataFrame | None = None

    def add(df: pd.DataFrame) -> pd.DataFrame:
        nonlocal index
        df = df.drop_duplicates("ytid").set_index("ytid")
        seg = df[[k for k in keys if k != "ytid"]]
        index = seg if index is None else index.combine_first(seg)
        return df

    for mid, path in binary:
        df = add(read_tsv(path))
        cols[f"target:{mid}"] = df["target"].astype("Int64")
        for model in [c for c in df.columns if c not in keys and c != "target"]:
            cols[f"score:{model}:{mid}"] = df[model].astype(float)
    if multilabel is not None:
        df = add(read_tsv(multilabel))
        for mid in [c for c in df.columns if c not in keys and not c.startswith("target:")]:
            cols[f"score:multilabel:{mid}"] = df[mid].astype(float)
            truth = df[f"target:{mid}"].astype("Int64")
            have = cols.get(f"target:{mid}")
            if have is None:
                cols[f"target:{mid}"] = truth
                continue
            both = have.index.intersection(truth.index)
            if have.reindex(both).equals(truth.reindex(both)):
                cols[f"target:{mid}"] = have.combine_first(truth)
            else:
                cols[f"target:multilabel:{mid}"] = truth
    if index is None:
        return pd.DataFrame(columns=keys)
    out = pd.concat([index, pd.DataFrame(cols).reindex(index.index)], axis=1)
    out = out.reset_index().rename(columns={"index": "ytid"}).sort_values("ytid", kind="stable")
    return out.reset_index(drop=True)
