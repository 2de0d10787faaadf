"""End-to-end runs of the real workflow (real Snakemake, yt-dlp, ffmpeg, Parquet) against a
loopback media server started by the test: faults, resume, rerun semantics and kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import soundfile as sf
import yaml
from faultserver import FaultServer

from audiosetflow import demo
from audiosetflow import metadata as md

REPO = Path(__file__).resolve().parent.parent
PERMANENT = "e404_perm01"  # the server answers 404
TRANSIENT = "flaky90_ab1"  # the server answers 503 until the test heals it

pytestmark = pytest.mark.slow


def _corpus(
    root: Path, *, per_class: int = 3, faulty: bool = True, extra: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A small demo corpus served over HTTP: metadata in root/metadata, media in root/media.

    ``faulty`` adds :data:`PERMANENT` and :data:`TRANSIENT` to the train CSV, ``extra`` more
    Music YTIDs (whose behaviour the fault server reads from their names)."""
    spec = demo.DemoSpec(clips_per_class=per_class, seed=11, eval_fraction=0.3)
    demo.write_metadata(root / "metadata", spec)
    demo.write_media(root / "media", spec, threads=2)
    corpus = demo.corpus(spec)
    added = [*([PERMANENT, TRANSIENT] if faulty else []), *extra]
    if added:
        train = md.read_segments(root / "metadata" / "balanced_train_segments.csv")
        rows = pd.DataFrame(
            {"ytid": added, "start": 1.0, "end": 11.0, "labels": "/m/04rlf"}
        )  # fmt: skip
        md.write_segments(
            root / "metadata" / "balanced_train_segments.csv", pd.concat([train, rows])
        )
        # each has media, served once it heals
        for y in added:
            (root / "media" / f"{y}.m4a").write_bytes(
                (root / "media" / f"{corpus['ytid'].iloc[0]}.m4a").read_bytes()
            )
    return corpus


def _config(
    root: Path, url_template: str, *, shard_size: int = 4, selection=None, **download
) -> Path:
    cfg = {
        "metadata": {"dir": str(root / "metadata")},
        "labels": ["Music", "Speech"],
        "shard_size": shard_size,
        "selection": selection or {},
        "download": {
            "url_template": url_template,
            "retries": 1,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "cooldown": 0.2,
            "socket_timeout": 5.0,
            **download,
        },
    }
    path = root / "test-config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(root: Path, cfg: Path, *args: str, check: bool = True, **kw):
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(root), "--configfile", str(REPO / "config.yaml"), str(cfg),
        "--cores", "2", "--rerun-incomplete", "--keep-going",
        "results/reports/availability.tsv", *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _ledger(root: Path) -> pd.DataFrame:
    return pd.read_csv(
        root / "results/reports/download_ledger.tsv", sep="\t", keep_default_na=False
    ).set_index("ytid")


def test_workflow_over_http_with_faults_and_rerun(tmp_path):
    corpus = _corpus(tmp_path)
    with FaultServer(tmp_path / "media") as srv:
        cfg = _config(tmp_path, srv.url_template())
        _snakemake(tmp_path, cfg)

        led = _ledger(tmp_path)
        assert led.loc[PERMANENT, "status"] == "permanent"
        assert led.loc[TRANSIENT, "status"] == "transient"
        good = led.drop(index=[PERMANENT, TRANSIENT])
        assert (good["status"] == "ok").all()
        assert set(good.index) == set(corpus["ytid"])

        # features: one row per selected YTID, the failed ones flagged, the rest with data
        feats = ds.dataset(tmp_path / "results/features/train", format="parquet").to_table()
        fdf = feats.to_pandas().set_index("ytid")
        assert fdf.loc[PERMANENT, "status"] == "permanent"
        assert fdf.loc[TRANSIENT, "status"] == "transient"
        assert fdf.loc[PERMANENT, "reason"].startswith("download: HTTP 404")
        train_ok = set(corpus.loc[corpus["split"] == "train", "ytid"])
        assert set(fdf.index[fdf["status"] == "ok"]) == train_ok
        ev = ds.dataset(tmp_path / "results/features/eval", format="parquet").count_rows()
        assert ev == (corpus["split"] == "eval").sum()

        # every clip is exactly the segment (10 s at 22050 Hz, padded if short)
        for ytid in corpus["ytid"]:
            split = corpus.set_index("ytid").loc[ytid, "split"]
            info = sf.info(tmp_path / f"results/audio/clips/{split}/{ytid}.flac")
            assert info.frames == 10 * 22050 and info.samplerate == 22050

        avail = pd.read_csv(tmp_path / "results/reports/availability.tsv", sep="\t")
        row = avail[(avail["split"] == "train") & (avail["stage"] == "download")].iloc[0]
        assert (row["entered"], row["done"], row["failed"]) == (len(train_ok) + 2, len(train_ok), 2)
        assert "permanent" in row["reasons"] and "transient" in row["reasons"]

        # the source heals: a plain rerun retries only the transient YTID
        srv.reset_counts()
        srv.heal(TRANSIENT)
        _snakemake(tmp_path, cfg)
        asked = {y for y, n in srv.requests.items() if n and y != TRANSIENT}
        assert asked == set(), f"re-downloaded {asked}"
        assert srv.requests[TRANSIENT] > 0
        led = _ledger(tmp_path)
        assert led.loc[TRANSIENT, "status"] == "ok"
        assert led.loc[PERMANENT, "status"] == "permanent"
        fdf = ds.dataset(tmp_path / "results/features/train").to_table().to_pandas()
        assert fdf.set_index("ytid").loc[TRANSIENT, "status"] == "ok"

        # and after a complete run there is nothing to do
        proc = _snakemake(tmp_path, cfg, "-n")
        assert "Nothing to be done" in proc.stdout + proc.stderr


GONE = ("gone99_aaa1", "gone99_bbb2")  # 404 until the test heals them
ALWAYS = "e503_alway1"  # 503 on every request: its shard runs again on every rerun


def test_permanent_failures_are_not_asked_again_on_rerun(tmp_path):
    """A 404 is not asked again when its shard reruns (here: for a transient YTID beside it),
    even once the server would answer: three runs, the 404s are requested in the first only."""
    _corpus(tmp_path, faulty=False, extra=(*GONE, ALWAYS))
    with FaultServer(tmp_path / "media") as srv:
        cfg = _config(tmp_path, srv.url_template(), shard_size=100, retries=0)
        asked = []
        for run in range(3):
            srv.reset_counts()
            _snakemake(tmp_path, cfg)
            asked.append({y: srv.requests[y] for y in (*GONE, ALWAYS)})
            if run == 0:
                for y in GONE:
                    srv.heal(y)  # from now on the server would serve them
        led = _ledger(tmp_path)
    assert all(asked[0][y] >= 1 for y in GONE)
    assert [a[y] for a in asked[1:] for y in GONE] == [0, 0, 0, 0], asked
    assert all(a[ALWAYS] >= 1 for a in asked)  # the shard did run again, each time
    assert (led.loc[list(GONE), "status"] == "permanent").all()
    assert led.loc[list(GONE), "runs"].tolist() == [1, 1]
    assert (led.loc[ALWAYS, "status"], led.loc[ALWAYS, "runs"]) == ("transient", 3)


def test_shrunk_selection_reads_no_stale_shard(tmp_path):
    """Shards of an earlier, larger selection stay on disk; the datasets use none of them."""
    _corpus(tmp_path, per_class=8, faulty=False)
    with FaultServer(tmp_path / "media") as srv:
        target = "results/datasets/music/train.tsv"
        cfg = _config(tmp_path, srv.url_template(), shard_size=3)
        _snakemake(tmp_path, cfg, target)
        before = sorted((tmp_path / "results/features/train").glob("shard-*.parquet"))
        cfg = _config(tmp_path, srv.url_template(), shard_size=3, selection={"max_positives": 2})
        _snakemake(tmp_path, cfg, target)
    led = _ledger(tmp_path)
    current = set(led.index)
    stale = set(ds.dataset(before, format="parquet").to_table(columns=["ytid"])["ytid"].to_pylist())
    stale -= current
    assert stale, "the smaller selection should leave clips of the first one on disk"
    assert len(before) > len(set(led.loc[led["split"] == "train", "shard"]))
    used = set()
    for part in ("train", "val", "test"):
        used |= set(pd.read_csv(tmp_path / f"results/datasets/music/{part}.tsv", sep="\t")["ytid"])
    assert used and used <= current and not used & stale


def test_full_disk_fails_the_run_in_one_line_and_a_rerun_finishes(tmp_path):
    """A full disk while clips are cut is no fault of the clips: the run fails with one line
    that says what to do, and once there is room a plain rerun finishes every clip."""
    corpus = _corpus(tmp_path, per_class=3, faulty=False)
    clips = tmp_path / "results/audio/clips/train"
    clips.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(clips)],
                           capture_output=True, text=True)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        filler = clips / ".filler"  # all but 600 KiB of the disk taken
        filler.write_bytes(b"\0" * (32 * 1024 - 600) * 1024)
        with FaultServer(tmp_path / "media") as srv:
            cfg = _config(tmp_path, srv.url_template())
            first = _snakemake(tmp_path, cfg, check=False)
        out = first.stdout + first.stderr
        assert first.returncode != 0
        assert "trim: No space left on device (ENOSPC) at " in out
        assert "free disk space and rerun the same command" in out
        assert "--- Logging error ---" not in out and "Traceback" not in out
        filler.unlink()  # the user frees space; what was written stays
        with FaultServer(tmp_path / "media") as srv:
            _snakemake(tmp_path, cfg)
            assert not any(srv.requests.values())  # nothing downloaded again
        feats = ds.dataset(tmp_path / "results/features/train", format="parquet").to_table()
    finally:
        subprocess.run(["umount", "-l", str(clips)], check=False)
    status = feats.to_pandas().set_index("ytid")["status"]
    train = corpus.loc[corpus["split"] == "train", "ytid"]
    assert (status.loc[train] == "ok").all()


def test_kill_9_then_resume(tmp_path):
    corpus = _corpus(tmp_path, per_class=4, faulty=False)
    # paced like a slow link, so that the kill lands in the middle of the downloads
    with FaultServer(tmp_path / "media", rate=120_000) as srv:
        # every clip a positive or a negative of Music or Speech: the plan is the whole corpus
        cfg = _config(tmp_path, srv.url_template(), selection={"negatives_per_positive": 10.0})
        cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"), str(cfg),
            "--cores", "2", "results/reports/availability.tsv",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        dl = tmp_path / "results/audio/download"
        deadline = time.monotonic() + 120
        finished: set[str] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            finished = {p.stem for p in dl.glob("*/*.m4a") if not p.name.startswith(".")}
            if len(finished) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {p.stem for p in dl.glob("*/*.m4a") if not p.name.startswith(".")}
        assert len(done_before) < len(corpus)

        srv.reset_counts()
        # Snakemake keeps its lock after a kill -9 and says to unlock: the documented way back
        unlock = _snakemake(tmp_path, cfg, "--unlock")
        assert unlock.returncode == 0
        _snakemake(tmp_path, cfg)
        again = {y for y in done_before if srv.requests[y]}
        assert again == set(), f"finished clips downloaded again: {again}"
        led = _ledger(tmp_path)
        assert (led["status"] == "ok").all() and len(led) == len(corpus)
        for ytid, split in corpus[["ytid", "split"]].itertuples(index=False):
            y, sr = sf.read(tmp_path / f"results/audio/clips/{split}/{ytid}.flac")
            assert len(y) == 10 * sr
        leftovers = [p for p in (tmp_path / "results").rglob(".*.tmp*")]
        assert not [p for p in leftovers if "features" in str(p)]
        proc = _snakemake(tmp_path, cfg, "-n")
        assert "Nothing to be done" in proc.stdout + proc.stderr


def _serve_dir(folder: Path):
    """A plain loopback HTTP server for a folder (metadata fetching)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_missing_metadata_is_fetched_then_planned(tmp_path, data_dir):
    src = tmp_path / "bucket"
    src.mkdir()
    for name, fixture in {
        "balanced_train_segments.csv": "segments_small.csv",
        "class_labels_indices.csv": "class_labels_small.csv",
        "qa_true_counts.csv": "qa_true_counts_small.csv",
    }.items():
        (src / name).write_bytes((data_dir / fixture).read_bytes())
    (src / "ontology.json").write_text("[]")
    httpd = _serve_dir(src)
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "metadata": {"dir": "", "eval_segments": "", "base_url": base,
                                 "qa_base_url": base, "ontology_url": base + "ontology.json"},
                    "labels": ["Music"],
                }
            )
        )  # fmt: skip
        base_cmd = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"), str(cfg),
            "--cores", "1",
        ]  # fmt: skip
        first = subprocess.run(base_cmd, capture_output=True, text=True, cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "run the same command again" in first.stderr
        got = tmp_path / "resources" / "metadata"
        assert (got / "balanced_train_segments.csv").read_bytes() == (
            src / "balanced_train_segments.csv"
        ).read_bytes()
        second = subprocess.run([*base_cmd, "-n"], capture_output=True, text=True, cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "download" in second.stdout and "features" in second.stdout
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('abc, 0.000, 10.000, "/m/04rlf"', "balanced_train_segments.csv:5: malformed YTID 'abc'"),
        ('abcdefghijk, 9.000, 3.000, "/m/04rlf"', "balanced_train_segments.csv:5: start >= end"),
        ('abcdefghijk, 0.000, 10.000, "/m/0xxxx"', "balanced_train_segments.csv:5: unknown MID"),
    ],
)
def test_bad_metadata_stops_with_one_line(tmp_path, data_dir, bad_line, message):
    meta = tmp_path / "meta"
    meta.mkdir()
    good = (data_dir / "segments_small.csv").read_text().splitlines()
    (meta / "balanced_train_segments.csv").write_text("\n".join([*good[:4], bad_line]) + "\n")
    (meta / "class_labels_indices.csv").write_bytes(
        (data_dir / "class_labels_small.csv").read_bytes()
    )
    (meta / "ontology.json").write_text("[]")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"metadata": {"dir": str(meta), "eval_segments": "", "qa_counts": ""},
             "labels": ["Music"]}
        )
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / "config.yaml"), str(cfg)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if message in ln]
    assert lines, proc.stderr[-2000:]


@pytest.mark.fresh_machine
def test_demo_to_report(tmp_path, request):
    """The README's demo, smaller (the tests' shared tiny demo run): generated corpus ->
    features -> models -> HTML report, which a real browser (headless Chromium) opens on a
    landing page with the metrics table and the availability funnel."""
    import browser

    reason = browser.skip_reason()  # checked first: no demo run for a test that would skip
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    work = request.getfixturevalue("tiny_demo")
    base = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(work), "--cores", "2",
        "--configfile", str(REPO / "config.yaml"), str(REPO / "config/demo.yaml"),
        str(work / "overrides.yaml"),
    ]  # fmt: skip
    res = work / "results"
    summary = pd.read_csv(res / "metrics/summary.tsv", sep="\t")
    assert set(summary["label"]) == {"music", "speech"}
    assert set(summary["model"]) == {"cnn", "dense", "logreg"}
    assert summary["roc_auc"].between(0, 1).all()
    for label in ("music", "speech"):
        assert (res / f"models/{label}.pt").stat().st_size > 10_000
        for plot in ("roc_pr", "confusion", "training_curves", "summary_features"):
            assert (res / f"plots/{label}/{plot}.png").exists()
        scores = pd.read_csv(res / f"metrics/{label}_scores.tsv", sep="\t")
        assert list(scores.columns) == ["ytid", "split", "start", "end", "target", "cnn",
                                        "dense", "logreg"]  # fmt: skip
    ml = json.loads((res / "metrics/multilabel.json").read_text())
    assert {"mAP", "mean_auc", "d_prime", "per_label", "history"} <= set(ml)
    # one score matrix of the test clips: every figure recomputed from it
    from audiosetflow.learning.metrics import average_precision

    matrix = pd.read_parquet(res / "metrics/eval_scores.parquet")
    for row in summary.itertuples():
        col = f"score:{row.model}:{row.mid}"
        sub = matrix.dropna(subset=[col])
        assert len(sub) == row.n_test
        ap = average_precision(sub[f"target:{row.mid}"], sub[col])
        assert ap == pytest.approx(row.average_precision, abs=2e-3)
    for p in ml["per_label"]:
        col = f"score:multilabel:{p['mid']}"
        truth = matrix.get(f"target:multilabel:{p['mid']}", matrix[f"target:{p['mid']}"])
        ap = average_precision(truth, matrix[col])
        if p["ap"] is None:  # no positive among the test clips: undefined, null in the JSON
            assert np.isnan(ap)
        else:
            assert ap == pytest.approx(p["ap"], abs=2e-3)
    assert len(ml["per_label"]) >= 2 and 0 <= ml["mAP"] <= 1
    compare = pd.read_csv(res / "metrics/multilabel_compare.tsv", sep="\t")
    assert set(compare["slug"]) == {"music", "speech"} and "ap_multilabel" in compare.columns
    feats = ds.dataset(res / "features/train", format="parquet").to_table(columns=["status"])
    assert feats.num_rows > 0 and set(feats.column("status").to_pylist()) == {"ok"}
    bench = pd.read_csv(res / "reports/benchmarks.tsv", sep="\t").set_index("rule")
    assert {"download", "features", "train", "errors", "demo_media", "train_multilabel"} <= set(
        bench.index
    )
    assert bench.loc["download", "jobs"] == len(list((res / "benchmarks/download").rglob("*.tsv")))
    rep = subprocess.run(
        [*base, "--report", str(res / "report.html")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (res / "report.html").read_text(errors="replace")
    assert "availability_funnel.png" in html and "roc_pr.png" in html

    exe = browser.find() or browser.install()
    dom = browser.dump_dom(exe, res / "report.html")
    page = browser.Elements(dom, root_id="app")  # what the report's scripts rendered
    assert "asf-overview" in page.ids, dom[-2000:]
    metrics = page.tables["asf-metrics"]
    assert metrics[0][:6] == ["label", "model", "ROC-AUC", "AP", "F1 at threshold", "best F1"]
    assert "threshold" in metrics[0] and len(metrics) == 1 + len(summary)
    assert {r[0] for r in metrics[1:]} == {"Music", "Speech"}
    assert {r[1] for r in metrics[1:]} == {"CNN (log-mel)", "Dense (seed)", "Logistic regression"}
    avail = page.tables["asf-availability"]
    assert [r[0] for r in avail[1:]] == ["selected", "download", "transcode", "trim", "features"]
    assert any(i.get("alt") == "availability funnel" and i["src"].startswith("data:image/png")
               for i in page.images)  # fmt: skip
    assert {"asf-labels", "asf-benchmarks", "asf-config"} <= set(page.tables)
    assert [r[0] for r in page.tables["asf-labels"][1:]] == ["Music", "Speech"]
    # the multi-label model and the clips by source, rendered by the browser
    ml_rows = page.tables["asf-multilabel"]
    assert len(ml_rows) == 1 + len(ml["per_label"]) and "best F1" in ml_rows[0]
    assert any(i.get("alt") == "multi-label AP per label" for i in page.images)
    assert page.tables["asf-sources"][1][1] == "youtube"
    shot = browser.screenshot(exe, res / "report.html", tmp_path / "report.png")
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1600, 2400)
        assert len(im.convert("L").getcolors(1 << 16) or []) > 50  # drawn, not a blank page
    # a label's worst mistakes: one player (the trimmed clip, embedded) per row
    errors = browser.Elements(browser.dump_dom(exe, res / "reports/errors/music.html"))
    rows = sum(len(t) - 1 for t in errors.tables.values())
    assert len(errors.audio) == rows and rows <= 10
    assert all(a["src"].startswith("data:audio/ogg;base64,") for a in errors.audio)
    if errors.audio:  # the browser decodes the embedded preview: 10 s, as trimmed (Opus
        # adds its 6.5-ms encoder delay)
        got = browser.audio_duration(exe, errors.audio[0]["src"], tmp_path)
        assert got.startswith("duration=") and abs(float(got[9:]) - 10.0) < 0.02, got
