"""The summary-feature baselines on real recordings split by package, against scikit-learn.

Builds (or reuses) the corpus of ``tests/realaudio.py`` (Debian packages of recorded speech,
music and effects, installed with apt-get as root; train and test from different packages) and
prints, per class, the test AP, the F1 at the stored threshold (chosen on the val part, as
:func:`audiosetflow.learning.training.evaluate_model` does), the best F1 any threshold reaches
on the test part, and the F1 at the threshold chosen from out-of-fold scores over the whole
training split (:func:`audiosetflow.learning.metrics.choose_threshold_oof`), of:

* scikit-learn's StandardScaler + MLPClassifier(64, 32) on the 35 seed means, on the 70 means
  and standard deviations, and on five numbers per clip (each seed feature's mean);
* the dense baseline and the logistic regression as they were (35 means; early stopping on
  the val AP, at least 100 epochs, patience 100; threshold from the val part) and as they are
  (:func:`train_dense`, :func:`train_logreg`; "F1@thr" is at the threshold each stores).

Usage: python benchmarks/bench_baselines_real.py [--classes Speech Music] [--tiny]
(--tiny: Speech only, without the former baselines.) F1@OOF: F1 at the out-of-fold threshold
the logistic regression now stores; F1@val: its F1 at the val part's threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import realaudio  # noqa: E402

from audiosetflow.learning.metrics import best_f1, decision_threshold  # noqa: E402
from audiosetflow.learning.training import (  # noqa: E402
    TrainSettings,
    evaluate_model,
    train_dense,
    train_logreg,
)

SEED_FEATURES = ("mfcc_mean", "spectral_centroid_mean", "zcr_mean", "chroma_mean", "rolloff_mean")


def sk_mlp(X_fit, y_fit, X_score):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=1000, random_state=0)
    ).fit(X_fit, np.asarray(y_fit).astype(int))
    return m.predict_proba(X_score)[:, 1]


def row(name, y, s_val, s_test, y_val, thr=None) -> dict:
    from sklearn.metrics import average_precision_score

    def f1_at(t):
        pred = s_test >= t
        tp = int((pred & (y == 1)).sum())
        return 2 * tp / (2 * tp + int((pred != (y == 1)).sum()))

    thr = decision_threshold(y_val, s_val, rule="balanced") if thr is None else thr
    return {
        "model": name,
        "ap": float(average_precision_score(y, s_test)),
        "f1_thr": f1_at(thr),
        "best_f1": best_f1(y, s_test)[0],
        "f1_oof": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", nargs="+", default=["Speech", "Music"])
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    classes = ["Speech"] if args.tiny else args.classes
    corpus = realaudio.real_corpus()
    print(f"corpus {corpus.root}: {len(corpus.clips)} clips; packages:")
    for (split, pkg), g in corpus.clips.groupby(["split", "package"]):
        counts = ", ".join(f"{c} {n}" for c, n in g["cls"].value_counts().sort_index().items())
        print(f"  {split:5s} {pkg} {corpus.versions[pkg]}: {counts}")
    settings = TrainSettings.from_config({}, seed=1234)
    before = dataclasses.replace(
        settings,
        dense=dataclasses.replace(
            settings.dense, epochs=300, monitor="ap", patience=100, min_epochs=100
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for cls in classes:
            data, parts = realaudio.label_data(corpus, cls, Path(tmp) / cls, settings)
            S, y = data.summary, data.y
            n_means = S["train"].shape[1] // 2
            means = {p: v[:, :n_means] for p, v in S.items()}
            from audiosetflow.audio.features import FeatureParams, summary_columns
            from audiosetflow.learning.training import seed_columns

            cols = seed_columns(summary_columns(FeatureParams(sample_rate=realaudio.SAMPLE_RATE)))
            five_idx = [[i for i, c in enumerate(cols) if c.startswith(f)] for f in SEED_FEATURES]
            five = {p: np.stack([v[:, g].mean(1) for g in five_idx], 1) for p, v in means.items()}
            print(
                f"\n{cls}: train {len(y['train'])} ({int(y['train'].sum())} positive), "
                f"val {len(y['val'])}, test {len(y['test'])} ({int(y['test'].sum())} positive,"
                " other packages)"
            )
            rows = []
            t0 = time.perf_counter()
            for name, X in (
                ("sklearn MLP(64,32), 35 means", means),
                ("sklearn MLP(64,32), 70 mean+std", S),
                ("sklearn MLP(64,32), five numbers", five),
            ):
                rows.append(
                    row(
                        name,
                        y["test"],
                        sk_mlp(X["train"], y["train"], X["val"]),
                        sk_mlp(X["train"], y["train"], X["test"]),
                        y["val"],
                    )
                )
            if not args.tiny:
                old = dataclasses.replace(data, summary=means)
                for fitted in (
                    train_dense(old, before, name=cls),
                    train_logreg(old, settings),
                ):
                    sc = fitted.scores
                    rows.append(
                        row(f"before: {fitted.kind}", y["test"], sc["val"], sc["test"], y["val"])
                    )
            for fitted in (train_dense(data, settings, name=cls), train_logreg(data, settings)):
                sc = fitted.scores
                # F1@thr: at the threshold the model stores (evaluate_model); F1@OOF: at the
                # out-of-fold threshold (the logistic regression stores it; not computed for
                # the dense network: 50 more fits)
                t = evaluate_model(fitted, data).test
                r = row(f"now: {fitted.kind}", y["test"], sc["val"], sc["test"], y["val"])
                r["f1_thr"] = t["f1_at_threshold"]
                if fitted.threshold is not None:
                    r["f1_oof"] = t["f1_at_threshold"]
                    r["f1_val"] = row("", y["test"], sc["val"], sc["test"], y["val"])["f1_thr"]
                rows.append(r)
            print(
                f"{'model':36s} {'AP':>6s} {'F1@thr':>7s} {'bestF1':>7s} {'F1@OOF':>7s} "
                f"{'F1@val':>7s}"
            )
            for r in rows:
                oof = "" if r["f1_oof"] is None else f"{r['f1_oof']:.3f}"
                val = f"{r['f1_val']:.3f}" if "f1_val" in r else ""
                print(
                    f"{r['model']:36s} {r['ap']:6.3f} {r['f1_thr']:7.3f} {r['best_f1']:7.3f} "
                    f"{oof:>7s} {val:>7s}"
                )
            print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
