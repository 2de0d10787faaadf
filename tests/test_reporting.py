"""The report's figures and pages: what each plot shows, the landing page's tables, the
benchmark summary and the worst false positives / negatives."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from audiosetflow.learning import evaluation as ev

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch):
    """Keep the figures a plot function closes, to look at what it drew."""
    plt.close("all")
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    yield lambda: [plt.figure(n) for n in plt.get_fignums()]
    monkeypatch.undo()
    plt.close("all")


# --- plots ----------------------------------------------------------------------------------


def test_confusion_rates():
    got = ev.confusion_rates([[6, 2], [0, 0]])
    assert got[0].tolist() == [0.75, 0.25] and np.isnan(got[1]).all()


def test_confusion_matrix_shows_counts_and_rates(tmp_path, figures):
    ev.plot_confusion({"cnn": [[10, 2], [3, 9]], "dense": [[5, 5], [0, 0]]}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG
    (fig,) = figures()
    cnn, dense = fig.axes[:2]
    texts = sorted(t.get_text() for t in cnn.texts)
    assert texts == ["FN 3\n25 %", "FP 2\n17 %", "TN 10\n83 %", "TP 9\n75 %"]
    assert "FN 0\nn/a" in [t.get_text() for t in dense.texts]
    assert cnn.get_xlabel() == "Predicted" and cnn.get_ylabel() == "True"


def test_summary_plot_has_axis_labels_and_a_legend_off_the_bars(tmp_path, figures):
    summary = pd.DataFrame(
        [(name, m, auc, ap) for name in ("Music", "Speech")
         for m, auc, ap in (("cnn", 0.99, 0.98), ("dense", 0.7, 0.66), ("logreg", 0.72, 0.7))],
        columns=["name", "model", "roc_auc", "average_precision"],
    )  # fmt: skip
    ev.plot_summary(summary, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    (fig,) = figures()
    fig.canvas.draw()
    axes = fig.axes
    assert [a.get_ylabel() for a in axes] == ["ROC-AUC", "average precision (AP)"]
    assert all(a.get_xlabel() == "label" and a.get_legend() is None for a in axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "CNN (log-mel)", "Dense (seed)", "Logistic regression"
    ]  # fmt: skip
    below = legend.get_window_extent().y1
    assert all(below <= a.get_window_extent().y0 for a in axes)  # under the bars, not on them
    values = {t.get_text() for a in axes for t in a.texts}
    assert {"0.99", "0.98", "0.70"} <= values


def test_example_figure_leaves_out_mfcc_c0(tmp_path, figures):
    from audiosetflow.audio.features import FeatureParams, compute
    from audiosetflow.reporting.examples import plot_clip

    params = FeatureParams(sample_rate=22050)
    t = np.arange(22050) / 22050
    y = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    feats = compute(y, params=params)
    plot_clip(y, feats, params=params, title="x", path=tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG
    (fig,) = figures()
    (ax,) = [a for a in fig.axes if a.get_title().startswith("MFCC")]
    image = ax.get_images()[0].get_array()
    assert image.shape[0] == params.n_mfcc - 1  # c1 .. c19
    assert np.allclose(image, feats["mfcc"][1:])
    lo, hi = ax.get_images()[0].get_clim()
    assert lo == -hi and hi < np.abs(feats["mfcc"][0]).max()  # c0 would not fit the scale


def test_funnel_reason_lines_fit_under_their_panel(tmp_path):
    from audiosetflow.reporting.funnel import _fit, plot_funnel

    line = "download: permanent: " + "x" * 120 + " x12"
    assert len(_fit(line, 60)) == 60 and _fit(line, 60).endswith("… x12")
    assert _fit("short x1", 60) == "short x1"
    av = pd.DataFrame(
        [("train", "selected", 3, 3, 0, ""), ("train", "download", 3, 2, 1, line[22:])],
        columns=["split", "stage", "entered", "done", "failed", "reasons"],
    )
    plot_funnel(av, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
