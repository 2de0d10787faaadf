"""The report's landing page: what the run was (labels, sources, the config that matters,
software versions) and what it found (metrics, clips per split and stage, failures, dataset
sizes, where the time went), as one HTML fragment.

The fragment is written to ``results/reports/overview.html``; ``workflow/report/workflow.rst``
(the workflow's global ``report:``) includes it with ``.. raw:: html`` so that the tables are
on the report's first page, and it is also a report item of its own (category ``0. Overview``).
Every image is embedded, so the fragment needs no other file.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text, read_tsv
from ..learning.evaluation import MODEL_TITLES
from . import html as h

__all__ = [
    "SOFTWARE",
    "label_counts",
    "metrics_table",
    "availability_table",
    "config_table",
    "sources_table",
    "software_versions",
    "overview_html",
    "ap_positives",
    "plot_ap_positives",
    "write_overview",
]

log = logging.getLogger("audiosetflow.overview")

#: Python distributions whose versions the landing page lists (besides Python and ffmpeg).
SOFTWARE = (
    "audiosetflow",
    "snakemake",
    "torch",
    "librosa",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "soundfile",
    "yt-dlp",
    "matplotlib",
)

#: Short descriptions of the models, for the landing page.
MODEL_NOTES = {
    "cnn": "PyTorch CNN on the log-mel spectrogram (plus training.extra_channels), early "
    "stopping on the validation loss",
    "dense": "the seed project's dense network on five summary features (means of MFCC, "
    "centroid, ZCR, chroma, roll-off): an ensemble of five (64, 32) networks on the "
    "standardised inputs, weight decay, early stopping on the validation AP",
    "logreg": "scikit-learn logistic regression on the same summary features, standardised "
    "(StandardScaler + LogisticRegression)",
}


def label_counts(
    labels: Sequence[Mapping[str, str]], datasets: Mapping[str, Mapping[str, str | Path]]
) -> pd.DataFrame:
    """Clips and positives per label and dataset part.

    Parameters
    ----------
    labels : sequence of mapping
        ``{"slug", "name", "mid"}`` per label, in order.
    datasets : mapping of str to mapping
        Label slug to ``{part: path}`` of its ``train/val/test.tsv``.

    Returns
    -------
    DataFrame
        ``label, mid`` then ``{part}`` (clips) and ``{part}_pos`` (positives) for train, val
        and test, and ``test_source`` (``eval`` or ``train holdout``).
    """
    from ..learning.datasets import read_dataset

    rows = []
    for lab in labels:
        parts = read_dataset(dict(datasets[lab["slug"]]))
        row = {"label": lab.get("name") or lab["slug"], "mid": lab.get("mid", "")}
        for p in ("train", "val", "test"):
            row[p] = len(parts[p])
            row[f"{p}_pos"] = int(parts[p]["target"].sum())
        row["test_source"] = parts["test"].attrs.get("test_source", "")
        rows.append(row)
    cols = ["label", "mid", "train", "train_pos", "val", "val_pos", "test", "test_pos"]
    return pd.DataFrame(rows, columns=[*cols, "test_source"])


def metrics_table(summary: pd.DataFrame, metrics: Sequence[Mapping] = ()) -> pd.DataFrame:
    """The test metrics of every label and model, with the epochs the networks ran.

    Parameters
    ----------
    summary : DataFrame
        ``results/metrics/summary.tsv`` (:data:`audiosetflow.learning.evaluation.SUMMARY_COLUMNS`).
    metrics : sequence of mapping
        The per-label metrics JSONs (for ``fit``: best epoch and epochs run).

    Returns
    -------
    DataFrame
        ``label, model, roc_auc, average_precision, f1, best_f1, precision, recall,
        accuracy, threshold, best_f1_threshold, n_test, n_test_pos, epochs`` (``f1``: at the
        stored threshold chosen on validation, ``best_f1``: the highest test F1 of any
        threshold, at ``best_f1_threshold``; NaN in a summary written before they existed;
        ``epochs``: ``"best / run"`` or empty), one row per label and model in the summary's
        order, and ``best``: True for the model with the highest average precision of its
        label.
    """
    fits = {}
    for m in metrics:
        for kind, res in m.get("models", {}).items():
            fit = res.get("fit", {})
            if fit.get("best_epoch") is not None:
                fits[(m["label"], kind)] = f"{fit['best_epoch']} / {fit.get('epochs_run')}"
    cols = [
        "roc_auc",
        "average_precision",
        "f1",
        "best_f1",
        "precision",
        "recall",
        "accuracy",
        "threshold",
        "best_f1_threshold",
        "n_test",
        "n_test_pos",
        "ap_balanced",
        "ap_seeds_std",
        "test_prevalence",
    ]
    df = summary.copy()
    if "f1_at_threshold" in df.columns:
        df["f1"] = df["f1_at_threshold"].where(df["f1_at_threshold"].notna(), df["f1"])
    out = pd.DataFrame(
        {
            "label": df["name"].where(df["name"].astype(str) != "", df["label"]),
            "model": df["model"],
            **{c: pd.to_numeric(df.get(c, np.nan), errors="coerce") for c in cols},
        }
    )
    out["epochs"] = [
        fits.get((lab, k), "") for lab, k in zip(df["label"], df["model"], strict=True)
    ]
    ap = out["average_precision"].fillna(-1.0)
    out["best"] = ap.eq(ap.groupby(out["label"]).transform("max")) & (ap >= 0)
    return out.reset_index(drop=True)


def availability_table(availability: pd.DataFrame) -> pd.DataFrame:
    """Clips per stage (rows) and split: done and failed (``availability.tsv`` pivoted).

    Returns
    -------
    DataFrame
        ``stage`` then ``{split} done`` and ``{split} failed`` per split, stages in the
        workflow's order.
    """
    if availability.empty:
        return pd.DataFrame(columns=["stage"])
    stages = list(dict.fromkeys(availability["stage"]))
    out = pd.DataFrame({"stage": stages})
    for split in dict.fromkeys(availability["split"]):
        part = availability[availability["split"] == split].set_index("stage")
        for col in ("done", "failed"):
            out[f"{split} {col}"] = [
                int(part.loc[s, col]) if s in part.index else 0 for s in stages
            ]
    return out


def sources_table(config: Mapping, dropped: Sequence[Sequence] = ()) -> pd.DataFrame:
    """Where the run's segments and media came from: ``what, value`` rows."""
    from ..plan import metadata_paths

    paths = metadata_paths(dict(config))
    demo = bool(config.get("demo", {}).get("enabled"))
    rows = [
        (
            "corpus",
            "offline demo: generated clips in AudioSet format "
            f"({config['demo'].get('dir', 'results/demo')}), fetched by yt-dlp from file:// URLs"
            if demo
            else "Google AudioSet",
        ),
        ("train segments", str(paths.train_segments)),
        (
            "eval segments",
            str(paths.eval_segments)
            if paths.eval_segments
            else "none: the test set is a held-out part of train",
        ),
        ("class labels / ontology", f"{paths.class_labels}, {paths.ontology}"),
    ]
    if not demo:
        rows.append(("media", config.get("download", {}).get("url_template", "")))
    q = config.get("label_quality", {}).get("min_ratio")
    if paths.qa_counts:
        rows.append(("label quality", f"{paths.qa_counts}, rated-true ratio >= {q}"))
    for name, ratio in dropped:
        rows.append(("dropped label", f"{name}: rated-true ratio {float(ratio):.2f} < {q}"))
    return pd.DataFrame(rows, columns=["what", "value"])


def _fmt_value(v) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    if v is None or v == "":
        return "none"
    return str(v)


def config_table(config: Mapping, metrics: Sequence[Mapping] = ()) -> pd.DataFrame:
    """The config that shapes the results: ``section, key, value`` rows (selection, audio,
    features, training; the device the CNNs were trained on from the metrics)."""
    sel, audio = config.get("selection", {}), config.get("audio", {})
    feats, train = config.get("features", {}), config.get("training", {})
    rows = [("selection", "labels", _fmt_value(config.get("labels")))]
    for k in ("max_positives", "negatives_per_positive", "seed", "train_eval_overlap"):
        if k in sel:
            rows.append(("selection", k, _fmt_value(sel[k])))
    rows.append(("selection", "shard_size", _fmt_value(config.get("shard_size"))))
    rows.append(("selection", "max_shards", _fmt_value(config.get("max_shards"))))
    for k in ("sample_rate", "clip_seconds"):
        if k in audio:
            rows.append(("audio", k, _fmt_value(audio[k])))
    for k, v in feats.items():
        if k not in ("threads", "example_clips", "n_examples"):
            rows.append(("features", k, _fmt_value(v)))
    for k, v in train.items():
        if k not in ("gpus",):
            rows.append(("training", k, _fmt_value(v)))
    devices = sorted({m.get("settings", {}).get("device", "") for m in metrics} - {""})
    if devices:
        rows.append(("training", "device used", ", ".join(devices)))
    for kind, note in MODEL_NOTES.items():
        rows.append(("models", kind, note))
    return pd.DataFrame(rows, columns=["section", "key", "value"])


def _ffmpeg_version() -> str:
    try:
        from ..tools import ffmpeg_exe

        out = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "not found"
    first = out.splitlines()[0] if out else ""
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[0] == "ffmpeg" else (first or "unknown")


def software_versions(packages: Sequence[str] = SOFTWARE) -> pd.DataFrame:
    """``software, version`` of Python, the packages and ffmpeg (``not installed`` when a
    package is missing)."""
    rows = [("python", platform.python_version())]
    for name in packages:
        try:
            rows.append((name, importlib_metadata.version(name)))
        except importlib_metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    rows.append(("ffmpeg", _ffmpeg_version()))
    return pd.DataFrame(rows, columns=["software", "version"])


#: A stored threshold outside [FLAG, 1 - FLAG] is flagged in the metrics table.
THRESHOLD_FLAG = 0.05


def _metrics_html(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["n_test", "n_test_pos", "best", "test_prevalence"])
    for optional in ("ap_balanced", "ap_seeds_std"):  # shown where some model has it
        if optional in shown.columns and shown[optional].isna().all():
            shown = shown.drop(columns=[optional])
    shown["model"] = table["model"].map(lambda m: MODEL_TITLES.get(m, m))
    shown["test clips (pos)"] = [
        f"{int(n)} ({int(p)})" if pd.notna(n) and pd.notna(p) else "n/a"
        for n, p in zip(table["n_test"], table["n_test_pos"], strict=True)
    ]
    shown["threshold note"] = [
        "near 0 or 1: decisions unreliable"
        if pd.notna(t) and not THRESHOLD_FLAG <= t <= 1 - THRESHOLD_FLAG
        else ""
        for t in table["threshold"]
    ]
    scores = ["roc_auc", "average_precision", "f1", "best_f1", "precision", "recall", "accuracy"]
    return h.table(
        shown,
        headers={
            "roc_auc": "ROC-AUC",
            "average_precision": "AP",
            "ap_balanced": "AP, 1:1 subset",
            "ap_seeds_std": "AP std over seeds",
            "f1": "F1 at threshold",
            "best_f1": "best F1",
            "best_f1_threshold": "best F1's threshold",
            "epochs": "epoch kept / run",
        },
        numeric=[
            *scores,
            "ap_balanced",
            "ap_seeds_std",
            "threshold",
            "best_f1_threshold",
            "test clips (pos)",
            "epochs",
        ],  # fmt: skip
        row_class=lambda r: "best" if table.loc[r.name, "best"] else "",
        table_id="asf-metrics",
        sortable=True,
    )


def _counts_html(counts: pd.DataFrame) -> str:
    shown = pd.DataFrame({"label": counts["label"], "MID": counts["mid"]})
    for p in ("train", "val", "test"):
        shown[f"{p} clips (pos)"] = [
            f"{int(n):,} ({int(k):,})" for n, k in zip(counts[p], counts[f"{p}_pos"], strict=True)
        ]
    shown["test set"] = counts["test_source"]
    return h.table(
        shown,
        formats={"MID": lambda v: f"<code>{h.esc(v)}</code>"},
        raw=["MID"],
        numeric=[c for c in shown.columns if c.endswith("(pos)")],
        table_id="asf-labels",
        sortable=True,
    )


def _failures_html(failures: pd.DataFrame, limit: int = 12) -> str:
    if failures.empty:
        return "<p>No YTID failed.</p>"
    shown = failures.head(limit)
    more = len(failures) - len(shown)
    note = (
        f'<p class="note">{more} more rows in <code>results/reports/failures.tsv</code>.</p>'
        if more > 0
        else ""
    )
    return h.table(shown, table_id="asf-failures") + note


def _benchmarks_html(bench: pd.DataFrame) -> str:
    if bench.empty:
        return "<p>No benchmark files.</p>"
    shown = bench.assign(share_wall=bench["share_wall"] * 100)
    return h.table(
        shown,
        headers={
            "jobs": "jobs",
            "wall_s": "wall time (s)",
            "cpu_s": "CPU time (s)",
            "max_wall_s": "longest job (s)",
            "max_rss_mb": "peak memory of a job (MB)",
            "share_wall": "share of wall time (%)",
        },
        formats={
            "wall_s": lambda v: h.fmt_num(v, 1),
            "cpu_s": lambda v: h.fmt_num(v, 1),
            "max_wall_s": lambda v: h.fmt_num(v, 1),
            "max_rss_mb": lambda v: h.fmt_num(v, 0),
            "share_wall": lambda v: h.fmt_num(v, 1),
        },
        table_id="asf-benchmarks",
    )


def _kv_html(df: pd.DataFrame, key: str, value: str, table_id: str) -> str:
    return h.table(df[[key, value]], table_id=table_id, header=False)


def _config_html(config: pd.DataFrame) -> str:
    """One row per section: ``key value`` pairs, the models one per line."""
    rows = []
    for section, part in config.groupby("section", sort=False):
        sep = "<br>" if section == "models" else " · "
        items = sep.join(
            f"<code>{h.esc(k)}</code>&nbsp;{h.esc(v)}"
            for k, v in zip(part["key"], part["value"], strict=True)
        )
        rows.append((section, items))
    df = pd.DataFrame(rows, columns=["section", "settings"])
    return h.table(df, raw=["settings"], table_id="asf-config", header=False)


#: Styles that widen the report's description column and stop it being vertically centred
#: (a tall landing page would otherwise lose its top); they match only the landing page.
LANDING_STYLE = """
.prose:has(#asf-overview) { max-width: 74rem !important; }
div.grow.h-screen.overflow-auto:has(#asf-overview) { align-items: flex-start !important; }
div.flex:has(> div > .prose #asf-overview) { flex-wrap: wrap; }
"""


def overview_html(
    *,
    labels: Sequence[Mapping[str, str]],
    counts: pd.DataFrame,
    metrics: pd.DataFrame,
    availability: pd.DataFrame,
    failures: pd.DataFrame,
    sources: pd.DataFrame,
    config: pd.DataFrame,
    software: pd.DataFrame,
    benchmarks: pd.DataFrame,
    funnel: str | Path | None = None,
    benchmarks_plot: str | Path | None = None,
    when: str | None = None,
    clip_sources: pd.DataFrame | None = None,
    multilabel: Mapping | None = None,
    multilabel_compare: pd.DataFrame | None = None,
    multilabel_plot: str | Path | None = None,
    ap_positives_plot: bytes | None = None,
) -> str:
    """The landing page's HTML fragment (one ``<div id="asf-overview" class="asf">``).

    Sections: a one-paragraph description of the run; test metrics (:func:`metrics_table`);
    availability: the funnel figure, clips per stage and split (:func:`availability_table`) and
    failures by stage and reason, clips by source (``clip_sources``: ``sources.tsv``, see
    :func:`audiosetflow.reporting.aggregate.by_source`); the datasets (:func:`label_counts`);
    where the time goes (:mod:`audiosetflow.reporting.benchmarks`); sources, configuration and
    software versions; with ``multilabel`` (``results/metrics/multilabel.json``), the
    multi-label model: mAP, mean ROC-AUC and d' on its test clips, the per-label AP bars
    (``multilabel_plot``), per label AP, AUC, positives and F1 at the stored threshold beside
    the best F1, and its AP beside the binary models' on the same clips
    (``multilabel_compare``); ``ap_positives_plot`` (a PNG: :func:`plot_ap_positives`) after
    the metrics. Every table of labels sorts by a column when its header is clicked.
    """
    names = ", ".join(lab.get("name") or lab["slug"] for lab in labels) or "no label"
    selected = finished = 0
    if len(availability):  # the first stage is "selected", the last the features
        stages = availability["stage"]
        selected = int(availability.loc[stages == stages.iloc[0], "entered"].sum())
        finished = int(availability.loc[stages == stages.iloc[-1], "done"].sum())
    when = when or datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    best = metrics[metrics["best"]] if len(metrics) else metrics
    best_txt = "; ".join(
        f"{r.label}: {MODEL_TITLES.get(r.model, r.model)}, AP {h.fmt_num(r.average_precision)}"
        for r in best.itertuples(index=False)
    )
    out = [
        f"<style>{h.STYLE}{LANDING_STYLE}</style>",
        '<div id="asf-overview" class="asf not-prose">',
        f"<h1>audiosetflow: {h.esc(names)}</h1>",
        f"<p>One classifier per label from Google AudioSet segments: {selected:,} YTIDs "
        f"selected, {finished:,} downloaded, trimmed and turned into features; three models "
        "per label (CNN on log-mel, the seed's dense network and a logistic regression on "
        "summary features), trained on the same class-balanced split and tested on every "
        "clip of the eval split at its natural prevalence (as the field reports AudioSet "
        "results). "
        f"Highest average precision per label: {h.esc(best_txt) or 'n/a'}.</p>",
        f'<p class="note">Overview written {h.esc(when)}. Per-label figures, the worst false '
        "positives and negatives with audio, and the feature examples are in the categories "
        "of the menu on the left.</p>",
        "<h2>Test metrics</h2>",
        '<p class="note">Every label and model on its test set: every clip of the eval split '
        "with features, positives at their natural rate (AP, ROC-AUC and the F1s are of "
        "these clips; <em>AP, 1:1 subset</em> is the AP of its class-balanced subset, shown "
        "for comparison only, as it flatters every model). F1, precision, recall and "
        "accuracy at the stored threshold (chosen on validation, aimed at the label's "
        "prevalence: <code>training.threshold</code>; the one <code>audiosetflow "
        "predict</code> uses); best F1: the highest F1 any threshold reaches on the test "
        "set. A gap between F1 at threshold and best F1 means the threshold chosen on "
        "validation does not transfer to the test clips. With <code>training.seeds</code> "
        "above 1, <em>AP std over seeds</em> is the standard deviation of the AP over the "
        "seeds. Shaded: the highest AP of the label.</p>",
        _metrics_html(metrics),
    ]
    if ap_positives_plot:
        out += [
            "<h3>Average precision against training positives</h3>",
            '<p class="note">One point per label and model: its test AP against the number '
            "of positive clips it was trained on (log scale).</p>",
            h.img(ap_positives_plot, "AP against training positives", width="42rem"),
        ]
    if multilabel:
        out += _multilabel_html(multilabel, multilabel_compare, multilabel_plot)
    out += [
        "<h2>Availability: clips per split and stage</h2>",
    ]
    if funnel is not None and Path(funnel).exists():
        out.append(h.img(funnel, "availability funnel", width="100%"))
    out += [
        '<div class="cols"><div>',
        "<h3>Clips done and failed per stage</h3>",
        h.table(availability_table(availability), table_id="asf-availability"),
        "</div><div>",
        "<h3>Failures by stage and reason</h3>",
        _failures_html(failures),
        "</div></div>",
    ]
    if clip_sources is not None and len(clip_sources):
        out += [
            "<h3>Clips by source</h3>",
            '<p class="note">Where each selected clip came from (config <code>sources</code>):'
            " a local mirror, YouTube, or none (not got); features: those of them that made it"
            " through every stage.</p>",
            h.table(clip_sources, table_id="asf-sources"),
        ]
    out += [
        "<h2>Datasets per label</h2>",
        '<p class="note">Clips of each part (positives in brackets); train and val are drawn '
        "from the train split, balanced; the test set is every clip of the eval split with "
        "features (natural prevalence; its 1:1 subset is marked in the dataset's "
        "<code>balanced</code> column) or a held-out part of train.</p>",
        _counts_html(counts),
        "<h2>Where the time goes</h2>",
        '<p class="note">Per rule, from its <code>benchmark:</code> files '
        "(<code>results/benchmarks/</code>): wall and CPU time summed over its jobs (shards, "
        "labels), the longest job and the largest peak memory (RSS) of one job. Jobs run in "
        "parallel, so the wall times add up to more than the run took.</p>",
        _benchmarks_html(benchmarks),
    ]
    if benchmarks_plot is not None and Path(benchmarks_plot).exists():
        out.append(h.img(benchmarks_plot, "benchmarks per rule", width="100%"))
    out += [
        "<h2>Sources</h2>",
        _kv_html(sources, "what", "value", "asf-sources"),
        "<h2>Configuration</h2>",
        _config_html(config),
        "<h2>Software</h2>",
        '<p id="asf-software">'
        + " · ".join(
            f"{h.esc(n)}&nbsp;<code>{h.esc(v)}</code>"
            for n, v in zip(software["software"], software["version"], strict=True)
        )
        + "</p>",
        "</div>",
    ]
    return "\n".join(out) + "\n"


def _multilabel_inputs(files: Sequence[str | Path]) -> dict:
    if not files:
        return {}
    metrics, compare, plot = (Path(f) for f in files)
    return {
        "multilabel": json.loads(metrics.read_text(encoding="utf-8")),
        "multilabel_compare": _read_optional(compare),
        "multilabel_plot": plot,
    }


def _multilabel_html(
    ml: Mapping, compare: pd.DataFrame | None, plot: str | Path | None
) -> list[str]:
    """The landing page's section on the multi-label model."""
    per = pd.DataFrame(ml.get("per_label", []))
    cols = {"name": "label", "n_pos_train": "train positives", "n_pos": "positives",
            "ap": "AP", "auc": "ROC-AUC",
            "threshold": "threshold", "f1_at_threshold": "F1 at threshold",
            "best_f1": "best F1"}  # fmt: skip
    if "gained_by_ontology" in per:
        cols["gained_by_ontology"] = "train positives gained by the ontology"
    table = per[[c for c in cols if c in per]].rename(columns=cols)
    if "AP" in table:
        table = table.sort_values("AP", ascending=False, na_position="last")
    for c in ("AP", "ROC-AUC", "threshold", "F1 at threshold", "best F1"):
        if c in table:
            table[c] = [h.fmt_num(v) for v in table[c]]
    src = "eval split" if ml.get("test_source") == "eval" else "held-out test part"
    out = [
        "<h2>Multi-label model</h2>",
        f"<p>One CNN with a sigmoid output per label ({int(ml.get('n_labels', len(per)))} "
        f"labels), on the {src} ({int(ml.get('n_test', 0)):,} clips): <b>mAP "
        f"{h.fmt_num(ml.get('mAP'))}</b>, mean ROC-AUC {h.fmt_num(ml.get('mean_auc'))}, "
        f"d′ {h.fmt_num(ml.get('d_prime'))}; trained on {int(ml.get('n_train', 0)):,} clips "
        f"(best epoch {ml.get('best_epoch', '?')}, sampler {h.esc(str(ml.get('sampler')))}, "
        f"mixup {ml.get('mixup')}).</p>",
    ]
    arch, init, teacher = ml.get("arch"), ml.get("init"), ml.get("teacher")
    extra = []
    if arch:
        extra.append(f"architecture {h.esc(str(arch))}, width {h.esc(str(ml.get('width')))}")
    if isinstance(init, dict):
        extra.append(
            f"started from the checkpoint {h.esc(str(init.get('path')))} (head "
            f"{h.esc(str(init.get('head')))}: {int(init.get('mapped', 0))} outputs mapped by "
            f"MID, {int(init.get('fresh', 0))} fresh)"
        )
    if isinstance(teacher, dict):
        extra.append(
            f"distilled from the teacher predictions {h.esc(str(teacher.get('file')))}: "
            f"{int(teacher.get('n_train_with_teacher', 0)):,} of "
            f"{int(teacher.get('n_train', 0)):,} train clips had a teacher row (the others "
            f"trained on their labels alone), weight {h.esc(str(teacher.get('weight')))}, "
            f"temperature {h.esc(str(teacher.get('temperature')))}"
        )
    if extra:
        out.append("<p>" + "; ".join(extra) + ".</p>")
    if plot is not None and Path(plot).exists():
        out.append(h.img(plot, "multi-label AP per label", width="100%"))
    out += [
        '<p class="note">Per label, on the same clips: F1 at the threshold stored in the model '
        "(best F1 on validation) beside the best F1 any threshold reaches here; a gap means the "
        "threshold does not transfer.</p>",
        h.table(table, table_id="asf-multilabel", sortable=True),
    ]
    if compare is not None and len(compare):
        out += [
            "<h3>Multi-label beside the binary models (AP, same test clips)</h3>",
            h.table(compare, table_id="asf-multilabel-compare", sortable=True),
        ]
    return out


def ap_positives(
    metrics: pd.DataFrame, counts: pd.DataFrame, multilabel: Mapping | None = None
) -> pd.DataFrame:
    """Test AP and training positives of every label and model.

    Parameters
    ----------
    metrics : DataFrame
        :func:`metrics_table` (``label``, ``model``, ``average_precision``).
    counts : DataFrame
        :func:`label_counts` (``label``, ``train_pos``).
    multilabel : mapping, optional
        ``multilabel.json``: its ``per_label`` ``name``, ``ap`` and ``n_pos_train``.

    Returns
    -------
    DataFrame
        ``label, model, train_pos, ap``; rows without an AP or a count are left out.
    """
    pos = dict(zip(counts["label"], counts["train_pos"], strict=True)) if len(counts) else {}
    rows = [
        (r.label, str(r.model), pos.get(r.label), r.average_precision)
        for r in metrics.itertuples(index=False)
    ]
    for p in (multilabel or {}).get("per_label", []):
        rows.append((p.get("name"), "multilabel", p.get("n_pos_train"), p.get("ap")))
    df = pd.DataFrame(rows, columns=["label", "model", "train_pos", "ap"])
    df["train_pos"] = pd.to_numeric(df["train_pos"], errors="coerce")
    df["ap"] = pd.to_numeric(df["ap"], errors="coerce")
    return df.dropna(subset=["train_pos", "ap"]).reset_index(drop=True)


def plot_ap_positives(points: pd.DataFrame) -> bytes | None:
    """A scatter plot of test AP against training positives, one colour per model
    (:func:`ap_positives`), as PNG bytes; None when there is no point."""
    if points.empty:
        return None
    import io

    from ..learning.evaluation import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    titles = {**MODEL_TITLES, "multilabel": "Multi-label CNN"}
    markers = {"cnn": "o", "dense": "s", "logreg": "^", "multilabel": "D"}
    for model, part in points.groupby("model", sort=False):
        ax.scatter(
            part["train_pos"].clip(lower=0.8),
            part["ap"],
            s=14 if len(points) > 200 else 28,
            alpha=0.6 if len(points) > 200 else 0.85,
            marker=markers.get(str(model), "o"),
            label=f"{titles.get(str(model), str(model))} ({len(part)})",
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("positive clips in training (log scale)")
    ax.set_ylabel("average precision (test)")
    ax.set_title("Average precision against training positives", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _read_optional(path: str | Path | None) -> pd.DataFrame:
    if path is None or not Path(path).exists():
        return pd.DataFrame()
    return read_tsv(path)


def write_overview(
    *,
    config: Mapping,
    labels: Sequence[Mapping[str, str]],
    datasets: Mapping[str, Mapping[str, str | Path]],
    summary: str | Path,
    metrics: Sequence[str | Path],
    availability: str | Path,
    failures: str | Path | None,
    funnel: str | Path | None,
    benchmarks: str | Path | None,
    benchmarks_plot: str | Path | None,
    out: str | Path,
    dropped: Sequence[Sequence] = (),
    logger: logging.Logger | None = None,
    clip_sources: str | Path | None = None,
    multilabel: Sequence[str | Path] = (),
) -> str:
    """Read the run's results and write the landing page's fragment (:func:`overview_html`).

    Parameters
    ----------
    config : mapping
        The workflow's (validated) config.
    labels : sequence of mapping
        ``{"slug", "name", "mid"}`` of every trained label.
    datasets : mapping
        Label slug to ``{part: path}``.
    summary : path
        ``results/metrics/summary.tsv``.
    metrics : sequence of path
        The per-label metrics JSONs.
    availability, failures : path
        ``results/reports/availability.tsv`` and ``failures.tsv``.
    funnel, benchmarks_plot : path
        PNGs embedded in the page.
    benchmarks : path
        ``results/reports/benchmarks.tsv``.
    out : path
        The HTML fragment, written atomically.
    dropped : sequence of (name, ratio)
        Labels dropped by the quality filter.
    logger : logging.Logger, optional
    clip_sources : path, optional
        ``results/reports/sources.tsv`` (clips by source).
    multilabel : sequence of path
        Empty, or the multi-label model's ``multilabel.json``, ``multilabel_compare.tsv`` and
        AP plot (``label_ap.png``), in that order.

    Returns
    -------
    str
        The fragment.
    """
    mjson = [json.loads(Path(p).read_text(encoding="utf-8")) for p in metrics]
    avail = read_tsv(availability)
    for c in ("entered", "done", "failed"):
        if c in avail:
            avail[c] = pd.to_numeric(avail[c]).astype(int)
    fails = _read_optional(failures)
    if len(fails):
        fails["count"] = pd.to_numeric(fails["count"]).astype(int)
    bench = _read_optional(benchmarks)
    for c in bench.columns:
        if c != "rule":
            bench[c] = pd.to_numeric(bench[c], errors="coerce")
    counts = label_counts(labels, datasets)
    mtable = metrics_table(read_tsv(summary), mjson)
    ml = _multilabel_inputs(multilabel)
    fragment = overview_html(
        labels=labels,
        counts=counts,
        metrics=mtable,
        availability=avail,
        failures=fails,
        sources=sources_table(config, dropped),
        config=config_table(config, mjson),
        software=software_versions(),
        benchmarks=bench,
        funnel=funnel,
        benchmarks_plot=benchmarks_plot,
        clip_sources=_read_optional(clip_sources) if clip_sources else None,
        ap_positives_plot=plot_ap_positives(ap_positives(mtable, counts, ml.get("multilabel"))),
        **ml,
    )
    atomic_write_text(out, fragment)
    (logger or log).info("overview of %d label(s) written to %s", len(labels), out)
    return fragment
