"""Every metric the workflow reports, with one convention for undefined values.

A metric that is undefined on the clips given (AP without a positive, ROC-AUC with one class,
F1 without a positive) is ``float("nan")`` in Python and ``null`` in every JSON file the
workflow writes (:func:`to_json`, which refuses any other non-finite number). Means over labels
(mAP, mean ROC-AUC) leave the undefined ones out and say how many were scored.

* :func:`average_precision`, :func:`roc_auc`, :func:`d_prime`: ranking measures.
* :func:`f1_at`, :func:`best_f1`, :func:`prevalence_f1_threshold`: decisions.
* :func:`binary_metrics`: one label, one model, one set of clips.
* :func:`multilabel_metrics`: many labels, one model (the field's mAP, mean AUC, d').
* :func:`mean_std`: mean and standard deviation of the same metric over seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_text

__all__ = [
    "average_precision",
    "roc_auc",
    "d_prime",
    "f1_at",
    "best_f1",
    "prevalence_f1_threshold",
    "decision_threshold",
    "THRESHOLD_RULES",
    "out_of_fold_scores",
    "choose_threshold_oof",
    "log_loss",
    "binary_metrics",
    "multilabel_metrics",
    "mean_std",
    "to_json",
    "write_json",
]

NAN = float("nan")


def _arrays(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} targets but {len(s)} scores")
    return y, s


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision: scikit-learn's step-wise area under the precision-recall curve.

    Parameters
    ----------
    y : ndarray of {0, 1}, shape (n,)
    s : ndarray of float, shape (n,)

    Returns
    -------
    float
        NaN without a positive (AP is undefined then).
    """
    from sklearn.metrics import average_precision_score

    y, s = _arrays(y, s)
    if y.sum() == 0:
        return NAN
    return float(average_precision_score(y, s))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve; NaN unless ``y`` has both classes."""
    from sklearn.metrics import roc_auc_score

    y, s = _arrays(y, s)
    if len(y) == 0 or y.min() == y.max():
        return NAN
    return float(roc_auc_score(y, s))


def d_prime(auc: float | None) -> float:
    """Sensitivity index ``d' = sqrt(2) * Phi^-1(AUC)`` (the AudioSet papers' d-prime).

    The AUC is clipped to ``[1e-6, 1 - 1e-6]`` so that a perfect ranking gives a large finite
    value (6.7); NaN (or None) stays NaN.
    """
    from scipy.stats import norm

    if auc is None or not np.isfinite(auc):
        return NAN
    return float(math.sqrt(2.0) * norm.ppf(min(max(float(auc), 1e-6), 1 - 1e-6)))


def f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """F1 of the decision ``s >= threshold``; NaN without a positive or a finite threshold."""
    y, s = _arrays(y, s)
    if y.sum() == 0 or threshold is None or not np.isfinite(threshold):
        return NAN
    pred = s >= threshold
    tp = float((pred & (y == 1)).sum())
    return 2 * tp / float(pred.sum() + y.sum())


def _pr_f1(y: np.ndarray, s: np.ndarray, weight_neg: float = 1.0):
    """Thresholds (distinct scores, descending) and F1 at each, negatives weighted."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted == 1).astype(np.float64)
    fp = np.cumsum(y_sorted == 0).astype(np.float64) * weight_neg
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]  # end of each tie
    tp, fp, thr = tp[last], fp[last], s_sorted[last]
    f1 = 2 * tp / (tp + fp + float(y.sum()))
    return thr, f1


def _gap_midpoint(s: np.ndarray, best: float) -> float:
    below = s[s < best]
    return (best + float(below.max())) / 2 if len(below) else best


def best_f1(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """The highest F1 any threshold reaches, and a threshold reaching it (``s >= t``).

    The best F1 holds for any threshold between the lowest score predicted positive and the
    next lower score; the midpoint of that gap is returned (less brittle on new data than the
    score itself).

    Returns
    -------
    f1, threshold : float
        NaN and NaN without a positive; with positives only, the lowest score.
    """
    y, s = _arrays(y, s)
    if y.sum() == 0:
        return NAN, NAN
    thr, f1 = _pr_f1(y, s)
    i = int(np.argmax(f1))
    return float(f1[i]), _gap_midpoint(s, float(thr[i]))


def prevalence_f1_threshold(y: np.ndarray, s: np.ndarray, *, prevalence: float) -> float:
    """The threshold of the highest F1 on ``(y, s)`` re-weighted to a given prevalence.

    The validation part of a label is balanced 1:1, but the model is applied (and tested) at
    the label's natural prevalence, where a negative is far more common: the F1-optimal
    threshold of the balanced part is too low there, and F1 collapses. Weighting each negative
    by ``(1 - prevalence) / prevalence * n_pos / n_neg`` makes the validation clips count as
    they would at ``prevalence``; the threshold maximising that F1 is returned (the midpoint of
    the gap below the best cut, as :func:`best_f1`).

    Parameters
    ----------
    y : ndarray of {0, 1}, shape (n,)
    s : ndarray of float, shape (n,)
    prevalence : float
        Share of positives where the model is applied, in (0, 1): the label's share of the
        training split's clips with status ok.

    Returns
    -------
    float
        NaN without a positive or a negative.

    See Also
    --------
    best_f1 : the same without re-weighting.
    """
    y, s = _arrays(y, s)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0 or not 0 < prevalence < 1:
        return NAN
    w = (1 - prevalence) / prevalence * n_pos / n_neg
    thr, f1 = _pr_f1(y, s, weight_neg=w)
    return _gap_midpoint(s, float(thr[int(np.argmax(f1))]))


def log_loss(y: np.ndarray, s: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities clipped to [1e-7, 1 - 1e-7]; NaN if empty."""
    y, s = _arrays(y, s)
    if len(y) == 0:
        return NAN
    p = np.clip(s, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def binary_metrics(y: np.ndarray, s: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """Metrics of one model's scores (probabilities) of one label against 0/1 targets.

    Returns
    -------
    dict
        ``average_precision``, ``roc_auc``, ``d_prime``; at ``threshold``: ``f1`` (also as
        ``f1_at_threshold``), ``precision``, ``recall``, ``accuracy`` and ``confusion``
        ``[[tn, fp], [fn, tp]]``; ``best_f1`` and ``best_f1_threshold`` (:func:`best_f1` on
        these clips: how far the stored threshold is from the best one here); ``log_loss``,
        ``threshold``, ``n``, ``n_pos``, ``prevalence``. NaN where undefined.
    """
    y, s = _arrays(y, s)
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    f1 = f1_at(y, s, threshold)
    top_f1, top_thr = best_f1(y, s)
    auc = roc_auc(y, s)
    return {
        "average_precision": average_precision(y, s),
        "roc_auc": auc,
        "d_prime": d_prime(auc),
        "f1": f1,
        "f1_at_threshold": f1,
        "precision": tp / (tp + fp) if tp + fp else NAN,
        "recall": tp / (tp + fn) if tp + fn else NAN,
        "accuracy": (tp + tn) / len(y) if len(y) else NAN,
        "best_f1": top_f1,
        "best_f1_threshold": top_thr,
        "log_loss": log_loss(y, s),
        "threshold": float(threshold),
        "n": int(len(y)),
        "n_pos": int(y.sum()),
        "prevalence": float(y.mean()) if len(y) else NAN,
        "confusion": [[tn, fp], [fn, tp]],
    }


def multilabel_metrics(
    Y: np.ndarray,
    S: np.ndarray,
    *,
    labels: Sequence[Mapping[str, str]],
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The field's metrics of a multi-label model on one set of clips.

    Parameters
    ----------
    Y : ndarray of bool or int, shape (n_clips, n_labels)
    S : ndarray of float, shape (n_clips, n_labels)
        Probabilities.
    labels : sequence of mapping
        ``mid`` and ``name`` of each column.
    thresholds : sequence of float, optional
        The stored per-label thresholds: ``f1_at_threshold`` is computed at them.

    Returns
    -------
    dict
        ``mAP`` (mean AP over labels with a positive), ``mean_auc`` (over labels with both
        classes), ``d_prime`` of ``mean_auc``, ``n_clips``, ``n_labels``, ``n_labels_scored``
        and ``per_label``: ``mid, name, ap, auc, d_prime, n_pos, threshold,
        f1_at_threshold, best_f1, best_threshold`` per label. NaN where undefined.
    """
    Y = np.asarray(Y).astype(bool)
    S = np.asarray(S, dtype=np.float64)
    if Y.shape != S.shape or Y.ndim != 2 or Y.shape[1] != len(labels):
        raise ValueError(f"targets {Y.shape}, scores {S.shape} and {len(labels)} labels disagree")
    per = []
    for j, lab in enumerate(labels):
        y, s = Y[:, j], S[:, j]
        t = NAN if thresholds is None else float(thresholds[j])
        bf, bt = best_f1(y, s)
        auc = roc_auc(y, s)
        per.append(
            {
                "mid": lab["mid"],
                "name": lab["name"],
                "ap": average_precision(y, s),
                "auc": auc,
                "d_prime": d_prime(auc),
                "n_pos": int(y.sum()),
                "threshold": t,
                "f1_at_threshold": f1_at(y, s, t),
                "best_f1": bf,
                "best_threshold": bt,
            }
        )
    aps = [p["ap"] for p in per if np.isfinite(p["ap"])]
    aucs = [p["auc"] for p in per if np.isfinite(p["auc"])]
    mean_auc = float(np.mean(aucs)) if aucs else NAN
    return {
        "mAP": float(np.mean(aps)) if aps else NAN,
        "mean_auc": mean_auc,
        "d_prime": d_prime(mean_auc),
        "n_clips": int(len(Y)),
        "n_labels": len(labels),
        "n_labels_scored": len(aps),
        "per_label": per,
    }


def mean_std(values: Sequence[float | None]) -> dict[str, float | int]:
    """Mean and sample standard deviation (ddof 1; NaN for one value) of the finite values.

    Returns
    -------
    dict
        ``mean``, ``std``, ``n`` (finite values used).
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return {
        "mean": float(v.mean()) if len(v) else NAN,
        "std": float(v.std(ddof=1)) if len(v) > 1 else NAN,
        "n": int(len(v)),
    }


def _clean(o: Any) -> Any:
    """NaN/inf to None, numpy scalars and arrays to Python, recursively."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def to_json(obj: Any, *, indent: int | None = 1) -> str:
    """JSON text of ``obj`` with every undefined metric (NaN, inf) as ``null``.

    Written with ``allow_nan=False``: no ``NaN`` token (which is not JSON) can reach a file.
    """
    return json.dumps(_clean(obj), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write :func:`to_json` of ``obj`` atomically (a temp name, then a rename)."""
    atomic_write_text(path, to_json(obj))


#: Rules a binary model's decision threshold can be chosen by (:func:`decision_threshold`).
THRESHOLD_RULES = ("prevalence", "balanced")


def decision_threshold(
    y: np.ndarray, s: np.ndarray, *, rule: str = "prevalence", prevalence: float | None = None
) -> float:
    """The decision threshold a binary model stores, chosen on its validation scores.

    Parameters
    ----------
    y, s : ndarray, shape (n,)
        Validation targets and scores.
    rule : {"prevalence", "balanced"}
        ``"prevalence"``: maximum F1 with the validation clips re-weighted to ``prevalence``
        (:func:`prevalence_f1_threshold`), for a model applied at the label's natural rate;
        ``"balanced"``: maximum F1 on the validation clips as they are (:func:`best_f1`).
    prevalence : float, optional
        The label's share of the training split's clips; None falls back to ``"balanced"``.

    Returns
    -------
    float
        0.5 when no threshold can be chosen (no positive or no negative).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, not {rule!r}")
    if rule == "prevalence" and prevalence is not None:
        t = prevalence_f1_threshold(y, s, prevalence=prevalence)
    else:
        t = best_f1(y, s)[1]
    return float(t) if np.isfinite(t) else 0.5


def out_of_fold_scores(
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold scores of every example of ``(X, y)``: each fold scored by a model fitted on
    the other folds.

    Folds are stratified by ``y`` (:class:`sklearn.model_selection.StratifiedGroupKFold`,
    shuffled with ``seed``); with ``groups``, the examples of a group (a recording, a source)
    are all in one fold, so that no fold is scored by a model that saw its recordings.

    Parameters
    ----------
    fit_predict : callable
        ``fit_predict(X_fit, y_fit, X_score)`` fits a fresh model on ``(X_fit, y_fit)`` and
        returns its scores (probabilities) of ``X_score``, shape ``(len(X_score),)``.
    X : ndarray, shape (n, ...)
    y : ndarray, shape (n,)
        0/1 targets.
    folds : int
        Number of folds, >= 2; fewer when a class has fewer examples (or groups), at least 2.
    seed : int
        Seed of the folds' shuffle.
    groups : ndarray, shape (n,), optional
        Group of each example; None: every example its own group.

    Returns
    -------
    ndarray of float64, shape (n,)

    Raises
    ------
    ValueError
        If ``y`` lacks a positive or a negative example (in two groups), or ``folds < 2``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(int)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, not {folds}")
    per_class = min(len(np.unique(groups[y == c])) for c in (0, 1))
    k = min(folds, per_class)
    if k < 2:
        raise ValueError(
            f"out-of-fold scores need 2 positive and 2 negative groups; y has {per_class} "
            "of the rarer class"
        )
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
    oof = np.full(len(y), np.nan)
    for fit, score in cv.split(np.zeros(len(y)), y, groups):
        oof[score] = np.asarray(fit_predict(X[fit], y[fit], X[score]), dtype=float)
    return oof


def choose_threshold_oof(
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    repeats: int = 10,
    seed: int = 0,
    groups: np.ndarray | None = None,
    rule: str = "balanced",
    prevalence: float | None = None,
) -> float:
    """The decision threshold of a model from out-of-fold scores over the whole training data,
    instead of the scores of a small val part: the median, over ``repeats`` different fold
    draws, of the threshold maximising F1 on that draw's out-of-fold scores
    (:func:`out_of_fold_scores`, :func:`decision_threshold` with ``rule`` and
    ``prevalence``).

    :func:`decision_threshold` on the val part puts the threshold in the gap between that part's
    classes: with few val clips from the same sources as the training clips, the gap is wide
    and the threshold lands where new recordings, scored less confidently, fall on the wrong
    side. Out-of-fold scores come from models that did not see the scored clips, over all the
    training clips. One draw of folds is not enough: the F1-maximising threshold of one draw
    moved between 0.13 and 0.55 with the fold seed for the logistic regression on Music (real
    recordings split by package, ``tests/realaudio.py``), and its F1 on the held-out packages
    between 0.85 and 0.98; the median over 10 draws gave 0.962 (val part's threshold: 0.849,
    best F1 0.981), but for Speech 0.921 (val part's: 0.949, best 0.988): better on one
    class, worse on the other (``benchmarks/bench_baselines_real.py``).

    Parameters
    ----------
    fit_predict, X, y, folds, groups
        As :func:`out_of_fold_scores` (``fit_predict`` runs ``folds * repeats`` times).
    rule, prevalence
        As :func:`decision_threshold`.
    repeats : int
        Draws of folds, >= 1; draw ``r`` is seeded with ``seed + r``.
    seed : int
        Seed of the first draw.

    Returns
    -------
    float
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    y = np.asarray(y).astype(int)
    thresholds = [
        decision_threshold(
            y,
            out_of_fold_scores(fit_predict, X, y, folds=folds, seed=seed + r, groups=groups),
            rule=rule,
            prevalence=prevalence,
        )
        for r in range(repeats)
    ]
    return float(np.median(thresholds))
