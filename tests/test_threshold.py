"""Thresholds from out-of-fold scores (metrics.out_of_fold_scores, choose_threshold_oof)."""

from __future__ import annotations

import numpy as np
import pytest

from audiosetflow.learning import metrics as ev
from audiosetflow.learning.training import fit_logreg


def _thr(y, s):
    return ev.best_f1(y, s)[1]


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    X = rng.normal(size=(n, 4)) + y[:, None] * 1.5
    return X, y


def test_out_of_fold_scores_never_score_a_group_seen_in_fitting():
    X, y = _data()
    groups = np.arange(len(y)) // 4  # four clips per recording
    seen = []

    def fit_predict(X_fit, y_fit, X_score):
        fit_rows = {tuple(r) for r in X_fit}
        score_rows = [tuple(r) for r in X_score]
        assert not fit_rows.intersection(score_rows)
        seen.append([tuple(r) for r in X_score])
        return fit_logreg(X_fit, y_fit).predict_proba(X_score)[:, 1]

    oof = ev.out_of_fold_scores(fit_predict, X, y, folds=5, seed=3, groups=groups)
    assert len(seen) == 5 and sum(map(len, seen)) == len(y)
    assert np.isfinite(oof).all() and ((oof >= 0) & (oof <= 1)).all()
    # a group's clips are scored by the same model: never split over folds
    fold = {row: k for k, rows in enumerate(seen) for row in rows}
    for g in np.unique(groups):
        assert len({fold[tuple(r)] for r in X[groups == g]}) == 1, g
    # the same seed gives the same scores
    again = ev.out_of_fold_scores(fit_predict, X, y, folds=5, seed=3, groups=groups)
    np.testing.assert_array_equal(oof, again)


def test_choose_threshold_oof_is_the_best_f1_threshold_of_the_oof_scores():
    X, y = _data()

    def fit_predict(X_fit, y_fit, X_score):
        return fit_logreg(X_fit, y_fit).predict_proba(X_score)[:, 1]

    oof = ev.out_of_fold_scores(fit_predict, X, y, seed=1)
    assert ev.choose_threshold_oof(fit_predict, X, y, seed=1, repeats=1) == _thr(y, oof)
    each = [_thr(y, ev.out_of_fold_scores(fit_predict, X, y, seed=s)) for s in (1, 2, 3)]
    thr = ev.choose_threshold_oof(fit_predict, X, y, seed=1, repeats=3)
    assert thr == pytest.approx(np.median(each)) and 0 < thr < 1
    with pytest.raises(ValueError, match="repeats"):
        ev.choose_threshold_oof(fit_predict, X, y, repeats=0)


def test_out_of_fold_scores_refuse_too_few_examples():
    X, y = _data(10)
    y[:] = 0
    y[0] = 1
    with pytest.raises(ValueError, match="2 positive and 2 negative"):
        ev.out_of_fold_scores(lambda a, b, c: np.zeros(len(c)), X, y)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        ev.out_of_fold_scores(lambda a, b, c: np.zeros(len(c)), *_data(), folds=1)
