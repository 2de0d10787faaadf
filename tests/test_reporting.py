"""The report's figures and pages: what each plot shows, the landing page's tables, the
benchmark summary and the worst false positives / negatives."""

from __future__ import annotations

import re
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest
from browser import Elements

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


def test_class_features_figure(tmp_path, figures):
    from synth_features import POS_MID, write_split

    from audiosetflow.learning.datasets import run_dataset
    from audiosetflow.reporting.classes import class_feature_columns, run_class_features

    write_split(tmp_path / "f/train", "train", n_pos=8, n_neg=8, seconds=1.0, seed=1)
    write_split(tmp_path / "f/eval", "eval", n_pos=3, n_neg=3, seconds=1.0, seed=2)
    run_dataset(
        train_features=tmp_path / "f/train",
        eval_features=tmp_path / "f/eval",
        out_dir=tmp_path / "d",
        mid=POS_MID,
        val_fraction=0.25,
        test_fraction=0.2,
        seed=1,
    )
    shards = sorted(str(p) for p in (tmp_path / "f").rglob("*.parquet"))
    cols = run_class_features(
        dataset={p: tmp_path / f"d/{p}.tsv" for p in ("train", "val", "test")},
        features=shards,
        label="Music",
        out=tmp_path / "cf.png",
    )
    assert (tmp_path / "cf.png").read_bytes()[:8] == PNG
    assert cols == ["spectral_centroid_mean", "spectral_centroid_std", "rolloff_mean",
                    "zcr_mean", "mfcc_mean_01", "mfcc_std_00"]  # fmt: skip
    (fig,) = figures()
    drawn = [a for a in fig.axes if a.patches]
    assert len(drawn) == 6
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["Music (n=11)", "not Music (n=11)"]
    assert class_feature_columns(["zcr_mean", "mfcc_mean_0"]) == [
        ("zcr_mean", "zero-crossing rate, mean")
    ]


# --- benchmarks -------------------------------------------------------------------------------

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n" for s, rss, cpu in rows]
    path.write_text(BENCH_HEADER + "".join(lines))


def test_benchmarks_summed_per_rule(tmp_path, figures):
    from audiosetflow.reporting import benchmarks as bm

    root = tmp_path / "results/benchmarks"
    _bench(root / "download/train/shard-0000.tsv", (10.0, 200.0, 2.0))
    _bench(root / "download/train/shard-0001.tsv", (30.0, 250.5, 4.0))
    _bench(root / "download/eval/shard-0000.tsv", (20.0, "NA", "NA"))  # too short to measure
    _bench(root / "train/music.tsv", (50.0, 900.0, 80.0), (70.0, 1100.0, 100.0))  # repeat(2)
    _bench(root / "aggregate.tsv", (1.5, 120.0, 1.0))
    (root / "funnel.tsv").write_text("")  # an empty file is skipped
    files = sorted(root.rglob("*.tsv"))
    assert bm.rule_of(root / "download/train/shard-0000.tsv", root) == "download"
    assert bm.rule_of(root / "aggregate.tsv", root) == "aggregate"
    jobs = bm.read_benchmarks(files, root)
    assert len(jobs) == 5 and set(jobs["rule"]) == {"download", "train", "aggregate"}
    got = bm.summarize_benchmarks(jobs).set_index("rule")
    assert list(got.index) == ["download", "train", "aggregate"]  # most wall time first
    cols = ["jobs", "wall_s", "cpu_s", "max_wall_s", "max_rss_mb"]
    assert got.loc["download", cols].tolist() == [3, 60.0, 6.0, 30.0, 250.5]
    assert got.loc["train", ["jobs", "wall_s", "cpu_s", "max_rss_mb"]].tolist() == [
        1, 60.0, 90.0, 1000.0
    ]  # fmt: skip
    assert got["share_wall"].sum() == pytest.approx(1.0)
    summary = bm.run_benchmarks(
        files=files, root=root, table_out=tmp_path / "b.tsv", plot_out=tmp_path / "b.png"
    )
    back = pd.read_csv(tmp_path / "b.tsv", sep="\t")
    assert list(back.columns) == bm.BENCHMARK_COLUMNS and len(back) == len(summary) == 3
    assert (tmp_path / "b.png").read_bytes()[:8] == PNG
    fig = figures()[-1]
    assert [a.get_xlabel() for a in fig.axes] == [
        "wall time, summed over jobs (s)", "CPU time, summed over jobs (s)",
        "peak memory of one job (MB)",
    ]  # fmt: skip
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == "download (3)"
    assert bm.summarize_benchmarks(bm.read_benchmarks([], root)).empty


# --- worst false positives and negatives --------------------------------------------------------


def _scores():
    rows = [
        # ytid, target, cnn, dense
        ("negHigh0001", 0, 0.95, 0.2),
        ("negHigh0002", 0, 0.90, 0.3),
        ("negTie00003", 0, 0.80, 0.1),
        ("negTie00002", 0, 0.80, 0.1),
        ("negAtThr001", 0, 0.50, 0.4),  # == threshold: predicted positive
        ("negLow00001", 0, 0.10, 0.9),
        ("posLow00001", 1, 0.05, 0.5),
        ("posLow00002", 1, 0.30, 0.6),
        ("posHigh0001", 1, 0.99, 0.7),
    ]
    df = pd.DataFrame(rows, columns=["ytid", "target", "cnn", "dense"])
    df.insert(1, "split", "eval")
    df.insert(2, "start", 30.0)
    df.insert(3, "end", 40.0)
    return df[["ytid", "split", "start", "end", "target", "cnn", "dense"]]


def test_worst_errors_picks_and_orders():
    from audiosetflow.reporting.errors import worst_errors, youtube_url

    fp, fn = worst_errors(_scores(), model="cnn", threshold=0.5, n=4)
    assert fp["ytid"].tolist() == ["negHigh0001", "negHigh0002", "negTie00002", "negTie00003"]
    assert fn["ytid"].tolist() == ["posLow00001", "posLow00002"]
    fp, _ = worst_errors(_scores(), model="cnn", threshold=0.5, n=10)
    assert fp["ytid"].tolist()[-1] == "negAtThr001"
    fp, fn = worst_errors(_scores(), model="dense", threshold=0.65, n=5)
    assert fp["ytid"].tolist() == ["negLow00001"] and fn["ytid"].tolist()[0] == "posLow00001"
    assert list(fp.columns) == list(_scores().columns)
    with pytest.raises(KeyError, match="no column 'logreg'"):
        worst_errors(_scores(), model="logreg", threshold=0.5)
    assert youtube_url("-abcdefghij", 30.6) == "https://www.youtube.com/watch?v=-abcdefghij&t=30s"


def test_clip_label_names_of_some_ytids(tmp_path):
    from synth_features import write_split, ytid

    from audiosetflow.reporting.errors import clip_label_names

    write_split(tmp_path / "f", "train", n_pos=2, n_neg=2, seconds=0.5, shard_size=2)
    shards = sorted(tmp_path.glob("f/*.parquet"))
    got = clip_label_names(shards, [ytid("train", 0), ytid("train", 3), "notThere001"])
    assert got == {ytid("train", 0): "Music", ytid("train", 3): "Vehicle"}
    assert clip_label_names(shards, []) == {}


def test_errors_page_embeds_clips_and_links(tmp_path):
    import base64
    import json
    import re

    import soundfile as sf

    from audiosetflow.reporting.errors import write_errors_page
    from audiosetflow.shard import Layout

    layout = Layout(tmp_path / "results")
    scores = _scores()
    clip_dir = layout.audio_dir("clips", "eval")
    clip_dir.mkdir(parents=True)
    for y in scores["ytid"]:
        if y != "negHigh0002":  # one clip is missing
            sf.write(clip_dir / f"{y}.flac", np.zeros(2205, dtype=np.float32), 22050)
    scores.to_csv(tmp_path / "music_scores.tsv", sep="\t", index=False)
    metrics = {
        "label": "music", "name": "Music", "mid": "/m/04rlf",
        "dataset": {"test_source": "eval"},
        "models": {"cnn": {"val": {"threshold": 0.5}}, "dense": {"val": {"threshold": 0.65}}},
    }  # fmt: skip
    (tmp_path / "music.json").write_text(json.dumps(metrics))
    fp, fn = write_errors_page(
        scores=tmp_path / "music_scores.tsv",
        metrics=tmp_path / "music.json",
        layout=layout,
        out=tmp_path / "errors/music.html",
        n=3,
    )
    assert fp["ytid"].tolist() == ["negHigh0001", "negHigh0002", "negTie00002"]
    page = (tmp_path / "errors/music.html").read_text()
    assert page.startswith("<!doctype html>") and "the worst mistakes of the CNN (log-mel)" in page
    assert "False positives: the 3 worst of 5" in page and "False negatives: all 2" in page
    assert "<b>0.500</b>" in page
    # 3 + 2 players minus the missing clip, each a small Ogg Opus copy of the trimmed clip
    srcs = re.findall(r'<audio controls preload="none" src="data:audio/ogg;base64,([^"]+)"', page)
    assert len(srcs) == 4 and base64.b64decode(srcs[0])[:4] == b"OggS"
    assert b"OpusHead" in base64.b64decode(srcs[0])[:100]
    assert page.count("clip not found") == 1
    assert 'href="https://www.youtube.com/watch?v=negHigh0001&amp;t=30s"' in page
    assert '<td class="nowrap">30–40 s</td>' in page and "0.950" in page and "Dense (seed)" in page
    # a model without mistakes says so
    _, fn = write_errors_page(
        scores=tmp_path / "music_scores.tsv", metrics=tmp_path / "music.json", layout=layout,
        out=tmp_path / "errors/dense.html", model="dense",
    )  # fmt: skip
    assert fn["ytid"].tolist() == ["posLow00001", "posLow00002"]
    scores.assign(cnn=scores["target"].astype(float)).to_csv(
        tmp_path / "perfect.tsv", sep="\t", index=False
    )
    write_errors_page(
        scores=tmp_path / "perfect.tsv", metrics=tmp_path / "music.json", layout=layout,
        out=tmp_path / "errors/perfect.html",
    )  # fmt: skip
    page = (tmp_path / "errors/perfect.html").read_text()
    assert page.count("None at threshold 0.500.") == 2 and "<audio" not in page


# --- the landing page ----------------------------------------------------------------------------


def _metrics_json(slug, name, mid, aps):
    models = {}
    for kind, ap in aps.items():
        test = {"roc_auc": ap + 0.01, "average_precision": ap, "f1": 0.8, "accuracy": 0.75,
                "precision": 0.7, "recall": 0.9, "log_loss": 0.4, "threshold": 0.42, "n": 20,
                "n_pos": 10, "confusion": [[6, 4], [1, 9]], "f1_at_threshold": 0.8,
                "best_f1": 0.875, "best_f1_threshold": 0.3}  # fmt: skip
        fit = {"seconds": 1.0} if kind == "logreg" else {"best_epoch": 4, "epochs_run": 9,
                                                         "seconds": 2.0}  # fmt: skip
        models[kind] = {"val": dict(test), "test": test, "fit": fit}
    return {"label": slug, "name": name, "mid": mid,
            "dataset": {"n_train": 30, "n_val": 8, "n_test": 20, "test_source": "eval"},
            "settings": {"device": "cpu"}, "models": models}  # fmt: skip


def test_landing_page_tables(tmp_path):
    import json

    from audiosetflow.config import validate
    from audiosetflow.learning.datasets import write_dataset
    from audiosetflow.reporting import html as h
    from audiosetflow.reporting import overview as ov

    res = tmp_path / "results"
    labels = [{"slug": "music", "name": "Music", "mid": "/m/04rlf"},
              {"slug": "speech", "name": "Speech", "mid": "/m/09x0r"}]  # fmt: skip
    datasets = {}
    for lab, n_pos in (("music", 3), ("speech", 2)):
        parts = {
            "train": pd.DataFrame({"ytid": [f"{lab}t{i}" for i in range(8)], "split": "train",
                                   "target": [int(i < n_pos) for i in range(8)]}),
            "val": pd.DataFrame({"ytid": ["v1", "v2"], "split": "train", "target": [1, 0]}),
            "test": pd.DataFrame({"ytid": ["e1", "e2", "e3"], "split": "eval",
                                  "target": [1, 0, 0]}),
        }  # fmt: skip
        write_dataset(res / f"datasets/{lab}", parts)
        datasets[lab] = {p: res / f"datasets/{lab}/{p}.tsv" for p in parts}
    counts = ov.label_counts(labels, datasets)
    assert counts.loc[0, ["train", "train_pos", "val", "val_pos", "test", "test_pos"]].tolist() == [
        8, 3, 2, 1, 3, 1
    ]  # fmt: skip
    assert counts["test_source"].tolist() == ["eval", "eval"]

    metrics = [
        _metrics_json("music", "Music", "/m/04rlf", {"cnn": 0.95, "dense": 0.6, "logreg": 0.7}),
        _metrics_json("speech", "Speech", "/m/09x0r", {"cnn": 0.5, "dense": 0.9, "logreg": 0.7}),
    ]
    mfiles = []
    for m in metrics:
        mfiles.append(res / f"metrics/{m['label']}.json")
        mfiles[-1].parent.mkdir(parents=True, exist_ok=True)
        mfiles[-1].write_text(json.dumps(m))
    summary = ev.summarize_metrics(mfiles, res / "metrics/summary.tsv")
    table = ov.metrics_table(summary, metrics)
    assert table.loc[table["best"], ["label", "model"]].values.tolist() == [
        ["Music", "cnn"], ["Speech", "dense"]
    ]  # fmt: skip
    assert table["epochs"].tolist()[:3] == ["4 / 9", "4 / 9", ""]

    avail = pd.DataFrame(
        [("eval", "selected", 5, 5, 0, ""), ("eval", "download", 5, 4, 1, "permanent: x x1"),
         ("train", "selected", 10, 10, 0, ""), ("train", "download", 10, 10, 0, "")],
        columns=["split", "stage", "entered", "done", "failed", "reasons"],
    )  # fmt: skip
    pivot = ov.availability_table(avail)
    assert list(pivot.columns) == [
        "stage",
        "eval done",
        "eval failed",
        "train done",
        "train failed",
    ]
    assert pivot.values.tolist() == [["selected", 5, 0, 10, 0], ["download", 4, 1, 10, 0]]
    (res / "reports").mkdir(parents=True)
    avail.to_csv(res / "reports/availability.tsv", sep="\t", index=False)
    pd.DataFrame(
        [("eval", "download", "permanent", "HTTP 404: {ytid} gone", 1)],
        columns=["split", "stage", "status", "reason", "count"],
    ).to_csv(res / "reports/failures.tsv", sep="\t", index=False)
    bench = pd.DataFrame(
        [("train", 2, 60.0, 90.0, 40.0, 800.0, 0.75),
         ("aggregate", 1, 20.0, 5.0, 20.0, 120.0, 0.25)],
        columns=["rule", "jobs", "wall_s", "cpu_s", "max_wall_s", "max_rss_mb", "share_wall"],
    )  # fmt: skip
    bench.to_csv(res / "reports/benchmarks.tsv", sep="\t", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(res / "funnel.png")
    plt.close(fig)

    config = {"labels": ["Music", "Speech", "Bird"], "demo": {"enabled": True},
              "training": {"epochs": 7}}  # fmt: skip
    validate(config)
    cfg = ov.config_table(config, metrics).set_index(["section", "key"])["value"]
    assert cfg[("training", "epochs")] == "7" and cfg[("features", "n_mels")] == "128"
    assert cfg[("training", "device used")] == "cpu" and ("features", "threads") not in cfg
    src = ov.sources_table(config, [("Bird", 0.5)]).set_index("what")["value"]
    assert src["corpus"].startswith("offline demo") and src["eval segments"].endswith(
        "results/demo/metadata/eval_segments.csv"
    )
    assert src["dropped label"] == "Bird: rated-true ratio 0.50 < 0.8"
    soft = ov.software_versions(("pandas", "no-such-package-xyz")).set_index("software")
    assert soft.loc["pandas", "version"] == pd.__version__
    assert soft.loc["no-such-package-xyz", "version"] == "not installed"
    assert {"python", "ffmpeg"} <= set(soft.index)
    # the version of the ffmpeg in use, as it spells it: Debian's "5.1.6-0+deb12u1",
    # imageio-ffmpeg's "n9.0.2-17-g2a571b6068-20260930", a git build's "N-118000-g..."
    from audiosetflow.tools import ffmpeg_exe

    first = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    assert soft.loc["ffmpeg", "version"] == first[2]
    assert re.match(r"(n?\d+\.\d+|N-\d+)", soft.loc["ffmpeg", "version"]), first

    pd.DataFrame(
        [("train", "tar:bal_train00.tar", 7, 7), ("train", "youtube", 3, 2)],
        columns=["split", "source", "clips", "features"],
    ).to_csv(res / "reports/sources.tsv", sep="\t", index=False)
    ml = {"mAP": 0.8123, "mean_auc": 0.9, "d_prime": 1.81, "n_labels": 2, "n_test": 40,
          "n_train": 100, "test_source": "eval", "best_epoch": 3, "sampler": "balanced",
          "mixup": 0.0, "per_label": [
              {"mid": "/m/09x0r", "name": "Speech", "ap": 0.7, "auc": 0.85, "n_pos": 12,
               "threshold": 0.4, "f1_at_threshold": 0.38, "best_f1": 0.8},
              {"mid": "/m/04rlf", "name": "Music", "ap": 0.9, "auc": 0.95, "n_pos": 15,
               "threshold": 0.5, "f1_at_threshold": 0.85, "best_f1": 0.86}]}  # fmt: skip
    (res / "metrics/multilabel.json").write_text(json.dumps(ml))
    pd.DataFrame({"label": ["Music"], "multilabel": [0.9], "cnn": [0.95]}).to_csv(
        res / "metrics/multilabel_compare.tsv", sep="\t", index=False
    )
    html = ov.write_overview(
        config=config,
        labels=labels,
        datasets=datasets,
        summary=res / "metrics/summary.tsv",
        metrics=mfiles,
        availability=res / "reports/availability.tsv",
        failures=res / "reports/failures.tsv",
        funnel=res / "funnel.png",
        benchmarks=res / "reports/benchmarks.tsv",
        benchmarks_plot=res / "missing.png",  # left out when missing
        out=res / "reports/overview.html",
        dropped=[("Bird", 0.5)],
        clip_sources=res / "reports/sources.tsv",
        multilabel=[res / "metrics/multilabel.json", res / "metrics/multilabel_compare.tsv",
                    res / "funnel.png"],
    )  # fmt: skip
    assert (res / "reports/overview.html").read_text() == html
    el = Elements(html, root_id="asf-overview")
    rows = el.tables["asf-metrics"]
    assert rows[0][:6] == ["label", "model", "ROC-AUC", "AP", "F1 at threshold", "best F1"]
    assert rows[1][4:6] == ["0.800", "0.875"]  # F1 at the stored threshold, best F1 on test
    assert rows[1][rows[0].index("best F1's threshold")] == "0.300"
    assert "threshold chosen on validation does not transfer" in html
    assert rows[1][:4] == ["Music", "CNN (log-mel)", "0.960", "0.950"] and len(rows) == 7
    assert "test clips (pos)" in rows[0] and rows[1][rows[0].index("test clips (pos)")] == "20 (10)"
    assert html.count('<tr class="best">') == 2
    assert el.tables["asf-availability"][2] == ["download", "4", "1", "10", "0"]
    assert el.tables["asf-failures"][1] == [
        "eval",
        "download",
        "permanent",
        "HTTP 404: {ytid} gone",
        "1",
    ]
    assert el.tables["asf-labels"][1] == ["Music", "/m/04rlf", "8 (3)", "2 (1)", "3 (1)", "eval"]
    assert el.tables["asf-benchmarks"][1][:4] == ["train", "2", "60.0", "90.0"]
    assert el.tables["asf-benchmarks"][1][-1] == "75.0"
    assert any("training" in r[0] and "epochs\xa07" in r[1] for r in el.tables["asf-config"])
    assert el.tables["asf-sources"][1] == ["train", "tar:bal_train00.tar", "7", "7"]
    ml_rows = el.tables["asf-multilabel"]
    assert ml_rows[0][:7] == ["label", "positives", "AP", "ROC-AUC", "threshold",
                              "F1 at threshold", "best F1"]  # fmt: skip
    assert ml_rows[1][:3] == ["Music", "15", "0.900"] and ml_rows[2][5:7] == ["0.380", "0.800"]
    assert "mAP 0.812" in html and el.tables["asf-multilabel-compare"][1][0] == "Music"
    assert [i["alt"] for i in el.images] == [
        "AP against training positives", "multi-label AP per label", "availability funnel"
    ]  # fmt: skip
    assert all(i["src"].startswith("data:image/png;base64,") for i in el.images)
    # 2 labels x 3 models; the multi-label model's labels lack train positives in this file
    points = ov.ap_positives(table, counts, ml)
    assert len(points) == 6 and "multilabel" not in set(points["model"])
    assert points.loc[0, ["label", "model", "train_pos", "ap"]].tolist() == [
        "Music",
        "cnn",
        3,
        0.95,
    ]
    # the label tables sort on a header click: every header cell has the handler
    assert html.count(f'onclick="{h.esc(h.SORT_SCRIPT)}"') == sum(
        len(el.tables[t][0]) for t in ("asf-metrics", "asf-labels", "asf-multilabel",
                                       "asf-multilabel-compare")
    )  # fmt: skip
    assert "Highest average precision per label: Music: CNN (log-mel), AP 0.950" in html
    assert "15 YTIDs selected, 14 downloaded" in html


# --- the landing page at 527 labels --------------------------------------------------------------


def _leading_number(text: str):
    """What the sort script compares a cell by: its leading number (``parseFloat`` of the
    text without thousands separators) before any text, else the lower-cased text."""
    import re

    m = re.match(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text.replace(",", ""))
    return (0, float(m.group(0)), "") if m else (1, 0.0, text.strip().lower())


@pytest.mark.slow
def test_landing_page_with_527_labels_sorts_in_chromium(tmp_path, real_metadata):
    """All AudioSet classes (real names), synthetic metrics: the page renders, its label
    tables sort by a clicked column in Chromium, the AP-against-positives plot has one point
    per label and model, and the multi-label AP bars keep to the best and worst 40."""
    import json

    import browser
    from PIL import Image

    from audiosetflow import metadata as md
    from audiosetflow.config import validate
    from audiosetflow.learning.datasets import write_dataset
    from audiosetflow.learning.multilabel import plot_label_ap
    from audiosetflow.reporting import overview as ov

    reason = browser.skip_reason()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    classes = md.read_class_labels(real_metadata / "class_labels_indices.csv")
    assert len(classes) == 527
    rng = np.random.default_rng(5)
    res = tmp_path / "results"
    labels, datasets, mfiles, per_label = [], {}, [], []
    for i, (mid, name) in enumerate(zip(classes["mid"], classes["display_name"], strict=True)):
        slug = f"l{i:03d}"
        labels.append({"slug": slug, "name": name, "mid": mid})
        n_pos = int(rng.integers(3, 60))
        parts = {
            p: pd.DataFrame({"ytid": [f"{slug}{p[0]}{j:07d}" for j in range(2 * n)],
                             "split": "eval" if p == "test" else "train",
                             "target": [int(j < n) for j in range(2 * n)]})
            for p, n in (("train", n_pos), ("val", 2), ("test", 3))
        }  # fmt: skip
        write_dataset(res / f"datasets/{slug}", parts)
        datasets[slug] = {p: res / f"datasets/{slug}/{p}.tsv" for p in parts}
        ap = float(np.clip(0.2 + 0.15 * np.log(n_pos) + rng.normal(0, 0.1), 0, 1))
        aps = {"cnn": ap, "dense": ap * 0.8, "logreg": ap * 0.7}
        m = _metrics_json(slug, name, mid, aps)
        mfiles.append(res / f"metrics/{slug}.json")
        mfiles[-1].parent.mkdir(parents=True, exist_ok=True)
        mfiles[-1].write_text(json.dumps(m))
        per_label.append({"mid": mid, "name": name, "ap": ap * 0.9, "auc": 0.8, "n_pos": 3,
                          "n_pos_train": 2 * n_pos, "threshold": 0.5,
                          "f1_at_threshold": 0.5, "best_f1": 0.6})  # fmt: skip
    ev.summarize_metrics(mfiles, res / "metrics/summary.tsv")
    ml = {"mAP": 0.5, "mean_auc": 0.8, "d_prime": 1.2, "n_labels": 527, "n_test": 2000,
          "n_train": 20000, "test_source": "eval", "best_epoch": 3, "sampler": "balanced",
          "mixup": 0.0, "per_label": per_label}  # fmt: skip
    (res / "metrics/multilabel.json").write_text(json.dumps(ml))
    plot_label_ap(per_label, res / "plots/label_ap.png")
    pd.DataFrame(columns=["split", "stage", "entered", "done", "failed", "reasons"]).to_csv(
        res / "availability.tsv", sep="\t", index=False
    )
    config = validate({"labels": list(classes["mid"]), "demo": {"enabled": True}})
    html = ov.write_overview(
        config=config,
        labels=labels, datasets=datasets, summary=res / "metrics/summary.tsv", metrics=mfiles,
        availability=res / "availability.tsv", failures=None, funnel=None, benchmarks=None,
        benchmarks_plot=None, out=res / "reports/overview.html",
        multilabel=[res / "metrics/multilabel.json", res / "missing.tsv",
                    res / "plots/label_ap.png"],
    )  # fmt: skip
    el = Elements(html, root_id="asf-overview")
    assert len(el.tables["asf-labels"]) == 528 and len(el.tables["asf-multilabel"]) == 528
    assert len(el.tables["asf-metrics"]) == 1 + 3 * 527
    plot = [i for i in el.images if i["alt"] == "AP against training positives"]
    assert len(plot) == 1 and plot[0]["src"].startswith("data:image/png;base64,")
    points = ov.ap_positives(
        ov.metrics_table(pd.read_csv(res / "metrics/summary.tsv", sep="\t"), []),
        ov.label_counts(labels, datasets),
        ml,
    )
    assert len(points) == 4 * 527 and points.groupby("model").size().to_dict() == {
        "cnn": 527, "dense": 527, "logreg": 527, "multilabel": 527
    }  # fmt: skip
    with Image.open(res / "plots/label_ap.png") as im:  # 80 bars, not 527
        assert im.size[1] < 0.24 * 110 * 100

    # in Chromium: click "train clips (pos)" twice (descending) and "label" of the multi-label
    # table once (ascending)
    page = tmp_path / "page.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'></head><body>" + html + "<script>"
        "function th(t, text){return [].slice.call(document.querySelectorAll(t + ' th'))"
        ".filter(function(h){return h.textContent.trim() === text})[0]}"
        "var a = th('#asf-labels', 'train clips (pos)'); a.click(); a.click();"
        "th('#asf-multilabel', 'label').click();</script></body></html>",
        encoding="utf-8",
    )
    dom = browser.Elements(browser.dump_dom(browser.find() or browser.install(), page))
    rows = dom.tables["asf-labels"]
    col = rows[0].index("train clips (pos)")
    train = [int(r[col].split()[0].replace(",", "")) for r in rows[1:]]
    assert len(train) == 527 and train == sorted(train, reverse=True)
    assert train != [int(r[col].split()[0]) for r in el.tables["asf-labels"][1:]]  # it moved
    shown = [r[0] for r in dom.tables["asf-multilabel"][1:]]
    assert sorted(shown) == sorted(classes["display_name"])
    assert shown == sorted(shown, key=_leading_number)


def test_plots_draw_names_as_text(tmp_path):
    """A name from metadata with ``$`` (matplotlib's TeX) is drawn as it is, not parsed: a
    bad formula would fail the figure."""
    from audiosetflow.learning.multilabel import plot_label_ap
    from audiosetflow.reporting.classes import plot_class_features

    bad = r"Dog $\frac$ </script>"
    plot_label_ap([{"name": bad, "ap": 0.5, "n_pos": 3}], tmp_path / "ap.png")
    frame = pd.DataFrame({"target": [1, 0, 1, 0], "zcr_mean": [0.1, 0.2, 0.3, 0.4]})
    assert plot_class_features(frame, tmp_path / "cf.png", label=bad) == ["zcr_mean"]
    assert (tmp_path / "ap.png").read_bytes()[:8] == PNG == (tmp_path / "cf.png").read_bytes()[:8]
